// client_core: the client's bookkeeping, common to every mode — per-flow
// windows of messages in flight, building each message (header, --verify
// pattern, send time), matching replies to them, RTTs into the report, and
// the udp modes' loss timeout.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "options.hh"
#include "report.hh"

namespace msg_gen {

/// Sequence numbers are per flow: slot s of the window sends s, s + window,
/// s + 2·window, ... (a lost message's slot moves on to the next one).
class client_core {
 public:
  client_core(const options& o, client_report& report);

  uint32_t window() const noexcept { return _o.window; }
  uint32_t flows() const noexcept { return _o.flows; }

  /// Builds message `seq` of flow `f` and stamps its send time: send it
  /// right away (the bytes stay valid until the next build()).
  std::span<const uint8_t> build(uint32_t f, uint64_t seq);

  /// A reply arrived on flow `f` at `now_ns`: matched, checked (--verify),
  /// its RTT recorded. Returns the sequence number its slot sends next, or
  /// nullopt if it matched no message in flight (counted as unexpected).
  std::optional<uint64_t> on_reply(uint32_t f, std::span<const uint8_t> reply, uint64_t now_ns);

  /// Messages waiting longer than timeout_ns are counted lost; resend(f,
  /// seq) is called for the next message of each such slot.
  template <typename Resend>
  void expire(uint64_t now_ns, uint64_t timeout_ns, Resend&& resend) {
    for (uint32_t f = 0; f < _o.flows; ++f)
      for (uint32_t s = 0; s < _o.window; ++s) {
        auto& sl = _flows[f].slots[s];
        if (sl.sent_ns == 0 || now_ns - sl.sent_ns < timeout_ns) continue;
        sl.sent_ns = 0;
        _report.error(error_kind::lost);
        resend(f, sl.seq + _o.window);
      }
  }

 private:
  struct slot {
    uint64_t seq = 0;
    uint64_t sent_ns = 0;  // 0: no message in flight
  };
  struct flow_state {
    std::vector<slot> slots;
    uint64_t next_in_order = 0;  // messages without a header: replies come in order
  };

  const options& _o;
  client_report& _report;
  std::vector<uint8_t> _tx;
  std::vector<flow_state> _flows;
  unsigned _verify_logged = 0;
};

}  // namespace msg_gen
