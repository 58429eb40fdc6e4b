// Integration tests of port + engine over an in-process ring link: two hosts,
// 2 queues x 2 shards each, emulated RSS — every packet of every flow lands on
// its owner shard; ARP resolves over the link; malformed frames are counted.
#include <catch2/catch.hpp>

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <array>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "machnet/net/engine.hh"
#include "machnet/net/ring_link.hh"
#include "machnet/runtime/smp.hh"
#include "machnet/runtime/when_all.hh"

using namespace machnet;
using namespace machnet::net;
using namespace std::chrono_literals;

namespace {

const ipv4_addr ip_a{0x0a000001}, ip_b{0x0a000002};

port_config ring_port_cfg(uint16_t queues, uint8_t host) {
  port_config c;
  c.mac = mac_addr{{0x02, 0, 0, 0, 0, host}};
  c.queues = queues;
  c.rss = rss_mode::emulated;
  c.mbufs_per_queue = 4095;
  return c;
}

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

struct shard_state {
  std::unique_ptr<engine> a, b;
  echo_server server;
  echo_client client;
  std::vector<flow_tuple> flows;
};

}  // namespace

TEST_CASE("two hosts over a ring link, 2 queues x 2 shards, emulated RSS: packets land on owners") {
  eal_start({});
  constexpr unsigned shards = 2, flows_per_shard = 64, rounds = 16;
  ring_link link("rl1", shards);
  port pa(link.port_a(), ring_port_cfg(shards, 1));
  port pb(link.port_b(), ring_port_cfg(shards, 2));
  REQUIRE(pa.mode() == rss_mode::emulated);
  REQUIRE(pa.mac() != pb.mac());
  engine_config ca, cb;
  ca.ip = ip_a;
  cb.ip = ip_b;
  engine_group ga(pa, shards, ca), gb(pb, shards, cb);
  std::array<shard_state, shards> st;

  std::vector<reactor_config> rc(shards);
  smp s(rc);
  int rc_main = s.run([&]() -> task<int> {
    for (unsigned i = 0; i < shards; ++i)
      co_await submit_to(i, [&, i] {
        auto& x = st[i];
        x.a = std::make_unique<engine>(ga, i);
        x.b = std::make_unique<engine>(gb, i);
        x.b->listen(9000, &x.server);
        x.client.expect_shard = i;
        source_port_allocator alloc(pa.rss(), uint16_t(i));
        for (unsigned k = 0; k < flows_per_shard; ++k) {
          auto pick = alloc.allocate(ip_a, ip_b, 9000);
          REQUIRE(pick);
          flow_tuple f{ip_a, ip_b, pick.port, 9000};
          x.flows.push_back(f);
          x.a->attach(f, &x.client);
        }
      });
    // Every shard sends `rounds` datagrams on each of its flows.
    std::vector<task<void>> senders;
    for (unsigned i = 0; i < shards; ++i)
      senders.push_back([](shard_state* x, unsigned i) -> task<void> {
        co_await submit_to(i, [x, i]() -> task<void> {
          uint32_t tag = 0xC0FFEE00u + i;
          for (unsigned r = 0; r < rounds; ++r) {
            for (auto& f : x->flows) x->a->send_udp(f, &tag, sizeof tag);
            co_await sleep(1ms);
          }
        });
      }(&st[i], i));
    co_await when_all(std::move(senders));
    // Wait (bounded) for the echoes.
    for (int wait = 0; wait < 500; ++wait) {
      uint64_t got = 0;
      for (unsigned i = 0; i < shards; ++i)
        got += co_await submit_to(i, [&, i] { return st[i].client.received; });
      if (got == uint64_t(shards) * flows_per_shard * rounds) break;
      co_await sleep(10ms);
    }
    for (unsigned i = 0; i < shards; ++i)
      co_await submit_to(i, [&, i] {
        st[i].a.reset();
        st[i].b.reset();
      });
    co_return 0;
  });
  REQUIRE(rc_main == 0);
  uint64_t server_rx = 0, client_rx = 0;
  for (unsigned i = 0; i < shards; ++i) {
    INFO("shard " << i);
    CHECK(st[i].server.misplaced == 0);
    CHECK(st[i].client.misplaced == 0);
    CHECK(st[i].client.corrupt == 0);
    CHECK(st[i].client.received == flows_per_shard * rounds);
    server_rx += st[i].server.received;
    client_rx += st[i].client.received;
  }
  REQUIRE(server_rx == uint64_t(shards) * flows_per_shard * rounds);
  REQUIRE(client_rx == server_rx);
  // Both of B's shards did receive traffic (the RSS model spreads flows).
  REQUIRE(st[0].server.received > 0);
  REQUIRE(st[1].server.received > 0);
}

