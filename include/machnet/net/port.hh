// port: one DPDK ethdev — probed from a device string, one RX/TX queue pair
// and one mempool per shard, offloads used when the device has them, RSS key
// and RETA programmed and read back, and a start-up report of what it can do.
#pragma once

#include <rte_spinlock.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "machnet/net/eal.hh"
#include "machnet/net/rss.hh"
#include "machnet/net/types.hh"

struct rte_mbuf;
struct rte_mempool;

namespace machnet::net {

/// How packets of a flow reach the shard that owns it.
enum class rss_mode : uint8_t {
  /// The device hashes UDP/IPv4 with our key and RETA (cloud vNICs).
  hardware,
  /// The device doesn't hash, but the peer's TX queue i lands on our RX queue i
  /// (memif, vhost/virtio_user, ring): each sender puts every packet on the
  /// queue the receiver's RSS would pick, so shards see exactly what a cloud
  /// vNIC would give them.
  emulated,
  /// No usable RSS, or fewer queues than shards: packets arrive anywhere and
  /// are handed to the owning shard in software.
  software,
};
const char* to_string(rss_mode m) noexcept;
/// Parses hardware|emulated|software; throws std::invalid_argument.
rss_mode parse_rss_mode(const std::string& s);

/// UDP checksums of an engine (engine_config::udp_checksum).
enum class checksum_policy : uint8_t {
  /// on, except on a shared-memory link (memif, ring) without injected
  /// corruption: nothing there can damage a frame, so checksums cost CPU
  /// (software on these devices: ~15 % of a bulk transfer's cycles per side)
  /// and guard nothing — the way a kernel treats loopback and veth.
  automatic,
  /// Computed on TX (offloaded when the device can); verified on RX.
  on,
  /// Sent as 0 ("none", valid for IPv4/UDP); received non-zero ones verified.
  off,
};
const char* to_string(checksum_policy p) noexcept;
/// "automatic" | "on" | "off"; throws std::invalid_argument naming the value.
checksum_policy parse_checksum_policy(const std::string& s);

/// Faults injected in software at the port (tests and benchmarks: no tc
/// netem here). Fractions in [0, 1] of packets per direction.
struct fault_config {
  double rx_drop = 0, rx_corrupt = 0;
  double tx_drop = 0, tx_corrupt = 0;
  uint64_t seed = 1;
  bool any() const noexcept { return rx_drop > 0 || rx_corrupt > 0 || tx_drop > 0 || tx_corrupt > 0; }
};

struct port_config {
  /// A virtual device (net_memif0,role=server,socket=/run/x.sock, net_af_packet0,
  /// iface=veth0, virtio_user0,path=..., net_ring0, net_tap0, ...) or a PCI
  /// address (0000:00:08.0). Never hard-coded: comes from the app's config.
  std::string device;
  /// RX/TX queue pairs: one per shard (fewer if the device has fewer).
  uint16_t queues = 1;
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  /// mbufs per queue's mempool.
  unsigned mbufs_per_queue = 8191;
  uint16_t mtu = 1500;
  /// nullopt: hardware if the device hashes UDP, else emulated (queues > 1) or
  /// software.
  std::optional<rss_mode> rss;
  /// Key and hashed fields for hardware RSS (programmed) and for emulated /
  /// software RSS (computed). The RETA spreads `queues` round-robin.
  rss_key key = mlx5_default_rss_key;
  std::size_t reta_size = 128;
  /// Set this MAC on the device (else the device's own is used).
  std::optional<mac_addr> mac;
  /// Put the device in promiscuous mode (not needed on cloud vNICs).
  bool promiscuous = false;
  /// Software fault injection (off by default).
  fault_config faults;
  eal_config eal;
  /// memif: closing waits at most this long for the peer to close first.
  /// DPDK 22.11's memif PMD unmaps the shared rings in its interrupt thread
  /// when the peer hangs up, while that side's data path may be inside
  /// rx_burst (a SIGSEGV). Our own processes are guarded (dp_guard); a peer
  /// that is another DPDK app is not: so the first to close is the one that
  /// waited longest (docs/net.md). 0: close at once.
  unsigned close_linger_ms = 200;
  /// memif client: while the link is down — the server restarted, or was not
  /// up yet when this port started — dial it again this often (maintain();
  /// DPDK 22.11's PMD never redials by itself). 0: never, and a server that
  /// is not up at start is an error.
  unsigned redial_ms = 500;
};

/// What the device reported and what we managed to set.
struct port_caps {
  std::string driver;
  uint16_t max_rx_queues = 0, max_tx_queues = 0;
  bool rx_ipv4_cksum = false, rx_udp_cksum = false, rx_rss_hash = false;
  bool tx_ipv4_cksum = false, tx_udp_cksum = false, tx_fast_free = false, tx_multi_seg = false;
  bool rss_udp = false;  // device hashes IPv4/UDP ports
  /// Frames cross shared memory (memif, ring): nothing on the link can damage
  /// them, so checksums guard nothing (engine_config::udp_checksum automatic).
  bool shared_memory_link = false;
  /// The PMD copies every segment of a chained packet with the CPU inside
  /// tx_burst (memif): a payload segment may point at any memory (zero-copy
  /// TX, engine::alloc_udp_ext), nothing DMAs from it later.
  bool tx_copies_segments = false;
  /// tx_burst enters the kernel (af_packet, af_xdp): a call costs
  /// microseconds, so the engine sends once per turn, never early.
  bool tx_syscall = false;
  uint16_t reta_size = 0;
  uint8_t key_size = 0;
  bool key_programmed = false, key_read_back = false;
  bool reta_programmed = false, reta_read_back = false;
  std::vector<std::string> notes;  // what could not be done, in words
};

struct port_queue_stats {
  uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0, tx_full = 0;
  uint64_t fault_dropped = 0, fault_corrupted = 0;  // injected
};

class port {
 public:
  /// Starts the EAL if needed, probes `cfg.device`, configures and starts it.
  /// Throws std::runtime_error with a message that says what failed and why.
  explicit port(const port_config& cfg);
  /// Wraps an ethdev that already exists (e.g. made with rte_eth_from_rings).
  port(uint16_t port_id, const port_config& cfg);
  port(const port&) = delete;
  port& operator=(const port&) = delete;
  ~port();

