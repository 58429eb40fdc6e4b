// ring_link: rte_eth_from_rings on two sets of rings, crossed.
#include "machnet/net/ring_link.hh"

#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ring.h>

#include <fmt/format.h>

#include <stdexcept>

namespace machnet::net {

ring_link::ring_link(const std::string& name, uint16_t queues, unsigned ring_size) {
  for (uint16_t q = 0; q < queues; ++q) {
    auto ab = fmt::format("{}_ab{}", name, q), ba = fmt::format("{}_ba{}", name, q);
    rte_ring* r1 = rte_ring_create(ab.c_str(), ring_size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    rte_ring* r2 = rte_ring_create(ba.c_str(), ring_size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!r1 || !r2)
      throw std::runtime_error(fmt::format("ring_link {}: cannot create rings: {}", name,
                                           rte_strerror(rte_errno)));
    _ab.push_back(r1);
    _ba.push_back(r2);
  }
  int a = rte_eth_from_rings((name + "_a").c_str(), _ba.data(), queues, _ab.data(), queues,
                             SOCKET_ID_ANY);
  int b = rte_eth_from_rings((name + "_b").c_str(), _ab.data(), queues, _ba.data(), queues,
                             SOCKET_ID_ANY);
  if (a < 0 || b < 0)
    throw std::runtime_error(fmt::format("ring_link {}: rte_eth_from_rings failed: {}", name,
                                         rte_strerror(rte_errno)));
  _a = uint16_t(a);
  _b = uint16_t(b);
}

ring_link::~ring_link() {
  for (auto* r : _ab) rte_ring_free(r);
  for (auto* r : _ba) rte_ring_free(r);
}

}  // namespace machnet::net
