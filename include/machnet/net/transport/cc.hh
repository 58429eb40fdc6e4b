// cc: per-flow delay-based congestion control (Swift family): a fractional
// congestion window driven by RTT against a target, AI below it, MD above it
// (at most once per RTT), pacing below one packet.
#pragma once

#include <cstdint>

#include "machnet/net/transport/config.hh"

namespace machnet::net::transport {

/// The window law (docs/protocol.md "Congestion control"):
///   rtt < target:  cwnd += ai·n/cwnd   (cwnd ≥ 1)   or   cwnd += ai·n   (cwnd < 1)
///   rtt ≥ target:  cwnd ×= max(1 − beta·(rtt − target)/rtt, 1 − max_mdf)   ≤ once per RTT
///   loss (fast retransmit): cwnd ×= 1 − max_mdf                            ≤ once per RTT
///   RTO: cwnd ×= 1 − max_mdf; after retx_reset_threshold in a row cwnd = min_cwnd
/// where n is the number of packets the ACK newly delivered and
///   target = base_target + flow_scaling(cwnd), or min_rtt + min_headroom +
///            flow_scaling(cwnd) on a long path (min_rtt > base_target + fs_range),
///   flow_scaling(c) = clamp(α/√c + β', 0, fs_range)  with α, β' chosen so
///   that it is fs_range at fs_min_cwnd and 0 at fs_max_cwnd.
class swift_cc {
 public:
  explicit swift_cc(const cc_params& p) noexcept;

  /// An ACK newly delivered `acked` packets; `rtt_ns` is its delay sample
  /// (0 when it carried none); `srtt_ns` bounds the decrease rate.
  void on_ack(uint64_t now_ns, uint64_t rtt_ns, unsigned acked, uint64_t min_rtt_ns,
              uint64_t srtt_ns) noexcept;
  /// Packets were declared lost by SACK (fast retransmit).
  void on_loss(uint64_t now_ns, uint64_t srtt_ns) noexcept;
  /// The retransmission timer expired.
  void on_rto() noexcept;
  /// The timeout(s) since the window was `cwnd_before` were spurious (the
  /// packets had arrived): back to that window.
  void undo_rto(double cwnd_before) noexcept;

  double cwnd() const noexcept { return _cwnd; }
  /// Packets allowed in flight: max(1, ⌊cwnd⌋).
  unsigned window() const noexcept;
  /// Gap between packet departures when cwnd < 1 (srtt / cwnd), else 0.
  uint64_t pacing_gap_ns(uint64_t srtt_ns) const noexcept;
  /// The target RTT (ns) at the current window.
  uint64_t target_ns(uint64_t min_rtt_ns) const noexcept;
  const cc_params& params() const noexcept { return _p; }
  uint64_t decreases() const noexcept { return _decreases; }

 private:
  bool can_decrease(uint64_t now_ns, uint64_t srtt_ns) const noexcept;
  void clamp() noexcept;

  cc_params _p;
  double _cwnd;
  double _fs_alpha = 0, _fs_beta = 0;
  uint64_t _last_decrease_ns = 0;
  bool _decreased = false;
  unsigned _consecutive_rto = 0;
  uint64_t _decreases = 0;
};

}  // namespace machnet::net::transport
