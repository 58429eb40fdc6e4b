// port: ethdev probe, configuration (queues, mempools, offloads, RSS), start,
// burst I/O with per-queue counters, and the start-up report.
#include "machnet/net/port.hh"

#include <rte_alarm.h>
#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_interrupts.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <fmt/format.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <stdexcept>

#include "machnet/net/dp_guard.hh"
#include "machnet/runtime/log.hh"

namespace machnet::net {

namespace {
std::atomic<unsigned> g_pool_seq{0};
// How long a memif client that reached its server waits for the handshake
// before it dials again.
constexpr uint64_t handshake_grace_us = 2'000'000;

std::string device_name(const std::string& device) { return device.substr(0, device.find(',')); }

// Runs `fn` in DPDK's interrupt thread (as an alarm callback) and waits for
// it. The memif PMD tears a connection down in that thread when the peer
// hangs up; a stop or close called from another thread at the same moment
// ran the same teardown twice (an rte_free of freed memory: "EAL: Error:
// Invalid memory", then a crash at exit under ASan). Run there, they take
// turns. DPDK's testpmd detaches devices from an alarm for the same reason.
void in_intr_thread(const std::function<void()>& fn) {
  struct call {
    const std::function<void()>* fn;
    std::atomic<bool> done{false};
  } c{&fn};
  auto run = [](void* arg) {
    auto* cl = static_cast<call*>(arg);
    (*cl->fn)();
    cl->done.store(true, std::memory_order_release);
  };
  if (rte_thread_is_intr() || rte_eal_alarm_set(1, run, &c) != 0) {
    fn();
    return;
  }
  while (!c.done.load(std::memory_order_acquire)) ::usleep(50);
}

// The value of `key` in a device string's arguments ("" if absent).
std::string device_arg(const std::string& device, const std::string& key) {
  std::size_t pos = device.find(',');
  while (pos != std::string::npos) {
    std::size_t next = device.find(',', pos + 1);
    std::string kv = device.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=')
      return kv.substr(key.size() + 1);
    pos = next;
  }
  return {};
}

bool is_memif_client(const std::string& device) {
  return device.rfind("net_memif", 0) == 0 && device_arg(device, "role") == "client";
}

// A memif server whose previous process died leaves its socket file behind
// and the PMD refuses to bind. Remove it when nobody answers on it (a live
// server keeps it: the probe then fails as it should).
void remove_stale_memif_socket(const std::string& device) {
  if (device.rfind("net_memif", 0) != 0) return;
  const std::string path = device_arg(device, "socket");
  const bool server = device_arg(device, "role") != "client";
  const bool abstract = device_arg(device, "socket-abstract") != "no";
  if (!server || abstract || path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) return;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size());
  bool refused = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno == ECONNREFUSED;
  ::close(fd);
  if (refused) {
    log::warn("port {}: removing stale memif socket {} (nobody listens on it)", device_name(device), path);
    ::unlink(path.c_str());
  }
}

[[noreturn]] void fail(const std::string& device, const std::string& what, int err) {
  throw std::runtime_error(fmt::format("port {}: {}: {}", device, what, rte_strerror(err < 0 ? -err : err)));
}
}  // namespace

const char* to_string(rss_mode m) noexcept {
  switch (m) {
    case rss_mode::hardware: return "hardware";
    case rss_mode::emulated: return "emulated";
    case rss_mode::software: return "software";
  }
  return "?";
}

rss_mode parse_rss_mode(const std::string& s) {
  if (s == "hardware") return rss_mode::hardware;
  if (s == "emulated") return rss_mode::emulated;
  if (s == "software") return rss_mode::software;
  throw std::invalid_argument("unknown RSS mode '" + s + "' (expected hardware|emulated|software)");
}

const char* to_string(checksum_policy p) noexcept {
  switch (p) {
    case checksum_policy::automatic:
      return "automatic";
    case checksum_policy::on:
      return "on";
    case checksum_policy::off:
      return "off";
  }
  return "?";
}

checksum_policy parse_checksum_policy(const std::string& s) {
  for (auto p : {checksum_policy::automatic, checksum_policy::on, checksum_policy::off})
    if (s == to_string(p)) return p;
  throw std::invalid_argument("unknown UDP checksum policy '" + s + "' (expected automatic|on|off)");
}

