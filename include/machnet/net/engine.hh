// engine: the per-shard packet engine — a poller on the shard's reactor that
// receives a burst from its queue, parses it, answers ARP and ping, demuxes
// UDP by flow tuple to handlers, and sends batched packets once per loop turn.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "machnet/net/arp_cache.hh"
#include "machnet/net/port.hh"
#include "machnet/net/proto.hh"
#include "machnet/net/rss.hh"
#include "machnet/net/types.hh"
#include "machnet/runtime/poller.hh"

struct rte_mbuf;
struct rte_mbuf_ext_shared_info;
struct rte_ring;

namespace machnet {
class reactor;
}

namespace machnet::net {

class engine;

/// Per-host settings shared by the engines of one port.

struct engine_config {
  ipv4_addr ip;
  /// UDP checksums. A peer that receives over a link that can corrupt (e.g.
  /// fault injection on its side of a memif) needs `on` here.
  checksum_policy udp_checksum = checksum_policy::automatic;
  /// Send multi-packet messages' payload by reference where the device
  /// copies with the CPU (memif) and no software checksum is needed.
  bool zero_copy_tx = true;
  /// Answer ICMP echo requests for our address.
  bool answer_ping = true;
  /// Announce our address with a gratuitous ARP when the queue-0 engine starts.
  bool gratuitous_arp = true;
  /// Packets waiting for ARP resolution, per engine.
  std::size_t arp_pending_max = 1024;
  /// Without RX interrupts an idle shard may still sleep this long between
  /// polls of the NIC queue (adaptive/sleep poll modes)...
  uint64_t idle_rx_poll_us = 200;
  /// ...and once no packet came or went for idle_backoff_after_us, doubling
  /// after every sleep up to idle_rx_poll_max_us (an idle sidecar then costs
  /// a few % of a CPU instead of ~40 %; the first packet after a long silence
  /// waits at most that long).
  uint64_t idle_backoff_after_us = 100'000;
  uint64_t idle_rx_poll_max_us = 2000;
  arp_resolver::config arp;
  /// UDP packets that carry a device RSS hash checked against the model when
  /// an engine starts; a mismatch refuses to run (see on_rss_mismatch).
  unsigned rss_verify_packets = 64;
  /// Called once on a mismatch with the explanation. Default: log the error and
  /// stop every shard with exit code 78 (EX_CONFIG). Packets are dropped after.
  std::function<void(const std::string&)> on_rss_mismatch;
};

/// Counters of one engine (read on its shard, or after it stopped).
struct engine_counters {
  uint64_t rx_packets = 0, rx_bytes = 0;
  uint64_t tx_packets = 0, tx_bytes = 0;
  uint64_t tx_dropped = 0;           // TX queue full and the batch buffer too
  uint64_t tx_no_mbuf = 0;           // mempool empty
  uint64_t udp_delivered = 0;
  uint64_t udp_no_handler = 0;       // no flow and no listener: dropped
  uint64_t rx_wrong_queue = 0;       // arrived on a queue the RSS model doesn't predict
  uint64_t handed_off = 0;           // sent to the owning shard in software
  uint64_t handoff_received = 0;
  uint64_t handoff_dropped = 0;      // owner's hand-off ring full
  uint64_t arp_requests_answered = 0, arp_requests_sent = 0, arp_replies_received = 0;
  uint64_t arp_failed = 0;           // resolution gave up: queued packets dropped
  uint64_t icmp_echo_answered = 0;
  uint64_t rss_verified = 0;         // device hashes that matched the model
  uint64_t rss_refused = 0;          // packets dropped after an RSS mismatch
  drop_counters drops;
};

/// Receives the UDP datagrams of a flow or a listening port.
class udp_handler {
 public:
  virtual ~udp_handler() = default;
  /// `m` is handed over (free it with rte_pktmbuf_free or keep it); `p` holds
  /// the parsed headers: payload at rte_pktmbuf_mtod(m) + p.payload_offset.
  virtual void on_udp(engine& e, rte_mbuf* m, const parse_result& p) = 0;
  /// Called after the RX burst in which this handler asked for it with
  /// engine::at_burst_end(this) (e.g. to send coalesced ACKs), before the
  /// turn's TX flush.
  virtual void on_burst_end(engine&) {}
};

/// The engines of one port, one per shard: software hand-off rings and the
/// software RSS over shards. Created before the engines, on any thread.
class engine_group {
 public:
  engine_group(port& p, unsigned shards, engine_config cfg);
  engine_group(const engine_group&) = delete;
  engine_group& operator=(const engine_group&) = delete;
  ~engine_group();