TEST_CASE("malformed frames are counted by reason and dropped, never crash") {
  eal_start({});
  ring_link link("rl2", 1);
  port pa(link.port_a(), ring_port_cfg(1, 1));
  port pb(link.port_b(), ring_port_cfg(1, 2));
  engine_config ca;
  ca.ip = ip_a;
  ca.gratuitous_arp = false;
  engine_group ga(pa, 1, ca);
  rte_mempool* mp = rte_pktmbuf_pool_create("mf_pool", 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
  REQUIRE(mp);

  auto inject = [&](const std::vector<uint8_t>& bytes) {
    rte_mbuf* m = rte_pktmbuf_alloc(mp);
    REQUIRE(m);
    char* d = rte_pktmbuf_append(m, uint16_t(bytes.size()));
    if (!bytes.empty()) std::memcpy(d, bytes.data(), bytes.size());
    REQUIRE(rte_ring_enqueue(link.rx_ring_a(0), m) == 0);
  };
  // A valid UDP frame to mutate.
  std::vector<uint8_t> good(udp_headers_len + 16, 0xab);
  REQUIRE(build_udp(good.data(), good.size(), mac_addr{{2, 0, 0, 0, 0, 9}}, pa.mac(), ip_b, ip_a,
                    5555, 9000, 16, true) == udp_headers_len);
  std::vector<std::vector<uint8_t>> frames;
  for (std::size_t len : {0, 5, 13, 20, 33, 40}) frames.emplace_back(good.begin(), good.begin() + len);
  auto ipv6 = good;
  ipv6[12] = 0x86;
  ipv6[13] = 0xdd;
  frames.push_back(ipv6);
  auto bad_ipck = good;
  bad_ipck[ipv4_offset + 10] ^= 0xff;
  frames.push_back(bad_ipck);
  auto bad_udpck = good;
  bad_udpck[udp_payload_offset + 3] ^= 0x01;
  frames.push_back(bad_udpck);
  auto bad_len = good;
  bad_len[ipv4_offset + 2] = 0x7f;  // total length beyond the frame
  frames.push_back(bad_len);
  auto frag = good;
  frag[ipv4_offset + 6] |= 0x20;  // MF, with a correct header checksum
  frag[ipv4_offset + 10] = frag[ipv4_offset + 11] = 0;
  uint16_t ck = inet_cksum(frag.data() + ipv4_offset, ipv4_hdr_len);
  frag[ipv4_offset + 10] = uint8_t(ck >> 8);
  frag[ipv4_offset + 11] = uint8_t(ck);
  frames.push_back(frag);
  for (auto& f : frames) inject(f);
  inject(good);  // one good datagram: no listener, counted as such

  engine_counters c;
  smp s(std::vector<reactor_config>(1));
  s.run([&]() -> task<int> {
    engine e(ga, 0);
    for (int i = 0; i < 100 && e.counters().rx_packets < frames.size() + 1; ++i) co_await sleep(1ms);
    c = e.counters();
    co_return 0;
  });
  INFO(c.drops.str());
  REQUIRE(c.rx_packets == frames.size() + 1);
  REQUIRE(c.drops.total() == frames.size());
  REQUIRE(c.drops[drop_reason::truncated_ethernet] == 3);  // 0, 5, 13 bytes
  REQUIRE(c.drops[drop_reason::truncated_ip] == 2);        // 20, 33 bytes
  REQUIRE(c.drops[drop_reason::not_ipv4] == 1);
  REQUIRE(c.drops[drop_reason::bad_ip_checksum] == 1);
  REQUIRE(c.drops[drop_reason::bad_udp_checksum] == 1);
  REQUIRE(c.drops[drop_reason::bad_ip_length] == 2);  // 40 bytes; total length too big
  REQUIRE(c.drops[drop_reason::ip_fragment] == 1);
  REQUIRE(c.udp_no_handler == 1);
  rte_mempool_free(mp);
}
