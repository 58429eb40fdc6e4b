// ring_link: two ethdevs in one process wired back to back by rte_rings
// (TX queue i of one side is RX queue i of the other), for tests and
// single-process benchmarks. Behaves like memif/vhost: no RSS hash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct rte_ring;

namespace machnet::net {

class ring_link {
 public:
  /// Creates ports "<name>_a" and "<name>_b" with `queues` queue pairs each.
  /// The EAL must be running. Throws std::runtime_error on failure.
  ring_link(const std::string& name, uint16_t queues, unsigned ring_size = 1024);
  ring_link(const ring_link&) = delete;
  ring_link& operator=(const ring_link&) = delete;
  /// Frees the rings; the ports must have been closed (net::port does that).
  ~ring_link();

  uint16_t port_a() const noexcept { return _a; }
  uint16_t port_b() const noexcept { return _b; }
  /// The ring that feeds RX queue `q` of side a / side b (to inject frames).
  rte_ring* rx_ring_a(uint16_t q) const noexcept { return _ba[q]; }
  rte_ring* rx_ring_b(uint16_t q) const noexcept { return _ab[q]; }

 private:
  uint16_t _a = 0, _b = 0;
  std::vector<rte_ring*> _ab, _ba;
};

}  // namespace machnet::net
