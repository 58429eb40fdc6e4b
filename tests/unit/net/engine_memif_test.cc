// Integration test of port + engine across two processes over memif: 2 queues
// x 2 shards per side in emulated-RSS mode; every packet of every flow arrives
// on its owner shard on both sides, and ARP resolves over the link.
#include <catch2/catch.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "echo_hosts.hh"
#include "machnet/net/engine.hh"
#include "machnet/runtime/smp.hh"

using namespace machnet;
using namespace machnet::net;
using namespace machnet::net::test;
using namespace std::chrono_literals;

extern char** environ;

namespace {
const ipv4_addr ip_a{0x0a000001}, ip_b{0x0a000002};
constexpr unsigned shards = 2;

port_config memif_cfg(const std::string& role, const std::string& sock, uint8_t host) {
  port_config c;
  c.device = "net_memif0,role=" + role + ",socket=" + sock + ",socket-abstract=no";
  c.queues = shards;
  c.rss = rss_mode::emulated;
  c.mbufs_per_queue = 4095;
  c.mac = mac_addr{{0x02, 0, 0, 0, 0, host}};
  return c;
}

std::atomic<bool> g_stop{false};
}  // namespace

// The peer process (host B, memif server): echoes until SIGTERM, then exits 0
// only if every datagram arrived on its owner shard. Run by the test below.
TEST_CASE("memif echo peer", "[.peer]") {
  const char* sock = std::getenv("MN_MEMIF_SOCK");
  REQUIRE(sock);
  signal(SIGTERM, [](int) { g_stop = true; });
  port pb(memif_cfg("server", sock, 2));
  engine_config cb;
  cb.ip = ip_b;
  engine_group gb(pb, shards, cb);
  std::array<echo_server, shards> servers;
  std::array<std::unique_ptr<engine>, shards> es;
  smp s{std::vector<reactor_config>(shards)};
  s.run([&]() -> task<int> {
    for (unsigned i = 0; i < shards; ++i)
      co_await submit_to(i, [&, i] {
        es[i] = std::make_unique<engine>(gb, i);
        es[i]->listen(9000, &servers[i]);
      });
    while (!g_stop) co_await sleep(5ms);
    for (unsigned i = 0; i < shards; ++i) co_await submit_to(i, [&, i] { es[i].reset(); });
    co_return 0;
  });
  uint64_t rx = servers[0].received + servers[1].received;
  uint64_t bad = servers[0].misplaced + servers[1].misplaced;
  std::fprintf(stderr, "memif peer: received %lu (shard0 %lu, shard1 %lu), misplaced %lu\n",
               (unsigned long)rx, (unsigned long)servers[0].received,
               (unsigned long)servers[1].received, (unsigned long)bad);
  std::_Exit(rx > 0 && bad == 0 && servers[0].received > 0 && servers[1].received > 0 ? 0 : 3);
}

TEST_CASE("two processes over memif, 2 queues x 2 shards, emulated RSS: packets land on owners") {
  std::string sock = "/tmp/mn-memif-test-" + std::to_string(::getpid()) + ".sock";
  ::unlink(sock.c_str());
  std::string env_sock = "MN_MEMIF_SOCK=" + sock;
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  envp.push_back(env_sock.data());
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe", name = "memif echo peer";
  char* argv[] = {self.data(), name.data(), nullptr};
  pid_t child;
  REQUIRE(posix_spawn(&child, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) == 0);
  struct reaper {
    pid_t pid;
    ~reaper() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } guard{child};

  // Wait for the server: a client started first dials again only every redial_ms.
  struct stat sb;
  for (int i = 0; i < 500 && ::stat(sock.c_str(), &sb) != 0; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(::stat(sock.c_str(), &sb) == 0);

  port pa(memif_cfg("client", sock, 1));
  for (int i = 0; i < 500 && !pa.link_up(); ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(pa.link_up());
  engine_config ca;
  ca.ip = ip_a;
  engine_group ga(pa, shards, ca);
  constexpr unsigned flows = 64, rounds = 16;
  std::vector<client_side> cs(shards);
  smp s{std::vector<reactor_config>(shards)};
  s.run([&]() -> task<int> {
    co_await run_clients(ga, cs, ip_a, ip_b, 9000, flows, rounds);
    co_return 0;
  });
  for (unsigned i = 0; i < shards; ++i) {
    INFO("shard " << i);
    CHECK(cs[i].client.misplaced == 0);
    CHECK(cs[i].client.corrupt == 0);
    CHECK(cs[i].client.received == flows * rounds);
  }
  ::kill(child, SIGTERM);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  guard.pid = -1;
  ::unlink(sock.c_str());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);  // the peer saw every datagram on its owner shard
}