port::port(const port_config& cfg) : _device(cfg.device) {
  if (cfg.device.empty()) throw std::invalid_argument("port: empty device string");
  eal_config ec = cfg.eal;
  const std::string name = device_name(cfg.device);
  if (is_pci_address(cfg.device)) ec.pci_allow.push_back(cfg.device);
  eal_start(ec);
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &id) != 0) {
    remove_stale_memif_socket(cfg.device);
    int rc = rte_dev_probe(cfg.device.c_str());
    if (rc < 0) fail(cfg.device, "cannot probe the device (check the device string and that its "
                                 "driver can open it)", rc);
    if (rte_eth_dev_get_port_by_name(name.c_str(), &id) != 0)
      throw std::runtime_error(fmt::format("port {}: probed, but no ethdev named '{}' appeared",
                                           cfg.device, name));
    _probed = true;
  }
  _id = id;
  configure(cfg);
}

port::port(uint16_t port_id, const port_config& cfg) : _id(port_id) {
  if (!rte_eth_dev_is_valid_port(port_id))
    throw std::invalid_argument(fmt::format("port: {} is not a valid ethdev port id", port_id));
  char name[RTE_ETH_NAME_MAX_LEN];
  rte_eth_dev_get_name_by_port(port_id, name);
  _device = name;
  configure(cfg);
}

