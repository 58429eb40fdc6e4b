// Tests of net/rss: hash vectors, the ENA fixed-key variant, reply-aware source
// ports over many tuples and shard counts, the 2-tuple model, and the verifier.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "machnet/net/rss.hh"

using namespace machnet::net;

namespace {

ipv4_addr addr4(const char* s) { return *ipv4_addr::parse(s); }

constexpr rss_key ena_doc_key{0x77, 0xd1, 0xc9, 0x34, 0xa4, 0xc9, 0xbd, 0x87, 0x6e, 0x35,
                              0xdd, 0x17, 0xb2, 0xe3, 0x23, 0x9e, 0x39, 0x6d, 0x8a, 0x93,
                              0x2a, 0x95, 0xb4, 0x72, 0x3a, 0xb3, 0x7f, 0x56, 0x8e, 0xde,
                              0xb6, 0x01, 0x97, 0xaf, 0x3b, 0x2f, 0x3a, 0x70, 0xe7, 0x04};

/// Bit-by-bit Toeplitz straight from the Microsoft pseudo-code, only to
/// cross-check the DPDK-based implementation: for every set input bit, XOR in
/// the 32 key bits starting at that bit position.
uint32_t reference_toeplitz(const rss_key& key, const std::vector<uint8_t>& input, uint32_t init) {
  auto key_bit = [&](std::size_t i) -> uint32_t {
    return i < key.size() * 8 ? (key[i / 8] >> (7 - i % 8)) & 1u : 0u;
  };
  uint32_t r = init;
  for (std::size_t i = 0; i < input.size() * 8; ++i) {
    if (((input[i / 8] >> (7 - i % 8)) & 1u) == 0) continue;
    uint32_t window = 0;
    for (std::size_t j = 0; j < 32; ++j) window = (window << 1) | key_bit(i + j);
    r ^= window;
  }
  return r;
}

void put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(uint8_t(x >> s));
}
void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(uint8_t(x >> 8));
  v.push_back(uint8_t(x));
}

/// The reference model: standard Toeplitz, or the ENA fixed-key variant.
uint32_t reference_hash(rss_model model, rss_fields fields, const rss_key& key, ipv4_addr s,
                        ipv4_addr d, uint16_t sp, uint16_t dp) {
  if (model == rss_model::ena_fixed) {
    if (d < s) std::swap(s, d);
    if (dp < sp) std::swap(sp, dp);
  }
  std::vector<uint8_t> in;
  put32(in, s.v);
  put32(in, d.v);
  if (fields == rss_fields::ipv4_udp) {
    put16(in, sp);
    put16(in, dp);
  }
  if (model == rss_model::toeplitz) return reference_toeplitz(key, in, 0);
  uint32_t h = reference_toeplitz(key, in, 0xffffffffu);
  return (h & 0xffffu) | (h << 16);
}

/// Random addresses and ports from a fixed seed (reproducible runs).
struct tuple_gen {
  std::mt19937 rng{12345};
  ipv4_addr addr() { return ipv4_addr{uint32_t(rng())}; }
  uint16_t port() { return uint16_t(rng()); }
};

/// An mbuf laid out by hand in static-duration storage: no EAL, no mempool.
struct test_mbuf {
  alignas(RTE_CACHE_LINE_SIZE) unsigned char storage[sizeof(rte_mbuf) + RTE_PKTMBUF_HEADROOM + 512];
  rte_mbuf* m;

  test_mbuf() {
    std::memset(storage, 0, sizeof storage);
    m = reinterpret_cast<rte_mbuf*>(storage);
    m->buf_addr = storage + sizeof(rte_mbuf);
    m->buf_len = uint16_t(sizeof storage - sizeof(rte_mbuf));
    rte_pktmbuf_reset(m);
  }

