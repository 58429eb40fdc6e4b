// sidecar: machnetd's core — the port and one engine + transport per shard,
// the apps' channels spread over the shards, listeners on every shard, and the
// control plane on a Unix socket (register, attach, detach, stats). The
// machnetd binary (apps/machnetd) only parses flags and runs this.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "machnet/net/port.hh"
#include "machnet/net/shm/channel.hh"
#include "machnet/net/transport/config.hh"
#include "machnet/net/types.hh"
#include "machnet/runtime/task.hh"

namespace machnet::net {

struct sidecar_config {
  port_config port;             ///< device string, MAC override, queues (= shards)
  ipv4_addr ip;                 ///< this host's address on the device
  std::string control_socket;   ///< Unix socket path (directories are created)
  unsigned socket_mode = 0660;  ///< permissions of the socket file
  shm::channel_params channel;  ///< channel sizes granted to apps
  /// The transport's settings. ACKs do not wait for replies here
  /// (ack_waits_for_reply): an app answers after a wake-up, much later than a
  /// shard turn, and the waits only delayed ACKs (p99.9 RTT up ~40 %, measured).
  transport::transport_config transport = [] {
    transport::transport_config c;
    c.ack_waits_for_reply = false;
    return c;
  }();
  /// UDP checksums (automatic: off on a memif link, docs/net.md).
  checksum_policy udp_checksum = checksum_policy::automatic;
  /// Static ARP entries (ip, mac): skip resolution for known peers.
  std::vector<std::pair<ipv4_addr, mac_addr>> static_arp;
};

/// Sidecar-wide counters (the stats control request), see shm::stat_index.
struct sidecar_stats {
  uint64_t v[8]{};
};

class sidecar_shard;

/// Runs on the shards of the current smp: construct and run() on shard 0.
class sidecar {
 public:
  explicit sidecar(sidecar_config cfg);
  sidecar(const sidecar&) = delete;
  sidecar& operator=(const sidecar&) = delete;
  ~sidecar();

  /// Opens the port, starts an engine on every shard and serves the control
  /// socket until the smp stops; then closes every channel (apps see
  /// ESHUTDOWN) and removes the socket. Throws on a start-up failure.
  task<void> run();
  /// Sums the counters of every shard (await on a shard).
  task<sidecar_stats> stats();

  const sidecar_config& config() const noexcept { return _cfg; }

 private:
  class control;
  sidecar_config _cfg;
  control* _ctl = nullptr;
};

}  // namespace machnet::net