  port& dev() noexcept { return _port; }
  unsigned shards() const noexcept { return unsigned(_engines.size()); }
  const engine_config& config() const noexcept { return _cfg; }
  arp_cache& arp() noexcept { return _arp; }
  /// The shard that owns the packets we receive on flow `f`.
  unsigned owner_of(const flow_tuple& f) const noexcept;
  /// The model behind owner_of(): the port's RSS (hardware / emulated), or
  /// the software RETA over shards. Source ports are chosen with it.
  const rss_config& flow_rss() const noexcept;
  engine* engine_of(unsigned shard) const noexcept { return _engines[shard]; }

 private:
  friend class engine;
  port& _port;
  engine_config _cfg;
  arp_cache _arp;
  rss_config _shard_rss;  // software RETA over shards (software mode)
  std::vector<engine*> _engines;
  std::vector<rte_ring*> _handoff;
};

enum class send_status : uint8_t {
  queued,         ///< in this turn's TX batch
  awaiting_arp,   ///< held until the peer's MAC is known
  arp_failed,     ///< the peer did not answer ARP: dropped
  no_buffer,      ///< no mbuf or pending room: dropped
};
const char* to_string(send_status s) noexcept;

class engine final : public pollfn {
 public:
  static constexpr uint16_t rx_burst_size = 64;
  static constexpr uint16_t tx_batch_size = 64;

  /// Serves shard `shard` of `group`; must be constructed on that shard (it
  /// registers itself as a poller there). The shard uses queue `shard` if the
  /// port has one, else it receives by hand-off and sends on a shared queue.
  engine(engine_group& group, unsigned shard);
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  ~engine() override;

  /// Delivers datagrams to local port `local_port` from any remote (listeners
  /// are per shard: register on every shard). False if taken.
  bool listen(uint16_t local_port, udp_handler* h);
  void unlisten(uint16_t local_port);
  /// Gets the datagrams no flow or listener takes (nullptr: dropped and
  /// counted). The transport uses it to answer SYNs to closed ports with RST.
  void set_default_handler(udp_handler* h) noexcept { _default = h; }
  /// Delivers the datagrams of exactly `f` (takes precedence over listeners).
  bool attach(const flow_tuple& f, udp_handler* h);
  void detach(const flow_tuple& f);

  /// An mbuf with Eth/IPv4/UDP headers for `f` and `payload_len` bytes of room
  /// at payload(m); nullptr if the pool is empty.
  rte_mbuf* alloc_udp(const flow_tuple& f, uint16_t payload_len);
  /// Zero-copy TX (only when zero_copy_tx()): a UDP datagram for `f` whose
  /// payload is `head_len` bytes of room at payload(m) followed by `ext_len`
  /// bytes at `ext`, which are not copied: a second segment refers to them,
  /// holding one reference of `shinfo` (taken here, dropped when the packet
  /// is freed; its free_cb runs at zero). nullptr if the pool is empty.
  rte_mbuf* alloc_udp_ext(const flow_tuple& f, uint16_t head_len, const uint8_t* ext,
                          uint16_t ext_len, rte_mbuf_ext_shared_info* shinfo);
  static uint8_t* payload(rte_mbuf* m) noexcept;
  /// Finishes (MACs, checksum) and queues a packet from alloc_udp for `f`.
  /// The engine owns `m` afterwards, whatever the status.
  send_status send(rte_mbuf* m, const flow_tuple& f);
  /// Copies `len` bytes into a new packet and sends it.
  send_status send_udp(const flow_tuple& f, const void* data, uint16_t len);
  /// Pushes the TX batches to the device (the poller does this every turn).
  void flush();
  /// flush() now unless a device call costs a system call (then the end of
  /// the turn does it): an ACK in the middle of a long RX burst.
  void flush_early() {
    if (!_port.caps().tx_syscall) flush();
  }
  /// Asks for h->on_burst_end() once after the current RX burst.
  void at_burst_end(udp_handler* h);

  /// The RX queue the peer will deliver our packets of `f` to (emulated RSS:
  /// the TX queue we use), or our own queue.
  uint16_t tx_queue_for(const flow_tuple& f) const noexcept;