  /// Eth [+ 802.1Q] / IPv4 / UDP with a few payload bytes.
  void udp(ipv4_addr src, ipv4_addr dst, uint16_t sport, uint16_t dport, bool vlan = false,
           uint8_t proto = IPPROTO_UDP, uint16_t frag = 0) {
    const std::size_t len = sizeof(rte_ether_hdr) + (vlan ? sizeof(rte_vlan_hdr) : 0) +
                            sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr) + 8;
    auto* p = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, uint16_t(len)));
    REQUIRE(p != nullptr);
    std::memset(p, 0, len);
    rte_ether_hdr eth{};
    eth.ether_type = rte_cpu_to_be_16(vlan ? RTE_ETHER_TYPE_VLAN : RTE_ETHER_TYPE_IPV4);
    std::memcpy(p, &eth, sizeof eth);
    std::size_t off = sizeof eth;
    if (vlan) {
      rte_vlan_hdr v{};
      v.vlan_tci = rte_cpu_to_be_16(42);
      v.eth_proto = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
      std::memcpy(p + off, &v, sizeof v);
      off += sizeof v;
    }
    rte_ipv4_hdr iph{};
    iph.version_ihl = RTE_IPV4_VHL_DEF;
    iph.total_length = rte_cpu_to_be_16(uint16_t(sizeof iph + sizeof(rte_udp_hdr) + 8));
    iph.fragment_offset = rte_cpu_to_be_16(frag);
    iph.time_to_live = 64;
    iph.next_proto_id = proto;
    iph.src_addr = rte_cpu_to_be_32(src.v);
    iph.dst_addr = rte_cpu_to_be_32(dst.v);
    std::memcpy(p + off, &iph, sizeof iph);
    off += sizeof iph;
    rte_udp_hdr u{};
    u.src_port = rte_cpu_to_be_16(sport);
    u.dst_port = rte_cpu_to_be_16(dport);
    u.dgram_len = rte_cpu_to_be_16(uint16_t(sizeof u + 8));
    std::memcpy(p + off, &u, sizeof u);
  }

  void rss(uint32_t hash, bool flag = true) {
    m->hash.rss = hash;
    if (flag) m->ol_flags |= RTE_MBUF_F_RX_RSS_HASH;
  }
};

rss_key byte_swapped_words(rss_key k) {
  for (std::size_t i = 0; i < k.size(); i += 4) std::reverse(k.begin() + i, k.begin() + i + 4);
  return k;
}

}  // namespace

TEST_CASE("rss: Microsoft verification vectors, 4-tuple and IPs only") {
  const rss_config four(rss_model::toeplitz, microsoft_rss_key, make_reta(1, 128));
  const rss_config two(rss_model::toeplitz, microsoft_rss_key, make_reta(1, 128),
                       rss_fields::ipv4_only);
  // Source 66.9.149.187:2794, destination 161.142.100.80:1766.
  CHECK(four.hash(addr4("66.9.149.187"), addr4("161.142.100.80"), 2794, 1766) == 0x51ccc178u);
  CHECK(two.hash(addr4("66.9.149.187"), addr4("161.142.100.80"), 2794, 1766) == 0x323e8fc2u);
  // Two more rows of the same table.
  CHECK(four.hash(addr4("199.92.111.2"), addr4("65.69.140.83"), 14230, 4739) == 0xc626b0eau);
  CHECK(two.hash(addr4("199.92.111.2"), addr4("65.69.140.83"), 14230, 4739) == 0xd718262au);
  CHECK(four.hash(addr4("24.19.198.95"), addr4("12.22.207.184"), 12898, 38024) == 0x5c2b394au);
  CHECK(two.hash(addr4("24.19.198.95"), addr4("12.22.207.184"), 12898, 38024) == 0xd2d0a5deu);
  // Ports don't matter in the 2-tuple model.
  CHECK(two.hash(addr4("66.9.149.187"), addr4("161.142.100.80"), 1, 2) == 0x323e8fc2u);
}

