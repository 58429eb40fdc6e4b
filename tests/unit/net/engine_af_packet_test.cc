// Integration test over af_packet on a veth pair: the kernel in a network
// namespace of our own pings and arpings the stack and gets answers.
#include <catch2/catch.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "machnet/net/engine.hh"
#include "machnet/runtime/smp.hh"

using namespace machnet;
using namespace machnet::net;
using namespace std::chrono_literals;

extern char** environ;

namespace {

int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// A namespace holding the kernel end of a veth pair; the other end stays here.
struct veth_host {
  std::string ns, kernel_if, dpdk_if;
  bool ok = false;
  explicit veth_host(const std::string& tag)
      : ns("mnt" + tag), kernel_if("mnk" + tag), dpdk_if("mnd" + tag) {
    ok = sh("ip netns add " + ns) == 0 &&
         sh("ip link add " + dpdk_if + " type veth peer name " + kernel_if) == 0 &&
         sh("ip link set " + kernel_if + " netns " + ns) == 0 &&
         sh("ip netns exec " + ns + " ip addr add 10.99.0.2/24 dev " + kernel_if) == 0 &&
         sh("ip netns exec " + ns + " ip link set " + kernel_if + " up") == 0 &&
         sh("ip link set " + dpdk_if + " up") == 0;
    sh("sysctl -w net.ipv6.conf." + dpdk_if + ".disable_ipv6=1");
  }
  ~veth_host() {
    sh("ip link del " + dpdk_if);
    sh("ip netns del " + ns);
  }
};

// Runs a command without blocking the shard; returns its exit status.
task<int> run_command(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) co_return -1;
  int status = 0;
  for (int i = 0; i < 2000; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) co_return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
    co_await sleep(5ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  co_return -3;
}

}  // namespace

TEST_CASE("af_packet over veth: kernel ping and arping get answers from the stack") {
  if (::geteuid() != 0) {
    WARN("needs root (network namespaces, CAP_NET_RAW): not run");
    return;
  }
  veth_host h(std::to_string(::getpid() % 100000));
  REQUIRE(h.ok);
  port_config pc;
  pc.device = "net_af_packet0,iface=" + h.dpdk_if;
  pc.queues = 1;
  port p(pc);
  INFO(p.describe());
  CHECK(p.caps().tx_syscall);  // so the engine never flushes early (an ACK per system call)
  engine_config ec;
  ec.ip = ipv4_addr{0x0a630001};  // 10.99.0.1
  engine_group g(p, 1, ec);
  int ping_rc = -1, arping_rc = -1;
  engine_counters c;
  smp s{std::vector<reactor_config>(1)};
  s.run([&]() -> task<int> {
    engine e(g, 0);
    // (built outside co_await: GCC 12 mishandles string-literal temporaries there)
    std::vector<std::string> arping{"ip", "netns", "exec", h.ns, "arping", "-c", "2", "-w", "5",
                                    "-I", h.kernel_if, "10.99.0.1"};
    std::vector<std::string> ping{"ip", "netns", "exec", h.ns, "ping", "-c", "3", "-i", "0.2",
                                  "-W", "2", "10.99.0.1"};
    arping_rc = co_await run_command(std::move(arping));
    ping_rc = co_await run_command(std::move(ping));
    c = e.counters();
    co_return 0;
  });
  INFO(c.drops.str());
  CHECK(arping_rc == 0);
  CHECK(ping_rc == 0);
  CHECK(c.arp_requests_answered >= 2);
  CHECK(c.icmp_echo_answered >= 3);
}