  unsigned shard() const noexcept { return _shard; }
  bool owns_queue() const noexcept { return _own_queue; }
  ipv4_addr ip() const noexcept { return _group._cfg.ip; }
  /// Whether alloc_udp_ext may be used: the device copies segments with the
  /// CPU and no software checksum has to read the payload.
  bool zero_copy_tx() const noexcept { return _zero_copy_tx; }
  /// When poll() last started draining RX (machnet::now_ns() clock).
  uint64_t rx_polled_ns() const noexcept { return _rx_polled_ns; }
  /// Whether this engine computes UDP checksums on TX (the resolved
  /// engine_config::udp_checksum policy).
  bool tx_checksums() const noexcept { return _checksums; }
  /// Whether received UDP checksums are verified (all but a trusted link
  /// without checksums on).
  bool rx_checksums() const noexcept { return !_rx_trusted; }
  mac_addr mac() const noexcept { return _group._port.mac(); }
  engine_group& group() noexcept { return _group; }
  const engine_counters& counters() const noexcept { return _c; }

  // pollfn
  bool poll() override;
  bool pure_poll() override;
  uint64_t max_sleep_us() const override;
  bool try_enter_interrupt_mode() override;

 private:
  void rx_one(rte_mbuf* m);
  bool verify_rss(const rte_mbuf* m, const parse_result& p);
  void deliver_udp(rte_mbuf* m, const parse_result& p);
  void handle_arp(rte_mbuf* m, const parse_result& p);
  bool enqueue_tx(uint16_t q, rte_mbuf* m);
  void send_arp_request(ipv4_addr target);
  void poll_arp();
  void finish_and_queue(rte_mbuf* m, const flow_tuple& f, mac_addr dst);
  const udp_header_template& tx_headers(const flow_tuple& f);

  engine_group& _group;
  port& _port;
  unsigned _shard;
  uint16_t _queue;      // RX queue (when _own_queue) and default TX queue
  bool _own_queue;
  bool _checksums;   // resolved udp_checksum policy (TX)
  bool _rx_trusted;  // !_checksums on a trusted link: RX skips UDP checksums
  bool _zero_copy_tx;
  struct queue_memo {  // the RSS queue (or owner shard) of the last flow looked up
    flow_tuple flow;
    uint16_t queue = 0;
    bool valid = false;
    /// queue for `f`: remembered, or compute() for a new flow (a burst is
    /// mostly one flow's; a hash per packet was ~5 % of a bulk side's cycles).
    template <class F>
    uint16_t get(const flow_tuple& f, F compute) {
      if (!valid || flow != f) *this = {f, uint16_t(compute()), true};
      return queue;
    }
  };
  mutable queue_memo _tx_memo;
  struct {  // deliver_udp's last flow and its handler (reset by every table change)
    flow_tuple flow;
    udp_handler* h = nullptr;
  } _rx_handler_memo;
  queue_memo _rx_memo;
  struct {  // the headers of the last flow alloc_udp* wrote for
    flow_tuple flow;
    udp_header_template hdr;
    bool valid = false;
  } _tx_hdr_memo;
  struct {  // send()'s last ARP answer, trusted until the turn ends or ARP is handled
    ipv4_addr ip;
    mac_addr mac;
    uint64_t turn = 0;
  } _arp_memo;
  uint64_t _turn = 1;  // poll() calls, for _arp_memo
  reactor* _reactor;
  rte_mempool* _pool;
  engine_counters _c;
  bool _announced = false;
  std::optional<rss_verifier> _verifier;
  unsigned _verify_left;
  bool _rss_failed = false;

  std::unordered_map<flow_tuple, udp_handler*, flow_tuple_hash> _flows;
  std::unordered_map<uint16_t, udp_handler*> _listeners;
  udp_handler* _default = nullptr;
  unsigned _idle_sleeps = 0;  // backoff steps since the queue went quiet
  uint64_t _last_io_us = 0;   // last RX or TX burst
  uint64_t _rx_polled_ns = 0;  // start of the last RX poll
  std::vector<udp_handler*> _burst_end;

  struct tx_batch {
    std::array<rte_mbuf*, tx_batch_size> pkts;
    uint16_t n = 0;
  };
  std::vector<tx_batch> _tx;  // one per port queue

  arp_resolver _resolver;
  struct waiting {
    rte_mbuf* m;
    flow_tuple f;
  };
  std::unordered_map<uint32_t, std::vector<waiting>> _arp_wait;  // by remote IP
  std::size_t _arp_wait_count = 0;
};

}  // namespace machnet::net