TEST_CASE(
    "rss: the ENA doc vector is standard Toeplitz (configurable-key ENA), not the fixed-key "
    "variant") {
  const auto src = addr4("1.2.3.4"), dst = addr4("1.2.3.5");
  const rss_config std_model(rss_model::toeplitz, ena_doc_key, make_reta(1, 128));
  CHECK(std_model.hash(src, dst, 7000, 7000) == 0xa9828bd4u);
  // The fixed-key algorithm with the same key gives something else entirely.
  const rss_config fixed_algo(rss_model::ena_fixed, ena_doc_key, make_reta(1, 128));
  CHECK(fixed_algo.hash(src, dst, 7000, 7000) != 0xa9828bd4u);
  // The fixed-key hardware with its own key: no published number, so pin the
  // value of the bit-by-bit reference (0x50705070) against the library.
  const rss_config fixed(rss_model::ena_fixed, ena_fixed_rss_key, make_reta(1, 128));
  CHECK(reference_hash(rss_model::ena_fixed, rss_fields::ipv4_udp, ena_fixed_rss_key, src, dst,
                       7000, 7000) == 0x50705070u);
  CHECK(fixed.hash(src, dst, 7000, 7000) == 0x50705070u);
}

TEST_CASE("rss: named keys") {
  // The ENA fixed key is Microsoft's key with its 4-byte words in reverse order.
  rss_key k{};
  for (std::size_t w = 0; w < 10; ++w)
    std::copy_n(microsoft_rss_key.begin() + 4 * (9 - w), 4, k.begin() + 4 * w);
  CHECK(k == ena_fixed_rss_key);
  CHECK(mlx5_default_rss_key[0] == 0x2c);
  CHECK(mlx5_default_rss_key[39] == 0x2a);
}

TEST_CASE(
    "rss: DPDK-based hash equals the bit-by-bit reference for every model, field set and key") {
  tuple_gen g;
  for (const rss_key& key :
       {microsoft_rss_key, mlx5_default_rss_key, ena_fixed_rss_key, ena_doc_key})
    for (rss_model model : {rss_model::toeplitz, rss_model::ena_fixed})
      for (rss_fields fields : {rss_fields::ipv4_udp, rss_fields::ipv4_only}) {
        const rss_config cfg(model, key, make_reta(4, 128), fields);
        for (int i = 0; i < 300; ++i) {
          auto s = g.addr(), d = g.addr();
          auto sp = g.port(), dp = g.port();
          REQUIRE(cfg.hash(s, d, sp, dp) == reference_hash(model, fields, key, s, d, sp, dp));
        }
      }
}

TEST_CASE("rss: ENA fixed-key variant is symmetric and replicates its low 16 bits") {
  const rss_config cfg(rss_model::ena_fixed, ena_fixed_rss_key, make_reta(8, 128));
  const rss_config std_cfg(rss_model::toeplitz, ena_fixed_rss_key, make_reta(8, 128));
  tuple_gen g;
  int std_symmetric = 0;
  for (int i = 0; i < 20000; ++i) {
    auto a = g.addr(), b = g.addr();
    auto p = g.port(), q = g.port();
    const uint32_t h = cfg.hash(a, b, p, q);
    REQUIRE(h == cfg.hash(b, a, q, p));
    // Addresses and ports are ordered independently.
    REQUIRE(h == cfg.hash(b, a, p, q));
    REQUIRE(h == cfg.hash(a, b, q, p));
    REQUIRE((h >> 16) == (h & 0xffffu));
    REQUIRE(cfg.queue_of(a, b, p, q) == cfg.queue_of(b, a, q, p));
    std_symmetric += std_cfg.hash(a, b, p, q) == std_cfg.hash(b, a, q, p);
  }
  CHECK(std_symmetric < 10);  // standard Toeplitz with this key is not symmetric
}

