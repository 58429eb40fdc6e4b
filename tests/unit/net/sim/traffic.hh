// traffic: the simulation's workload and oracle — messages whose sizes and
// bytes are a function of (seed, flow, direction, index), an owner that sends
// them and checks every delivery is exactly once, in order and intact, and an
// optional slow application that exerts back-pressure.
#pragma once

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "world.hh"

namespace machnet::net::sim {

inline uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// Message i of flow f in direction d (0: connector → acceptor).
struct message_gen {
  uint64_t seed;
  /// Size from a uniform 64-bit draw.
  std::function<std::size_t(uint64_t)> size_of = rpc_mix;

  uint64_t key(uint32_t f, uint32_t d, uint64_t i) const {
    return splitmix(seed ^ splitmix((uint64_t(f) << 1 | d) ^ splitmix(i + 0x5151)));
  }
  std::size_t size(uint32_t f, uint32_t d, uint64_t i) const { return size_of(key(f, d, i)); }
  void fill(uint8_t* p, std::size_t n, uint32_t f, uint32_t d, uint64_t i) const {
    uint64_t k = key(f, d, i) ^ 0xabcdef;
    std::size_t j = 0;
    for (; j + 8 <= n; j += 8) {
      uint64_t w = splitmix(k + j);
      std::memcpy(p + j, &w, 8);
    }
    if (j < n) {
      uint64_t w = splitmix(k + j);
      std::memcpy(p + j, &w, n - j);
    }
  }
  message make(uint32_t f, uint32_t d, uint64_t i) const {
    message m(size(f, d, i));
    fill(m.data(), m.size(), f, d, i);
    m.set_tag(i);
    return m;
  }
  bool check(const message& m, uint32_t f, uint32_t d, uint64_t i,
             std::vector<uint8_t>& scratch) const {
    if (m.size() != size(f, d, i)) return false;
    scratch.resize(m.size());
    fill(scratch.data(), m.size(), f, d, i);
    return std::memcmp(scratch.data(), m.data(), m.size()) == 0;
  }

  /// RPC-like: 70 % ≤ 200 B, 25 % ≤ 3000 B, 4.5 % ≤ 20 KB, 0.5 % ≤ 100 KB.
  static std::size_t rpc_mix(uint64_t r) {
    uint64_t c = r % 1000, v = r >> 10;
    if (c < 700) return 1 + v % 200;
    if (c < 950) return 201 + v % 2800;
    if (c < 995) return 3001 + v % 17000;
    return 20001 + v % 80000;
  }
};

/// One direction-pair of one flow, seen from one host.
struct stream {
  uint32_t id = 0;
  uint32_t dir_out = 0;  // direction of what this host sends
  flow* f = nullptr;
  bool connected = false, failed = false, closed = false;
  flow_error error = flow_error::none;
  uint64_t to_send = 0, next_send = 0, acked = 0;
  uint64_t received = 0;  // next expected index from the peer
  uint64_t received_bytes = 0;
  std::vector<uint64_t> returned;  // indices handed back by on_error
  std::deque<message> app_queue;   // slow-application mode: taken, not consumed
};

/// The owner on one host: sends its share, checks what arrives.
class traffic_app : public transport_owner {
 public:
  traffic_app(world& w, const message_gen& g, bool connector)
      : _w(w), _gen(g), _connector(connector) {}

  /// Messages kept queued per flow (more are sent as these are acked).
  unsigned window_msgs = 8;
  /// Messages this host sends per flow.
  uint64_t per_flow = 0;
  /// Slow-application mode: hold at most this many taken messages per flow
  /// (0: take everything), consumed one per consume_every_ns.
  std::size_t app_queue_cap = 0;
  uint64_t consume_every_ns = 0;
  /// Called for every message delivered (after checking), e.g. for goodput.
  std::function<void(stream&, const message&)> on_delivered;

  // Oracle results.
  uint64_t bad = 0, delivered = 0, acked_total = 0, errors = 0, returned_total = 0;
  uint64_t last_error_ns = 0;  // virtual time of the latest on_error
  std::string first_bad;

  std::map<flow_tuple, stream>& streams() { return _streams; }

