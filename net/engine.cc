// engine: RX burst -> parse -> ARP / ICMP / UDP demux; TX batching per queue,
// ARP resolution for outgoing packets, software hand-off to owning shards.
#include "machnet/net/engine.hh"

#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <stdexcept>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/log.hh"
#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/smp.hh"

namespace machnet::net {

namespace {
std::atomic<unsigned> g_ring_seq{0};
constexpr unsigned handoff_ring_size = 4096;

inline uint8_t* mtod(rte_mbuf* m) { return rte_pktmbuf_mtod(m, uint8_t*); }

void write_macs(uint8_t* frame, mac_addr dst, mac_addr src) {
  std::memcpy(frame, dst.b.data(), 6);
  std::memcpy(frame + 6, src.b.data(), 6);
}
}  // namespace

const char* to_string(send_status s) noexcept {
  switch (s) {
    case send_status::queued: return "queued";
    case send_status::awaiting_arp: return "awaiting_arp";
    case send_status::arp_failed: return "arp_failed";
    case send_status::no_buffer: return "no_buffer";
  }
  return "?";
}

// ---------------------------------------------------------------- group

engine_group::engine_group(port& p, unsigned shards, engine_config cfg)
    : _port(p),
      _cfg(cfg),
      _shard_rss(rss_model::toeplitz, p.rss().key(), make_reta(uint16_t(shards), 128)),
      _engines(shards, nullptr),
      _handoff(shards, nullptr) {
  if (shards == 0) throw std::invalid_argument("engine_group: at least one shard");
  if (p.mode() == rss_mode::software && shards > 1) {
    for (unsigned s = 0; s < shards; ++s) {
      auto name = fmt::format("mn_ho{}_{}", s, g_ring_seq++);
      _handoff[s] = rte_ring_create(name.c_str(), handoff_ring_size, SOCKET_ID_ANY, RING_F_SC_DEQ);
      if (!_handoff[s])
        throw std::runtime_error(fmt::format("engine_group: cannot create hand-off ring {}", name));
    }
  }
}

engine_group::~engine_group() {
  for (auto* r : _handoff) {
    if (!r) continue;
    void* m;
    while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    rte_ring_free(r);
  }
}

const rss_config& engine_group::flow_rss() const noexcept {
  return _port.mode() == rss_mode::software ? _shard_rss : _port.rss();
}

unsigned engine_group::owner_of(const flow_tuple& f) const noexcept {
  return flow_rss().rx_queue_of(f);
}

// ---------------------------------------------------------------- engine

engine::engine(engine_group& group, unsigned shard)
    : _group(group),
      _port(group._port),
      _shard(shard),
      _queue(uint16_t(shard < group._port.queues() ? shard : shard % group._port.queues())),
      _own_queue(shard < group._port.queues()),
      _checksums(group._cfg.udp_checksum == checksum_policy::on ||
                 (group._cfg.udp_checksum == checksum_policy::automatic &&
                  !group._port.frames_trusted())),
      _rx_trusted(!_checksums && group._port.frames_trusted()),
      _zero_copy_tx(group._cfg.zero_copy_tx && !_checksums &&
                    group._port.caps().tx_copies_segments),
      _reactor(&reactor::local()),
      _pool(group._port.pool(_queue)),
      _verify_left(group._cfg.rss_verify_packets),
      _tx(group._port.queues()),
      _resolver(group._cfg.arp) {
  if (shard >= group._engines.size())
    throw std::invalid_argument(fmt::format("engine: shard {} outside the group of {}", shard,
                                            group._engines.size()));
  if (group._engines[shard]) throw std::logic_error(fmt::format("engine: shard {} taken", shard));
  eal_register_thread();
  if (_verify_left) _verifier.emplace(_port.rss());
  group._engines[shard] = this;
  _reactor->register_poller(this);
}

engine::~engine() {
  _reactor->unregister_poller(this);
  _group._engines[_shard] = nullptr;
  flush();
  for (auto& b : _tx) {
    for (uint16_t i = 0; i < b.n; ++i) rte_pktmbuf_free(b.pkts[i]);
    b.n = 0;
  }
  for (auto& [ip, v] : _arp_wait)
    for (auto& w : v) rte_pktmbuf_free(w.m);
}

// Every change of the demux tables forgets the remembered last handler.
bool engine::listen(uint16_t local_port, udp_handler* h) {
  _rx_handler_memo.h = nullptr;
  return _listeners.emplace(local_port, h).second;
}
void engine::unlisten(uint16_t local_port) {
  _rx_handler_memo.h = nullptr;
  _listeners.erase(local_port);
}
bool engine::attach(const flow_tuple& f, udp_handler* h) {
  _rx_handler_memo.h = nullptr;
  return _flows.emplace(f, h).second;
}
void engine::detach(const flow_tuple& f) {
  _rx_handler_memo.h = nullptr;
  _flows.erase(f);
}

uint8_t* engine::payload(rte_mbuf* m) noexcept { return mtod(m) + udp_payload_offset; }

uint16_t engine::tx_queue_for(const flow_tuple& f) const noexcept {
  if (_port.mode() != rss_mode::emulated) return _queue;
  return _tx_memo.get(f, [&] {
    return _port.rss().queue_of(f.local_ip, f.remote_ip, f.local_port, f.remote_port);
  });
}

rte_mbuf* engine::alloc_udp(const flow_tuple& f, uint16_t payload_len) {
  rte_mbuf* m = rte_pktmbuf_alloc(_pool);
  if (!m) {
    ++_c.tx_no_mbuf;
    return nullptr;
  }
  std::size_t len = udp_headers_len + payload_len;
  if (len > rte_pktmbuf_tailroom(m) || !rte_pktmbuf_append(m, uint16_t(len))) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  tx_headers(f).write(mtod(m), payload_len);
  return m;
}

const udp_header_template& engine::tx_headers(const flow_tuple& f) {
  auto& h = _tx_hdr_memo;
  if (!h.valid || h.flow != f) {
    h.hdr.build(mac(), mac_addr{}, f.local_ip, f.remote_ip, f.local_port, f.remote_port);
    h.flow = f;
    h.valid = true;
  }
  return h.hdr;
}

rte_mbuf* engine::alloc_udp_ext(const flow_tuple& f, uint16_t head_len, const uint8_t* ext,
                                uint16_t ext_len, rte_mbuf_ext_shared_info* shinfo) {
  rte_mbuf* mb[2];
  if (rte_pktmbuf_alloc_bulk(_pool, mb, 2) != 0) {
    ++_c.tx_no_mbuf;
    return nullptr;
  }
  rte_mbuf *m = mb[0], *x = mb[1];
  std::size_t len = udp_headers_len + head_len;
  if (len > rte_pktmbuf_tailroom(m) || !rte_pktmbuf_append(m, uint16_t(len)) ||
      !tx_headers(f).write(mtod(m), head_len + std::size_t(ext_len))) {
    rte_pktmbuf_free(m);
    rte_pktmbuf_free(x);
    return nullptr;
  }
  // The IOVA is the address itself: only CPU-copying devices get here.
  rte_mbuf_ext_refcnt_update(shinfo, 1);
  rte_pktmbuf_attach_extbuf(x, const_cast<uint8_t*>(ext), rte_iova_t(reinterpret_cast<uintptr_t>(ext)),
                            ext_len, shinfo);
  x->data_len = ext_len;
  m->next = x;
  m->nb_segs = 2;
  m->pkt_len += ext_len;
  return m;
}

void engine::finish_and_queue(rte_mbuf* m, const flow_tuple& f, mac_addr dst) {
  uint8_t* frame = mtod(m);
  write_macs(frame, dst, mac());
  if (_checksums) {
    if (_port.caps().tx_udp_cksum) {
      set_udp_pseudo_cksum(frame, rte_pktmbuf_data_len(m));
      m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_UDP_CKSUM;
      m->l2_len = eth_hdr_len;
      m->l3_len = ipv4_hdr_len;
    } else {
      finalize_udp_cksum(frame, rte_pktmbuf_data_len(m));
    }
  }
  enqueue_tx(tx_queue_for(f), m);
}

send_status engine::send(rte_mbuf* m, const flow_tuple& f) {
  // A turn sends mostly to one peer: its MAC is looked up once per turn
  // (lookup and clock read were ~5 % of a bulk sender's cycles).
  if (_arp_memo.turn == _turn && _arp_memo.ip == f.remote_ip) {
    finish_and_queue(m, f, _arp_memo.mac);
    return send_status::queued;
  }
  uint64_t now = now_us();
  if (auto dst = _group._arp.lookup(f.remote_ip, now)) {
    _arp_memo = {f.remote_ip, *dst, _turn};
    finish_and_queue(m, f, *dst);
    return send_status::queued;
  }
  switch (_resolver.request(f.remote_ip, now)) {
    case arp_resolver::action::failed:
      rte_pktmbuf_free(m);
      ++_c.arp_failed;
      return send_status::arp_failed;
    case arp_resolver::action::send_request:
      send_arp_request(f.remote_ip);
      break;
    case arp_resolver::action::wait:
      break;
  }
  if (_arp_wait_count >= _group._cfg.arp_pending_max) {
    rte_pktmbuf_free(m);
    ++_c.tx_dropped;
    return send_status::no_buffer;
  }
  _arp_wait[f.remote_ip.v].push_back({m, f});
  ++_arp_wait_count;
  return send_status::awaiting_arp;
}

send_status engine::send_udp(const flow_tuple& f, const void* data, uint16_t len) {
  rte_mbuf* m = alloc_udp(f, len);
  if (!m) return send_status::no_buffer;
  std::memcpy(payload(m), data, len);
  return send(m, f);
}

void engine::send_arp_request(ipv4_addr target) {
  rte_mbuf* m = rte_pktmbuf_alloc(_pool);
  if (!m) {
    ++_c.tx_no_mbuf;
    return;
  }
  auto* buf = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, uint16_t(arp_frame_len)));
  build_arp_request(buf, arp_frame_len, mac(), ip(), target);
  ++_c.arp_requests_sent;
  enqueue_tx(_queue, m);
}

