// report: per-second lines, the summary and the JSON object (fmt).
#include "report.hh"

#include <fmt/format.h>

#include <algorithm>

namespace msg_gen {

namespace {

constexpr uint64_t ns_per_s = 1'000'000'000;

double us(uint64_t ns) { return double(ns) / 1e3; }

// A message rate as the reference prints it (thousands), with more digits
// when it is small.
std::string krate(double per_s) {
  return per_s >= 100 ? fmt::format("{:.1f}K", per_s / 1e3) : fmt::format("{:.4f}K", per_s / 1e3);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", int(c));
    else out += c;
  }
  return out + "\"";
}

std::string errors_text(const error_counts& e) {
  return fmt::format("{} (send {}, verify {}, lost {}, unexpected {})", e.total(), e.send, e.verify,
                     e.lost, e.unexpected);
}

}  // namespace

void error_counts::add(error_kind k) noexcept {
  switch (k) {
    case error_kind::send: ++send; break;
    case error_kind::verify: ++verify; break;
    case error_kind::lost: ++lost; break;
    case error_kind::unexpected: ++unexpected; break;
  }
}

client_report::client_report(const options& o, uint64_t start_ns)
    : _o(o),
      _out(o.json ? stderr : stdout),
      _start(start_ns),
      _measure_start(start_ns + uint64_t(o.warmup_s() * 1e9)),
      _end(start_ns + uint64_t(o.duration_s * 1e9)),
      _next_tick(start_ns + ns_per_s),
      _last_tick(start_ns) {}

void client_report::print_second(uint64_t now) {
  const double s = double(now - _last_tick) / 1e9;
  const double tx = double(_tx - _tx_prev), rx = double(_rx - _rx_prev);
  const double tx_gbps = double(_tx_bytes - _tx_bytes_prev) * 8 / s / 1e9;
  const double rx_gbps = double(_rx_bytes - _rx_bytes_prev) * 8 / s / 1e9;
  std::string rtt = "N/A";
  if (!_second.empty())
    rtt = fmt::format("{:.2f}/{:.2f}/{:.2f}/{:.2f}/{:.2f}", us(_second.percentile(50)),
                      us(_second.percentile(99)), us(_second.percentile(99.9)),
                      us(_second.percentile(99.99)), us(_second.max()));
  std::string errs;
  if (_second_errors.total()) errs = ", errors: " + errors_text(_second_errors);
  fmt::print(_out, "[{:6.2f} s] TX/RX (msg/sec, Gbps): ({}/{}, {:.3f}/{:.3f}). "
                   "RTT (p50/99/99.9/99.99/max us): {}{}\n",
             double(now - _start) / 1e9, krate(tx / s), krate(rx / s), tx_gbps, rx_gbps, rtt, errs);
  std::fflush(_out);
  _second.reset();
  _second_errors = {};
  _tx_prev = _tx;
  _tx_bytes_prev = _tx_bytes;
  _rx_prev = _rx;
  _rx_bytes_prev = _rx_bytes;
  _last_tick = now;
  // Catch up after a stall rather than printing a burst of lines.
  _next_tick += ns_per_s;
  if (_next_tick <= now) _next_tick = now + ns_per_s;
}

