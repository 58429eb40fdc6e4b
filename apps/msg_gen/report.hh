// report: what msg_gen prints — a line per second (rates, RTT percentiles,
// errors), the whole-run summary after the warm-up, and the --json object.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "histogram.hh"
#include "options.hh"

namespace msg_gen {

enum class error_kind {
  send,        ///< a send failed (not retried successfully)
  verify,      ///< --verify: a reply's size, header or payload was wrong
  lost,        ///< udp modes: no reply within the loss timeout (resent)
  unexpected,  ///< a reply that matched no message in flight (late, duplicate, bad header)
};

struct error_counts {
  uint64_t send = 0, verify = 0, lost = 0, unexpected = 0;
  uint64_t total() const noexcept { return send + verify + lost + unexpected; }
  void add(error_kind k) noexcept;
};

/// The client's statistics and output. Single-threaded; times are
/// machnet::now_ns() values.
class client_report {
 public:
  client_report(const options& o, uint64_t start_ns);

  void sent(std::size_t bytes) noexcept {
    ++_tx;
    _tx_bytes += bytes;
  }
  /// A reply completed a message after rtt_ns.
  void replied(uint64_t rtt_ns, std::size_t bytes, uint64_t now_ns) noexcept {
    ++_rx;
    _rx_bytes += bytes;
    _second.record(rtt_ns);
    if (now_ns >= _measure_start) {
      _total.record(rtt_ns);
      _rx_bytes_measured += bytes;
    }
  }
  void error(error_kind k) noexcept {
    _errors.add(k);
    _second_errors.add(k);
  }
  /// Prints the per-second line once a second has passed.
  void tick(uint64_t now_ns) {
    if (now_ns >= _next_tick) print_second(now_ns);
  }
  uint64_t next_tick_ns() const noexcept { return _next_tick; }
  uint64_t end_ns() const noexcept { return _end; }
  const error_counts& errors() const noexcept { return _errors; }

  /// Prints the summary (and the JSON object with --json); `fatal` is why
  /// the run ended early, if it did. Returns the exit status: 1 after a
  /// fatal error, a --verify mismatch or no measured reply, else 0.
  int finish(uint64_t now_ns, const std::string& fatal = {});

  /// Where human-readable text goes (stderr with --json, else stdout).
  std::FILE* out() const noexcept { return _out; }

 private:
  void print_second(uint64_t now_ns);

  const options& _o;
  std::FILE* _out;
  uint64_t _start, _measure_start, _end, _next_tick, _last_tick;
  uint64_t _tx = 0, _tx_bytes = 0, _rx = 0, _rx_bytes = 0, _rx_bytes_measured = 0;
  uint64_t _tx_prev = 0, _tx_bytes_prev = 0, _rx_prev = 0, _rx_bytes_prev = 0;
  error_counts _errors, _second_errors;
  histogram _second, _total;
};

/// The server's statistics and output: echoed messages per second and totals.
class server_report {
 public:
  server_report(const options& o, uint64_t start_ns);
  void echoed(std::size_t bytes) noexcept {
    ++_msgs;
    _bytes += bytes;
  }
  void error(error_kind k) noexcept { _errors.add(k); }
  void tick(uint64_t now_ns) {
    if (now_ns >= _next_tick) print_second(now_ns);
  }
  uint64_t next_tick_ns() const noexcept { return _next_tick; }
  /// The server's end (--duration given), or UINT64_MAX.
  uint64_t end_ns() const noexcept { return _end; }
  int finish(uint64_t now_ns, const std::string& fatal = {});
  std::FILE* out() const noexcept { return _out; }

 private:
  void print_second(uint64_t now_ns);

  const options& _o;
  std::FILE* _out;
  uint64_t _start, _end, _next_tick, _last_tick;
  uint64_t _msgs = 0, _bytes = 0, _msgs_prev = 0, _bytes_prev = 0;
  error_counts _errors;
};

}  // namespace msg_gen
