// transport_flow_rx: the receiving half of a flow — in-order reassembly with
// out-of-order packets parked in pool chunks, delivery and back-pressure,
// and coalesced ACKs carrying the SACK bitmap and the timestamp echo.
#include <algorithm>
#include <cstring>

#include "machnet/net/transport/buffer_cache.hh"
#include "machnet/net/transport/endpoint.hh"
#include "machnet/net/transport/flow.hh"

namespace machnet::net::transport {

void flow::on_data_with_ack(const header& h, std::span<const uint8_t> payload) {
  ++_stats.rx_data_acks;
  header d = h;  // the DATA: its own (32-bit) stamp, for our echo
  d.ackno = data_ackno;
  d.sack = {};
  d.sack_count = 0;
  d.timestamp1 = h.timestamp1 >> 32;
  header a = h;  // the ACK: its echo (32 bits, see echo_time)
  a.flags = net_flag::ack;
  a.msg_flags = 0;
  a.seqno = _snd_nxt;
  a.timestamp1 = uint32_t(h.timestamp1);
  if (_state == flow_state::syn_received) {
    // Its ACK of our SYN-ACK is in this packet: on_data establishes the flow.
    on_data(d, payload);
    if (_state == flow_state::established) on_ack(a);
    return;
  }
  on_ack(a);
  if (_aborted || _state == flow_state::closed) return;
  on_data(d, payload);
}

void flow::on_data(const header& h, std::span<const uint8_t> payload) {
  if (_state == flow_state::syn_received) {
    // The ACK of our SYN-ACK was lost; in-window DATA proves the peer got it.
    if (!seq_in(h.seqno, _rcv_nxt, _rcv_nxt + _cfg.window_pkts)) return;
    become_established_acceptor();
  }
  if (_state != flow_state::established && _state != flow_state::closing) return;
  ++_stats.rx_data;
  uint64_t now = now_ns();
  // A peer sending DATA is alive (the failure clock of on_rto), even if it
  // has nothing of ours to acknowledge yet.
  _last_heard_ns = now;

  if (seq_lt(h.seqno, _rcv_nxt)) {
    ++_stats.rx_dup;  // our ACK was lost or the packet duplicated: re-ACK
    want_ack(true);
    return;
  }
  seq_t d = h.seqno - _rcv_nxt;
  if (d > _ring_mask) {
    ++_stats.rx_beyond_window;
    want_ack(true);
    return;
  }
  ooo_slot& slot = _ooo[h.seqno & _ring_mask];
  if (d > 0 && slot.present) {
    ++_stats.rx_dup;
    want_ack(true);
    return;
  }
  if (rx_full()) {
    // The owner is not taking messages: refuse (no ACK for it), say so.
    ++_stats.rx_refused;
    want_ack(true);
    return;
  }
  if (d > 0) {
    ++_stats.rx_ooo;
    slot.buf = _ep._pool.get();
    std::memcpy(slot.buf, payload.data(), payload.size());
    slot.len = uint16_t(payload.size());
    slot.flags = h.msg_flags;
    slot.present = true;
    unsigned idx = h.seqno & _ring_mask;
    _ooo_bits[idx / 64] |= uint64_t(1) << (idx % 64);
    ++_ooo_count;
    want_ack(true);
    return;
  }

  // In order. Only a packet that advances rcv_nxt sets the timestamp the
  // ACK echoes (adjusted for how long we hold it), as TCP's timestamps do
  // (RFC 7323): duplicates and out-of-order packets do not. So the ACK that
  // follows a spurious RTO echoes the original transmission, not the
  // retransmission that arrived behind it, and the sender can undo the RTO.
  _echo_ts = h.timestamp1;
  _echo_arrival_ns = now;
  bool last = h.msg_flags & msg_flag::last;
  ++_rcv_nxt;
  ++_unacked;
  // A reply the owner sends from on_message carries this ACK (data_acks).
  if (_data_acks) _ack_pending = true;
  if (!consume(payload.data(), payload.size(), h.msg_flags)) return;
  bool filled = false;
  while (_ooo_count) {
    ooo_slot& s = _ooo[_rcv_nxt & _ring_mask];
    if (!s.present) break;
    uint8_t* buf = s.buf;
    unsigned idx = _rcv_nxt & _ring_mask;
    _ooo_bits[idx / 64] &= ~(uint64_t(1) << (idx % 64));
    s.present = false;
    s.buf = nullptr;
    --_ooo_count;
    ++_rcv_nxt;
    ++_unacked;
    filled = true;
    bool ok = consume(buf, s.len, s.flags);
    _ep._pool.put(buf);
    if (!ok) return;
  }
  if (_state != flow_state::established && _state != flow_state::closing) return;
  if (_unacked == 0) return;  // a reply from on_message carried the ACK
  // Only whole messages delivered in order since the last ACK: a reply may
  // carry it, also past ack_every_pkts (that push is for a long message's
  // sender, whose window waits on it).
  const bool may_wait = last && !filled && !_ooo_count;
  if (_unacked >= _cfg.ack_every_pkts && !(may_wait && ack_may_wait() && !_ack_no_wait)) {
    send_ack();
    _ep._env.push_tx();
  } else if (filled || _ooo_count || last || _cfg.ack_delay_us == 0) {
    // At the end of this RX burst; for a delivered message perhaps a flush
    // later, on the owner's reply (hold_ack).
    want_ack(true, may_wait);
  } else {
    want_ack(false);  // may wait ack_delay_us for more
  }
}

bool flow::consume(const uint8_t* p, std::size_t n, uint8_t flags) {
  if (flags & msg_flag::first) {
    if (_in_msg) {
      fail(flow_error::protocol_error);  // FIRST inside a message
      return false;
    }
    _in_msg = true;
    _reasm = message();
    if (_rx_size_hint >= buffer_cache::min_class) _reasm.reserve(_rx_size_hint);
  } else if (!_in_msg) {
    fail(flow_error::protocol_error);  // a continuation without FIRST
    return false;
  }
  if (_reasm.size() + n > max_message_size) {
    fail(flow_error::protocol_error);
    return false;
  }
  _reasm.append(p, n);
  if (flags & msg_flag::last) {
    _in_msg = false;
    _rx_size_hint = _reasm.size();
    deliver(std::move(_reasm));
    _reasm = message();
    return _state != flow_state::closed;
  }
  return true;
}

void flow::deliver(message&& m) {
  if (_held.empty() && !_delivering) {
    _delivering = true;
    bool taken = _ep._owner.on_message(*this, m);
    _delivering = false;
    if (taken) {
      ++_stats.msgs_delivered;
      return;
    }
    if (_aborted) return;
  }
  _held_bytes += m.size();
  _held.push_back(std::move(m));
}

void flow::deliver_held() {
  if (_delivering) return;
  _delivering = true;
  while (!_held.empty()) {
    std::size_t sz = _held.front().size();
    bool taken = _ep._owner.on_message(*this, _held.front());
    if (_aborted) break;  // abort() from the callback: the flow is gone
    if (!taken) break;
    _held_bytes -= sz;
    _held.pop_front();
    ++_stats.msgs_delivered;
  }
  _delivering = false;
}

void flow::resume_rx() {
  endpoint::scope g(_ep);
  if (_aborted || _delivering) return;
  deliver_held();
  if (_aborted) return;
  if (_finishing) {
    if (_held.empty()) complete_finish();
    return;
  }
  if (_state == flow_state::closed) return;
  // Tell a sender we stopped (ack_rx_full) that it may go on.
  if (_full_signalled && !rx_full()) send_ack();
}

void flow::want_ack(bool at_flush, bool may_wait) {
  if (!may_wait) _ack_no_wait = true;
  _ack_pending = true;
  if (at_flush) {
    _ep.queue_ack(*this);
  } else if (!_ack_timer.armed()) {
    _ack_timer.arm_at(_ep._env.wheel(), now_ns() / 1000 + _cfg.ack_delay_us);
  }
}

bool flow::hold_ack() noexcept {
  if (_ack_held && _hold_misses < 255) ++_hold_misses;  // it waited in vain: alone now
  if (!ack_may_wait() || _ack_no_wait || _ack_held || rx_full() || _rcv_nxt == data_ackno) return false;
  // An owner that answers later than a shard turn (a sidecar app that
  // sleeps) would only get its ACKs late: after 4 misses in a row, hold one
  // ACK in 16.
  if (_hold_misses >= 4 && ++_hold_skips % 16 != 0) return false;
  _ack_held = true;
  return true;
}

void flow::ack_sent() noexcept {
  _unacked = 0;
  _ack_pending = false;
  _ack_no_wait = false;
  _ack_held = false;
  _ack_timer.cancel();
}

void flow::send_ack() {
  header h;
  h.flags = net_flag::ack;
  _full_signalled = rx_full();
  h.msg_flags = _full_signalled ? msg_flag::ack_rx_full : 0;
  h.seqno = _snd_nxt;
  h.timestamp1 = fill_ack(h, now_ns());
  ack_sent();
  ++_stats.tx_acks;
  if (!_ep.emit(_tuple, h, nullptr, 0)) ++_stats.tx_alloc_failed;
}

uint64_t flow::fill_ack(header& h, uint64_t now) {
  h.ackno = _rcv_nxt;
  if (_ooo_count) {
    // Rotate the slot bitmap so that bit i is slot (rcv_nxt + i) of the
    // ring; its first 256 bits are what the header can carry.
    const unsigned r = _rcv_nxt & _ring_mask, q = r / 64, b = r % 64;
    const std::size_t words = _ooo_bits.size();
    for (unsigned k = 0; k < 4; ++k) {
      uint64_t lo = _ooo_bits[(k + q) % words], hi = _ooo_bits[(k + q + 1) % words];
      h.sack.w[k] = b ? (lo >> b) | (hi << (64 - b)) : lo;
    }
    h.sack.clear(0);
    h.sack_count = uint16_t(h.sack.count());
  }
  return _echo_ts ? _echo_ts + (now - _echo_arrival_ns) : 0;
}

void flow::release_rx_buffers() noexcept {
  if (_ooo_count) {
    for (auto& s : _ooo) {
      if (s.present) {
        _ep._pool.put(s.buf);
        s.present = false;
        s.buf = nullptr;
      }
    }
    _ooo_count = 0;
    std::fill(_ooo_bits.begin(), _ooo_bits.end(), 0);
  }
  _reasm.reset();
  _in_msg = false;
}

}  // namespace machnet::net::transport
