// recorder: helpers for exact transport scenarios in the simulator — an owner
// that records every callback, and a link tap that records (and selectively
// drops) packets by header.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "world.hh"

namespace machnet::net::sim {

/// An owner that keeps everything it is told.
struct recorder : transport_owner {
  explicit recorder(world& w) : w(w) {}
  world& w;
  struct error_event {
    flow_tuple t;
    flow_error e;
    std::vector<message> unacked;
    uint64_t at_ns;
  };
  std::vector<flow*> connected, accepted;
  uint64_t connected_at_ns = 0, accepted_at_ns = 0;
  std::vector<std::pair<flow_tuple, message>> received;
  std::vector<error_event> errors;
  std::vector<flow_tuple> closed;
  std::vector<uint64_t> acked_tags;
  bool refuse = false;  // on_message returns false

  void on_connected(flow& f) override {
    connected.push_back(&f);
    connected_at_ns = w.now_ns();
  }
  void on_accept(flow& f) override {
    accepted.push_back(&f);
    accepted_at_ns = w.now_ns();
  }
  bool on_message(flow& f, message& m) override {
    if (refuse) return false;
    received.emplace_back(f.tuple(), std::move(m));
    return true;
  }
  void on_error(flow& f, flow_error e, std::vector<message> unacked) override {
    errors.push_back({f.tuple(), e, std::move(unacked), w.now_ns()});
  }
  void on_closed(flow& f) override { closed.push_back(f.tuple()); }
  void on_acked(flow&, message& m) override { acked_tags.push_back(m.tag()); }
  int writable = 0;
  void on_writable(flow&) override { ++writable; }
};

/// Records the packets entering a link; `drop` may discard some.
struct tap {
  struct packet {
    header h;
    std::vector<uint8_t> payload;
    uint64_t at_ns;
  };
  std::vector<packet> seen;
  /// Return true to drop. Called with the packet's index among those seen.
  std::function<bool(const header&, std::size_t index)> drop;

  void attach(world& w, link* l) {
    l->filter = [this, &w](const flow_tuple&, std::vector<uint8_t>& bytes) {
      header h;
      if (decode(bytes, h) != decode_error::ok) return true;
      seen.push_back(
          {h, std::vector<uint8_t>(bytes.begin() + header_size, bytes.end()), w.now_ns()});
      return !(drop && drop(h, seen.size() - 1));
    };
  }
  std::size_t count(net_flag f) const {
    std::size_t n = 0;
    for (auto& p : seen) n += p.h.flags == f;
    return n;
  }
  std::vector<const packet*> of(net_flag f) const {
    std::vector<const packet*> v;
    for (auto& p : seen)
      if (p.h.flags == f) v.push_back(&p);
    return v;
  }
};

/// A message of `n` bytes whose byte j is (seed + j) mod 251, tagged `tag`.
inline message pattern(std::size_t n, uint8_t seed, uint64_t tag = 0) {
  message m(n);
  for (std::size_t j = 0; j < n; ++j) m.data()[j] = uint8_t((seed + j) % 251);
  m.set_tag(tag);
  return m;
}
inline bool is_pattern(const message& m, std::size_t n, uint8_t seed) {
  if (m.size() != n) return false;
  for (std::size_t j = 0; j < n; ++j)
    if (m.data()[j] != uint8_t((seed + j) % 251)) return false;
  return true;
}

}  // namespace machnet::net::sim