void port::configure(const port_config& cfg) {
  rte_eth_dev_info info;
  if (int rc = rte_eth_dev_info_get(_id, &info); rc != 0) fail(_device, "rte_eth_dev_info_get", rc);
  _caps.driver = info.driver_name ? info.driver_name : "?";
  _memif = _caps.driver.find("memif") != std::string::npos;
  _redial_ms = is_memif_client(_device) ? cfg.redial_ms : 0;
  _caps.shared_memory_link = _memif || _caps.driver == "net_ring";
  _caps.tx_copies_segments = _memif;
  _caps.tx_syscall = _caps.driver.find("af_packet") != std::string::npos ||
                     _caps.driver.find("af_xdp") != std::string::npos;
  _caps.max_rx_queues = info.max_rx_queues;
  _caps.max_tx_queues = info.max_tx_queues;
  _caps.rx_ipv4_cksum = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
  _caps.rx_udp_cksum = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
  _caps.rx_rss_hash = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_RSS_HASH;
  _caps.tx_ipv4_cksum = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
  _caps.tx_udp_cksum = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
  _caps.tx_fast_free = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
  _caps.tx_multi_seg = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
  _caps.rss_udp = info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_UDP;
  _caps.reta_size = info.reta_size;
  _caps.key_size = info.hash_key_size;

  if (cfg.queues == 0) throw std::invalid_argument("port: at least one queue is needed");
  _queues = std::min<uint16_t>(cfg.queues, std::min(info.max_rx_queues, info.max_tx_queues));
  if (_queues < cfg.queues)
    _caps.notes.push_back(fmt::format("device has {} queue pairs for {} shards: the rest are served "
                                      "by software hand-off", _queues, cfg.queues));

  // RSS mode: what was asked, or what the device can do.
  bool hw_possible = _caps.rss_udp && _queues == cfg.queues;
  if (cfg.rss) {
    _mode = *cfg.rss;
    if (_mode == rss_mode::hardware && !_caps.rss_udp)
      throw std::runtime_error(fmt::format(
          "port {}: hardware RSS requested, but driver {} does not hash IPv4/UDP (use emulated RSS "
          "on links that map TX queue i to the peer's RX queue i, or software)", _device, _caps.driver));
    if (_mode == rss_mode::emulated && _queues < cfg.queues)
      throw std::runtime_error(fmt::format(
          "port {}: emulated RSS needs {} queue pairs, the device has {}", _device, cfg.queues, _queues));
  } else {
    _mode = hw_possible && _queues > 1 ? rss_mode::hardware
            : _queues == cfg.queues && _queues > 1 ? rss_mode::emulated
                                                   : rss_mode::software;
  }
  // Any shard may send on any queue in emulated mode, and shards without a
  // queue of their own share one: only then do TX queues need a lock.
  _shared_tx = _mode == rss_mode::emulated || _queues < cfg.queues;

  rte_eth_conf conf{};
  if (_mode == rss_mode::hardware) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf =
        (RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_UDP) & info.flow_type_rss_offloads;
    if (info.hash_key_size == cfg.key.size()) {
      conf.rx_adv_conf.rss_conf.rss_key = const_cast<uint8_t*>(cfg.key.data());
      conf.rx_adv_conf.rss_conf.rss_key_len = uint8_t(cfg.key.size());
    } else {
      _caps.notes.push_back(fmt::format("device key size is {} bytes, not 40: key not programmed",
                                        info.hash_key_size));
    }
  }
  uint64_t rx_off = 0, tx_off = 0;
  if (_caps.rx_ipv4_cksum) rx_off |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
  if (_caps.rx_udp_cksum) rx_off |= RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
  if (_caps.rx_rss_hash && _mode == rss_mode::hardware) rx_off |= RTE_ETH_RX_OFFLOAD_RSS_HASH;
  if (_caps.tx_ipv4_cksum) tx_off |= RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
  if (_caps.tx_udp_cksum) tx_off |= RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
  if (_caps.tx_multi_seg) tx_off |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
  // Fast free needs every mbuf of a TX queue to come from one pool with refcnt
  // 1: true only when each shard sends on its own queue.
  if (_caps.tx_fast_free && !_shared_tx) tx_off |= RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
  conf.rxmode.offloads = rx_off;
  conf.txmode.offloads = tx_off;
  _caps.tx_fast_free = tx_off & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;

  if (int rc = rte_eth_dev_configure(_id, _queues, _queues, &conf); rc != 0)
    fail(_device, fmt::format("rte_eth_dev_configure({} queues)", _queues), rc);
  if (int rc = rte_eth_dev_set_mtu(_id, cfg.mtu); rc != 0)
    _caps.notes.push_back(fmt::format("cannot set MTU {} ({}): using the device's", cfg.mtu,
                                      rte_strerror(-rc)));
  uint16_t rxd = cfg.rx_desc, txd = cfg.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(_id, &rxd, &txd);

  int socket = rte_eth_dev_socket_id(_id);
  if (socket < 0) socket = 0;
  _faults = cfg.faults;
  _close_linger_ms = cfg.close_linger_ms;
  if (_faults.any())
    _caps.notes.push_back(fmt::format(
        "FAULT INJECTION: rx drop {} corrupt {}, tx drop {} corrupt {} (seed {})", _faults.rx_drop,
        _faults.rx_corrupt, _faults.tx_drop, _faults.tx_corrupt, _faults.seed));
  _qstats.reset(new queue_state[_queues]);
  for (uint16_t q = 0; q < _queues; ++q) {
    rte_spinlock_init(&_qstats[q].tx_lock);
    _qstats[q].rng = (_faults.seed + q) * 0x9e3779b97f4a7c15ull | 1;
    auto name = fmt::format("mn{}_{}_{}", _id, q, g_pool_seq++);
    rte_mempool* mp = rte_pktmbuf_pool_create(name.c_str(), cfg.mbufs_per_queue, 256, 0,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, socket);
    if (!mp) fail(_device, fmt::format("cannot create mempool for queue {} ({} mbufs)", q,
                                       cfg.mbufs_per_queue), rte_errno);
    _pools.push_back(mp);
    rte_eth_rxconf rxc = info.default_rxconf;
    rxc.offloads = rx_off;
    if (int rc = rte_eth_rx_queue_setup(_id, q, rxd, socket, &rxc, mp); rc != 0)
      fail(_device, fmt::format("rx queue {} setup", q), rc);
    rte_eth_txconf txc = info.default_txconf;
    txc.offloads = tx_off;
    if (int rc = rte_eth_tx_queue_setup(_id, q, txd, socket, &txc); rc != 0)
      fail(_device, fmt::format("tx queue {} setup", q), rc);
  }
  if (int rc = rte_eth_dev_start(_id); rc != 0) {
    if (!_redial_ms) fail(_device, "rte_eth_dev_start", rc);
    // A memif client whose server is not up yet: dial again later.
    _paused.store(true);
    _dial_warned = true;
    _caps.notes.push_back(fmt::format("memif server not reachable yet: dialing every {} ms", _redial_ms));
    log::warn("port {}: memif server not reachable yet; dialing again every {} ms", device_name(_device),
              _redial_ms);
  }
  if (cfg.promiscuous && rte_eth_promiscuous_enable(_id) != 0)
    _caps.notes.push_back("promiscuous mode not supported");
  rte_ether_addr ea;
  rte_eth_macaddr_get(_id, &ea);
  std::memcpy(_mac.b.data(), ea.addr_bytes, 6);
  if (cfg.mac && *cfg.mac != _mac) {
    std::memcpy(ea.addr_bytes, cfg.mac->b.data(), 6);
    int rc = rte_eth_dev_default_mac_addr_set(_id, &ea);
    if (rc == -ENOTSUP) {
      // Virtual links (ring, memif) don't filter by MAC: use it in software.
      _caps.notes.push_back(fmt::format("device cannot change its MAC ({}): using {} in software",
                                        _mac.str(), cfg.mac->str()));
    } else if (rc != 0) {
      fail(_device, fmt::format("cannot set MAC {}", cfg.mac->str()), rc);
    }
    _mac = *cfg.mac;
  }
  program_rss(cfg);
  log::info("{}", describe());
}

