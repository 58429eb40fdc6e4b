// app_stack: the network stack of a runtime app (include/machnet/machnet.hh)
// — one engine + transport per shard of the app itself, and the awaitable
// flows, listeners and connects over it.
#include <cerrno>
#include <cstring>
#include <system_error>
#include <unordered_map>

#include "machnet/machnet.hh"
#include "machnet/net/engine.hh"
#include "machnet/net/transport_shard.hh"
#include "machnet/runtime/condition.hh"
#include "machnet/runtime/log.hh"
#include "machnet/runtime/smp.hh"

namespace machnet {
namespace detail {

struct conn_state {
  net::transport::flow* f = nullptr;  // null once the flow ended
  unsigned shard = 0;
  net::flow_tuple tuple;
  net::transport::flow_stats last_stats;  // the flow's counters when it ended
  std::deque<message> rx;
  std::size_t rx_bytes = 0;
  bool established = false;
  bool held = false;  // the transport holds messages we refused
  int error = 0;      // errno once ended
  condition rx_cv, tx_cv, up_cv;

  /// The flow is no longer ours: keep its last counters, forget it.
  void drop_flow() noexcept {
    if (!f) return;
    last_stats = f->stats();
    f->set_context(nullptr);
    f = nullptr;
  }
};

struct listener_state {
  uint16_t port = 0;
  bool claimed = false;  // a listener object exists on this shard
  std::deque<std::shared_ptr<conn_state>> backlog;
  condition cv;
};

}  // namespace detail

namespace {

using detail::conn_state;
using detail::listener_state;

[[noreturn]] void fail(int err, const char* what) {
  throw std::system_error(err, std::generic_category(), what);
}

int errno_of(net::transport::flow_error e) noexcept {
  using fe = net::transport::flow_error;
  switch (e) {
    case fe::none: return EPIPE;
    case fe::connect_timeout: return ETIMEDOUT;
    case fe::refused: return ECONNREFUSED;
    case fe::timeout: return ETIMEDOUT;
    case fe::peer_reset: return ECONNRESET;
    case fe::peer_restarted: return ECONNRESET;
    case fe::protocol_error: return EPROTO;
  }
  return ECONNABORTED;
}

// One shard's stack.
class shard_stack final : public net::transport::transport_owner {
 public:
  shard_stack(net::engine_group& g, unsigned shard, const stack_config& cfg)
      : _rx_limit(cfg.rx_queue_bytes), _tx_limit(cfg.transport.tx_queue_bytes) {
    _engine = std::make_unique<net::engine>(g, shard);
    _ts = std::make_unique<net::transport_shard>(*_engine, *this, cfg.transport);
  }
  ~shard_stack() override {
    for (auto& [t, c] : _conns) {
      if (auto* f = c->f) {
        c->drop_flow();
        f->abort();
      }
      end(*c, ECONNABORTED);
    }
    _conns.clear();
    for (auto& [p, l] : _listeners) l->cv.notify_all();
    _ts.reset();
    _engine.reset();
  }

  net::transport_shard& ts() noexcept { return *_ts; }
  std::size_t rx_limit() const noexcept { return _rx_limit; }
  std::size_t tx_limit() const noexcept { return _tx_limit; }

  std::shared_ptr<listener_state> listener_for(uint16_t port) {
    auto& l = _listeners[port];
    if (!l) {
      l = std::make_shared<listener_state>();
      l->port = port;
    }
    return l;
  }
  bool has_listener(uint16_t port) const { return _listeners.count(port) != 0; }

  std::shared_ptr<conn_state> adopt(net::transport::flow& f) {
    auto c = std::make_shared<conn_state>();
    c->f = &f;
    c->shard = reactor::local().shard_id();
    c->tuple = f.tuple();
    f.set_context(c.get());
    _conns[f.tuple()] = c;
    return c;
  }

  void forget(conn_state& c) {
    c.drop_flow();
    _conns.erase(c.tuple);
  }

 private:
  static conn_state* of(net::transport::flow& f) noexcept { return static_cast<conn_state*>(f.context()); }

  void end(conn_state& c, int err) {
    if (!c.error) c.error = err;
    c.drop_flow();
    c.rx_cv.notify_all();
    c.tx_cv.notify_all();
    c.up_cv.notify_all();
  }