int client_report::finish(uint64_t now, const std::string& fatal) {
  const uint64_t measured_ns = now > _measure_start ? now - _measure_start : 0;
  const double measured_s = double(measured_ns) / 1e9;
  const uint64_t msgs = _total.count();
  const double rate = measured_s > 0 ? double(msgs) / measured_s : 0;
  const double gbps = measured_s > 0 ? double(_rx_bytes_measured) * 8 / measured_s / 1e9 : 0;
  const double p50 = us(_total.percentile(50)), p99 = us(_total.percentile(99)),
               p999 = us(_total.percentile(99.9)), p9999 = us(_total.percentile(99.99)),
               mx = us(_total.max());
  std::string why = fatal;
  if (why.empty() && msgs == 0)
    why = now < _measure_start ? fmt::format("stopped after {:.2f} s, before the warm-up ended",
                                             double(now - _start) / 1e9)
                               : "no reply was received after the warm-up";
  if (why.empty() && _errors.verify) why = fmt::format("{} replies failed --verify", _errors.verify);

  fmt::print(_out, "msg_gen: {} client, {} flow(s), window {}, {} B messages, {:.2f} s "
                   "(first {:.2f} s warm-up excluded)\n",
             to_string(_o.mode), _o.flows, _o.window, _o.msg_size, double(now - _start) / 1e9,
             _o.warmup_s());
  fmt::print(_out, "msg_gen: {} msgs in {:.3f} s: {} msg/s, {:.3f} Gbps payload (each way)\n", msgs,
             measured_s, krate(rate), gbps);
  if (msgs)
    fmt::print(_out, "msg_gen: RTT us: p50 {:.2f}  p99 {:.2f}  p99.9 {:.2f}  p99.99 {:.2f}  max {:.2f}  "
                     "(min {:.2f}, mean {:.2f})\n",
               p50, p99, p999, p9999, mx, us(_total.min()), _total.mean() / 1e3);
  fmt::print(_out, "msg_gen: errors {}\n", errors_text(_errors));
  std::fflush(_out);
  if (!why.empty()) fmt::print(stderr, "msg_gen: FAILED: {}\n", why);

  if (_o.json) {
    std::string j = fmt::format(
        "{{\"mode\":\"{}\",\"role\":\"client\",\"msg_size\":{},\"window\":{},\"flows\":{},"
        "\"duration\":{},\"warmup_s\":{:.3f},\"measured_s\":{:.6f},\"msgs\":{},\"msgs_per_s\":{:.1f},"
        "\"gbps\":{:.6f},\"p50_us\":{:.3f},\"p99_us\":{:.3f},\"p999_us\":{:.3f},\"p9999_us\":{:.3f},"
        "\"max_us\":{:.3f},\"min_us\":{:.3f},\"mean_us\":{:.3f},\"verify\":{},",
        to_string(_o.mode), _o.msg_size, _o.window, _o.flows, _o.duration_s, _o.warmup_s(), measured_s,
        msgs, rate, gbps, p50, p99, p999, p9999, mx, us(_total.min()), _total.mean() / 1e3,
        _o.verify ? "true" : "false");
    if (_o.mode == run_mode::sidecar) j += fmt::format("\"poll\":\"{}\",", to_string(_o.poll));
    j += fmt::format("\"errors\":{},\"send_errors\":{},\"verify_errors\":{},\"lost\":{},\"unexpected\":{}",
                     _errors.total(), _errors.send, _errors.verify, _errors.lost, _errors.unexpected);
    if (!why.empty()) j += ",\"error\":" + json_string(why);
    j += "}";
    std::printf("%s\n", j.c_str());
    std::fflush(stdout);
  }
  return why.empty() ? 0 : 1;
}

server_report::server_report(const options& o, uint64_t start_ns)
    : _o(o),
      _out(o.json ? stderr : stdout),
      _start(start_ns),
      _end(o.duration_given ? start_ns + uint64_t(o.duration_s * 1e9) : UINT64_MAX),
      _next_tick(start_ns + ns_per_s),
      _last_tick(start_ns) {}

void server_report::print_second(uint64_t now) {
  const double s = double(now - _last_tick) / 1e9;
  if (_msgs != _msgs_prev) {
    const double rate = double(_msgs - _msgs_prev) / s;
    const double gbps = double(_bytes - _bytes_prev) * 8 / s / 1e9;
    fmt::print(_out, "[{:6.2f} s] RX/TX (msg/sec, Gbps): ({}/{}, {:.3f}/{:.3f}){}\n",
               double(now - _start) / 1e9, krate(rate), krate(rate), gbps, gbps,
               _errors.total() ? ", errors: " + errors_text(_errors) : std::string());
    std::fflush(_out);
  }
  _msgs_prev = _msgs;
  _bytes_prev = _bytes;
  _last_tick = now;
  _next_tick += ns_per_s;
  if (_next_tick <= now) _next_tick = now + ns_per_s;
}

int server_report::finish(uint64_t now, const std::string& fatal) {
  fmt::print(_out, "msg_gen: {} server: echoed {} msgs ({} bytes) in {:.2f} s, errors {}\n",
             to_string(_o.mode), _msgs, _bytes, double(now - _start) / 1e9, errors_text(_errors));
  std::fflush(_out);
  if (!fatal.empty()) fmt::print(stderr, "msg_gen: FAILED: {}\n", fatal);
  if (_o.json) {
    std::string j = fmt::format(
        "{{\"mode\":\"{}\",\"role\":\"server\",\"duration\":{:.3f},\"msgs\":{},\"bytes\":{},"
        "\"errors\":{},\"send_errors\":{}",
        to_string(_o.mode), double(now - _start) / 1e9, _msgs, _bytes, _errors.total(), _errors.send);
    if (!fatal.empty()) j += ",\"error\":" + json_string(fatal);
    j += "}";
    std::printf("%s\n", j.c_str());
    std::fflush(stdout);
  }
  return fatal.empty() ? 0 : 1;
}

}  // namespace msg_gen