void port::program_rss(const port_config& cfg) {
  if (_mode != rss_mode::hardware) {
    _rss.emplace(rss_model::toeplitz, cfg.key, make_reta(_queues, cfg.reta_size));
    return;
  }
  rss_model model = rss_model::toeplitz;
  rss_key key = cfg.key;
  // Key: read back what the device uses.
  uint8_t kbuf[64] = {};
  rte_eth_rss_conf rc{};
  rc.rss_key = kbuf;
  rc.rss_key_len = sizeof kbuf;
  if (rte_eth_dev_rss_hash_conf_get(_id, &rc) == 0 && rc.rss_key_len >= 40) {
    _caps.key_read_back = true;
    _caps.key_programmed = std::memcmp(kbuf, cfg.key.data(), 40) == 0;
    if (!_caps.key_programmed) {
      std::memcpy(key.data(), kbuf, 40);
      if (_caps.driver.find("ena") != std::string::npos) model = rss_model::ena_fixed;
      _caps.notes.push_back(fmt::format("device kept its own RSS key: modelling it as {}",
                                        to_string(model)));
    }
  } else if (_caps.driver.find("ena") != std::string::npos) {
    model = rss_model::ena_fixed;
    key = ena_fixed_rss_key;
    _caps.notes.push_back("RSS key not readable on ENA: assuming the fixed-key ENA model");
  } else {
    _caps.notes.push_back("RSS key not readable: assuming the programmed key");
  }
  // RETA: program round-robin, read back.
  std::vector<uint16_t> reta = make_reta(_queues, _caps.reta_size ? _caps.reta_size : 128);
  if (_caps.reta_size) {
    std::vector<rte_eth_rss_reta_entry64> e(std::max<std::size_t>(1, _caps.reta_size / RTE_ETH_RETA_GROUP_SIZE));
    for (std::size_t i = 0; i < _caps.reta_size; ++i) {
      e[i / RTE_ETH_RETA_GROUP_SIZE].mask |= uint64_t(1) << (i % RTE_ETH_RETA_GROUP_SIZE);
      e[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] = reta[i];
    }
    _caps.reta_programmed = rte_eth_dev_rss_reta_update(_id, e.data(), _caps.reta_size) == 0;
    for (auto& g : e) {
      g.mask = ~uint64_t(0);
      std::memset(g.reta, 0, sizeof g.reta);
    }
    if (rte_eth_dev_rss_reta_query(_id, e.data(), _caps.reta_size) == 0) {
      _caps.reta_read_back = true;
      for (std::size_t i = 0; i < _caps.reta_size; ++i)
        reta[i] = e[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE];
    }
    if (!_caps.reta_programmed) _caps.notes.push_back("RETA not programmable: using the device's");
  }
  _rss.emplace(model, key, std::move(reta));
}

