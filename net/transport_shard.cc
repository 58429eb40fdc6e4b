// transport_shard: the glue between engine (mbufs, demux, TX) and the
// transport endpoint (protocol), one per shard.
#include "machnet/net/transport_shard.hh"

#include <rte_mbuf.h>

#include <cstdlib>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/log.hh"
#include "machnet/runtime/reactor.hh"

namespace machnet::net {

transport_shard::transport_shard(engine& e, transport::transport_owner& owner,
                                 transport::transport_config cfg)
    : _engine(e), _owner(owner), _ports(e.group().flow_rss(), uint16_t(e.shard())) {
  _ep.emplace(*this, static_cast<transport::transport_owner&>(*this), cfg);
  // Datagrams for closed ports reach the endpoint, which answers a SYN with
  // RST (the connector fails with "refused" at once instead of timing out).
  _engine.set_default_handler(this);
  reactor::local().register_poller(this);
  // MACHNET_TRACE_FLOWS=1: every flow's state and counters once a second, and
  // the engine's (debugging a stuck flow: docs/net.md).
  if (const char* v = std::getenv("MACHNET_TRACE_FLOWS"); v && *v == '1') {
    _trace.set_callback([this] {
      _ep->for_each_flow([](transport::flow& f) { log::info("trace {}", f.describe()); });
      const auto& k = _engine.counters();
      log::info("trace engine: rx {} tx {} tx_dropped {} no_mbuf {} no_handler {}", k.rx_packets, k.tx_packets,
                k.tx_dropped, k.tx_no_mbuf, k.udp_no_handler);
      _trace.arm(1'000'000);
    });
    _trace.arm(1'000'000);
  }
}

transport_shard::~transport_shard() {
  reactor::local().unregister_poller(this);
  _engine.set_default_handler(nullptr);
  _ep.reset();  // drops flows (their timers) while the engine still exists
}

bool transport_shard::try_enter_interrupt_mode() {
  bool busy = false;
  const uint64_t now = machnet::now_ns(), awake_ns = _ep->config().stay_awake_us * 1000;
  _ep->for_each_flow([&](transport::flow& f) {
    busy |= f.packets_in_flight() > 0 || now - f.last_heard_ns() < awake_ns;
  });
  return !busy;
}

void transport_shard::unlisten(uint16_t port) {
  _ep->unlisten(port);
  _engine.unlisten(port);
}

bool transport_shard::listen(uint16_t port) {
  if (!_engine.listen(port, this)) return false;
  return _ep->listen(port);
}

transport::flow* transport_shard::connect(ipv4_addr remote, uint16_t remote_port,
                                          port_error* why) {
  auto pick = _ports.allocate(_engine.ip(), remote, remote_port);
  if (!pick) {
    if (why) *why = *pick.error;
    return nullptr;
  }
  flow_tuple t{_engine.ip(), remote, pick.port, remote_port};
  _engine.attach(t, this);
  transport::flow* f = _ep->connect(t);
  if (!f) {
    _engine.detach(t);
    _ports.release(t.local_ip, t.remote_ip, t.remote_port, t.local_port);
  }
  return f;
}

void transport_shard::release(const transport::flow& f) {
  if (!f.is_connector()) return;
  const flow_tuple& t = f.tuple();
  _engine.detach(t);
  _ports.release(t.local_ip, t.remote_ip, t.remote_port, t.local_port);
}

void transport_shard::on_error(transport::flow& f, transport::flow_error e,
                               std::vector<transport::message> unacked) {
  _owner.on_error(f, e, std::move(unacked));
  release(f);
}

void transport_shard::on_closed(transport::flow& f) {
  _owner.on_closed(f);
  release(f);
}

uint64_t transport_shard::now_ns() { return machnet::now_ns(); }

timer_wheel& transport_shard::wheel() { return reactor::local().timers(); }

uint64_t transport_shard::rx_polled_ns() { return _engine.rx_polled_ns(); }

void transport_shard::push_tx() { _engine.flush_early(); }

uint8_t* transport_shard::alloc_tx(const flow_tuple& t, std::size_t len, transport::tx_handle& h) {
  rte_mbuf* m = _engine.alloc_udp(t, uint16_t(len));
  if (!m) return nullptr;
  h.p = m;
  return engine::payload(m);
}

namespace {
// Zero-copy TX: a message whose packets refer to its bytes hands its storage
// to a zc_owner and keeps only a reference. shinfo's count is 1 for the
// message plus 1 per packet; whichever drops it to zero frees the storage
// (an ACK can release the message while a retransmitted copy still waits in
// the engine's TX batch).
struct zc_owner {
  rte_mbuf_ext_shared_info shinfo{};
  transport::message storage;
};

void zc_free_cb(void*, void* opaque) { delete static_cast<zc_owner*>(opaque); }

void zc_release(void* ctx, uint8_t*, std::size_t) noexcept {
  auto* o = static_cast<zc_owner*>(ctx);
  if (rte_mbuf_ext_refcnt_update(&o->shinfo, -1) == 0) delete o;
}

zc_owner& zc_owner_of(transport::message& m) {
  if (m.releaser() == &zc_release) return *static_cast<zc_owner*>(m.release_ctx());
  auto* o = new zc_owner;
  o->shinfo.free_cb = &zc_free_cb;
  o->shinfo.fcb_opaque = o;
  rte_mbuf_ext_refcnt_set(&o->shinfo, 1);
  uint64_t tag = m.tag();
  o->storage = std::move(m);
  m = transport::message::adopt(o->storage.data(), o->storage.size(), &zc_release, o, tag);
  return *o;
}
}  // namespace

uint8_t* transport_shard::alloc_tx_ref(const flow_tuple& t, std::size_t head_len,
                                       transport::message& m, std::size_t off, std::size_t len,
                                       transport::tx_handle& h) {
  if (!_engine.zero_copy_tx() || off + len > m.size()) return nullptr;
  zc_owner& o = zc_owner_of(m);
  rte_mbuf* mb = _engine.alloc_udp_ext(t, uint16_t(head_len), m.data() + off, uint16_t(len), &o.shinfo);
  if (!mb) return nullptr;
  h.p = mb;
  return engine::payload(mb);
}

void transport_shard::transmit(const flow_tuple& t, transport::tx_handle& h) {
  _engine.send(static_cast<rte_mbuf*>(h.p), t);
  h.p = nullptr;
}

void transport_shard::on_udp(engine& e, rte_mbuf* m, const parse_result& p) {
  const uint8_t* payload = rte_pktmbuf_mtod(m, const uint8_t*) + p.payload_offset;
  _ep->on_packet(p.rx_flow(), {payload, p.payload_len});
  rte_pktmbuf_free(m);
  e.at_burst_end(this);
}

void transport_shard::on_burst_end(engine&) { _ep->flush(); }

// The engine's next poll calls on_burst_end again (and does not sleep before).
void transport_shard::want_flush() { _engine.at_burst_end(this); }

}  // namespace machnet::net