  /// Connector side: opens flow `id` from local port 10000 + id.
  stream& open(transport::endpoint& ep, ipv4_addr local, ipv4_addr remote, uint16_t port,
               uint32_t id) {
    flow_tuple t{local, remote, uint16_t(10000 + id), port};
    stream& s = _streams[t];
    s.id = id;
    s.dir_out = 0;
    s.to_send = per_flow;
    s.f = ep.connect(t);
    top_up(s);  // queued before the handshake completes
    return s;
  }

  void on_connected(flow& f) override {
    stream& s = _streams[f.tuple()];
    s.connected = true;
    top_up(s);
  }
  void on_accept(flow& f) override {
    stream& s = _streams[f.tuple()];
    s.id = uint32_t(f.tuple().remote_port - 10000);
    s.dir_out = 1;
    s.f = &f;
    s.connected = true;
    s.to_send = per_flow;
    top_up(s);
  }
  bool on_message(flow& f, message& m) override {
    stream& s = _streams[f.tuple()];
    if (app_queue_cap && s.app_queue.size() >= app_queue_cap) return false;
    uint32_t dir_in = 1 - s.dir_out;
    if (!_gen.check(m, s.id, dir_in, s.received, _scratch)) {
      ++bad;
      if (first_bad.empty())
        first_bad = "flow " + std::to_string(s.id) + " dir " + std::to_string(dir_in) + " msg " +
                    std::to_string(s.received) + ": got " + std::to_string(m.size()) +
                    " bytes, expected " + std::to_string(_gen.size(s.id, dir_in, s.received));
    }
    ++s.received;
    ++delivered;
    s.received_bytes += m.size();
    if (on_delivered) on_delivered(s, m);
    if (app_queue_cap) {
      s.app_queue.push_back(std::move(m));
      if (s.app_queue.size() == 1) schedule_consume(f.tuple());
    } else {
      m.reset();
    }
    return true;
  }
  void on_acked(flow& f, message& m) override {
    stream& s = _streams[f.tuple()];
    if (m.tag() != s.acked) {
      ++bad;
      if (first_bad.empty())
        first_bad = "flow " + std::to_string(s.id) + ": acked msg " + std::to_string(m.tag()) +
                    ", expected " + std::to_string(s.acked);
    }
    ++s.acked;
    ++acked_total;
    top_up(s);
  }
  void on_error(flow& f, flow_error e, std::vector<message> unacked) override {
    stream& s = _streams[f.tuple()];
    s.failed = true;
    s.error = e;
    s.f = nullptr;
    ++errors;
    last_error_ns = _w.now_ns();
    // Returned whole, in order, starting at the first unacknowledged one.
    uint64_t expect = s.acked;
    for (auto& m : unacked) {
      if (m.tag() != expect || !_gen.check(m, s.id, s.dir_out, m.tag(), _scratch)) {
        ++bad;
        if (first_bad.empty())
          first_bad = "flow " + std::to_string(s.id) + ": returned msg " + std::to_string(m.tag()) +
                      " (expected " + std::to_string(expect) + ") damaged or out of order";
      }
      s.returned.push_back(m.tag());
      ++expect;
      ++returned_total;
    }
    if (expect != s.next_send) {
      ++bad;
      if (first_bad.empty())
        first_bad = "flow " + std::to_string(s.id) + ": returned up to " + std::to_string(expect) +
                    " but sent " + std::to_string(s.next_send);
    }
  }
  void on_closed(flow& f) override {
    stream& s = _streams[f.tuple()];
    s.closed = true;
    s.f = nullptr;
  }

  void top_up(stream& s) {
    while (s.f && s.next_send < s.to_send && s.next_send - s.acked < window_msgs) {
      auto r = s.f->send(_gen.make(s.id, s.dir_out, s.next_send));
      if (r != send_result::ok) break;
      ++s.next_send;
    }
  }

 private:
  void schedule_consume(flow_tuple t) {
    _w.at(_w.now_ns() + consume_every_ns, [this, t] {
      stream& s = _streams[t];
      if (s.app_queue.empty()) return;
      s.app_queue.pop_front();
      if (!s.app_queue.empty()) schedule_consume(t);
      if (s.f) s.f->resume_rx();
    });
  }

  world& _w;
  message_gen _gen;
  bool _connector;
  std::map<flow_tuple, stream> _streams;
  std::vector<uint8_t> _scratch;
};

}  // namespace machnet::net::sim