  void on_connected(net::transport::flow& f) override {
    if (conn_state* c = of(f)) {
      c->established = true;
      c->up_cv.notify_all();
    }
  }
  void on_accept(net::transport::flow& f) override {
    auto c = adopt(f);
    c->established = true;
    auto l = listener_for(f.tuple().local_port);
    l->backlog.push_back(std::move(c));
    l->cv.notify_one();
  }
  bool on_message(net::transport::flow& f, net::transport::message& m) override {
    conn_state* c = of(f);
    if (!c) return true;  // nobody wants it
    if (c->rx_bytes >= _rx_limit) {
      c->held = true;  // back-pressure: the transport keeps it
      return false;
    }
    c->rx_bytes += m.size();
    c->rx.push_back(std::move(m));
    c->rx_cv.notify_one();
    return true;
  }
  void on_error(net::transport::flow& f, net::transport::flow_error e,
                std::vector<net::transport::message> unacked) override {
    // A silent peer is worth a line in the log (the app only sees ETIMEDOUT);
    // refusals and resets are the app's business.
    using fe = net::transport::flow_error;
    if (e == fe::timeout || e == fe::connect_timeout || e == fe::protocol_error)
      log::warn("flow failed: {} ({} unacked message(s)): {}", net::transport::to_string(e), unacked.size(),
                f.describe());
    if (conn_state* c = of(f)) {
      auto keep = _conns[f.tuple()];
      end(*c, errno_of(e));
      _conns.erase(f.tuple());
    }
  }
  void on_closed(net::transport::flow& f) override {
    if (conn_state* c = of(f)) {
      auto keep = _conns[f.tuple()];
      end(*c, EPIPE);
      _conns.erase(f.tuple());
    }
  }
  void on_writable(net::transport::flow& f) override {
    if (conn_state* c = of(f)) c->tx_cv.notify_all();
  }

