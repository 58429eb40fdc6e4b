// echo_hosts: the two ends used by the engine integration tests — a server
// that echoes and checks each datagram arrived on its owner shard, and a
// client that checks echoes come back to the shard that sent them.
#pragma once

#include <rte_mbuf.h>

#include <cstring>
#include <memory>
#include <vector>

#include "machnet/net/engine.hh"
#include "machnet/runtime/smp.hh"
#include "machnet/runtime/when_all.hh"

namespace machnet::net::test {

// Host B: records where each datagram arrived and echoes it back.
struct echo_server : udp_handler {
  uint64_t received = 0, misplaced = 0;
  void on_udp(engine& e, rte_mbuf* m, const parse_result& p) override {
    flow_tuple f = p.rx_flow();
    ++received;
    if (e.group().owner_of(f) != e.shard()) ++misplaced;
    e.send_udp(f, rte_pktmbuf_mtod(m, uint8_t*) + p.payload_offset, p.payload_len);
    rte_pktmbuf_free(m);
  }
};

// Host A: counts echoes; they must come back to the shard that sent them.
struct echo_client : udp_handler {
  uint64_t received = 0, misplaced = 0, corrupt = 0;
  unsigned expect_shard = 0;
  void on_udp(engine& e, rte_mbuf* m, const parse_result& p) override {
    ++received;
    if (e.shard() != expect_shard) ++misplaced;
    uint32_t tag;
    if (p.payload_len != sizeof tag) ++corrupt;
    else {
      std::memcpy(&tag, rte_pktmbuf_mtod(m, uint8_t*) + p.payload_offset, sizeof tag);
      if (tag != 0xC0FFEE00u + e.shard()) ++corrupt;
    }
    rte_pktmbuf_free(m);
  }
};

/// One shard's client end: its engine, its flows and what came back.
struct client_side {
  std::unique_ptr<engine> e;
  echo_client client;
  std::vector<flow_tuple> flows;
};

/// Run on shard 0: on every shard, creates the client engine of `g`, opens
/// `flows` flows to remote:rport with source ports chosen so replies land on
/// that shard, sends `rounds` datagrams per flow (1 ms apart), waits (bounded)
/// for all echoes, then destroys the engines.
inline task<void> run_clients(engine_group& g, std::vector<client_side>& cs, ipv4_addr local,
                              ipv4_addr remote, uint16_t rport, unsigned flows, unsigned rounds) {
  const unsigned n = unsigned(cs.size());
  for (unsigned i = 0; i < n; ++i)
    co_await submit_to(i, [&, i] {
      auto& x = cs[i];
      x.e = std::make_unique<engine>(g, i);
      x.client.expect_shard = i;
      source_port_allocator alloc(g.flow_rss(), uint16_t(i));
      for (unsigned k = 0; k < flows; ++k) {
        auto pick = alloc.allocate(local, remote, rport);
        if (!pick) throw std::runtime_error("source port allocation failed");
        flow_tuple f{local, remote, pick.port, rport};
        x.flows.push_back(f);
        x.e->attach(f, &x.client);
      }
    });
  std::vector<task<void>> senders;
  for (unsigned i = 0; i < n; ++i)
    senders.push_back([](client_side* x, unsigned i, unsigned rounds) -> task<void> {
      co_await submit_to(i, [x, i, rounds]() -> task<void> {
        uint32_t tag = 0xC0FFEE00u + i;
        for (unsigned r = 0; r < rounds; ++r) {
          for (auto& f : x->flows) x->e->send_udp(f, &tag, sizeof tag);
          co_await sleep(std::chrono::milliseconds(1));
        }
      });
    }(&cs[i], i, rounds));
  co_await when_all(std::move(senders));
  for (int wait = 0; wait < 500; ++wait) {
    uint64_t got = 0;
    for (unsigned i = 0; i < n; ++i)
      got += co_await submit_to(i, [&, i] { return cs[i].client.received; });
    if (got == uint64_t(n) * flows * rounds) break;
    co_await sleep(std::chrono::milliseconds(10));
  }
  for (unsigned i = 0; i < n; ++i) co_await submit_to(i, [&, i] { cs[i].e.reset(); });
}

}  // namespace machnet::net::test
