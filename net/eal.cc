// eal: rte_eal_init with our arguments, once per process.
#include "machnet/net/eal.hh"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include <fmt/format.h>

#include <pthread.h>
#include <sched.h>

#include <mutex>
#include <regex>
#include <stdexcept>

#include "machnet/runtime/log.hh"

namespace machnet::net {

namespace {
std::mutex g_mu;
bool g_running = false;
}  // namespace

bool is_pci_address(const std::string& device) {
  static const std::regex pci(R"(^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7](,.*)?$)");
  return std::regex_match(device, pci);
}

std::vector<std::string> eal_arguments(const eal_config& cfg) {
  std::vector<std::string> a{"machnet", "-l", "0", "--no-shconf", "--no-telemetry",
                             fmt::format("--log-level={}", cfg.log_level)};
  if (cfg.no_huge) {
    a.push_back("--no-huge");
    a.push_back("-m");
    a.push_back(std::to_string(cfg.memory_mb));
  }
  if (cfg.pci_allow.empty()) {
    a.push_back("--no-pci");
  } else {
    for (const auto& p : cfg.pci_allow) {
      a.push_back("-a");
      a.push_back(p);
    }
  }
  for (const auto& e : cfg.extra_args) a.push_back(e);
  return a;
}

void eal_start(const eal_config& cfg) {
  std::lock_guard lk(g_mu);
  if (g_running) return;
  auto args = eal_arguments(cfg);
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  log::debug("starting DPDK EAL: {}", fmt::join(args, " "));
  // rte_eal_init pins the calling thread to lcore 0's CPU; our shards pin
  // themselves (--cpuset), so give the thread its affinity back afterwards.
  cpu_set_t affinity;
  bool saved = pthread_getaffinity_np(pthread_self(), sizeof affinity, &affinity) == 0;
  int rc = rte_eal_init(int(args.size()), argv.data());
  if (saved) pthread_setaffinity_np(pthread_self(), sizeof affinity, &affinity);
  if (rc < 0)
    throw std::runtime_error(fmt::format("DPDK EAL failed to start ({}); arguments: {}",
                                         rte_strerror(rte_errno), fmt::join(args, " ")));
  g_running = true;
}

bool eal_running() noexcept {
  std::lock_guard lk(g_mu);
  return g_running;
}

void eal_register_thread() {
  if (!eal_running()) return;
  if (rte_lcore_id() != LCORE_ID_ANY) return;
  if (rte_thread_register() < 0)
    log::warn("rte_thread_register failed ({}): mempool caches disabled on this thread",
              rte_strerror(rte_errno));
}

}  // namespace machnet::net