void engine::poll_arp() {
  uint64_t now = now_us();
  for (auto it = _arp_wait.begin(); it != _arp_wait.end();) {
    ipv4_addr ip{it->first};
    if (auto dst = _group._arp.lookup(ip, now)) {
      _resolver.resolved(ip);
      for (auto& w : it->second) finish_and_queue(w.m, w.f, *dst);
      _arp_wait_count -= it->second.size();
      it = _arp_wait.erase(it);
      continue;
    }
    auto a = _resolver.request(ip, now);
    if (a == arp_resolver::action::send_request) {
      send_arp_request(ip);
    } else if (a == arp_resolver::action::failed) {
      log::warn("ARP for {} failed: dropping {} queued packet(s)", ip.str(), it->second.size());
      for (auto& w : it->second) rte_pktmbuf_free(w.m);
      _c.arp_failed += it->second.size();
      _arp_wait_count -= it->second.size();
      it = _arp_wait.erase(it);
      continue;
    }
    ++it;
  }
}

bool engine::enqueue_tx(uint16_t q, rte_mbuf* m) {
  auto& b = _tx[q];
  if (b.n == tx_batch_size) {
    uint16_t sent = _port.tx_burst(q, b.pkts.data(), b.n);
    if (sent) {  // replies are coming: poll for them soon
      _idle_sleeps = 0;
      _last_io_us = now_us();
    }
    for (uint16_t i = 0; i < sent; ++i) {
      ++_c.tx_packets;
      _c.tx_bytes += rte_pktmbuf_pkt_len(b.pkts[i]);
    }
    std::memmove(b.pkts.data(), b.pkts.data() + sent, (b.n - sent) * sizeof(rte_mbuf*));
    b.n = uint16_t(b.n - sent);
    if (b.n == tx_batch_size) {
      rte_pktmbuf_free(m);
      ++_c.tx_dropped;
      return false;
    }
  }
  b.pkts[b.n++] = m;
  return true;
}