port::~port() {
  if (_memif && _close_linger_ms) {
    // Nobody polls this port any more; give the peer the chance to close
    // first, so that a peer without dp_guard is not inside rx_burst when our
    // hang-up unmaps its rings (docs/net.md: memif shutdown).
    for (unsigned ms = 0; ms < _close_linger_ms && link_up(); ++ms) ::usleep(1000);
  }
  auto teardown = [this] {
    rte_eth_dev_stop(_id);
    rte_eth_dev_close(_id);
    if (_probed) rte_eal_hotplug_remove("vdev", device_name(_device).c_str());
  };
  if (_memif)
    in_intr_thread(teardown);
  else
    teardown();
  for (auto* mp : _pools) rte_mempool_free(mp);
}

// Drops (frees) and corrupts (flips one bit past the Ethernet header) packets
// at the configured rates; compacts the array; returns the survivors.
uint16_t port::inject_faults(queue_state& q, rte_mbuf** pkts, uint16_t n, double drop,
                             double corrupt) noexcept {
  auto next = [&q] {
    q.rng ^= q.rng << 13;
    q.rng ^= q.rng >> 7;
    q.rng ^= q.rng << 17;
    return double(q.rng >> 11) * (1.0 / 9007199254740992.0);
  };
  uint16_t kept = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    if (drop > 0 && next() < drop) {
      rte_pktmbuf_free(m);
      ++q.s.fault_dropped;
      continue;
    }
    if (corrupt > 0 && next() < corrupt && rte_pktmbuf_data_len(m) > 14) {
      uint16_t len = rte_pktmbuf_data_len(m);
      uint16_t off = uint16_t(14 + q.rng % (len - 14));
      rte_pktmbuf_mtod(m, uint8_t*)[off] ^= uint8_t(1u << (q.rng >> 60 & 7));
      // Corruption happens "on the wire": a device check that passed before
      // it no longer vouches for the packet, so software must verify again.
      m->ol_flags &= ~(RTE_MBUF_F_RX_IP_CKSUM_MASK | RTE_MBUF_F_RX_L4_CKSUM_MASK);
      ++q.s.fault_corrupted;
    }
    pkts[kept++] = m;
  }
  return kept;
}

uint16_t port::rx_burst(uint16_t queue, rte_mbuf** pkts, uint16_t n) noexcept {
  uint16_t got;
  {
    dp_guard::section g(_memif);
    if (_paused.load(std::memory_order_relaxed)) return 0;
    got = rte_eth_rx_burst(_id, queue, pkts, n);
  }
  if (got && (_faults.rx_drop > 0 || _faults.rx_corrupt > 0))
    got = inject_faults(_qstats[queue], pkts, got, _faults.rx_drop, _faults.rx_corrupt);
  if (got) {
    auto& s = _qstats[queue].s;
    s.rx_packets += got;
    for (uint16_t i = 0; i < got; ++i) s.rx_bytes += rte_pktmbuf_pkt_len(pkts[i]);
  }
  return got;
}

uint16_t port::tx_burst(uint16_t queue, rte_mbuf** pkts, uint16_t n) noexcept {
  dp_guard::section g(_memif);
  auto& q = _qstats[queue];
  if (_memif && n && (_paused.load(std::memory_order_relaxed) || !link_up())) {
    // The peer is gone: the packets are lost, like on an unplugged wire.
    q.s.tx_full += 1;
    for (uint16_t i = 0; i < n; ++i) rte_pktmbuf_free(pkts[i]);
    return n;
  }
  if (_shared_tx) rte_spinlock_lock(&q.tx_lock);
  if (n && (_faults.tx_drop > 0 || _faults.tx_corrupt > 0)) {
    // Dropped packets count as sent: the caller's array keeps only survivors.
    uint16_t kept = inject_faults(q, pkts, n, _faults.tx_drop, _faults.tx_corrupt);
    uint16_t sent = rte_eth_tx_burst(_id, queue, pkts, kept);
    q.s.tx_packets += sent;
    if (sent < kept) {
      ++q.s.tx_full;
      for (uint16_t i = sent; i < kept; ++i) rte_pktmbuf_free(pkts[i]);  // lost: like the wire
    }
    if (_shared_tx) rte_spinlock_unlock(&q.tx_lock);
    return n;
  }
  uint16_t sent = rte_eth_tx_burst(_id, queue, pkts, n);
  q.s.tx_packets += sent;
  for (uint16_t i = 0; i < sent; ++i) q.s.tx_bytes += rte_pktmbuf_pkt_len(pkts[i]);
  if (sent < n) ++q.s.tx_full;
  if (_shared_tx) rte_spinlock_unlock(&q.tx_lock);
  return sent;
}

