// transport_cc: the Swift-style window law — additive increase below the
// target delay, bounded multiplicative decrease above it, fractional windows.
#include <algorithm>
#include <cmath>

#include "machnet/net/transport/cc.hh"

namespace machnet::net::transport {

swift_cc::swift_cc(const cc_params& p) noexcept : _p(p), _cwnd(p.init_cwnd) {
  if (_p.fs_range_us > 0 && _p.fs_min_cwnd > 0 && _p.fs_max_cwnd > _p.fs_min_cwnd) {
    _fs_alpha =
        _p.fs_range_us / (1.0 / std::sqrt(_p.fs_min_cwnd) - 1.0 / std::sqrt(_p.fs_max_cwnd));
    _fs_beta = -_fs_alpha / std::sqrt(_p.fs_max_cwnd);
  }
  clamp();
}

void swift_cc::clamp() noexcept { _cwnd = std::clamp(_cwnd, _p.min_cwnd, _p.max_cwnd); }

unsigned swift_cc::window() const noexcept {
  return _cwnd < 1.0 ? 1u : static_cast<unsigned>(_cwnd);
}

uint64_t swift_cc::pacing_gap_ns(uint64_t srtt_ns) const noexcept {
  if (_cwnd >= 1.0) return 0;
  return static_cast<uint64_t>(double(srtt_ns) / _cwnd);
}

uint64_t swift_cc::target_ns(uint64_t min_rtt_ns) const noexcept {
  // Long-path rule: a base RTT that no standing queue of this law explains
  // (above base_target + fs_range) moves the target to min_rtt + headroom, so
  // a target set below the path's RTT cannot starve the flow. Within that
  // range the target is the same for every flow: a latecomer that measured
  // its min RTT over a standing queue gets no advantage.
  double base = _p.base_target_us;
  double min_rtt_us = double(min_rtt_ns) / 1000.0;
  if (min_rtt_ns && min_rtt_us > _p.base_target_us + _p.fs_range_us)
    base = min_rtt_us + std::max(_p.min_headroom_us, _p.headroom_frac * min_rtt_us);
  double fs = 0;
  if (_fs_alpha > 0) fs = std::clamp(_fs_alpha / std::sqrt(_cwnd) + _fs_beta, 0.0, _p.fs_range_us);
  return static_cast<uint64_t>((base + fs) * 1000.0);
}

bool swift_cc::can_decrease(uint64_t now_ns, uint64_t srtt_ns) const noexcept {
  return !_decreased || now_ns - _last_decrease_ns >= srtt_ns;
}

void swift_cc::on_ack(uint64_t now_ns, uint64_t rtt_ns, unsigned acked, uint64_t min_rtt_ns,
                      uint64_t srtt_ns) noexcept {
  if (acked) _consecutive_rto = 0;
  if (rtt_ns == 0) return;
  uint64_t target = target_ns(min_rtt_ns);
  if (rtt_ns < target) {
    if (!acked) return;
    if (_cwnd >= 1.0)
      _cwnd += _p.ai * acked / _cwnd;
    else
      _cwnd += _p.ai * acked;
  } else if (can_decrease(now_ns, srtt_ns)) {
    double f = 1.0 - _p.beta * double(rtt_ns - target) / double(rtt_ns);
    _cwnd *= std::max(f, 1.0 - _p.max_mdf);
    _last_decrease_ns = now_ns;
    _decreased = true;
    ++_decreases;
  }
  clamp();
}

void swift_cc::on_loss(uint64_t now_ns, uint64_t srtt_ns) noexcept {
  if (!can_decrease(now_ns, srtt_ns)) return;
  _cwnd *= 1.0 - _p.max_mdf;
  _last_decrease_ns = now_ns;
  _decreased = true;
  ++_decreases;
  clamp();
}

void swift_cc::on_rto() noexcept {
  if (++_consecutive_rto >= _p.retx_reset_threshold)
    _cwnd = _p.min_cwnd;
  else
    _cwnd *= 1.0 - _p.max_mdf;
  ++_decreases;
  clamp();
}

void swift_cc::undo_rto(double cwnd_before) noexcept {
  _cwnd = std::max(_cwnd, cwnd_before);
  _consecutive_rto = 0;
  clamp();
}

}  // namespace machnet::net::transport
