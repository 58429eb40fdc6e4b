// client_core: building messages and matching replies.
#include "client_core.hh"

#include <fmt/format.h>

#include "machnet/runtime/clock.hh"
#include "payload.hh"

namespace msg_gen {

client_core::client_core(const options& o, client_report& report)
    : _o(o), _report(report), _tx(o.msg_size, 0), _flows(o.flows) {
  for (auto& f : _flows) f.slots.resize(o.window);
}

std::span<const uint8_t> client_core::build(uint32_t f, uint64_t seq) {
  std::span<uint8_t> msg(_tx);
  if (has_header(msg.size())) {
    write_header(msg, seq, f);
    if (_o.verify) fill_pattern(msg, seq);
  }
  auto& sl = _flows[f].slots[seq % _o.window];
  sl.seq = seq;
  sl.sent_ns = machnet::now_ns();
  _report.sent(msg.size());
  return msg;
}

std::optional<uint64_t> client_core::on_reply(uint32_t f, std::span<const uint8_t> reply,
                                              uint64_t now_ns) {
  auto& fs = _flows[f];
  uint64_t seq;
  if (has_header(_o.msg_size)) {
    msg_header h;
    if (!read_header(reply, h) || h.flow != f) {
      _report.error(_o.verify ? error_kind::verify : error_kind::unexpected);
      if (_o.verify && _verify_logged++ < 10)
        fmt::print(stderr, "msg_gen: flow {}: a reply of {} B has no valid header for this flow\n", f,
                   reply.size());
      return std::nullopt;
    }
    seq = h.seq;
  } else {
    seq = fs.next_in_order;
  }
  auto& sl = fs.slots[seq % _o.window];
  if (sl.sent_ns == 0 || sl.seq != seq) {
    _report.error(error_kind::unexpected);
    return std::nullopt;
  }
  ++fs.next_in_order;
  const uint64_t rtt = now_ns > sl.sent_ns ? now_ns - sl.sent_ns : 0;
  sl.sent_ns = 0;
  if (_o.verify) {
    if (std::string why = check_reply(reply, _o.msg_size, seq, f); !why.empty()) {
      _report.error(error_kind::verify);
      if (_verify_logged++ < 10)
        fmt::print(stderr, "msg_gen: flow {} message {}: reply differs: {}\n", f, seq, why);
    }
  } else if (reply.size() != _o.msg_size) {
    _report.error(error_kind::unexpected);
  }
  _report.replied(rtt, reply.size(), now_ns);
  return seq + _o.window;
}

}  // namespace msg_gen
