// transport_endpoint: per-shard demux of Machnet packets to flows and
// listeners, stateless RST replies, end-of-burst ACKs, and flow retirement.
#include <algorithm>
#include <cstring>

#include "machnet/net/transport/endpoint.hh"

namespace machnet::net::transport {

namespace {
uint64_t seed_of(uint64_t s) {
  if (s) return s;
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}
}  // namespace

chunk_pool::~chunk_pool() {
  for (auto* c : _free) delete[] c;
}

uint8_t* chunk_pool::get() {
  if (_free.empty()) return new uint8_t[_chunk];
  auto* c = _free.back();
  _free.pop_back();
  return c;
}

void chunk_pool::put(uint8_t* c) noexcept {
  // Keep a bounded cache; the rest goes back to the heap.
  if (_free.size() < 4096) {
    try {
      _free.push_back(c);
      return;
    } catch (...) {
    }
  }
  delete[] c;
}

endpoint::endpoint(transport_env& env, transport_owner& owner, transport_config cfg)
    : _env(env),
      _owner(owner),
      _cfg(cfg),
      _pool(max_payload),  // a peer may use any packet size up to the limit
      _isn_rng(seed_of(cfg.isn_seed)) {
  _cfg.mss = std::clamp<std::size_t>(_cfg.mss, 1, max_payload);
  _cfg.window_pkts = std::clamp(_cfg.window_pkts, 1u, max_window_pkts);
  _reaper.set_callback([this] { reap(); });
}

endpoint::~endpoint() {
  _reaper.cancel();
  _ack_list.clear();
  _graveyard.clear();
  _zombies.clear();
  _memo_flow = nullptr;
  _flows.clear();
}

bool endpoint::listen(uint16_t local_port) { return _listeners.insert(local_port).second; }

void endpoint::unlisten(uint16_t local_port) { _listeners.erase(local_port); }

seq_t endpoint::next_isn() {
  return _cfg.fixed_isn ? _cfg.fixed_isn : static_cast<seq_t>(_isn_rng());
}

flow* endpoint::find(const flow_tuple& t) noexcept {
  // The last flow found: a burst is mostly one flow's packets.
  if (_memo_flow && _memo_tuple == t) return _memo_flow;
  auto it = _flows.find(t);
  if (it == _flows.end()) return nullptr;
  _memo_tuple = t;
  _memo_flow = it->second.get();
  return _memo_flow;
}

flow* endpoint::connect(const flow_tuple& t) {
  scope g(*this);
  if (_flows.count(t)) return nullptr;
  auto f = std::unique_ptr<flow>(new flow(*this, t, true));
  flow* p = f.get();
  _flows.emplace(t, std::move(f));
  p->start_connect(next_isn());
  return p;
}

void endpoint::accept(const flow_tuple& t, const header& syn) {
  auto f = std::unique_ptr<flow>(new flow(*this, t, false));
  flow* p = f.get();
  _flows.emplace(t, std::move(f));
  ++_stats.accepted;
  p->start_accept(syn, next_isn());
}

void endpoint::on_packet(const flow_tuple& t, std::span<const uint8_t> pkt) {
  if (_depth == 0 && !_graveyard.empty()) reap();
  scope g(*this);
  ++_stats.rx_packets;
  header h;
  auto e = decode(pkt, h);
  if (e != decode_error::ok) {
    ++_stats.rx_bad[std::size_t(e)];
    return;
  }
  auto payload = pkt.subspan(header_size);
  flow* f = find(t);
  if (h.flags == net_flag::syn) {
    // Our own connection on this tuple: the peer is the acceptor and never
    // sends SYNs (no simultaneous open). Ignore.
    if (f && f->_connector) return;
    if (f && h.seqno == f->_peer_isn) {
      f->on_syn_dup(h);  // a repeated SYN: repeat the SYN-ACK
      return;
    }
    if (f) {
      // A SYN with a new initial sequence number on a live tuple: the peer
      // restarted. The old flow fails (its messages go back to its owner).
      f->fail(flow_error::peer_restarted);
      f = find(t);
      if (f) return;  // the owner reconnected the tuple from its callback
    }
    if (_listeners.count(t.local_port)) {
      accept(t, h);
    } else {
      reply_rst(t, h);
    }
    return;
  }
  if (f) {
    f->on_packet(h, payload);
    return;
  }
  ++_stats.rx_no_flow;
  // Tell the sender of DATA or SYN-ACK that this tuple has no flow here.
  if (h.flags == net_flag::data || h.flags == net_flag::syn_ack) reply_rst(t, h);
}

void endpoint::reply_rst(const flow_tuple& t, const header& in) {
  header h;
  h.flags = net_flag::rst;
  h.seqno = 0;
  h.ackno = in.seqno;  // names the packet we could not place (docs/protocol.md)
  ++_stats.rst_replies;
  emit(t, h, nullptr, 0);
}

void endpoint::flush() {
  if (_depth == 0 && !_graveyard.empty()) reap();
  scope g(*this);
  std::size_t held = 0;
  for (std::size_t i = 0; i < _ack_list.size(); ++i) {
    flow* f = _ack_list[i];
    if (!f->_ack_pending || f->_state == flow_state::closed) {
      f->_in_ack_list = false;
    } else if (f->hold_ack()) {
      _ack_list[held++] = f;  // waits one more flush for DATA to carry it
    } else {
      f->_in_ack_list = false;
      f->send_ack();
    }
  }
  _ack_list.resize(held);
  if (held) _env.want_flush();
}

void endpoint::queue_ack(flow& f) {
  if (f._in_ack_list) return;
  f._in_ack_list = true;
  _ack_list.push_back(&f);
}

bool endpoint::emit(const flow_tuple& t, const header& h, const uint8_t* payload, std::size_t len) {
  tx_handle th;
  uint8_t* p = _env.alloc_tx(t, header_size + len, th);
  if (!p) {
    ++_stats.tx_alloc_failed;
    return false;
  }
  encode(h, p);
  if (len) std::memcpy(p + header_size, payload, len);
  _env.transmit(t, th);
  ++_stats.tx_packets;
  return true;
}

bool endpoint::emit_ref(const flow_tuple& t, const header& h, message& m, std::size_t off,
                        std::size_t len) {
  tx_handle th;
  uint8_t* p = _env.alloc_tx_ref(t, header_size, m, off, len, th);
  if (!p) return emit(t, h, m.data() + off, len);
  encode(h, p);
  _env.transmit(t, th);
  ++_stats.tx_packets;
  ++_stats.tx_zero_copy;
  return true;
}

void endpoint::unlink(flow& f) noexcept {
  auto it = _flows.find(f._tuple);
  if (_memo_flow == &f) _memo_flow = nullptr;
  if (it != _flows.end() && it->second.get() == &f) {
    _graveyard.push_back(std::move(it->second));
    _flows.erase(it);
    // Parked in the graveyard until retire()/keep_zombie() decides.
  }
}

void endpoint::keep_zombie(flow& f) {
  for (auto it = _graveyard.begin(); it != _graveyard.end(); ++it) {
    if (it->get() == &f) {
      _zombies.push_back(std::move(*it));
      _graveyard.erase(it);
      return;
    }
  }
}

void endpoint::retire(flow& f) {
  auto ack = std::find(_ack_list.begin(), _ack_list.end(), &f);
  if (ack != _ack_list.end()) _ack_list.erase(ack);
  f._in_ack_list = false;
  unlink(f);
  for (auto it = _zombies.begin(); it != _zombies.end(); ++it) {
    if (it->get() == &f) {
      _graveyard.push_back(std::move(*it));
      _zombies.erase(it);
      break;
    }
  }
  if (!_reaper.armed()) _reaper.arm_at(_env.wheel(), _env.now_ns() / 1000);
}

void endpoint::reap() {
  if (_depth) {
    if (!_reaper.armed()) _reaper.arm_at(_env.wheel(), _env.now_ns() / 1000 + 1);
    return;
  }
  // Destroying a flow runs no owner code, so this cannot re-enter.
  auto dead = std::move(_graveyard);
  _graveyard.clear();
  dead.clear();
}

const char* to_string(flow_error e) noexcept {
  switch (e) {
    case flow_error::none:
      return "none";
    case flow_error::connect_timeout:
      return "connect timeout";
    case flow_error::refused:
      return "refused";
    case flow_error::timeout:
      return "timeout";
    case flow_error::peer_reset:
      return "peer reset";
    case flow_error::peer_restarted:
      return "peer restarted";
    case flow_error::protocol_error:
      return "protocol error";
  }
  return "?";
}

}  // namespace machnet::net::transport