void port::maintain(uint64_t now_us) noexcept {
  if (!_redial_ms || now_us - _checked_us < 10'000) return;
  _checked_us = now_us;
  const bool started = !_paused.load(std::memory_order_relaxed);
  if (started && link_up()) {
    _down_since_us = 0;
    return;
  }
  if (!_down_since_us) _down_since_us = now_us;
  // After a dial that reached the server, the memif handshake runs in the
  // interrupt thread: give it time (a loaded VM took over 50 ms; dialing
  // again aborted it, over and over).
  const uint64_t every = uint64_t(_redial_ms) * 1000;
  const uint64_t wait = started ? std::max<uint64_t>(every, handshake_grace_us) : every;
  if (now_us - _down_since_us < every || (_dialed_us && now_us - _dialed_us < wait)) return;
  _dialed_us = now_us;
  redial();
}

void port::redial() noexcept {
  // Keep every queue's burst calls out, and wait for those inside: stopping
  // the device swaps its burst functions for stubs and unmaps the rings.
  const bool was_started = !_paused.exchange(true, std::memory_order_seq_cst);
  if (was_started) dp_guard::wait_quiescent();
  // The PMD logs every failed dial as an error; once we said the server is
  // gone, keep its log quiet while dialing (twice a second by default).
  const int memif_log = _dial_warned ? rte_log_register("pmd.net.memif") : -1;
  const int memif_level = memif_log >= 0 ? rte_log_get_level(uint32_t(memif_log)) : -1;
  if (memif_level >= 0) rte_log_set_level(uint32_t(memif_log), RTE_LOG_CRIT);
  int rc = 0;
  in_intr_thread([&] {  // not while the PMD handles a hang-up (in_intr_thread)
    if (was_started) rte_eth_dev_stop(_id);
    rc = rte_eth_dev_start(_id);
  });
  if (memif_level >= 0) rte_log_set_level(uint32_t(memif_log), uint32_t(memif_level));
  if (rc != 0) {
    if (!_dial_warned)
      log::warn("port {}: memif link down and the server not reachable; dialing again every {} ms",
                device_name(_device), _redial_ms);
    _dial_warned = true;
    return;  // still paused: the device is stopped
  }
  _dial_warned = false;
  ++_redials;
  _paused.store(false, std::memory_order_release);
  log::info("port {}: memif link was down: dialed the server again", device_name(_device));
}

bool port::link_up() const noexcept {
  rte_eth_link l{};
  return rte_eth_link_get_nowait(_id, &l) == 0 && l.link_status == RTE_ETH_LINK_UP;
}

std::string port::describe() const {
  auto yn = [](bool b) { return b ? "yes" : "no"; };
  std::string s = fmt::format(
      "port {} ({}), driver {}, MAC {}\n"
      "  queues        : {} RX/TX pairs (device max {}/{})\n"
      "  RX offloads   : ipv4-cksum {}, udp-cksum {}, rss-hash {}\n"
      "  TX offloads   : ipv4-cksum {}, udp-cksum {}, fast-free {}, multi-seg {} "
      "(missing ones done in software)\n"
      "  RSS           : mode {}, device hashes UDP {}, key programmed {} (read back {}), "
      "RETA {} entries programmed {} (read back {})\n"
      "  RSS model     : {}",
      _id, _device, _caps.driver, _mac.str(), _queues, _caps.max_rx_queues, _caps.max_tx_queues,
      yn(_caps.rx_ipv4_cksum), yn(_caps.rx_udp_cksum), yn(_caps.rx_rss_hash),
      yn(_caps.tx_ipv4_cksum), yn(_caps.tx_udp_cksum), yn(_caps.tx_fast_free),
      yn(_caps.tx_multi_seg), to_string(_mode), yn(_caps.rss_udp), yn(_caps.key_programmed),
      yn(_caps.key_read_back), _caps.reta_size, yn(_caps.reta_programmed),
      yn(_caps.reta_read_back), _rss ? _rss->describe() : "none");
  for (const auto& n : _caps.notes) s += "\n  note          : " + n;
  return s;
}

}  // namespace machnet::net
