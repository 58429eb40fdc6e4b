// sidecar_shard: channels, listeners and flow routing on one machnetd shard.
#include "machnet/net/sidecar_shard.hh"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "machnet/runtime/log.hh"
#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/smp.hh"

namespace machnet::net {
namespace {

// A flow's context names its channel: (channel id, channel shard), never a pointer.
void* bind_ctx(uint32_t channel, unsigned shard) noexcept {
  return reinterpret_cast<void*>((uintptr_t(channel) << 16) | uintptr_t(shard & 0xffff) | (uintptr_t(1) << 62));
}
bool unbind_ctx(const void* ctx, uint32_t& channel, unsigned& shard) noexcept {
  auto v = reinterpret_cast<uintptr_t>(ctx);
  if (!(v & (uintptr_t(1) << 62))) return false;
  channel = uint32_t((v >> 16) & 0xffffffffu);
  shard = unsigned(v & 0xffff);
  return true;
}

int errno_of(transport::flow_error e) noexcept {
  switch (e) {
    case transport::flow_error::none: return 0;
    case transport::flow_error::connect_timeout: return ETIMEDOUT;
    case transport::flow_error::refused: return ECONNREFUSED;
    case transport::flow_error::timeout: return ETIMEDOUT;
    case transport::flow_error::peer_reset: return ECONNRESET;
    case transport::flow_error::peer_restarted: return ECONNRESET;
    case transport::flow_error::protocol_error: return EPROTO;
  }
  return ECONNABORTED;
}

// The one copy out of the channel: its buffer chain into a message.
transport::message gather(std::size_t len, std::span<const std::span<const uint8_t>> parts) {
  transport::message m(len);
  std::size_t off = 0;
  for (auto p : parts) {
    std::memcpy(m.data() + off, p.data(), p.size());
    off += p.size();
  }
  return m;
}

// Forwarded messages in flight per flow before the flow holds (back-pressure).
constexpr unsigned max_forward_inflight = 64;
// Messages taken from one channel's TX ring per poll (fairness across channels).
constexpr unsigned tx_budget = 64;

}  // namespace

sidecar_shard::sidecar_shard(sidecar_shards& all, engine_group& g, unsigned shard,
                             const transport::transport_config& tc)
    : _all(all), _id(shard) {
  _engine = std::make_unique<engine>(g, shard);
  _ts = std::make_unique<transport_shard>(*_engine, *this, tc);
  reactor::local().register_poller(this);
}

sidecar_shard::~sidecar_shard() {
  *_alive = false;
  reactor::local().unregister_poller(this);
  for (auto& [id, c] : _channels) unwatch(*c);
  _channels.clear();
  _ts.reset();
  _engine.reset();
}

void sidecar_shard::spawn_on(unsigned shard, std::function<void()> fn) {
  if (shard == _id) {
    fn();
    return;
  }
  reactor::local().spawn([shard, fn = std::move(fn)]() mutable -> task<void> {
    co_await submit_to(shard, std::move(fn));
  });
}

sidecar_shard::channel* sidecar_shard::find(uint32_t id) noexcept {
  auto it = _channels.find(id);
  return it == _channels.end() ? nullptr : it->second.get();
}

shm::channel_engine& sidecar_shard::open_channel(uint32_t id, uint64_t app, const shm::channel_params& p) {
  auto c = std::make_unique<channel>();
  c->id = id;
  c->app = app;
  std::string name = fmt::format("machnet-ch{}", id);
  c->ch = std::make_unique<shm::channel_engine>(p, name.c_str());
  // The app rings this eventfd when we may sleep: it must wake the shard.
  reactor::local().watch_fd(c->ch->engine_doorbell());
  auto& ref = *c->ch;
  _channels.emplace(id, std::move(c));
  return ref;
}

void sidecar_shard::unwatch(channel& c) { reactor::local().unwatch_fd(c.ch->engine_doorbell()); }

void sidecar_shard::abort_flow(const flow_tuple& t) {
  if (transport::flow* f = _ts->endpoint().find(t)) {
    f->set_context(nullptr);
    f->abort();
  }
}

void sidecar_shard::close_flow(const flow_tuple& t) {
  transport::flow* f = _ts->endpoint().find(t);
  if (!f) return;
  f->set_context(nullptr);
  f->close();
  // Linger, bounded (SO_LINGER's idea): what the app sent gets linger_s to
  // go out; a flow still closing then (a dead app's megabytes queued toward a
  // slow peer) is reset so its memory and tuple come back.
  reactor::local().spawn([this, t, f, alive = _alive]() -> task<void> {
    co_await sleep(std::chrono::seconds(linger_s));
    if (*alive && _ts->endpoint().find(t) == f && f->context() == nullptr) f->abort();
  });
}

void sidecar_shard::close_channel(uint32_t id, bool tell_app) {
  auto it = _channels.find(id);
  if (it == _channels.end()) return;
  channel& c = *it->second;
  log::info("channel {} closed ({} flow(s), {} listening port(s)){}", id, c.flows.size(), c.ports.size(),
            tell_app ? ", app told" : "");
  if (tell_app) c.ch->shut();
  // Messages the app queued just before it went are still sent (bug: an app
  // that sent and exited at once could lose its last message).
  auto sink = [this, &c](const shm::flow_info& fi, std::size_t len,
                         std::span<const std::span<const uint8_t>> parts) { return send_tx(c, fi, len, parts); };
  c.tx_stalled = false;
  for (uint32_t n = 0; n < c.ch->map().ring_slots() && c.ch->pop_tx(sink); ++n) {
  }
  // Like a socket's close: what the app sent is still delivered, then the
  // flow closes (or fails after the retries if the peer is gone).
  for (auto& [t, r] : c.flows) {
    flow_tuple tt = t;
    if (r.shard == _id) close_flow(tt);
    else spawn_on(r.shard, [s = _all.shard[r.shard], tt] { s->close_flow(tt); });
  }
  for (uint16_t port : c.ports)
    for (sidecar_shard* s : _all.shard)
      spawn_on(s->_id, [s, port, id] { s->remove_listener(port, id); });
  unwatch(c);
  _channels.erase(it);
}

void sidecar_shard::close_all() {
  std::vector<uint32_t> ids;
  for (auto& [id, c] : _channels) ids.push_back(id);
  for (uint32_t id : ids) close_channel(id, true);
}

bool sidecar_shard::add_listener(uint16_t port, unsigned shard, uint32_t channel) {
  auto [it, fresh] = _listeners.try_emplace(port, listener{shard, channel});
  if (!fresh) return it->second.channel == channel && it->second.shard == shard;
  if (!_ts->listen(port)) {
    _listeners.erase(it);
    return false;
  }
  return true;
}

void sidecar_shard::remove_listener(uint16_t port, uint32_t channel) {
  auto it = _listeners.find(port);
  if (it == _listeners.end() || it->second.channel != channel) return;
  _listeners.erase(it);
  _ts->unlisten(port);
}

sidecar_shard::counters sidecar_shard::count() const {
  counters k;
  k.channels = _channels.size();
  k.flows = _ts->endpoint().flow_count();
  k.listeners = _listeners.size();
  for (auto& [id, c] : _channels) {
    k.engine_bufs += c->ch->engine_buffers();
    k.app_bufs += c->ch->app_buffers();
    k.bad_input += c->ch->refusals() + c->bad_input;
    k.held += c->pending.size();
  }
  return k;
}

// --- the poller --------------------------------------------------------------

bool sidecar_shard::poll() {
  bool did = false;
  for (auto& [id, c] : _channels) did |= serve(*c);
  return did;
}

bool sidecar_shard::pure_poll() {
  for (auto& [id, c] : _channels)
    if (c->ch->pending()) return true;
  return false;
}

bool sidecar_shard::try_enter_interrupt_mode() {
  bool ok = true;
  for (auto& [id, c] : _channels) ok &= c->ch->enter_sleep();
  _sleeping = true;
  if (!ok) exit_interrupt_mode();  // work arrived: stay awake, apps stop ringing
  return ok;
}

void sidecar_shard::exit_interrupt_mode() {
  if (!_sleeping) return;
  _sleeping = false;
  for (auto& [id, c] : _channels) c->ch->leave_sleep();
}

bool sidecar_shard::serve(channel& c) {
  shm::channel_engine& ch = *c.ch;
  bool did = false;
  if (ch.reclaim()) {
    did = true;
    // Buffers came back: forwarded messages first (they are older), then the
    // local flows that held theirs.
    while (!c.pending.empty()) {
      held_rx& h = c.pending.front();
      if (!ch.deliver(h.flow, h.msg.bytes())) break;
      c.pending.pop_front();
    }
    if (c.pending.empty() && !c.held_local.empty()) {
      auto held = std::move(c.held_local);
      c.held_local.clear();
      for (const flow_tuple& t : held)
        if (transport::flow* f = _ts->endpoint().find(t)) f->resume_rx();
    }
  }
  shm::ctrl_req r;
  while (ch.pop_ctrl(r)) {
    handle_ctrl(c, r);
    did = true;
  }
  if (!c.tx_stalled) {
    auto sink = [this, &c](const shm::flow_info& fi, std::size_t len,
                           std::span<const std::span<const uint8_t>> parts) {
      return send_tx(c, fi, len, parts);
    };
    for (unsigned n = 0; n < tx_budget && ch.pop_tx(sink); ++n) did = true;
  }
  ch.flush();
  return did;
}

// --- control requests ----------------------------------------------------------

void sidecar_shard::handle_ctrl(channel& c, const shm::ctrl_req& r) {
  shm::ctrl_resp resp{};
  resp.id = r.id;
  auto answer = [&](int status) {
    resp.status = status;
    c.ch->complete(resp);
  };
  if (r.local_ip != 0 && r.local_ip != _all.ip.v &&
      (r.op == shm::ctrl_op::listen || r.op == shm::ctrl_op::connect)) {
    ++c.bad_input;
    return answer(EADDRNOTAVAIL);
  }
  switch (r.op) {
    case shm::ctrl_op::listen: {
      if (r.local_port == 0) {
        ++c.bad_input;
        return answer(EINVAL);
      }
      // Shard 0 arbitrates a port; then every shard gets a replica.
      uint32_t id = c.id;
      uint16_t port = r.local_port;
      uint64_t req = r.id;
      unsigned me = _id;
      reactor::local().spawn([this, id, port, req, me]() -> task<void> {
        bool ok = true;
        for (sidecar_shard* s : _all.shard)
          ok &= co_await submit_to(s->_id, [s, port, me, id] { return s->add_listener(port, me, id); });
        channel* c = find(id);
        if (!ok) {
          // Someone else listens there: undo our replicas (theirs stay).
          for (sidecar_shard* s : _all.shard)
            co_await submit_to(s->_id, [s, port, id] { s->remove_listener(port, id); });
        } else if (c) {
          c->ports.push_back(port);
        } else {  // the channel went away meanwhile
          for (sidecar_shard* s : _all.shard)
            co_await submit_to(s->_id, [s, port, id] { s->remove_listener(port, id); });
        }
        if (c) {
          shm::ctrl_resp resp{};
          resp.id = req;
          resp.status = ok ? 0 : EADDRINUSE;
          c->ch->complete(resp);
          c->ch->flush();
        }
      });
      return;
    }
    case shm::ctrl_op::connect: {
      if (r.remote_port == 0 || r.remote_ip == 0) {
        ++c.bad_input;
        return answer(EINVAL);
      }
      port_error why{};
      transport::flow* f = _ts->connect(ipv4_addr{r.remote_ip}, r.remote_port, &why);
      if (!f) return answer(EADDRNOTAVAIL);
      f->set_context(bind_ctx(c.id, _id));
      c.flows[f->tuple()] = route{_id, true, r.id};
      return;  // answered by on_connected / on_error
    }
    case shm::ctrl_op::close: {
      flow_tuple t = to_tuple(r.flow);
      auto it = c.flows.find(t);
      if (it == c.flows.end()) {
        ++c.bad_input;
        return answer(ENOTCONN);
      }
      unsigned where = it->second.shard;
      c.flows.erase(it);
      auto close_it = [s = _all.shard[where], t] {
        if (transport::flow* f = s->_ts->endpoint().find(t)) {
          f->set_context(nullptr);
          f->close();
        }
      };
      spawn_on(where, close_it);
      return answer(0);
    }
  }
  ++c.bad_input;
  answer(EINVAL);
}

// --- TX: app -> flow -------------------------------------------------------------

bool sidecar_shard::send_tx(channel& c, const shm::flow_info& fi, std::size_t len,
                            std::span<const std::span<const uint8_t>> parts) {
  flow_tuple t = to_tuple(fi);
  auto it = c.flows.find(t);
  if (it == c.flows.end() || len == 0) {  // not this channel's flow (or gone): dropped
    ++c.bad_input;
    return true;
  }
  const unsigned where = it->second.shard;
  const std::size_t limit = _ts->endpoint().config().tx_queue_bytes;
  if (where == _id) {
    transport::flow* f = _ts->endpoint().find(t);
    if (!f || !f->is_open()) return true;  // ended: on_error tells the route
    if (f->tx_queued_bytes() + len > limit && f->tx_queued_bytes() > 0) {
      c.tx_stalled = true;  // on_writable resumes
      return false;
    }
    f->send(gather(len, parts));
    return true;
  }
  // The flow lives on another shard (accepted there): ship the bytes.
  unsigned& inflight = c.remote_tx[t];
  if (inflight >= max_forward_inflight) {
    c.tx_stalled = true;
    return false;
  }
  ++inflight;
  reactor::local().spawn(forward_tx(_all.shard[where], c.id, t, gather(len, parts)));
  return true;
}

task<void> sidecar_shard::forward_tx(sidecar_shard* dst, uint32_t id, flow_tuple t, transport::message m) {
  auto alive = _alive;
  co_await submit_to(dst->_id, [dst, t, &m] {
    if (transport::flow* f = dst->_ts->endpoint().find(t); f && f->is_open()) f->send(std::move(m));
  });
  if (!*alive) co_return;
  if (channel* c = find(id)) {
    if (auto r = c->remote_tx.find(t); r != c->remote_tx.end() && --r->second == 0) c->remote_tx.erase(r);
    c->tx_stalled = false;
  }
}

void sidecar_shard::on_writable(transport::flow& f) {
  uint32_t id;
  unsigned shard;
  if (!unbind_ctx(f.context(), id, shard)) return;
  if (shard == _id) {
    if (channel* c = find(id)) c->tx_stalled = false;
  }
}

// --- RX: flow -> app ---------------------------------------------------------------

void sidecar_shard::deliver_or_queue(channel& c, const shm::flow_info& fi, transport::message m) {
  if (c.pending.empty() && c.ch->deliver(fi, m.bytes())) return;
  c.pending.push_back(held_rx{fi, std::move(m)});
}

bool sidecar_shard::on_message(transport::flow& f, transport::message& m) {
  uint32_t id;
  unsigned shard;
  if (!unbind_ctx(f.context(), id, shard)) return true;  // no channel: dropped
  const flow_tuple t = f.tuple();
  if (shard == _id) {
    channel* c = find(id);
    if (!c) return true;
    if (c->pending.empty() && c->held_local.empty() && c->ch->deliver(to_info(t), m.bytes())) return true;
    c->held_local.insert(t);  // back-pressure: the transport holds it
    return false;
  }
  unsigned& inflight = _fwd_inflight[t];
  if (inflight >= max_forward_inflight) {
    _fwd_held.insert(t);
    return false;
  }
  ++inflight;
  reactor::local().spawn(forward_rx(_all.shard[shard], id, t, std::move(m)));
  return true;
}

// A named coroutine, not a lambda: GCC 12 destroyed a coroutine lambda's
// move-only capture twice (a double free of the message, found by ASan).
task<void> sidecar_shard::forward_rx(sidecar_shard* dst, uint32_t id, flow_tuple t, transport::message m) {
  auto alive = _alive;
  co_await submit_to(dst->_id, [dst, id, t, &m] {
    if (channel* c = dst->find(id)) dst->deliver_or_queue(*c, to_info(t), std::move(m));
  });
  if (!*alive) co_return;
  auto it = _fwd_inflight.find(t);
  if (it != _fwd_inflight.end() && --it->second == 0) {
    _fwd_inflight.erase(it);
    if (_fwd_held.erase(t))
      if (transport::flow* fl = _ts->endpoint().find(t)) fl->resume_rx();
  }
}

// --- flow life cycle ------------------------------------------------------------------

void sidecar_shard::on_connected(transport::flow& f) {
  uint32_t id;
  unsigned shard;
  if (!unbind_ctx(f.context(), id, shard)) return;
  channel* c = find(id);
  auto it = c ? c->flows.find(f.tuple()) : decltype(c->flows.end()){};
  if (!c || it == c->flows.end()) {
    f.set_context(nullptr);
    f.abort();
    return;
  }
  it->second.connecting = false;
  shm::ctrl_resp resp{};
  resp.id = it->second.ctrl_id;
  resp.status = 0;
  resp.flow = to_info(f.tuple());
  c->ch->complete(resp);
  c->ch->flush();
}

void sidecar_shard::on_accept(transport::flow& f) {
  auto l = _listeners.find(f.tuple().local_port);
  if (l == _listeners.end()) {
    f.abort();
    return;
  }
  const uint32_t id = l->second.channel;
  const unsigned shard = l->second.shard;
  f.set_context(bind_ctx(id, shard));
  const flow_tuple t = f.tuple();
  const unsigned here = _id;
  sidecar_shard* owner = _all.shard[shard];
  spawn_on(shard, [owner, id, t, here] {
    if (channel* c = owner->find(id)) {
      c->flows[t] = route{here};
    } else {  // the channel closed meanwhile: reset the flow where it lives
      owner->spawn_on(here, [s = owner->_all.shard[here], t] { s->abort_flow(t); });
    }
  });
}

void sidecar_shard::flow_gone(const flow_tuple& t, uint32_t id, unsigned shard, int status) {
  sidecar_shard* owner = _all.shard[shard];
  _fwd_inflight.erase(t);
  _fwd_held.erase(t);
  spawn_on(shard, [owner, id, t, status] {
    channel* c = owner->find(id);
    if (!c) return;
    auto it = c->flows.find(t);
    if (it == c->flows.end()) return;
    if (it->second.connecting) {
      shm::ctrl_resp resp{};
      resp.id = it->second.ctrl_id;
      resp.status = status ? status : ECONNABORTED;
      c->ch->complete(resp);
      c->ch->flush();
    }
    c->held_local.erase(t);
    c->remote_tx.erase(t);
    c->flows.erase(it);
  });
}

void sidecar_shard::on_error(transport::flow& f, transport::flow_error e,
                             std::vector<transport::message> unacked) {
  log::warn("flow failed: {} ({} unacked message(s)): {}", transport::to_string(e), unacked.size(), f.describe());
  uint32_t id;
  unsigned shard;
  if (!unbind_ctx(f.context(), id, shard)) return;
  flow_gone(f.tuple(), id, shard, errno_of(e));
}

void sidecar_shard::on_closed(transport::flow& f) {
  uint32_t id;
  unsigned shard;
  if (!unbind_ctx(f.context(), id, shard)) return;
  flow_gone(f.tuple(), id, shard, 0);
}

}  // namespace machnet::net