  uint16_t id() const noexcept { return _id; }
  uint16_t queues() const noexcept { return _queues; }
  mac_addr mac() const noexcept { return _mac; }
  const port_caps& caps() const noexcept { return _caps; }
  /// Frames arrive as the peer's stack wrote them: a shared-memory link
  /// without injected corruption on this port.
  bool frames_trusted() const noexcept {
    return _caps.shared_memory_link && _faults.rx_corrupt == 0 && _faults.tx_corrupt == 0;
  }
  rss_mode mode() const noexcept { return _mode; }
  /// The RSS model of this port's receive side (programmed, or emulated).
  const rss_config& rss() const noexcept { return *_rss; }
  rte_mempool* pool(uint16_t queue) const noexcept { return _pools[queue]; }

  /// Receives up to n packets from `queue` (owned by one shard).
  uint16_t rx_burst(uint16_t queue, rte_mbuf** pkts, uint16_t n) noexcept;
  /// Sends up to n packets on `queue`; returns how many the device took. In
  /// emulated and software modes any shard may use any queue: a per-queue
  /// lock serialises them.
  uint16_t tx_burst(uint16_t queue, rte_mbuf** pkts, uint16_t n) noexcept;

  const port_queue_stats& stats(uint16_t queue) const noexcept { return _qstats[queue].s; }

  /// Whether the link is up (memif and vhost connect asynchronously).
  bool link_up() const noexcept;

  /// Upkeep, from one thread now and then (the engine of queue 0 calls it
  /// every poll; it looks at the link at most every 10 ms): a memif client
  /// whose link has been down for redial_ms dials the server again. While it
  /// does, burst calls on every queue return nothing (and drop what they
  /// were given, as a down link does). `now_us`: the runtime clock.
  void maintain(uint64_t now_us) noexcept;
  /// Successful redials so far.
  uint64_t redials() const noexcept { return _redials; }

  /// The start-up report: device, queues, offloads, RSS programmed or not.
  std::string describe() const;

 private:
  void configure(const port_config& cfg);
  void program_rss(const port_config& cfg);

  uint16_t _id = 0;
  bool _probed = false;  // we probed the device, so we detach it
  std::string _device;
  uint16_t _queues = 1;
  mac_addr _mac;
  port_caps _caps;
  rss_mode _mode = rss_mode::software;
  std::optional<rss_config> _rss;
  std::vector<rte_mempool*> _pools;
  bool _shared_tx = false;
  // memif (DPDK 22.11) unmaps the peer's rings in its interrupt thread when
  // the peer goes away: burst calls run in a dp_guard section, and
  // transmitting checks the link first.
  bool _memif = false;
  // Redialing (memif client): the device is stopped and started again while
  // _paused keeps every burst call out of it (checked inside the dp_guard
  // section, so waiting for the sections drains them). Paused also means
  // the device is stopped.
  void redial() noexcept;
  unsigned _redial_ms = 0;
  bool _dial_warned = false;
  std::atomic<bool> _paused{false};
  uint64_t _checked_us = 0, _down_since_us = 0, _dialed_us = 0, _redials = 0;
  unsigned _close_linger_ms = 0;
  fault_config _faults;
  struct alignas(64) queue_state {
    rte_spinlock_t tx_lock;
    port_queue_stats s;
    uint64_t rng;  // xorshift state for fault injection
  };
  uint16_t inject_faults(queue_state& q, rte_mbuf** pkts, uint16_t n, double drop,
                         double corrupt) noexcept;
  std::unique_ptr<queue_state[]> _qstats;
};

}  // namespace machnet::net