  std::size_t _rx_limit, _tx_limit;
  std::unique_ptr<net::engine> _engine;
  std::unique_ptr<net::transport_shard> _ts;
  std::unordered_map<net::flow_tuple, std::shared_ptr<conn_state>, net::flow_tuple_hash> _conns;
  std::unordered_map<uint16_t, std::shared_ptr<listener_state>> _listeners;
};

thread_local shard_stack* tls_stack = nullptr;

struct global_stack {
  std::unique_ptr<net::port> dev;
  std::unique_ptr<net::engine_group> group;
};
global_stack* g_stack = nullptr;

shard_stack& local_stack() {
  if (!tls_stack) fail(ENOTCONN, "machnet: the stack is not running on this shard (start_stack)");
  return *tls_stack;
}

}  // namespace

task<void> start_stack(stack_config cfg) {
  if (g_stack) fail(EALREADY, "machnet::start_stack");
  const unsigned n = smp::count();
  auto g = std::make_unique<global_stack>();
  cfg.port.queues = uint16_t(n);
  g->dev = std::make_unique<net::port>(cfg.port);
  net::engine_config ec;
  ec.ip = cfg.ip;
  ec.udp_checksum = cfg.udp_checksum;
  g->group = std::make_unique<net::engine_group>(*g->dev, n, ec);
  for (auto& [ip, mac] : cfg.static_arp) g->group->arp().set_static(ip, mac);
  g_stack = g.release();
  for (unsigned i = 0; i < n; ++i)
    co_await submit_to(i, [&cfg] { tls_stack = new shard_stack(*g_stack->group, reactor::local().shard_id(), cfg); });
}

task<void> stop_stack() {
  if (!g_stack) co_return;
  for (unsigned i = 0; i < smp::count(); ++i)
    co_await submit_to(i, [] {
      delete tls_stack;
      tls_stack = nullptr;
    });
  delete g_stack;
  g_stack = nullptr;
}

// --- connection -----------------------------------------------------------------

connection& connection::operator=(connection&& o) noexcept {
  if (this != &o) {
    close();
    _s = std::move(o._s);
  }
  return *this;
}

connection::~connection() { close(); }

void connection::close() {
  if (!_s) return;
  if (_s->f && tls_stack) {
    net::transport::flow* f = _s->f;
    f->close();  // on_closed / on_error ends the state
  }
  _s.reset();
}

net::flow_tuple connection::tuple() const { return _s ? _s->tuple : net::flow_tuple{}; }
unsigned connection::shard() const { return _s ? _s->shard : 0; }

net::transport::flow_stats connection::stats() const {
  if (!_s) return {};
  return _s->f ? _s->f->stats() : _s->last_stats;
}

task<void> connection::send(message m) {
  auto s = _s;
  if (!s) fail(EBADF, "machnet::connection::send");
  if (m.empty()) fail(EINVAL, "machnet::connection::send: empty message");
  if (m.size() > (std::size_t(8) << 20)) fail(EMSGSIZE, "machnet::connection::send");
  for (;;) {
    if (!s->f) fail(s->error ? s->error : EPIPE, "machnet::connection::send");
    shard_stack& st = local_stack();
    std::size_t queued = s->f->tx_queued_bytes();
    if (queued == 0 || queued + m.size() <= st.tx_limit()) break;
    // The transport tells only owners that asked (on_writable).
    s->f->want_writable();
    co_await s->tx_cv.wait();
  }
  auto r = s->f->send(std::move(m));
  using sr = net::transport::send_result;
  if (r == sr::ok) co_return;
  fail(r == sr::not_open ? EPIPE : r == sr::too_big ? EMSGSIZE : EAGAIN, "machnet::connection::send");
}

task<void> connection::send(std::span<const uint8_t> bytes) { return send(message::copy_of(bytes)); }

message connection::try_recv() {
  if (!_s || _s->rx.empty()) return {};
  message m = std::move(_s->rx.front());
  _s->rx.pop_front();
  _s->rx_bytes -= m.size();
  if (_s->held && _s->rx_bytes <= local_stack().rx_limit() / 2) {
    _s->held = false;
    if (_s->f) _s->f->resume_rx();
  }
  return m;
}

task<message> connection::recv() {
  auto s = _s;
  if (!s) fail(EBADF, "machnet::connection::recv");
  while (s->rx.empty()) {
    if (s->error || !s->f) fail(s->error ? s->error : EPIPE, "machnet::connection::recv");
    co_await s->rx_cv.wait();
  }
  co_return try_recv();
}

// --- listen / accept / connect ----------------------------------------------------

listener::~listener() {
  if (_s) _s->claimed = false;
}

uint16_t listener::port() const { return _s ? _s->port : 0; }

task<connection> listener::accept() {
  auto s = _s;
  if (!s) fail(EBADF, "machnet::listener::accept");
  while (s->backlog.empty()) {
    if (!tls_stack) fail(ECONNABORTED, "machnet::listener::accept");
    co_await s->cv.wait();
  }
  auto c = std::move(s->backlog.front());
  s->backlog.pop_front();
  co_return connection(std::move(c));
}

task<listener> listen(uint16_t port) {
  shard_stack& me = local_stack();
  if (port == 0) fail(EINVAL, "machnet::listen: port 0");
  if (me.has_listener(port) && me.listener_for(port)->claimed) fail(EADDRINUSE, "machnet::listen");
  // Every shard listens: a SYN may hash to any queue. Each keeps its own backlog.
  bool ok = true;
  for (unsigned i = 0; i < smp::count(); ++i)
    ok &= co_await submit_to(i, [port] {
      shard_stack& s = *tls_stack;
      if (s.has_listener(port)) return true;  // already listening there
      if (!s.ts().listen(port)) return false;
      s.listener_for(port);
      return true;
    });
  if (!ok) fail(EADDRINUSE, "machnet::listen");
  auto l = me.listener_for(port);
  l->claimed = true;
  co_return listener(std::move(l));
}

task<connection> connect(net::ipv4_addr remote, uint16_t port) {
  shard_stack& me = local_stack();
  if (port == 0 || remote.v == 0) fail(EINVAL, "machnet::connect");
  net::port_error why{};
  net::transport::flow* f = me.ts().connect(remote, port, &why);
  if (!f) fail(EADDRNOTAVAIL, "machnet::connect: no source port");
  auto c = me.adopt(*f);
  while (!c->established) {
    if (c->error) fail(c->error, "machnet::connect");
    co_await c->up_cv.wait();
  }
  co_return connection(std::move(c));
}

}  // namespace machnet
