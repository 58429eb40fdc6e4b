// memif peers that die and come back: a peer killed mid-stream must not take
// this process down (its hang-up makes DPDK's interrupt thread unmap the rings
// while our poller may be inside rx_burst; dp_guard makes that unmap wait), and
// a client must dial a restarted server again (port::maintain). The peer
// process is this binary again, run as the hidden test case below.
#include <catch2/catch.hpp>

#include <rte_mbuf.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "machnet/net/dp_guard.hh"
#include "machnet/net/port.hh"
#include "machnet/runtime/clock.hh"

using namespace machnet::net;
using namespace std::chrono_literals;

extern char** environ;

namespace {
port_config memif_cfg(const std::string& role, const std::string& sock, uint8_t host) {
  port_config c;
  c.device = "net_memif0,role=" + role + ",socket=" + sock + ",socket-abstract=no";
  c.queues = 1;
  c.mbufs_per_queue = 4095;
  c.mac = mac_addr{{0x02, 0, 0, 0, 0, host}};
  return c;
}

// Runs this binary's hidden test case `name` with MN_MEMIF_SOCK=sock and
// MN_MEMIF_ROLE=role.
pid_t spawn_self(const std::string& name, const std::string& sock, const std::string& role) {
  std::string env_sock = "MN_MEMIF_SOCK=" + sock, env_role = "MN_MEMIF_ROLE=" + role;
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  envp.push_back(env_sock.data());
  envp.push_back(env_role.data());
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe", n = name;
  char* argv[] = {self.data(), n.data(), nullptr};
  pid_t child = -1;
  if (posix_spawn(&child, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return -1;
  return child;
}

// Polls `p` in a thread of its own (rx_burst, then maintain), as a shard does.
struct poller {
  port& p;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> received{0};
  std::thread t;
  explicit poller(port& pp) : p(pp) {
    t = std::thread([this] {
      rte_mbuf* pkts[64];
      while (!stop.load(std::memory_order_relaxed)) {
        uint16_t n = p.rx_burst(0, pkts, 64);
        if (n) rte_pktmbuf_free_bulk(pkts, n);
        received.fetch_add(n, std::memory_order_relaxed);
        p.maintain(machnet::now_us());
      }
    });
  }
  ~poller() { join(); }
  void join() {
    stop = true;
    if (t.joinable()) t.join();
  }
  // Waits (at most 5 s) until `more` packets arrived; true if they did.
  bool wait_for(uint64_t more) {
    const uint64_t r0 = received.load();
    for (int i = 0; i < 1000 && received.load() < r0 + more; ++i) std::this_thread::sleep_for(5ms);
    return received.load() >= r0 + more;
  }
};

void kill_and_reap(pid_t child) {
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
}
}  // namespace

// The peer (memif $MN_MEMIF_ROLE, default client): streams 1514 B frames
// until it is killed.
TEST_CASE("memif streaming peer", "[.peer]") {
  const char* sock = std::getenv("MN_MEMIF_SOCK");
  const char* role = std::getenv("MN_MEMIF_ROLE");
  REQUIRE(sock);
  port p(memif_cfg(role ? role : "client", sock, 1));
  for (int i = 0; i < 500 && !p.link_up(); ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(p.link_up());
  constexpr uint16_t frame = 1514, burst = 32;
  rte_mbuf* pkts[burst];
  for (;;) {
    if (rte_pktmbuf_alloc_bulk(p.pool(0), pkts, burst) != 0) continue;
    for (auto* m : pkts) {
      m->data_len = m->pkt_len = frame;
      auto* eth = rte_pktmbuf_mtod(m, uint8_t*);
      std::memset(eth, 0xff, 6);
      eth[12] = 0x88;  // local experimental ethertype
      eth[13] = 0xb5;
    }
    uint16_t sent = p.tx_burst(0, pkts, burst);
    if (sent < burst) rte_pktmbuf_free_bulk(pkts + sent, burst - sent);
  }
}

TEST_CASE("a memif peer killed mid-stream does not take this process down (dp_guard)") {
  std::string sock = "/tmp/mn-memif-death-" + std::to_string(::getpid()) + ".sock";
  ::unlink(sock.c_str());
  port srv(memif_cfg("server", sock, 2));
  poller pl(srv);  // busy in rx_burst, as a shard receiving a stream is
  const uint64_t waits0 = dp_guard::waits();
  constexpr int kills = 24;
  int streamed = 0;
  for (int k = 0; k < kills; ++k) {
    INFO("kill " << k);
    pid_t child = spawn_self("memif streaming peer", sock, "client");
    REQUIRE(child > 0);
    if (pl.wait_for(20000)) ++streamed;  // the peer's EAL start and the memif handshake
    kill_and_reap(child);
    for (int i = 0; i < 400 && srv.link_up(); ++i) std::this_thread::sleep_for(5ms);
    REQUIRE_FALSE(srv.link_up());
  }
  pl.join();
  // Still here: no kill unmapped the rings under the poller. Most kills
  // found it inside rx_burst, which is what the guard waited for.
  CHECK(streamed == kills);
  CHECK(dp_guard::waits() > waits0);
  CHECK(dp_guard::timeouts() == 0);
}

TEST_CASE("a memif client dials a server that was not up yet, and a restarted one (port::maintain)") {
  std::string sock = "/tmp/mn-memif-redial-" + std::to_string(::getpid()) + ".sock";
  ::unlink(sock.c_str());
  port_config cfg = memif_cfg("client", sock, 2);
  cfg.redial_ms = 50;
  port cl(cfg);  // no server yet: the port starts dialing instead of failing
  CHECK_FALSE(cl.link_up());
  poller pl(cl);
  for (int round = 0; round < 3; ++round) {
    INFO("server " << round);
    pid_t child = spawn_self("memif streaming peer", sock, "server");
    REQUIRE(child > 0);
    CHECK(pl.wait_for(20000));
    CHECK(cl.link_up());
    kill_and_reap(child);
    for (int i = 0; i < 400 && cl.link_up(); ++i) std::this_thread::sleep_for(5ms);
    REQUIRE_FALSE(cl.link_up());
  }
  pl.join();
  CHECK(cl.redials() >= 3);
  ::unlink(sock.c_str());  // the last server was killed: its socket file is left
}

TEST_CASE("redial_ms 0: a memif client whose server is not up fails to start, naming the device") {
  std::string sock = "/tmp/mn-memif-noredial-" + std::to_string(::getpid()) + ".sock";
  ::unlink(sock.c_str());
  port_config cfg = memif_cfg("client", sock, 2);
  cfg.redial_ms = 0;
  try {
    port p(cfg);
    FAIL("the port started without a server");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("net_memif0") != std::string::npos);
  }
}