TEST_CASE("rss: RETA helpers and config validation") {
  auto reta = make_reta(3, 8);
  CHECK(reta == std::vector<uint16_t>{0, 1, 2, 0, 1, 2, 0, 1});
  CHECK_THROWS_AS(make_reta(3, 100), std::invalid_argument);
  CHECK_THROWS_AS(make_reta(0, 128), std::invalid_argument);
  CHECK_THROWS_AS(rss_config(rss_model::toeplitz, microsoft_rss_key, {}), std::invalid_argument);
  CHECK_THROWS_AS(rss_config(rss_model::toeplitz, microsoft_rss_key, {0, 1, 2}),
                  std::invalid_argument);

  const rss_config cfg(rss_model::toeplitz, microsoft_rss_key, make_reta(4, 128));
  CHECK(cfg.reta_mask() == 127);
  CHECK(cfg.reta_contains(3));
  CHECK_FALSE(cfg.reta_contains(4));
  const auto s = addr4("66.9.149.187"), d = addr4("161.142.100.80");
  CHECK(cfg.queue_of(s, d, 2794, 1766) == (0x51ccc178u & 127) % 4);
  // rx_queue_of looks at the received direction: src = remote, dst = local.
  const flow_tuple f{d, s, 1766, 2794};
  CHECK(cfg.rx_queue_of(f) == cfg.queue_of(s, d, 2794, 1766));
  CHECK(cfg.describe().find("6d5a56da") != std::string::npos);
}

TEST_CASE("rss: source ports map replies to the asking shard, 10 000 random tuples") {
  for (rss_model model : {rss_model::toeplitz, rss_model::ena_fixed}) {
    const rss_key& key = model == rss_model::toeplitz ? mlx5_default_rss_key : ena_fixed_rss_key;
    for (uint16_t shards : {1, 2, 4}) {
      INFO("model " << to_string(model) << ", shards " << shards);
      const rss_config cfg(model, key, make_reta(shards, 128));
      std::vector<source_port_allocator> alloc;
      for (uint16_t q = 0; q < shards; ++q) alloc.emplace_back(cfg, q);

      tuple_gen g;
      // A few local IPs and peers so that tuples repeat and ports pile up.
      std::vector<ipv4_addr> locals{addr4("10.0.0.4"), addr4("10.0.0.5")};
      std::vector<ipv4_addr> remotes;
      for (int i = 0; i < 50; ++i) remotes.push_back(g.addr());
      struct held_port {
        uint16_t shard;
        flow_tuple f;
      };
      std::vector<held_port> held;
      std::set<flow_tuple> unique;
      for (int i = 0; i < 10000; ++i) {
        const auto shard = uint16_t(g.rng() % shards);
        const auto local = locals[g.rng() % locals.size()];
        const auto remote = remotes[g.rng() % remotes.size()];
        const uint16_t rport = (g.rng() & 1) ? 4791 : g.port();
        const auto pick = alloc[shard].allocate(local, remote, rport);
        REQUIRE(pick);
        REQUIRE(pick.port >= source_port_allocator::default_port_min);
        // What the peer sends back, hashed by our NIC, lands on this shard.
        REQUIRE(cfg.queue_of(remote, local, rport, pick.port) == shard);
        const flow_tuple f{local, remote, pick.port, rport};
        REQUIRE(cfg.rx_queue_of(f) == shard);
        // Never handed out twice while held, by any shard.
        REQUIRE(unique.insert(f).second);
        REQUIRE(alloc[shard].held(local, remote, rport, pick.port));
        held.push_back({shard, f});
      }
      std::size_t total = 0;
      for (auto& a : alloc) total += a.held_count();
      CHECK(total == 10000);

      // Release everything; a second release is refused.
      for (auto& h : held)
        REQUIRE(
            alloc[h.shard].release(h.f.local_ip, h.f.remote_ip, h.f.remote_port, h.f.local_port));
      for (auto& a : alloc) CHECK(a.held_count() == 0);
      CHECK_FALSE(alloc[held[0].shard].release(held[0].f.local_ip, held[0].f.remote_ip,
                                               held[0].f.remote_port, held[0].f.local_port));
    }
  }
}

