// The transport on the real data path: two hosts (ports + engines + transport
// shards) over a ring link, memif and af_packet/veth, with software fault
// injection at the ports; every message is echoed back intact and in order.
#include <catch2/catch.hpp>

#include <rte_mbuf.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "machnet/net/ring_link.hh"
#include "machnet/net/transport_shard.hh"
#include "machnet/runtime/smp.hh"

using namespace machnet;
using namespace machnet::net;
using namespace machnet::net::transport;
using namespace std::chrono_literals;

namespace {

const ipv4_addr ip_a{0x0a000001}, ip_b{0x0a000002};
constexpr uint16_t service_port = 7000;
constexpr std::size_t sizes[] = {1, 64, 1000, 1418, 1419, 3000, 20000, 100000};

std::vector<uint8_t> payload_of(unsigned flow, unsigned idx) {
  std::size_t n = sizes[idx % std::size(sizes)];
  std::vector<uint8_t> v(n);
  std::mt19937 rng(flow * 100003u + idx);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

struct echo_owner : transport_owner {
  uint64_t echoed = 0;
  bool on_message(flow& f, message& m) override {
    ++echoed;
    return f.send(std::move(m)) == send_result::ok || true;
  }
  void on_error(flow&, flow_error, std::vector<message>) override {}
};

struct client_owner : transport_owner {
  struct state {
    unsigned id = 0;
    unsigned next = 0;  // next expected echo
    bool connected = false;
  };
  std::vector<state> flows;
  uint64_t bad = 0, errors = 0;
  bool on_message(flow& f, message& m) override {
    auto& st = flows[reinterpret_cast<uintptr_t>(f.context())];
    auto want = payload_of(st.id, st.next++);
    if (m.size() != want.size() || std::memcmp(m.data(), want.data(), want.size()) != 0) ++bad;
    return true;
  }
  void on_connected(flow& f) override { flows[reinterpret_cast<uintptr_t>(f.context())].connected = true; }
  void on_error(flow& f, flow_error e, std::vector<message>) override {
    ++errors;
    WARN("flow " << f.tuple().str() << " failed: " << to_string(e));
  }
};

struct shard_hosts {
  std::unique_ptr<engine> ea, eb;
  echo_owner server;
  client_owner client;
  std::unique_ptr<transport_shard> ta, tb;
  std::vector<flow_tuple> flows;
};

// Runs the exchange with `shards` shards; returns total echoes received.
uint64_t run_pair(port& pa, port& pb, unsigned shards, unsigned flows_per_shard,
                  unsigned msgs_per_flow, uint64_t* bad, uint64_t* errors, uint64_t* retx) {
  engine_config ca, cb;
  ca.ip = ip_a;
  cb.ip = ip_b;
  engine_group ga(pa, shards, ca), gb(pb, shards, cb);
  std::vector<shard_hosts> h(shards);
  engine_counters ca_c{}, cb_c{};
  smp s{std::vector<reactor_config>(shards)};
  s.run([&]() -> task<int> {
    for (unsigned i = 0; i < shards; ++i)
      co_await submit_to(i, [&, i] {
        auto& x = h[i];
        x.ea = std::make_unique<engine>(ga, i);
        x.eb = std::make_unique<engine>(gb, i);
        x.ta = std::make_unique<transport_shard>(*x.ea, x.client);
        x.tb = std::make_unique<transport_shard>(*x.eb, x.server);
        x.tb->listen(service_port);
      });
    for (unsigned i = 0; i < shards; ++i)
      co_await submit_to(i, [&, i] {
        auto& x = h[i];
        for (unsigned k = 0; k < flows_per_shard; ++k) {
          flow* f = x.ta->connect(ip_b, service_port);
          REQUIRE(f);
          f->set_context(reinterpret_cast<void*>(uintptr_t(k)));
          x.client.flows.push_back({i * 1000 + k, 0, false});
          for (unsigned m = 0; m < msgs_per_flow; ++m) {
            auto p = payload_of(i * 1000 + k, m);
            REQUIRE(f->send(message::copy_of(p)) == send_result::ok);
          }
          x.flows.push_back(f->tuple());
        }
      });
    const uint64_t want = uint64_t(shards) * flows_per_shard * msgs_per_flow;
    for (int wait = 0; wait < 9000; ++wait) {  // 90 s: a correctness test; ASan on a busy 2-CPU VM is slow
      uint64_t got = 0;
      for (unsigned i = 0; i < shards; ++i)
        got += co_await submit_to(i, [&, i] {
          uint64_t n = 0;
          for (auto& st : h[i].client.flows) n += st.next;
          return n + h[i].client.errors * 1'000'000;  // an error ends the wait
        });
      if (got >= want) break;
      co_await sleep(10ms);
    }
    for (unsigned i = 0; i < shards; ++i)
      co_await submit_to(i, [&, i] {
        for (auto& t : h[i].flows)
          if (flow* f = h[i].ta->endpoint().find(t)) *retx += f->stats().tx_retx;
        ca_c.arp_failed += h[i].ea->counters().arp_failed;
        ca_c.arp_requests_sent += h[i].ea->counters().arp_requests_sent;
        cb_c.arp_requests_answered += h[i].eb->counters().arp_requests_answered;
        h[i].ta.reset();
        h[i].tb.reset();
        h[i].ea.reset();
        h[i].eb.reset();
      });
    co_return 0;
  });
  if (ca_c.arp_failed)
    WARN("ARP: A sent " << ca_c.arp_requests_sent << " requests, B answered "
                        << cb_c.arp_requests_answered << ", A dropped " << ca_c.arp_failed
                        << " packets as unresolvable");
  uint64_t got = 0;
  for (auto& x : h) {
    for (auto& st : x.client.flows) got += st.next;
    *bad += x.client.bad;
    *errors += x.client.errors;
  }
  return got;
}

port_config cfg_for(std::string device, uint16_t queues, uint8_t host, double loss, double corrupt) {
  port_config c;
  c.device = std::move(device);
  c.queues = queues;
  c.mbufs_per_queue = 8191;
  c.mac = mac_addr{{0x02, 0, 0, 0, 0, host}};
  c.faults.rx_drop = loss;
  c.faults.rx_corrupt = corrupt;
  c.faults.tx_drop = loss / 2;
  c.faults.seed = host;
  return c;
}

int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

}  // namespace

TEST_CASE("transport over a ring link, 2 shards, 2% loss + corruption: every message echoed intact") {
  eal_start({});
  ring_link link("tp1", 2);
  auto ca = cfg_for("", 2, 1, 0.02, 0.005), cb = cfg_for("", 2, 2, 0.02, 0.005);
  ca.rss = cb.rss = rss_mode::emulated;
  port pa(link.port_a(), ca), pb(link.port_b(), cb);
  uint64_t bad = 0, errors = 0, retx = 0;
  uint64_t got = run_pair(pa, pb, 2, 8, 40, &bad, &errors, &retx);
  CHECK(errors == 0);
  CHECK(bad == 0);
  REQUIRE(got == 2 * 8 * 40);
  REQUIRE(retx > 0);  // the faults did bite
  REQUIRE(pa.stats(0).fault_dropped + pa.stats(1).fault_dropped > 0);
  REQUIRE(pa.stats(0).fault_corrupted + pa.stats(1).fault_corrupted > 0);
}

TEST_CASE("transport over memif (server and client ports in one process), 1% loss") {
  std::string sock = "/tmp/mn-tp-" + std::to_string(::getpid()) + ".sock";
  ::unlink(sock.c_str());
  auto cb = cfg_for("net_memif0,role=server,socket=" + sock + ",socket-abstract=no", 2, 2, 0.01, 0.002);
  auto ca = cfg_for("net_memif1,role=client,socket=" + sock + ",socket-abstract=no", 2, 1, 0.01, 0.002);
  ca.rss = cb.rss = rss_mode::emulated;
  auto pb = std::make_unique<port>(cb);
  auto pa = std::make_unique<port>(ca);
  for (int i = 0; i < 500 && !(pa->link_up() && pb->link_up()); ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(pa->link_up());
  uint64_t bad = 0, errors = 0, retx = 0;
  uint64_t got = run_pair(*pa, *pb, 2, 8, 40, &bad, &errors, &retx);
  // Close the client first and let the server's control thread see the
  // disconnect before the server goes (the 22.11 memif PMD crashes in its
  // interrupt thread when both ends of one process close at once).
  pa.reset();
  for (int i = 0; i < 100 && pb->link_up(); ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(20ms);
  pb.reset();
  CHECK(errors == 0);
  CHECK(bad == 0);
  REQUIRE(got == 2 * 8 * 40);
  REQUIRE(retx > 0);
}

TEST_CASE("transport over af_packet on a veth pair (software RSS hand-off), 1% loss") {
  if (::geteuid() != 0) {
    WARN("needs root (veth, CAP_NET_RAW): not run");
    return;
  }
  std::string tag = std::to_string(::getpid() % 100000);
  std::string va = "mta" + tag, vb = "mtb" + tag;
  struct cleanup {
    std::string a;
    ~cleanup() { sh("ip link del " + a); }
  } guard{va};
  REQUIRE(sh("ip link add " + va + " type veth peer name " + vb) == 0);
  for (auto& v : {va, vb}) {
    sh("sysctl -w net.ipv6.conf." + v + ".disable_ipv6=1");
    REQUIRE(sh("ip link set " + v + " up") == 0);
  }
  // One queue per port, two shards: shard 1 gets its packets by hand-off.
  auto ca = cfg_for("net_af_packet0,iface=" + va, 2, 1, 0.01, 0.002);
  auto cb = cfg_for("net_af_packet1,iface=" + vb, 2, 2, 0.01, 0.002);
  port pa(ca), pb(cb);
  INFO(pa.describe());
  uint64_t bad = 0, errors = 0, retx = 0;
  uint64_t got = run_pair(pa, pb, 2, 4, 20, &bad, &errors, &retx);
  CHECK(errors == 0);
  CHECK(bad == 0);
  REQUIRE(got == 2 * 4 * 20);
}

namespace {
// Keeps the UDP payloads that reach it.
struct payload_sink : udp_handler {
  std::vector<std::vector<uint8_t>> got;
  void on_udp(engine&, rte_mbuf* m, const parse_result& p) override {
    const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*) + p.payload_offset;
    got.emplace_back(d, d + p.payload_len);
    rte_pktmbuf_free(m);
  }
};
}  // namespace

TEST_CASE("zero-copy TX over memif: a packet refers to message memory, which outlives it") {
  std::string sock = "/tmp/mn-zc-" + std::to_string(::getpid()) + ".sock";
  ::unlink(sock.c_str());
  auto cb = cfg_for("net_memif0,role=server,socket=" + sock + ",socket-abstract=no", 1, 2, 0, 0);
  auto ca = cfg_for("net_memif1,role=client,socket=" + sock + ",socket-abstract=no", 1, 1, 0, 0);
  auto pb = std::make_unique<port>(cb);
  auto pa = std::make_unique<port>(ca);
  for (int i = 0; i < 500 && !(pa->link_up() && pb->link_up()); ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(pa->link_up());
  REQUIRE(pa->frames_trusted());
  engine_config ea_cfg, eb_cfg;
  ea_cfg.ip = ip_a;
  eb_cfg.ip = ip_b;
  engine_group ga(*pa, 1, ea_cfg), gb(*pb, 1, eb_cfg);
  ga.arp().set_static(ip_b, pb->mac());
  static int released;
  released = 0;
  std::vector<uint8_t> bytes(4 * 1418);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 7 + 3);
  payload_sink sink;
  echo_owner unused;
  smp s{std::vector<reactor_config>(1)};
  s.run([&]() -> task<int> {
    engine ea(ga, 0), eb(gb, 0);
    REQUIRE(eb.listen(7001, &sink));
    transport_shard ta(ea, unused);
    REQUIRE(ea.zero_copy_tx());
    // The message's storage is foreign: its release is observable.
    auto* buf = new uint8_t[bytes.size()];
    std::memcpy(buf, bytes.data(), bytes.size());
    message m = message::adopt(
        buf, bytes.size(),
        [](void*, uint8_t* d, std::size_t) noexcept {
          delete[] d;
          ++released;
        },
        nullptr, 42);
    const flow_tuple t{ip_a, ip_b, 7000, 7001};
    tx_handle h[2];
    uint8_t* p0 = ta.alloc_tx_ref(t, header_size, m, 1418, 1418, h[0]);
    uint8_t* p1 = ta.alloc_tx_ref(t, header_size, m, 3 * 1418, 1418, h[1]);
    REQUIRE(p0);
    REQUIRE(p1);
    CHECK(m.tag() == 42);  // same bytes and tag; only who holds the storage changed
    CHECK(std::memcmp(m.data(), bytes.data(), bytes.size()) == 0);
    std::memset(p0, 0xa0, header_size);
    std::memset(p1, 0xa1, header_size);
    m.reset();  // the message is gone; its packets are not sent yet
    CHECK(released == 0);
    ta.transmit(t, h[0]);
    ta.transmit(t, h[1]);
    ea.flush();  // memif copies and frees the packets in tx_burst
    CHECK(released == 1);
    for (int i = 0; i < 200 && sink.got.size() < 2; ++i) co_await sleep(1ms);
    REQUIRE(sink.got.size() == 2);
    for (int k = 0; k < 2; ++k) {
      const auto& g = sink.got[k];
      REQUIRE(g.size() == header_size + 1418);
      CHECK(g[0] == (k == 0 ? 0xa0 : 0xa1));
      std::size_t off = (k == 0 ? 1 : 3) * 1418;
      CHECK(std::memcmp(g.data() + header_size, bytes.data() + off, 1418) == 0);
    }
    co_return 0;
  });
  pa.reset();
  for (int i = 0; i < 100 && pb->link_up(); ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(20ms);
  pb.reset();
}
