// eal: starting DPDK's EAL once per process from our own configuration (no
// hugepages needed), and registering shard threads with it.
#pragma once

#include <string>
#include <vector>

namespace machnet::net {

struct eal_config {
  /// Run without hugepages (memfd-backed memory; fine for virtual links and
  /// enough for most NICs with IOVA as VA).
  bool no_huge = true;
  /// Memory for the EAL in MiB (with no_huge, allocated at start).
  unsigned memory_mb = 256;
  /// PCI addresses to allow (-a); none means --no-pci.
  std::vector<std::string> pci_allow;
  /// Extra EAL arguments, appended last (e.g. "--log-level=lib.eal:debug").
  std::vector<std::string> extra_args;
  /// DPDK log level for all components (0..8; 5 = notice).
  int log_level = 4;
};

/// Starts the EAL if it is not running yet; later calls only check that
/// the EAL is up. Throws std::runtime_error naming the EAL's complaint.
void eal_start(const eal_config& cfg);
bool eal_running() noexcept;
/// The argument vector eal_start() passes to rte_eal_init (for logs/tests).
std::vector<std::string> eal_arguments(const eal_config& cfg);

/// Gives the calling (non-EAL) thread an lcore id, so mempool per-core caches
/// work on shard threads. Idempotent; no-op if the EAL is not running.
void eal_register_thread();

/// True if `device` names a PCI device (DDDD:BB:DD.F or BB:DD.F) rather than
/// a virtual device such as net_memif0,...
bool is_pci_address(const std::string& device);

}  // namespace machnet::net