TEST_CASE("rss: port exhaustion is reported, and a released port is reusable") {
  for (rss_model model : {rss_model::toeplitz, rss_model::ena_fixed}) {
    INFO("model " << to_string(model));
    const rss_config cfg(model, microsoft_rss_key, make_reta(4, 128));
    const auto local = addr4("10.1.0.1"), remote = addr4("10.1.0.2");
    const uint16_t rport = 5000, lo = 60000, hi = 60255;
    for (uint16_t q = 0; q < 4; ++q) {
      source_port_allocator a(cfg, q, lo, hi);
      std::size_t expect = 0;
      for (uint32_t p = lo; p <= hi; ++p)
        expect += cfg.queue_of(remote, local, rport, uint16_t(p)) == q;
      REQUIRE(expect > 0);
      std::set<uint16_t> got;
      for (;;) {
        auto pick = a.allocate(local, remote, rport);
        if (!pick) {
          CHECK(pick.error == port_error::exhausted);
          CHECK(std::string(to_string(*pick.error)).find("no free local port") !=
                std::string::npos);
          break;
        }
        REQUIRE(pick.port >= lo);
        REQUIRE(pick.port <= hi);
        REQUIRE(got.insert(pick.port).second);
      }
      CHECK(got.size() == expect);
      // Exhaustion is per destination: another remote port still works.
      CHECK(a.allocate(local, remote, rport + 1));
      // Give one back and it is the one handed out next.
      const uint16_t back = *std::next(got.begin(), long(got.size() / 2));
      REQUIRE(a.release(local, remote, rport, back));
      auto again = a.allocate(local, remote, rport);
      REQUIRE(again);
      CHECK(again.port == back);
    }
  }
}

TEST_CASE("rss: consecutive allocations rotate through the range") {
  const rss_config cfg(rss_model::toeplitz, mlx5_default_rss_key, make_reta(2, 128));
  source_port_allocator a(cfg, 1);
  const auto local = addr4("10.0.0.1"), remote = addr4("10.0.0.2");
  auto p1 = a.allocate(local, remote, 80);
  REQUIRE(p1);
  REQUIRE(a.release(local, remote, 80, p1.port));
  // The next search starts after the last port given, not at the same one.
  auto p2 = a.allocate(local, remote, 80);
  REQUIRE(p2);
  CHECK(p2.port != p1.port);
}

TEST_CASE("rss: 2-tuple model — ports don't matter, the IP pair decides") {
  const rss_config cfg(rss_model::toeplitz, mlx5_default_rss_key, make_reta(4, 64),
                       rss_fields::ipv4_only);
  tuple_gen g;
  std::vector<source_port_allocator> alloc;
  for (uint16_t q = 0; q < 4; ++q) alloc.emplace_back(cfg, q);
  int elsewhere = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto local = g.addr(), remote = g.addr();
    const uint16_t rport = g.port();
    const uint16_t owner = cfg.queue_of(remote, local, rport, 0);
    for (uint16_t q = 0; q < 4; ++q) {
      auto pick = alloc[q].allocate(local, remote, rport);
      if (q == owner) {
        REQUIRE(pick);
        REQUIRE(cfg.queue_of(remote, local, rport, pick.port) == q);
      } else {
        REQUIRE_FALSE(pick);
        REQUIRE(pick.error == port_error::ip_pair_maps_elsewhere);
        ++elsewhere;
      }
    }
  }
  CHECK(elsewhere == 3 * 2000);
  CHECK(std::string(to_string(port_error::ip_pair_maps_elsewhere)).find("IP addresses only") !=
        std::string::npos);

  // With one queue every port works, and held ports still aren't repeated.
  const rss_config one(rss_model::toeplitz, mlx5_default_rss_key, make_reta(1, 64),
                       rss_fields::ipv4_only);
  source_port_allocator a(one, 0, 40000, 40009);
  std::set<uint16_t> got;
  for (int i = 0; i < 10; ++i) {
    auto pick = a.allocate(addr4("10.0.0.1"), addr4("10.0.0.2"), 9);
    REQUIRE(pick);
    REQUIRE(got.insert(pick.port).second);
  }
  auto full = a.allocate(addr4("10.0.0.1"), addr4("10.0.0.2"), 9);
  CHECK(full.error == port_error::exhausted);
}

