// transport_flow: a flow's life cycle — handshake, packet dispatch by type,
// RST, the retransmission timer, close/abort, and failure reporting.
#include <fmt/format.h>

#include <algorithm>

#include <bit>

#include "machnet/net/transport/endpoint.hh"
#include "machnet/net/transport/flow.hh"

namespace machnet::net::transport {


const char* to_string(flow_state s) noexcept {
  switch (s) {
    case flow_state::syn_sent:
      return "SYN_SENT";
    case flow_state::syn_received:
      return "SYN_RECEIVED";
    case flow_state::established:
      return "ESTABLISHED";
    case flow_state::closing:
      return "CLOSING";
    case flow_state::rst_sent:
      return "RST_SENT";
    case flow_state::closed:
      return "CLOSED";
  }
  return "?";
}

const char* to_string(send_result r) noexcept {
  switch (r) {
    case send_result::ok:
      return "ok";
    case send_result::queue_full:
      return "queue full";
    case send_result::too_big:
      return "too big";
    case send_result::empty:
      return "empty";
    case send_result::not_open:
      return "not open";
  }
  return "?";
}

unsigned flow::ring_for(unsigned window_pkts) noexcept {
  return std::max(sack_bitmap::bits, std::bit_ceil(window_pkts));
}

flow::flow(endpoint& ep, const flow_tuple& t, bool connector)
    : _ep(ep),
      _cfg(ep._cfg),
      _tuple(t),
      _connector(connector),
      _state(connector ? flow_state::syn_sent : flow_state::syn_received),
      _ring_mask(ring_for(ep._cfg.window_pkts) - 1),
      _segs(_ring_mask + 1),
      _rtt(ep._cfg.initial_rto_us * 1000, ep._cfg.min_rto_us * 1000, ep._cfg.max_rto_us * 1000),
      _cc(ep._cfg.cc),
      _ooo(_ring_mask + 1),
      _ooo_bits((_ring_mask + 1) / 64) {
  // Timer callbacks run from the wheel; the depth count keeps the endpoint
  // from destroying this flow while its code is on the stack.
  _rto_timer.set_callback([this] {
    endpoint::scope g(_ep);
    if (rx_behind(_rto_timer)) return;
    on_rto();
  });
  _pace_timer.set_callback([this] {
    endpoint::scope g(_ep);
    try_send();
  });
  _tlp_timer.set_callback([this] {
    endpoint::scope g(_ep);
    if (rx_behind(_tlp_timer)) return;
    on_tlp();
  });
  _ack_timer.set_callback([this] {
    endpoint::scope g(_ep);
    if (_ack_pending && _state != flow_state::closed) send_ack();
  });
}

flow::~flow() { release_rx_buffers(); }

// A loss timer fell due while the shard was busy (e.g. sending a window):
// the ACKs that would have cancelled it may be waiting in the RX queue. Fire
// only after RX was polled past the deadline; until then, wait one turn
// (the reactor polls before it advances timers). Without this, a sender
// that spent more than an RTO in one turn timed out on ACKs it had not read:
// every retransmission of a loss-free 8 MiB bulk transfer was spurious.
bool flow::rx_behind(timer& t) {
  if (_ep._env.rx_polled_ns() >= t.deadline_us() * 1000) return false;
  ++_stats.timer_deferred;
  t.arm_at(_ep._env.wheel(), _ep._env.now_ns() / 1000 + 1);
  return true;
}

uint64_t flow::now_ns() const noexcept { return _ep._env.now_ns(); }

uint8_t flow::syn_options() const noexcept {
  // The connector offers what it has configured; the acceptor answers with
  // what both have (a SYN-ACK's flag is the agreement).
  bool offer = _connector ? _cfg.data_acks : _data_acks;
  return offer ? msg_flag::syn_data_acks : 0;
}

void flow::send_control(net_flag f, seq_t seqno, seq_t ackno, uint64_t ts, uint8_t msg_flags) {
  header h;
  h.flags = f;
  h.msg_flags = msg_flags;
  h.seqno = seqno;
  h.ackno = ackno;
  h.timestamp1 = ts;
  ++_stats.tx_ctrl;
  if (!_ep.emit(_tuple, h, nullptr, 0)) ++_stats.tx_alloc_failed;
}

void flow::arm_rto() {
  uint64_t deadline_us = (now_ns() + _rtt.rto_ns() + 999) / 1000;
  _rto_timer.arm_at(_ep._env.wheel(), deadline_us);
}

// Arms the tail-loss probe while data is in flight and no probe went out for
// this flight; a later ACK with progress re-arms it.
void flow::arm_tlp() {
  if (!_cfg.tlp_min_us || _tlp_sent || !_rtt.has_sample() || _snd_una == _snd_nxt) return;
  uint64_t pto_ns = std::max<uint64_t>(2 * _rtt.srtt_ns(), _cfg.tlp_min_us * 1000);
  uint64_t deadline_us = (now_ns() + pto_ns + 999) / 1000;
  if (_rto_timer.armed() && deadline_us >= _rto_timer.deadline_us()) return;  // the RTO is sooner
  _tlp_timer.arm_at(_ep._env.wheel(), deadline_us);
}

void flow::on_tlp() {
  if (_state != flow_state::established && _state != flow_state::closing) return;
  if (_snd_una == _snd_nxt || _tlp_sent || _peer_full) return;
  // Resend the newest packet still unacknowledged: its ACK (with SACK) tells
  // the sender what else is missing; if only it was lost, this recovers it.
  seq_t s = _snd_nxt - 1;
  segment& g = seg(s);
  if (g.state != 0 || !g.msg) return;  // SACKed or already marked lost
  _tlp_sent = true;
  ++_stats.tail_probes;
  ++g.tx_count;  // no Karn sample from it
  ++_stats.tx_retx;
  if (!emit_segment(s, now_ns(), true)) ++_stats.tx_alloc_failed;
}

void flow::heard_from_peer() noexcept {
  _retries = 0;
  _last_heard_ns = now_ns();
}

// --- Handshake ---

void flow::start_connect(seq_t isn) {
  _isn = isn;
  _snd_una = isn;
  _snd_nxt = isn + 1;  // the SYN consumes one
  _last_heard_ns = now_ns();
  send_control(net_flag::syn, _isn, 0, now_ns(), syn_options());
  arm_rto();
}

void flow::start_accept(const header& syn, seq_t isn) {
  _peer_isn = syn.seqno;
  _rcv_nxt = syn.seqno + 1;
  _isn = isn;
  _snd_una = isn;
  _snd_nxt = isn + 1;  // the SYN-ACK consumes one
  _last_heard_ns = now_ns();
  _data_acks = _cfg.data_acks && (syn.msg_flags & msg_flag::syn_data_acks);
  // The SYN-ACK echoes the SYN's timestamp: the connector's first RTT sample.
  send_control(net_flag::syn_ack, _isn, _rcv_nxt, syn.timestamp1, syn_options());
  arm_rto();
}

void flow::on_syn_dup(const header& h) {
  // Our SYN-ACK was lost (or the SYN duplicated): answer the same way again.
  send_control(net_flag::syn_ack, _isn, _peer_isn + 1, h.timestamp1, syn_options());
}

void flow::become_established_acceptor() {
  _snd_una = _snd_nxt;
  _rto_timer.cancel();
  _rtt.reset_backoff();
  heard_from_peer();
  _state = flow_state::established;
  _accepted = true;
  _ep._owner.on_accept(*this);
}

void flow::on_packet(const header& h, std::span<const uint8_t> payload) {
  switch (h.flags) {
    case net_flag::data:
      if (_data_acks && h.ackno != data_ackno) {
        on_data_with_ack(h, payload);
        return;
      }
      on_data(h, payload);
      return;
    case net_flag::ack:
      if (_state == flow_state::syn_received) {
        if (h.ackno == _snd_nxt) become_established_acceptor();
        return;
      }
      if (_state == flow_state::syn_sent) return;
      on_ack(h);
      return;
    case net_flag::syn_ack:
      if (!_connector) return;
      if (_state == flow_state::syn_sent) {
        if (h.ackno != _snd_nxt) return;  // not an answer to our SYN
        heard_from_peer();
        _peer_isn = h.seqno;
        _rcv_nxt = h.seqno + 1;
        _data_acks = _cfg.data_acks && (h.msg_flags & msg_flag::syn_data_acks);
        _snd_una = _snd_nxt;
        uint64_t now = now_ns();
        if (uint64_t echo = echo_time(h.timestamp1, now)) _rtt.sample(now - echo, now);
        _rtt.reset_backoff();
        _rto_timer.cancel();
        _state = flow_state::established;
        send_control(net_flag::ack, _snd_nxt, _rcv_nxt);
        _ep._owner.on_connected(*this);
        if (_state != flow_state::established) return;
        if (_close_requested) {
          _state = flow_state::closing;
          maybe_send_rst();
        }
        try_send();
        return;
      }
      // A repeat of the SYN-ACK we got: our ACK was lost, ACK again. Any other
      // SYN-ACK is stale or garbage (a restarted acceptor only answers SYNs).
      if ((_state == flow_state::established || _state == flow_state::closing) &&
          h.seqno == _peer_isn && h.ackno == _isn + 1)
        send_control(net_flag::ack, _snd_nxt, _rcv_nxt);
      return;
    case net_flag::rst:
      on_rst(h);
      return;
    case net_flag::syn:
      return;  // the endpoint handles SYNs
  }
}

// --- RST ---

bool flow::rst_acceptable(const header& h) const noexcept {
  // In sequence (the reference's rule), or naming a packet we sent (a reply
  // RST from a peer without the flow, or an abort): docs/protocol.md.
  if (_state != flow_state::syn_sent && h.seqno == _rcv_nxt) return true;
  return seq_in_closed(h.ackno, _snd_una, _snd_nxt);
}

void flow::on_rst(const header& h) {
  if (_state == flow_state::closed || !rst_acceptable(h)) return;
  bool in_sequence = _state != flow_state::syn_sent && h.seqno == _rcv_nxt;
  switch (_state) {
    case flow_state::syn_sent:
      fail(flow_error::refused);
      return;
    case flow_state::syn_received:
      fail(flow_error::peer_reset);  // silent: nobody knows this flow yet
      return;
    case flow_state::rst_sent:
      finish(flow_error::none);  // both sides closed at once
      return;
    default:
      break;
  }
  if (in_sequence) {
    // An orderly close by the peer: acknowledge the RST (it consumed h.seqno).
    send_control(net_flag::ack, _snd_nxt, h.seqno + 1);
    if (_txq.empty()) {
      finish(flow_error::none);
      return;
    }
  }
  fail(flow_error::peer_reset);
}

std::string flow::describe() const {
  const auto& st = _stats;
  const uint64_t now = now_ns();
  return fmt::format(
      "{} {}: snd_una {} snd_nxt {} rcv_nxt {}, inflight {} lost {}, cwnd {:.3f}, srtt {} us rto {} us, "
      "retries {}, heard {} us ago, queued {} msg {} B, held {} B{}{}; sent {} acked {} delivered {}, "
      "data {} retx {} rto {} (spurious {}) tlp {} fast {}, timers deferred {}, rx_data {} dup {} ooo {} "
      "refused {} beyond {}, acks rx {} tx {}, on DATA rx {} tx {}{}{}",
      _tuple.str(), to_string(_state), _snd_una, _snd_nxt, _rcv_nxt, _pipe, _lost, _cc.cwnd(),
      _rtt.srtt_ns() / 1000, _rtt.rto_ns() / 1000, _retries,
      now > _last_heard_ns ? (now - _last_heard_ns) / 1000 : 0, _txq.size(), _txq_bytes, _held_bytes,
      _peer_full ? ", peer full" : "", _rto_timer.armed() ? ", RTO armed" : "", st.msgs_sent, st.msgs_acked,
      st.msgs_delivered, st.tx_data, st.tx_retx, st.rto, st.spurious_rto, st.tail_probes, st.fast_retx,
      st.timer_deferred, st.rx_data, st.rx_dup, st.rx_ooo, st.rx_refused, st.rx_beyond_window, st.rx_acks,
      st.tx_acks, st.rx_data_acks, st.tx_data_acks, _data_acks ? "" : " (not offered by both)",
      _rto_undo_armed ? ", after an RTO: one packet until an ACK" : "");
}

// --- Retransmission timer ---

void flow::on_rto() {
  switch (_state) {
    case flow_state::syn_sent:
      ++_stats.rto;
      // _last_heard_ns holds the connect's start until the peer answers.
      if (++_retries > _cfg.max_connect_retries &&
          now_ns() - _last_heard_ns >= _cfg.connect_timeout_us * 1000) {
        fail(flow_error::connect_timeout);
        return;
      }
      _rtt.backoff();
      send_control(net_flag::syn, _isn, 0, now_ns(), syn_options());
      arm_rto();
      return;
    case flow_state::syn_received:
      ++_stats.rto;
      if (++_retries > _cfg.max_syn_ack_retries) {
        fail(flow_error::timeout);  // silent: nobody knows this flow yet
        return;
      }
      _rtt.backoff();
      send_control(net_flag::syn_ack, _isn, _rcv_nxt, 0, syn_options());
      arm_rto();
      return;
    case flow_state::rst_sent:
      if (++_retries > _cfg.max_rst_retries) {
        finish(flow_error::none);  // the peer may not ACK RSTs (reference)
        return;
      }
      _rtt.backoff();
      send_control(net_flag::rst, _snd_nxt - 1, _rcv_nxt);
      arm_rto();
      return;
    case flow_state::established:
    case flow_state::closing:
      break;
    case flow_state::closed:
      return;
  }
  bool outstanding = _snd_una != _snd_nxt;
  // With nothing in flight the timer only runs to probe a full receiver.
  if (!outstanding && !(_peer_full && has_new_data())) return;
  ++_stats.rto;
  uint64_t now = now_ns();
  ++_retries;
  if (_retries > _cfg.max_retries ||
      (_cfg.fail_timeout_us &&
       now - std::max(_last_heard_ns, _waiting_since_ns) > _cfg.fail_timeout_us * 1000)) {
    fail(flow_error::timeout);
    return;
  }
  _rtt.backoff();
  if (!_peer_full) {
    // Everything still in flight is presumed lost; the window shrinks. The
    // first ACK with progress tells whether that was wrong (on_ack).
    if (!_rto_undo_armed) {
      _rto_undo_armed = true;
      _rto_undo_cwnd = _cc.cwnd();
      _rto_at_ns = now;
    }
    _cc.on_rto();
    for (seq_t s = _snd_una; s != _snd_nxt; ++s)
      if (seg(s).state == 0) mark_lost(s);
  } else {
    // The peer's buffer was full: probe with the oldest packet.
    ++_stats.probes;
    if (outstanding && seg(_snd_una).state == 0) mark_lost(_snd_una);
  }
  _force_one = true;
  try_send();
  _force_one = false;
  if (_state == flow_state::established || _state == flow_state::closing) arm_rto();
}

// --- Owner calls ---

send_result flow::send(message m) {
  endpoint::scope g(_ep);
  if (!is_open() || _close_requested) return send_result::not_open;
  if (m.empty()) return send_result::empty;
  if (m.size() > max_message_size) return send_result::too_big;
  if (_txq_bytes >= _cfg.tx_queue_bytes) {
    _want_writable = true;
    return send_result::queue_full;
  }
  _txq_bytes += m.size();
  auto& tm = _txq.emplace_back();
  tm.npkts = uint32_t((m.size() + _cfg.mss - 1) / _cfg.mss);
  tm.msg = std::move(m);
  ++_stats.msgs_sent;
  try_send();
  return send_result::ok;
}

void flow::close() {
  endpoint::scope g(_ep);
  switch (_state) {
    case flow_state::syn_sent:
      _close_requested = true;  // close once connected and drained
      return;
    case flow_state::established:
      _state = flow_state::closing;
      maybe_send_rst();
      return;
    default:
      return;
  }
}

std::vector<message> flow::abort() {
  endpoint::scope g(_ep);
  if (_state == flow_state::closed) return {};
  if (_state != flow_state::rst_sent) send_control(net_flag::rst, _snd_nxt, _rcv_nxt);
  _state = flow_state::closed;
  _aborted = true;
  _rto_timer.cancel();
  _pace_timer.cancel();
  _ack_timer.cancel();
  release_rx_buffers();
  auto v = take_unacked();
  _ep.retire(*this);
  return v;
}

// --- Ending ---

void flow::fail(flow_error e) {
  if (_state == flow_state::closed) return;
  // A protocol error or a silent peer ends the flow with a last RST (best
  // effort, as TCP's user timeout): a peer that is alive but unreachable one
  // way, or waiting for a reply, learns the flow is gone instead of waiting.
  if (e == flow_error::protocol_error ||
      (e == flow_error::timeout && (_state == flow_state::established || _state == flow_state::closing)))
    send_control(net_flag::rst, _snd_nxt, _rcv_nxt);
  if (!_connector && !_accepted) {
    // A half-open accepted flow: its owner never heard of it.
    _state = flow_state::closed;
    _rto_timer.cancel();
    _pace_timer.cancel();
    _ack_timer.cancel();
    _ep.retire(*this);
    return;
  }
  finish(e);
}

void flow::finish(flow_error e) {
  if (_state == flow_state::closed) return;
  _state = flow_state::closed;
  _rto_timer.cancel();
  _pace_timer.cancel();
  _ack_timer.cancel();
  release_rx_buffers();
  _final_unacked = take_unacked();
  if (e == flow_error::none && !_final_unacked.empty()) e = flow_error::peer_reset;
  _final_error = e;
  _ep.unlink(*this);  // the tuple is free for a new flow
  if (!_held.empty()) {
    // Deliver what the owner has not taken yet first (resume_rx), then report.
    _finishing = true;
    _ep.keep_zombie(*this);
    return;
  }
  complete_finish();
}

void flow::complete_finish() {
  _finishing = false;
  if (_final_error == flow_error::none)
    _ep._owner.on_closed(*this);
  else
    _ep._owner.on_error(*this, _final_error, std::move(_final_unacked));
  _ep.retire(*this);
}

std::vector<message> flow::take_unacked() {
  std::vector<message> v;
  v.reserve(_txq.size());
  for (auto& tm : _txq) v.push_back(std::move(tm.msg));
  _txq.clear();
  _txq_bytes = 0;
  _tx_next_msg = 0;
  _tx_next_pkt = 0;
  std::fill(_segs.begin(), _segs.end(), segment{});
  _pipe = _lost = 0;
  _have_sack = false;
  return v;
}

}  // namespace machnet::net::transport
