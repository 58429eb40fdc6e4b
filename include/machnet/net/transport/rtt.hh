// rtt: the round-trip-time estimator (SRTT/RTTVAR, RFC 6298 shape) that sets
// the retransmission timeout, with exponential backoff and a sub-ms floor.
#pragma once

#include <cstdint>

namespace machnet::net::transport {

/// Smoothed RTT and RTO in nanoseconds. rto = srtt + max(1 µs, 4·rttvar),
/// clamped to [min_rto, max_rto]; before the first sample rto = initial_rto.
/// Each backoff() doubles the timeout (still capped at max_rto) until
/// reset_backoff() (called when new data is acknowledged).
class rtt_estimator {
 public:
  rtt_estimator(uint64_t initial_rto_ns, uint64_t min_rto_ns, uint64_t max_rto_ns) noexcept
      : _initial(initial_rto_ns), _min(min_rto_ns), _max(max_rto_ns) {}

  /// Feeds one RTT measurement.
  /// A new RTT sample taken at `now_ns` (0: no time, the minimum then never
  /// ages out).
  void sample(uint64_t rtt_ns, uint64_t now_ns = 0) noexcept;
  /// The minimum RTT is windowed: the smallest sample of the last one to two
  /// windows. A path that got slower for good (a peer that now sleeps
  /// between a paced flow's packets, a loaded VM) moves the base up instead
  /// of leaving the congestion control under a target it can never meet.
  static constexpr uint64_t min_rtt_window_ns = 500'000'000;

  bool has_sample() const noexcept { return _srtt != 0; }
  uint64_t srtt_ns() const noexcept { return _srtt; }
  uint64_t rttvar_ns() const noexcept { return _rttvar; }
  uint64_t latest_ns() const noexcept { return _latest; }
  /// Smallest sample seen (0 before any).
  uint64_t min_rtt_ns() const noexcept {
    return _prev_min && _prev_min < _min_rtt ? _prev_min : _min_rtt;
  }
  /// SRTT, or `fallback` before the first sample.
  uint64_t srtt_or(uint64_t fallback) const noexcept { return _srtt ? _srtt : fallback; }

  /// The timeout without backoff.
  uint64_t base_rto_ns() const noexcept;
  /// The timeout to arm now: base << backoff, capped at max_rto.
  uint64_t rto_ns() const noexcept;
  void backoff() noexcept {
    if (_backoff < 32) ++_backoff;
  }
  void reset_backoff() noexcept { _backoff = 0; }
  unsigned backoff_level() const noexcept { return _backoff; }

 private:
  uint64_t _initial, _min, _max;
  uint64_t _srtt = 0, _rttvar = 0, _latest = 0, _min_rtt = 0;
  uint64_t _prev_min = 0, _window_start = 0;
  unsigned _backoff = 0;
};

}  // namespace machnet::net::transport
