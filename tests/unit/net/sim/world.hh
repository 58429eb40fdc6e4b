// world: the deterministic network simulator for the transport — hosts with a
// virtual clock and their own timer wheels, one-way links with seeded faults
// (loss, reorder, duplication, bit flips, delay, jitter, down/up) and an
// optional bottleneck (bandwidth + FIFO), and a UDP-checksum layer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <utility>
#include <vector>

#include "machnet/net/transport/endpoint.hh"
#include "machnet/net/transport/env.hh"
#include "machnet/net/types.hh"
#include "machnet/runtime/timer.hh"

namespace machnet::net::sim {

using namespace machnet::net::transport;

/// Faults and shape of one direction of a link. Probabilities are per packet.
struct link_config {
  uint64_t delay_ns = 5'000;  ///< propagation, one way
  uint64_t jitter_ns = 0;     ///< + uniform [0, jitter]
  double loss = 0;
  double duplicate = 0;  ///< a second copy with its own delay
  double reorder = 0;    ///< held back by + uniform [reorder_min, reorder_max]
  uint64_t reorder_min_ns = 5'000, reorder_max_ns = 50'000;
  double corrupt = 0;           ///< 1–3 random bit flips anywhere in the UDP payload
  double bandwidth_bps = 0;     ///< 0: infinite (no queue)
  std::size_t queue_bytes = 0;  ///< FIFO limit in bytes (0: unbounded); tail drop
};

struct link_stats {
  uint64_t sent = 0, delivered = 0, lost = 0, down_drops = 0, queue_drops = 0;
  uint64_t duplicated = 0, reordered = 0, corrupted = 0;
  /// Time packets waited in the FIFO (bottleneck links), sum and count.
  uint64_t queue_wait_ns = 0, queued_packets = 0, max_queue_bytes = 0;
};

class world;

/// One direction between two hosts.
class link {
 public:
  link(world& w, link_config c, uint64_t seed) : _w(w), _c(c), _rng(seed) {}
  link_config& config() noexcept { return _c; }
  const link_stats& stats() const noexcept { return _s; }
  void reset_stats() noexcept { _s = {}; }
  bool up() const noexcept { return _up; }
  void set_up(bool up) noexcept { _up = up; }
  /// Sees every packet entering the link: return false to drop it (tests use
  /// it to drop or record specific packets).
  std::function<bool(const flow_tuple& from_sender, std::vector<uint8_t>& bytes)> filter;

 private:
  friend class world;
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(_rng); }
  uint64_t between(uint64_t lo, uint64_t hi) {
    return hi <= lo ? lo : std::uniform_int_distribution<uint64_t>(lo, hi)(_rng);
  }
  world& _w;
  link_config _c;
  std::mt19937_64 _rng;
  link_stats _s;
  bool _up = true;
  uint64_t _busy_until = 0;  // FIFO: when the last queued packet leaves
};

/// A simulated machine: the transport's environment (clock = the world's,
/// its own timer wheel, TX into the world's links) and its endpoint.
class host final : public transport_env {
 public:
  host(world& w, ipv4_addr ip, unsigned index);
  ~host() override { ep.reset(); }

  uint64_t now_ns() override;
  timer_wheel& wheel() override { return _wheel; }
  uint8_t* alloc_tx(const flow_tuple& t, std::size_t len, tx_handle& h) override;
  void transmit(const flow_tuple& t, tx_handle& h) override;
  /// Now if nothing waits in the RX queue, else when it was last drained.
  uint64_t rx_polled_ns() override;
  /// Packets leave at transmit() here: only counted.
  void push_tx() override { ++pushes; }
  /// The next poll (flush) comes as if packets had arrived now.
  void want_flush() override;
  /// The host is busy until `t_ns` (e.g. sending a window): arriving packets
  /// wait in its RX queue until then; its timers still run.
  void pause_rx_until(uint64_t t_ns) { _rx_paused_until = t_ns; }

  /// Creates (or re-creates: a restart loses all state) the endpoint.
  transport::endpoint& start(transport_owner& owner, transport_config cfg) {
    ep.reset();
    ep = std::make_unique<transport::endpoint>(*this, owner, cfg);
    return *ep;
  }
  void stop() { ep.reset(); }

