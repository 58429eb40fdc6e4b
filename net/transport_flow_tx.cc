// transport_flow_tx: the sending half of a flow — segmentation on the fly,
// window and pacing, ACK/SACK processing, loss detection and retransmission
// rebuilt from the retained message bytes.
#include <algorithm>

#include "machnet/net/transport/endpoint.hh"
#include "machnet/net/transport/flow.hh"

namespace machnet::net::transport {

namespace {
// SACKed packets above a hole (sent after it) that declare it lost.
constexpr unsigned dup_thresh = 3;
// Samples above this are garbage (a corrupted or foreign echo).
constexpr uint64_t max_rtt_sample_ns = 10'000'000'000ull;
}  // namespace

uint64_t flow::echo_time(uint64_t field, uint64_t now) const noexcept {
  if (!field) return 0;
  if (!_data_acks) return field <= now && now - field < max_rtt_sample_ns ? field : 0;
  // With ACKs on DATA an echo may hold only the low 32 bits of our clock
  // (data_ack_stamps): it stands for the latest time with those bits, and
  // one from more than 2^31 ns (2.1 s) ago is no sample.
  const uint32_t ago = uint32_t(now) - uint32_t(field);
  if (ago >= (uint32_t(1) << 31) || ago >= now) return 0;
  return now - ago;
}

void flow::try_send() {
  if (_state != flow_state::established && _state != flow_state::closing) return;
  if (_peer_full && !_force_one) return;
  uint64_t now = now_ns();
  unsigned sent = 0;
  for (;;) {
    // Retransmissions first (lowest sequence first), then new data.
    seq_t s = 0;
    bool retx = false;
    if (_lost) {
      s = seq_in(_lost_hint, _snd_una, _snd_nxt) ? _lost_hint : _snd_una;
      while (s != _snd_nxt && !(seg(s).state & seg_lost)) ++s;
      if (s != _snd_nxt) {
        retx = true;
      } else {
        _lost = 0;  // defensive: the count had drifted
      }
    }
    if (!retx && !(has_new_data() && seq_t(_snd_nxt - _snd_una) < _cfg.window_pkts)) break;
    // After an RTO only its one forced packet goes out until an ACK makes
    // progress and tells whether the timeout was spurious (F-RTO's idea):
    // resending the flight at once wasted a window each time a stalled
    // peer, not the network, was the cause.
    if (_rto_undo_armed && !_force_one) break;
    if (!_force_one) {
      if (_pipe >= _cc.window()) break;
      if (_cc.cwnd() < 1.0 && now < _next_send_ns) {
        _pace_timer.arm_at(_ep._env.wheel(), (_next_send_ns + 999) / 1000);
        break;
      }
    }
    if (retx) {
      _lost_hint = s + 1;
    } else {
      // The failure clock (on_rto) starts no earlier than this send: an idle
      // flow has not been waiting for its peer.
      if (_snd_una == _snd_nxt) _waiting_since_ns = now;
      s = _snd_nxt++;
      segment& g = seg(s);
      g = segment{};
      g.msg = &_txq[_tx_next_msg];
      g.pkt = _tx_next_pkt;
      if (++_tx_next_pkt == g.msg->npkts) {
        ++_tx_next_msg;
        _tx_next_pkt = 0;
      }
    }
    // One clock read per 8 packets (a read costs ~12 ns on this VM): the
    // stamps of a burst lag their departure by a few packets' send time.
    if (sent && sent % 8 == 0) now = now_ns();
    transmit_segment(s, retx, now);
    ++sent;
    // Hand a long run to the device in pieces: the peer starts on the first
    // packets while this side still builds (and copies) the rest.
    if (_cfg.tx_push_pkts && sent % _cfg.tx_push_pkts == 0) _ep._env.push_tx();
    uint64_t gap = _cc.pacing_gap_ns(_rtt.srtt_or(_cfg.initial_rto_us * 1000));
    if (gap) _next_send_ns = now + gap;
    _force_one = false;
    if (!_rto_timer.armed()) arm_rto();
  }
  if (!_tlp_timer.armed()) arm_tlp();
}

bool flow::emit_segment(seq_t s, uint64_t now, bool resend) {
  const segment& g = seg(s);
  tx_message& m = *g.msg;
  std::size_t off = std::size_t(g.pkt) * _cfg.mss;
  std::size_t len = std::min(_cfg.mss, m.msg.size() - off);
  header h;
  h.flags = net_flag::data;
  h.msg_flags = uint8_t((g.pkt == 0 ? msg_flag::first : 0) |
                        (g.pkt + 1 == m.npkts ? msg_flag::last : msg_flag::more));
  h.seqno = s;
  h.ackno = data_ackno;
  h.timestamp1 = now;
  if ((_ack_pending || resend) && _data_acks && !rx_full() && _rcv_nxt != data_ackno) {
    // The due ACK rides along (ACKs on DATA, docs/protocol.md).
    h.timestamp1 = data_ack_stamps(now, fill_ack(h, now));
    if (_ack_held) _hold_misses = 0;  // the wait paid off
    _full_signalled = false;
    ack_sent();
    ++_stats.tx_data_acks;
  }
  // Multi-packet messages are sent zero-copy where the env can; a single
  // packet is cheaper to copy than to reference.
  if (m.npkts > 1) return _ep.emit_ref(_tuple, h, m.msg, off, len);
  return _ep.emit(_tuple, h, m.msg.data() + off, len);
}

bool flow::transmit_segment(seq_t s, bool retx, uint64_t now) {
  segment& g = seg(s);
  bool ok = emit_segment(s, now, retx);
  if (retx) {
    g.state &= uint8_t(~seg_lost);
    --_lost;
    ++_stats.tx_retx;
  } else {
    ++_stats.tx_data;
  }
  ++_pipe;  // in flight even if the env had no buffer: recovered as a loss
  g.tx_order = ++_tx_order;
  g.tx_ns = now;
  ++g.tx_count;
  if (!ok) ++_stats.tx_alloc_failed;
  return ok;
}

void flow::mark_lost(seq_t s) noexcept {
  segment& g = seg(s);
  g.state |= seg_lost;
  --_pipe;
  ++_lost;
  if (seq_lt(s, _lost_hint) || _lost == 1) _lost_hint = s;
}

void flow::release_acked_message() {
  tx_message& m = _txq.front();
  _txq_bytes -= m.msg.size();
  ++_stats.msgs_acked;
  _acked.push_back(std::move(m.msg));
  _txq.pop_front();
  if (_tx_next_msg) --_tx_next_msg;
}

void flow::on_ack(const header& h) {
  ++_stats.rx_acks;
  if (_state == flow_state::rst_sent) {
    if (h.ackno == _snd_nxt) finish(flow_error::none);  // the peer took our close
    return;
  }
  if (_state != flow_state::established && _state != flow_state::closing) return;
  if (!seq_in_closed(h.ackno, _snd_una, _snd_nxt)) {
    ++_stats.rx_stale_acks;
    return;
  }
  heard_from_peer();
  uint64_t now = now_ns();
  bool was_full = _peer_full;
  _peer_full = h.msg_flags & msg_flag::ack_rx_full;

  // Delay sample: the echoed timestamp (docs/protocol.md). A peer that echoes
  // nothing (the reference) gets Karn's rule on our own send times instead.
  const uint64_t echo = echo_time(h.timestamp1, now);
  uint64_t sample = echo ? now - echo : 0;
  uint64_t karn = 0;

  // Cumulative part.
  unsigned delivered = 0;
  bool progress = h.ackno != _snd_una;
  while (_snd_una != h.ackno) {
    segment& g = seg(_snd_una);
    if (g.state & seg_lost) {
      --_lost;
      ++delivered;
    } else if (!(g.state & seg_sacked)) {
      --_pipe;
      ++delivered;
      if (g.tx_count == 1) karn = now - g.tx_ns;
    }
    bool last = g.msg && g.pkt + 1 == g.msg->npkts;
    g = segment{};
    ++_snd_una;
    if (last) release_acked_message();
  }
  if (progress && _rto_undo_armed) {
    // Spurious RTO (Eifel-style, on the timestamp echo): the ACK answers a
    // packet sent before the timeout fired, so the flight had arrived — the
    // peer or the path stalled (a VM descheduled for longer than the RTO).
    // Back to the window before it; what is marked lost and not yet resent
    // is in flight after all.
    _rto_undo_armed = false;  // sending resumes (try_send below)
    if (echo && echo < _rto_at_ns) {
      ++_stats.spurious_rto;
      _cc.undo_rto(_rto_undo_cwnd);
      for (seq_t s = _snd_una; s != _snd_nxt; ++s) {
        segment& g = seg(s);
        if (g.state & seg_lost) {
          g.state &= uint8_t(~seg_lost);
          --_lost;
          ++_pipe;
        }
      }
    }
  }
  if (!sample) sample = karn;
  if (sample) _rtt.sample(sample, now);
  if (progress) {
    _rtt.reset_backoff();
    _tlp_sent = false;
  }

  // ackno itself is missing at the peer: if we thought it SACKed, the peer
  // reneged (or a SACK was bogus): send it again.
  if (_snd_una != _snd_nxt && (seg(_snd_una).state & seg_sacked)) {
    seg(_snd_una).state = seg_lost;
    ++_lost;
    _lost_hint = _snd_una;
    ++_stats.sack_reneged;
  }

  // Selective part: bit i ⇔ ackno + i arrived (bit 0 is never set).
  unsigned newly_sacked = 0;
  if (!h.sack.empty()) {
    for (unsigned k = 0; k < 4; ++k) {
      uint64_t w = h.sack.w[k];
      while (w) {
        unsigned i = k * 64 + unsigned(__builtin_ctzll(w));
        w &= w - 1;
        if (i == 0) continue;
        seq_t s = h.ackno + i;
        if (!seq_in(s, _snd_una, _snd_nxt)) break;
        segment& g = seg(s);
        if (g.state & seg_sacked) continue;
        if (g.state & seg_lost)
          --_lost;
        else
          --_pipe;
        g.state = seg_sacked;
        ++newly_sacked;
        if (!_have_sack || seq_gt(s, _high_sacked)) _high_sacked = s;
        _have_sack = true;
      }
    }
  }
  if (_have_sack && seq_lt(_high_sacked, _snd_una)) _have_sack = false;
  delivered += newly_sacked;
  if (newly_sacked) detect_losses();

  _cc.on_ack(now, sample, delivered, _rtt.min_rtt_ns(), _rtt.srtt_or(sample));

  if (was_full && !_peer_full) {
    // The peer has room again; what it refused meanwhile must be resent.
    for (seq_t s = _snd_una; s != _snd_nxt; ++s)
      if (seg(s).state == 0) mark_lost(s);
  }

  if (_snd_una == _snd_nxt && !(_peer_full && has_new_data())) {
    _rto_timer.cancel();
    _tlp_timer.cancel();
  } else if (progress || newly_sacked || was_full != _peer_full || !_rto_timer.armed()) {
    arm_rto();
    if (progress) arm_tlp();
  }

  try_send();
  notify_acked();
  if (_state == flow_state::closed) return;
  maybe_writable();
  if (_state == flow_state::closed) return;
  maybe_send_rst();
}

void flow::notify_acked() {
  if (_acked.empty()) return;
  // Owner code may send, close or abort: work on a private batch.
  auto batch = std::move(_acked);
  _acked.clear();
  for (auto& m : batch) {
    _ep._owner.on_acked(*this, m);
    if (_aborted) break;
  }
  batch.clear();
  if (_acked.empty()) _acked = std::move(batch);  // keep the capacity
}

void flow::detect_losses() {
  if (!_have_sack) return;
  unsigned sacked_above = 0;
  uint64_t newest = 0;
  bool any = false;
  for (seq_t s = _high_sacked;; --s) {
    segment& g = seg(s);
    if (g.state & seg_sacked) {
      ++sacked_above;
      newest = std::max(newest, g.tx_order);
    } else if (g.state == 0 && sacked_above >= dup_thresh && g.tx_order < newest) {
      mark_lost(s);
      any = true;
    }
    if (s == _snd_una) break;
  }
  if (any) {
    ++_stats.fast_retx;
    _cc.on_loss(now_ns(), _rtt.srtt_or(_cfg.initial_rto_us * 1000));
  }
}

void flow::maybe_send_rst() {
  if (_state != flow_state::closing || !_txq.empty() || _snd_una != _snd_nxt) return;
  send_control(net_flag::rst, _snd_nxt, _rcv_nxt);
  ++_snd_nxt;  // the RST consumes one: the peer's ACK of it names _snd_nxt
  _state = flow_state::rst_sent;
  _retries = 0;
  _rtt.reset_backoff();
  _pace_timer.cancel();
  arm_rto();
}

void flow::maybe_writable() {
  if (_want_writable && _txq_bytes < _cfg.tx_queue_bytes / 2) {
    _want_writable = false;
    _ep._owner.on_writable(*this);
  }
}

}  // namespace machnet::net::transport