void engine::flush() {
  for (uint16_t q = 0; q < _tx.size(); ++q) {
    auto& b = _tx[q];
    if (!b.n) continue;
    uint16_t sent = _port.tx_burst(q, b.pkts.data(), b.n);
    if (sent) {  // replies are coming: poll for them soon
      _idle_sleeps = 0;
      _last_io_us = now_us();
    }
    for (uint16_t i = 0; i < sent; ++i) {
      ++_c.tx_packets;
      _c.tx_bytes += rte_pktmbuf_pkt_len(b.pkts[i]);
    }
    if (sent < b.n)
      std::memmove(b.pkts.data(), b.pkts.data() + sent, (b.n - sent) * sizeof(rte_mbuf*));
    b.n = uint16_t(b.n - sent);
  }
}

void engine::at_burst_end(udp_handler* h) {
  for (auto* x : _burst_end)
    if (x == h) return;
  _burst_end.push_back(h);
}

void engine::handle_arp(rte_mbuf* m, const parse_result& p) {
  uint64_t now = now_us();
  _group._arp.learn(p.arp_sender_ip, p.arp_sender_mac, now);
  _arp_memo.turn = 0;  // the peer's MAC may have changed
  if (p.kind == frame_kind::arp_request) {
    // Answer in place: the reply is the same size as a request.
    rte_pktmbuf_reset(m);
    auto* buf = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, uint16_t(arp_frame_len)));
    build_arp_reply(buf, arp_frame_len, mac(), ip(), p.arp_sender_mac, p.arp_sender_ip);
    ++_c.arp_requests_answered;
    enqueue_tx(_queue, m);
    return;
  }
  ++_c.arp_replies_received;
  _resolver.resolved(p.arp_sender_ip);
  rte_pktmbuf_free(m);
}