TEST_CASE("rss: a queue that no RETA entry points at gets a clear error") {
  const rss_config cfg(rss_model::toeplitz, mlx5_default_rss_key, make_reta(4, 128));
  source_port_allocator a(cfg, 7);
  auto pick = a.allocate(addr4("10.0.0.1"), addr4("10.0.0.2"), 80);
  CHECK(pick.error == port_error::queue_not_in_reta);
  CHECK_THROWS_AS(source_port_allocator(cfg, 0, 2000, 1000), std::invalid_argument);
}

TEST_CASE("rss verifier: crafted mbufs — match, VLAN, and skipped packets") {
  const rss_config cfg(rss_model::toeplitz, mlx5_default_rss_key, make_reta(2, 128));
  rss_verifier v(cfg);
  CHECK(v.verdict() == rss_verdict::inconclusive);

  const auto s = addr4("10.0.0.2"), d = addr4("10.0.0.1");
  test_mbuf a;
  a.udp(s, d, 4791, 50000);
  a.rss(cfg.hash(s, d, 4791, 50000));
  CHECK(v.observe(a.m) == rss_verdict::match);

  test_mbuf b;
  b.udp(s, d, 1234, 50001, /*vlan=*/true);
  b.rss(cfg.hash(s, d, 1234, 50001));
  CHECK(v.observe(b.m) == rss_verdict::match);

  test_mbuf tcp, frag, tiny;
  tcp.udp(s, d, 1, 2, false, IPPROTO_TCP);
  tcp.rss(0);
  frag.udp(s, d, 1, 2, false, IPPROTO_UDP, RTE_IPV4_HDR_MF_FLAG);
  frag.rss(0);
  rte_pktmbuf_append(tiny.m, 10);
  CHECK(v.observe(tcp.m) == rss_verdict::inconclusive);
  CHECK(v.observe(frag.m) == rss_verdict::inconclusive);
  CHECK(v.observe(tiny.m) == rss_verdict::inconclusive);
  CHECK(v.observe(nullptr) == rss_verdict::inconclusive);

  CHECK(v.matches() == 2);
  CHECK(v.skipped() == 4);
  CHECK(v.verdict() == rss_verdict::match);
  CHECK(v.message().find("verified on 2 packets") != std::string::npos);
}

TEST_CASE("rss verifier: no hash from the device means emulated RSS") {
  const rss_config cfg(rss_model::toeplitz, mlx5_default_rss_key, make_reta(2, 128));
  rss_verifier v(cfg);
  for (int i = 0; i < 3; ++i) {
    test_mbuf m;
    m.udp(addr4("10.0.0.2"), addr4("10.0.0.1"), uint16_t(1000 + i), 50000);
    m.rss(0xdeadbeef, /*flag=*/false);  // stale value, flag unset: must be ignored
    CHECK(v.observe(m.m) == rss_verdict::no_hash);
  }
  CHECK(v.verdict() == rss_verdict::no_hash);
  CHECK(v.message().find("emulated RSS") != std::string::npos);

  // A hash on some packets only is not something to run on.
  test_mbuf ok;
  ok.udp(addr4("10.0.0.2"), addr4("10.0.0.1"), 7, 50000);
  ok.rss(cfg.hash(addr4("10.0.0.2"), addr4("10.0.0.1"), 7, 50000));
  CHECK(v.observe(ok.m) == rss_verdict::match);
  CHECK(v.verdict() == rss_verdict::mismatch);
  CHECK(v.message().find("only 1 of 4 packets") != std::string::npos);
}

