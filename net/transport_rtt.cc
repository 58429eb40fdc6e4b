// transport_rtt: SRTT/RTTVAR smoothing and the backed-off retransmission timeout.
#include <algorithm>

#include "machnet/net/transport/rtt.hh"

namespace machnet::net::transport {

void rtt_estimator::sample(uint64_t r, uint64_t now) noexcept {
  if (r == 0) r = 1;
  _latest = r;
  if (now && now - _window_start >= min_rtt_window_ns) {
    _prev_min = _window_start ? _min_rtt : 0;  // the window that just ended
    _min_rtt = 0;
    _window_start = now;
  }
  if (_min_rtt == 0 || r < _min_rtt) _min_rtt = r;
  if (_srtt == 0) {
    _srtt = r;
    _rttvar = r / 2;
    return;
  }
  uint64_t diff = _srtt > r ? _srtt - r : r - _srtt;
  _rttvar = (3 * _rttvar + diff) / 4;  // beta = 1/4
  _srtt = (7 * _srtt + r) / 8;         // alpha = 1/8
  if (_srtt == 0) _srtt = 1;
}

uint64_t rtt_estimator::base_rto_ns() const noexcept {
  if (_srtt == 0) return std::clamp(_initial, _min, _max);
  constexpr uint64_t granularity_ns = 1000;  // the timer wheel ticks in µs
  uint64_t rto = _srtt + std::max(granularity_ns, 4 * _rttvar);
  return std::clamp(rto, _min, _max);
}

uint64_t rtt_estimator::rto_ns() const noexcept {
  uint64_t rto = base_rto_ns();
  for (unsigned i = 0; i < _backoff && rto < _max; ++i) rto *= 2;
  return std::min(rto, _max);
}

}  // namespace machnet::net::transport