  ipv4_addr ip;
  unsigned index;
  std::unique_ptr<transport::endpoint> ep;
  /// Packets arriving within this window are handled as one RX burst
  /// (then flush()); 0 batches only simultaneous arrivals.
  uint64_t rx_batch_ns = 0;
  uint64_t checksum_drops = 0;
  uint64_t pushes = 0;  // push_tx() calls
  uint64_t flush_requests = 0;  // want_flush() calls
  /// Off: corrupted packets reach the transport (tests its validation).
  bool verify_checksum = true;

 private:
  friend class world;
  world& _w;
  timer_wheel _wheel;
  std::vector<uint32_t> _rxq;  // packet slab indices
  bool _poll_scheduled = false;
  uint64_t _rx_paused_until = 0;
  uint64_t _last_poll_ns = 0;
};

/// The simulation: a virtual clock in ns and one event queue.
class world {
 public:
  explicit world(uint64_t seed, uint64_t start_ns = 1'000'000'000) : _now(start_ns), _seed(seed) {}
  world(const world&) = delete;
  world& operator=(const world&) = delete;
  ~world() {
    // Endpoints first: their flows' timers live on the hosts' wheels.
    for (auto& h : _hosts) h->ep.reset();
  }

  uint64_t now_ns() const noexcept { return _now; }
  uint64_t seed() const noexcept { return _seed; }

  host& add_host(ipv4_addr ip) {
    _hosts.push_back(std::make_unique<host>(*this, ip, unsigned(_hosts.size())));
    return *_hosts.back();
  }
  /// Both directions between a and b; returns {a→b, b→a}.
  std::pair<link*, link*> connect(host& a, host& b, link_config ab, link_config ba) {
    auto* l1 = add_link(a, b, ab);
    auto* l2 = add_link(b, a, ba);
    return {l1, l2};
  }
  link* route(ipv4_addr from, ipv4_addr to) {
    auto it = _routes.find({from.v, to.v});
    return it == _routes.end() ? nullptr : it->second;
  }

  /// Runs `fn` at virtual time `t_ns`.
  void at(uint64_t t_ns, std::function<void()> fn) {
    uint32_t idx;
    if (_free_calls.empty()) {
      idx = uint32_t(_calls.size());
      _calls.push_back(std::move(fn));
    } else {
      idx = _free_calls.back();
      _free_calls.pop_back();
      _calls[idx] = std::move(fn);
    }
    push({std::max(t_ns, _now), 0, ev_call, 0, idx});
  }

  /// Runs until `done()` is true (checked after each step) or the clock passes
  /// `until_ns`. Returns done().
  template <class Done>
  bool run(Done&& done, uint64_t until_ns) {
    while (!done()) {
      if (!step(until_ns)) return done();
    }
    return true;
  }
  void run_until(uint64_t until_ns) {
    run([] { return false; }, until_ns);
  }

  uint64_t events() const noexcept { return _events; }

 private:
  friend class host;
  enum : uint32_t { ev_deliver = 0, ev_call = 1, ev_poll = 2 };
  struct event {
    uint64_t t;
    uint64_t seq;
    uint32_t type;
    uint32_t host;
    uint32_t arg;
  };
  struct later {
    bool operator()(const event& a, const event& b) const noexcept {
      return a.t != b.t ? a.t > b.t : a.seq > b.seq;
    }
  };
  struct packet {
    flow_tuple from;  // as seen by the sender
    std::vector<uint8_t> bytes;
    uint64_t sum = 0;
    uint32_t dst = 0;  // host index
    link* via = nullptr;
  };

  link* add_link(host& a, host& b, link_config c) {
    uint64_t s = _seed * 0x9e3779b97f4a7c15ull + 0x1234567 * (_links.size() + 1);
    _links.push_back(std::make_unique<link>(*this, c, s));
    _routes[{a.ip.v, b.ip.v}] = _links.back().get();
    _dst_of[_links.back().get()] = b.index;
    return _links.back().get();
  }

  void push(event e) {
    e.seq = _seq++;
    _q.push(e);
  }

  uint32_t new_packet() {
    if (_free_pkts.empty()) {
      _pkts.emplace_back();
      return uint32_t(_pkts.size() - 1);
    }
    uint32_t i = _free_pkts.back();
    _free_pkts.pop_back();
    return i;
  }
  void free_packet(uint32_t i) {
    _pkts[i].bytes.clear();
    _free_pkts.push_back(i);
  }

  /// The checksum the real path gets from UDP (modelled as a strong hash so a
  /// corrupted packet is always caught).
  static uint64_t checksum(const flow_tuple& f, const std::vector<uint8_t>& b) {
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t(f.local_ip.v) << 32 | f.remote_ip.v) ^
                 (uint64_t(f.local_port) << 16 | f.remote_port);
    std::size_t i = 0, n = b.size();
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, b.data() + i, 8);
      h = (h ^ w) * 0x100000001b3ull;
      h ^= h >> 29;
    }
    for (; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
    return h ^ n;
  }

  // A packet leaves a host onto link `l`.
  void send(uint32_t pi) {
    packet& p = _pkts[pi];
    link& l = *p.via;
    ++l._s.sent;
    if (l.filter && !l.filter(p.from, p.bytes)) {
      free_packet(pi);
      return;
    }
    if (!l._up) {
      ++l._s.down_drops;
      free_packet(pi);
      return;
    }
    const auto& c = l._c;
    // Bottleneck FIFO first: loss on the wire happens after the queue.
    uint64_t depart = _now;
    if (c.bandwidth_bps > 0) {
      uint64_t wire = p.bytes.size() + 42 + 24;  // Eth/IP/UDP + preamble, IFG, FCS
      uint64_t tx_ns = uint64_t(double(wire) * 8e9 / c.bandwidth_bps);
      uint64_t start = std::max(_now, l._busy_until);
      uint64_t backlog_ns = start - _now;
      uint64_t backlog_bytes = uint64_t(double(backlog_ns) * c.bandwidth_bps / 8e9);
      if (c.queue_bytes && backlog_bytes + wire > c.queue_bytes) {
        ++l._s.queue_drops;
        free_packet(pi);
        return;
      }
      l._s.queue_wait_ns += backlog_ns;
      ++l._s.queued_packets;
      l._s.max_queue_bytes = std::max(l._s.max_queue_bytes, backlog_bytes + wire);
      l._busy_until = start + tx_ns;
      depart = l._busy_until;
    }
    if (c.loss > 0 && l.uniform() < c.loss) {
      ++l._s.lost;
      free_packet(pi);
      return;
    }
    if (c.duplicate > 0 && l.uniform() < c.duplicate) {
      ++l._s.duplicated;
      uint32_t di = new_packet();
      packet& d = _pkts[di];
      packet& src = _pkts[pi];  // new_packet() may have moved the slab
      d.from = src.from;
      d.bytes = src.bytes;
      d.sum = src.sum;
      d.dst = src.dst;
      d.via = src.via;
      schedule_arrival(di, depart);
    }
    schedule_arrival(pi, depart);
  }

  void schedule_arrival(uint32_t pi, uint64_t depart) {
    packet& p = _pkts[pi];
    link& l = *p.via;
    const auto& c = l._c;
    uint64_t t = depart + c.delay_ns;
    if (c.jitter_ns) t += l.between(0, c.jitter_ns);
    if (c.reorder > 0 && l.uniform() < c.reorder) {
      ++l._s.reordered;
      t += l.between(c.reorder_min_ns, c.reorder_max_ns);
    }
    if (c.corrupt > 0 && l.uniform() < c.corrupt && !p.bytes.empty()) {
      ++l._s.corrupted;
      unsigned flips = unsigned(l.between(1, 3));
      for (unsigned k = 0; k < flips; ++k) {
        uint64_t bit = l.between(0, p.bytes.size() * 8 - 1);
        p.bytes[bit / 8] ^= uint8_t(1u << (bit % 8));
      }
    }
    push({t, 0, ev_deliver, p.dst, pi});
  }

  void deliver(uint32_t pi) {
    packet& p = _pkts[pi];
    host& h = *_hosts[p.dst];
    if (!p.via->_up) {  // the outage also eats packets in flight
      ++p.via->_s.down_drops;
      free_packet(pi);
      return;
    }
    if (h.verify_checksum && checksum(p.from, p.bytes) != p.sum) {
      ++h.checksum_drops;
      free_packet(pi);
      return;
    }
    ++p.via->_s.delivered;
    h._rxq.push_back(pi);
    schedule_poll(h);
  }

  // The host's next poll (RX burst, then flush): rx_batch_ns from now, or
  // when it is no longer busy.
  void schedule_poll(host& h) {
    if (h._poll_scheduled) return;
    h._poll_scheduled = true;
    push({std::max(_now + h.rx_batch_ns, h._rx_paused_until), 0, ev_poll, h.index, 0});
  }

  void poll(host& h) {
    h._poll_scheduled = false;
    h._last_poll_ns = _now;
    auto q = std::move(h._rxq);
    h._rxq.clear();
    for (uint32_t pi : q) {
      packet& p = _pkts[pi];
      flow_tuple t{p.from.remote_ip, p.from.local_ip, p.from.remote_port, p.from.local_port};
      if (h.ep) h.ep->on_packet(t, p.bytes);
      free_packet(pi);
    }
    if (h.ep) h.ep->flush();
    if (h._rxq.empty()) h._rxq = std::move(q), h._rxq.clear();
  }

  // One event or one timer tick; false when nothing is left before until_ns.
  bool step(uint64_t until_ns) {
    uint64_t next_timer = UINT64_MAX;
    host* th = nullptr;
    for (auto& h : _hosts) {
      uint64_t d = h->_wheel.next_deadline();
      if (d != UINT64_MAX && d * 1000 < next_timer) {
        next_timer = d * 1000;
        th = h.get();
      }
    }
    uint64_t next_ev = _q.empty() ? UINT64_MAX : _q.top().t;
    uint64_t t = std::min(next_timer, next_ev);
    if (t == UINT64_MAX || t > until_ns) {
      if (until_ns != UINT64_MAX && _now < until_ns) _now = until_ns;
      for (auto& h : _hosts) h->_wheel.advance(_now / 1000);
      return false;
    }
    _now = std::max(_now, t);
    ++_events;
    if (next_timer <= next_ev) {
      th->_wheel.advance(_now / 1000);
      return true;
    }
    event e = _q.top();
    _q.pop();
    switch (e.type) {
      case ev_deliver:
        deliver(e.arg);
        break;
      case ev_poll:
        poll(*_hosts[e.host]);
        break;
      case ev_call: {
        auto fn = std::move(_calls[e.arg]);
        _calls[e.arg] = nullptr;
        _free_calls.push_back(e.arg);
        fn();
        break;
      }
    }
    return true;
  }

  uint64_t _now;
  uint64_t _seed;
  uint64_t _seq = 0, _events = 0;
  std::priority_queue<event, std::vector<event>, later> _q;
  std::vector<std::unique_ptr<host>> _hosts;
  std::vector<std::unique_ptr<link>> _links;
  std::map<std::pair<uint32_t, uint32_t>, link*> _routes;
  std::map<const link*, uint32_t> _dst_of;
  std::vector<packet> _pkts;
  std::vector<uint32_t> _free_pkts;
  std::vector<std::function<void()>> _calls;
  std::vector<uint32_t> _free_calls;
};

inline host::host(world& w, ipv4_addr a, unsigned i)
    : ip(a), index(i), _w(w), _wheel(w.now_ns() / 1000) {}

inline uint64_t host::now_ns() { return _w._now; }

inline uint64_t host::rx_polled_ns() { return _rxq.empty() ? _w._now : _last_poll_ns; }

inline void host::want_flush() {
  ++flush_requests;
  _w.schedule_poll(*this);
}

inline uint8_t* host::alloc_tx(const flow_tuple& t, std::size_t len, tx_handle& h) {
  uint32_t pi = _w.new_packet();
  auto& p = _w._pkts[pi];
  p.from = t;
  p.bytes.resize(len);
  h.aux = pi;
  return p.bytes.data();
}

inline void host::transmit(const flow_tuple& t, tx_handle& h) {
  uint32_t pi = uint32_t(h.aux);
  auto& p = _w._pkts[pi];
  link* l = _w.route(t.local_ip, t.remote_ip);
  if (!l) {
    _w.free_packet(pi);
    return;
  }
  p.via = l;
  p.dst = _w._dst_of[l];
  p.sum = world::checksum(p.from, p.bytes);
  _w.send(pi);
}

}  // namespace machnet::net::sim