TEST_CASE("rss verifier: mismatches name expected vs got and the model that would match") {
  const rss_config cfg(rss_model::toeplitz, mlx5_default_rss_key, make_reta(2, 128));
  const auto s = addr4("10.0.0.2"), d = addr4("10.0.0.1");
  const uint16_t sp = 4791, dp = 50123;
  const uint32_t expected = cfg.hash(s, d, sp, dp);

  auto run = [&](uint32_t device_hash) {
    rss_verifier v(cfg);
    test_mbuf m;
    m.udp(s, d, sp, dp);
    m.rss(device_hash);
    CHECK(v.observe(m.m) == rss_verdict::mismatch);
    CHECK(v.verdict() == rss_verdict::mismatch);
    return v.message();
  };

  SECTION("device hashes IPs only (MANA default)") {
    const rss_config two(rss_model::toeplitz, mlx5_default_rss_key, make_reta(2, 128),
                         rss_fields::ipv4_only);
    const uint32_t got = two.hash(s, d, sp, dp);
    const auto msg = run(got);
    INFO(msg);
    CHECK(msg.find(fmt::format("{:#010x}", expected)) != std::string::npos);
    CHECK(msg.find(fmt::format("{:#010x}", got)) != std::string::npos);
    CHECK(msg.find("IPs only") != std::string::npos);
    CHECK(msg.find("10.0.0.2:4791 -> 10.0.0.1:50123") != std::string::npos);
  }
  SECTION("key loaded with its 4-byte words byte-swapped") {
    const rss_config swapped(rss_model::toeplitz, byte_swapped_words(mlx5_default_rss_key),
                             make_reta(2, 128));
    const auto msg = run(swapped.hash(s, d, sp, dp));
    INFO(msg);
    CHECK(msg.find("byte-swapped key") != std::string::npos);
  }
  SECTION("ENA fixed-key hardware") {
    const rss_config ena(rss_model::ena_fixed, ena_fixed_rss_key, make_reta(2, 128));
    const auto msg = run(ena.hash(s, d, sp, dp));
    INFO(msg);
    CHECK(msg.find("ENA fixed-key variant") != std::string::npos);
    CHECK(msg.find("ENA fixed key") != std::string::npos);
  }
  SECTION("tuple fed in host byte order") {
    const auto msg = run(cfg.hash(ipv4_addr{rte_bswap32(s.v)}, ipv4_addr{rte_bswap32(d.v)},
                                  rte_bswap16(sp), rte_bswap16(dp)));
    INFO(msg);
    CHECK(msg.find("wrong byte order") != std::string::npos);
  }
  SECTION("nothing known matches") {
    const auto msg = run(expected ^ 0x80000000u);
    INFO(msg);
    CHECK(msg.find("low 16 bits agree") != std::string::npos);
    const auto msg2 = run(expected ^ 0x00ff0f7fu);
    CHECK(msg2.find("read the key back") != std::string::npos);
  }
}

TEST_CASE("rss verifier: plain-value overload and the ENA model verified as such") {
  const rss_config ena(rss_model::ena_fixed, ena_fixed_rss_key, make_reta(8, 128));
  rss_verifier v(ena);
  tuple_gen g;
  for (int i = 0; i < 100; ++i) {
    auto s = g.addr(), d = g.addr();
    auto sp = g.port(), dp = g.port();
    const uint32_t device =
        reference_hash(rss_model::ena_fixed, rss_fields::ipv4_udp, ena_fixed_rss_key, s, d, sp, dp);
    REQUIRE(v.observe(s, d, sp, dp, device, true) == rss_verdict::match);
  }
  CHECK(v.verdict() == rss_verdict::match);

  // A device computing standard Toeplitz with that key, checked against the ENA model.
  rss_verifier w(ena);
  const rss_config std_cfg(rss_model::toeplitz, ena_fixed_rss_key, make_reta(8, 128));
  const auto s = addr4("172.31.0.10"), d = addr4("172.31.0.20");
  CHECK(w.observe(s, d, 1000, 2000, std_cfg.hash(s, d, 1000, 2000), true) == rss_verdict::mismatch);
  CHECK(w.message().find("standard Toeplitz") != std::string::npos);
}