void engine::deliver_udp(rte_mbuf* m, const parse_result& p) {
  flow_tuple f = p.rx_flow();
  // The handler of the last datagram's flow, if this is the same flow (two
  // hash lookups per packet were ~3 % of a bulk receiver's cycles).
  udp_handler* h = _rx_handler_memo.h && _rx_handler_memo.flow == f ? _rx_handler_memo.h : nullptr;
  if (!h) {
    if (auto it = _flows.find(f); it != _flows.end()) {
      h = it->second;
    } else if (auto lt = _listeners.find(f.local_port); lt != _listeners.end()) {
      h = lt->second;
    }
    if (h) _rx_handler_memo = {f, h};
  }
  if (h) {
    ++_c.udp_delivered;
    h->on_udp(*this, m, p);
    return;
  }
  ++_c.udp_no_handler;
  if (_default) return _default->on_udp(*this, m, p);
  rte_pktmbuf_free(m);
}

void engine::rx_one(rte_mbuf* m) {
  ++_c.rx_packets;
  _c.rx_bytes += rte_pktmbuf_pkt_len(m);
  if (m->nb_segs != 1) {  // we never ask for scatter; count and drop
    _c.drops.add(drop_reason::bad_ip_length);
    rte_pktmbuf_free(m);
    return;
  }
  // A trusted link (memif/ring without injected corruption, checksums not
  // `on`) skips verifying the checksums a peer still sends: nothing between
  // the two ends can have damaged the frame.
  rx_cksum_flags ck{
      _rx_trusted ||
          (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD,
      _rx_trusted ||
          (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD};
  parse_result p = parse_frame(mtod(m), rte_pktmbuf_data_len(m), ip(), mac(), ck);
  switch (p.kind) {
    case frame_kind::drop:
      if (p.reason == drop_reason::arp_not_for_us && _group._arp.find(p.arp_sender_ip))
        _group._arp.learn(p.arp_sender_ip, p.arp_sender_mac, now_us());  // refresh a neighbour
      _c.drops.count(p);
      rte_pktmbuf_free(m);
      return;
    case frame_kind::arp_request:
    case frame_kind::arp_reply:
      handle_arp(m, p);
      return;
    case frame_kind::icmp_echo_request: {
      if (!_group._cfg.answer_ping) {
        rte_pktmbuf_free(m);
        return;
      }
      uint8_t* buf = mtod(m);
      std::size_t n = build_icmp_echo_reply(buf, rte_pktmbuf_data_len(m), buf,
                                            rte_pktmbuf_data_len(m), mac());
      if (!n) {
        rte_pktmbuf_free(m);
        return;
      }
      rte_pktmbuf_trim(m, uint16_t(rte_pktmbuf_data_len(m) - n));
      ++_c.icmp_echo_answered;
      enqueue_tx(_queue, m);
      return;
    }
    case frame_kind::udp: {
      if ((_verify_left || _rss_failed) && !verify_rss(m, p)) {
        ++_c.rss_refused;
        rte_pktmbuf_free(m);
        return;
      }
      flow_tuple f = p.rx_flow();
      if (_port.mode() == rss_mode::software) {
        unsigned owner = _rx_memo.get(f, [&] { return _group.owner_of(f); });
        if (owner != _shard && _group._handoff[owner]) {
          if (rte_ring_enqueue(_group._handoff[owner], m) == 0) {
            ++_c.handed_off;
            if (auto* e = _group._engines[owner]) e->_reactor->wake();
          } else {
            ++_c.handoff_dropped;
            rte_pktmbuf_free(m);
          }
          return;
        }
      } else if (_rx_memo.get(f, [&] { return _port.rss().rx_queue_of(f); }) != _queue) {
        ++_c.rx_wrong_queue;
      }
      deliver_udp(m, p);
      return;
    }
  }
}

// The start-up check of the RSS model: while packets carrying a device hash
// keep matching the model, count them; on the first mismatch refuse to run
// rather than lose flows silently.
bool engine::verify_rss(const rte_mbuf* m, const parse_result& p) {
  if (_rss_failed) return false;
  if (!(m->ol_flags & RTE_MBUF_F_RX_RSS_HASH)) return true;
  --_verify_left;
  auto v = _verifier->observe(p.src_ip, p.dst_ip, p.src_port, p.dst_port, m->hash.rss, true);
  if (v != rss_verdict::mismatch) {
    ++_c.rss_verified;
    return true;
  }
  _rss_failed = true;
  std::string msg = fmt::format(
      "port {} shard {}: RSS verification failed: {}. Refusing to run: flows would be lost "
      "silently. Program a key the device accepts, ask for UDP ports in the hash, or run with "
      "emulated/software RSS.",
      _port.id(), _shard, _verifier->message());
  if (_group._cfg.on_rss_mismatch) {
    _group._cfg.on_rss_mismatch(msg);
  } else {
    log::error("{}", msg);
    if (auto* s = smp::instance_or_null()) s->stop(78);
    else _reactor->stop(78);
  }
  return false;
}

uint64_t engine::max_sleep_us() const {
  if (!_own_queue) return UINT64_MAX;
  const engine_config& c = _group._cfg;
  if (_idle_sleeps == 0) return c.idle_rx_poll_us;
  uint64_t us = c.idle_rx_poll_us << std::min(_idle_sleeps, 16u);
  return std::max(c.idle_rx_poll_us, std::min(us, c.idle_rx_poll_max_us));
}

bool engine::try_enter_interrupt_mode() {
  // Back off only once the queue has been quiet for a while: while packets
  // flow, a long sleep would add to every RTT the transport measures.
  if (now_us() - _last_io_us >= _group._cfg.idle_backoff_after_us) {
    if (_idle_sleeps < 64) ++_idle_sleeps;
  }
  return true;
}

bool engine::poll() {
  bool work = false;
  ++_turn;
  _rx_polled_ns = now_ns();
  if (_own_queue) {
    if (_queue == 0) _port.maintain(_rx_polled_ns / 1000);  // memif redial
    rte_mbuf* pkts[rx_burst_size];
    uint16_t n = _port.rx_burst(_queue, pkts, rx_burst_size);
    for (uint16_t i = 0; i < n; ++i) {
      if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
      rx_one(pkts[i]);
    }
    work = n > 0;
    if (work) {
      _idle_sleeps = 0;
      _last_io_us = now_us();
    }
  }
  if (rte_ring* r = _group._handoff[_shard]) {
    void* objs[rx_burst_size];
    unsigned n = rte_ring_dequeue_burst(r, objs, rx_burst_size, nullptr);
    for (unsigned i = 0; i < n; ++i) {
      auto* m = static_cast<rte_mbuf*>(objs[i]);
      ++_c.handoff_received;
      parse_result p = parse_frame(mtod(m), rte_pktmbuf_data_len(m), ip(), mac(), {true, true});
      deliver_udp(m, p);
    }
    work |= n > 0;
  }
  if (!_burst_end.empty()) {
    // Handlers may ask again while running: swap out the list first.
    std::vector<udp_handler*> due;
    due.swap(_burst_end);
    for (auto* h : due) h->on_burst_end(*this);
    if (_burst_end.empty()) {
      due.clear();
      _burst_end.swap(due);  // keep the capacity
    }
  }
  if (!_announced) {
    _announced = true;
    if (_shard == 0 && _group._cfg.gratuitous_arp) {
      if (rte_mbuf* m = rte_pktmbuf_alloc(_pool)) {
        auto* buf = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, uint16_t(arp_frame_len)));
        build_gratuitous_arp(buf, arp_frame_len, mac(), ip());
        enqueue_tx(_queue, m);
      }
    }
  }
  if (_arp_wait_count) poll_arp();
  for (auto& b : _tx)
    if (b.n) {
      work = true;
      break;
    }
  flush();
  return work;
}

bool engine::pure_poll() {
  if (!_burst_end.empty()) return true;
  for (auto& b : _tx)
    if (b.n) return true;
  if (rte_ring* r = _group._handoff[_shard]; r && !rte_ring_empty(r)) return true;
  if (_own_queue) {
    int n = rte_eth_rx_queue_count(_port.id(), _queue);
    if (n > 0) return true;
  }
  return false;
}

}  // namespace machnet::net
