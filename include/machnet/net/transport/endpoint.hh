// endpoint: the transport of one shard — its flows keyed by tuple, its
// listening ports, packet demux, end-of-burst ACKs, and stateless RST replies.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "machnet/net/transport/config.hh"
#include "machnet/net/transport/env.hh"
#include "machnet/net/transport/flow.hh"
#include "machnet/net/transport/header.hh"
#include "machnet/net/types.hh"
#include "machnet/runtime/timer.hh"

namespace machnet::net::transport {

/// Counters of one endpoint.
struct endpoint_stats {
  uint64_t rx_packets = 0;
  /// Rejected by decode(), indexed by decode_error.
  std::array<uint64_t, 7> rx_bad{};
  uint64_t rx_no_flow = 0;   ///< not SYN, no flow for the tuple
  uint64_t rst_replies = 0;  ///< RSTs sent for packets of unknown flows
  uint64_t accepted = 0;     ///< flows created by listeners
  uint64_t tx_packets = 0;
  uint64_t tx_zero_copy = 0;  ///< of tx_packets, payload referenced, not copied
  uint64_t tx_alloc_failed = 0;
};

/// Fixed-size packet buffers for out-of-order data, recycled per endpoint.
class chunk_pool {
 public:
  explicit chunk_pool(std::size_t chunk) : _chunk(chunk) {}
  chunk_pool(const chunk_pool&) = delete;
  chunk_pool& operator=(const chunk_pool&) = delete;
  ~chunk_pool();
  uint8_t* get();
  void put(uint8_t* c) noexcept;
  std::size_t chunk_size() const noexcept { return _chunk; }

 private:
  std::size_t _chunk;
  std::vector<uint8_t*> _free;
};

/// The transport of one shard. The env feeds it packets (on_packet, then
/// flush() at the end of each RX burst) and advances the timer wheel; the
/// owner gets flows and messages through transport_owner.
class endpoint {
 public:
  endpoint(transport_env& env, transport_owner& owner, transport_config cfg = {});
  endpoint(const endpoint&) = delete;
  endpoint& operator=(const endpoint&) = delete;
  /// Drops every flow without callbacks (queued messages are freed).
  ~endpoint();

  /// Accepts SYNs to `local_port` (any local address). False if already listening.
  bool listen(uint16_t local_port);
  void unlisten(uint16_t local_port);
  bool listening(uint16_t local_port) const { return _listeners.count(local_port) != 0; }

  /// Opens a flow (SYN now, retransmitted on the RTO timer). `t.local_*` is
  /// our side. nullptr if the tuple already has a flow. on_connected() or
  /// on_error() follows; send() may queue messages right away.
  flow* connect(const flow_tuple& t);

  /// One received packet of flow `t` (local = its destination): the UDP
  /// payload, i.e. Machnet header + data. The bytes are only read during the call.
  void on_packet(const flow_tuple& t, std::span<const uint8_t> pkt);
  /// End of an RX burst: sends the ACKs the burst made pending (an ACK for a
  /// delivered message may wait one more flush for DATA to carry it:
  /// transport_config::ack_waits_for_reply; transport_env::want_flush asks for it).
  void flush();

  flow* find(const flow_tuple& t) noexcept;
  std::size_t flow_count() const noexcept { return _flows.size(); }
  /// Calls fn(flow&) for every live flow (fn must not open or close flows).
  template <typename F>
  void for_each_flow(F&& fn) {
    for (auto& [t, f] : _flows) fn(*f);
  }
  const endpoint_stats& stats() const noexcept { return _stats; }
  const transport_config& config() const noexcept { return _cfg; }
  transport_env& env() noexcept { return _env; }
  transport_owner& owner() noexcept { return _owner; }

 private:
  friend class flow;

  /// Marks transport code on the stack: reap() waits until it unwinds.
  struct scope {
    explicit scope(endpoint& e) noexcept : ep(e) { ++ep._depth; }
    ~scope() { --ep._depth; }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
    endpoint& ep;
  };

  seq_t next_isn();
  /// Builds and sends one packet; false if the env had no buffer.
  bool emit(const flow_tuple& t, const header& h, const uint8_t* payload, std::size_t len);
  /// Like emit, payload `len` bytes of `m` from `off`: referenced by the
  /// packet when the env can (transport_env::alloc_tx_ref), else copied.
  bool emit_ref(const flow_tuple& t, const header& h, message& m, std::size_t off, std::size_t len);
  void reply_rst(const flow_tuple& t, const header& h);
  void accept(const flow_tuple& t, const header& syn);
  /// Takes the flow out of the tuple table (it may live on as a zombie).
  void unlink(flow& f) noexcept;
  /// Destroys the flow soon (never under its own stack frame).
  void retire(flow& f);
  void keep_zombie(flow& f);
  void queue_ack(flow& f);
  void reap();

  transport_env& _env;
  transport_owner& _owner;
  transport_config _cfg;
  endpoint_stats _stats;
  chunk_pool _pool;
  std::mt19937_64 _isn_rng;
  std::unordered_set<uint16_t> _listeners;
  std::unordered_map<flow_tuple, std::unique_ptr<flow>, flow_tuple_hash> _flows;
  flow_tuple _memo_tuple;       // find()'s last hit (cleared when that flow leaves _flows)
  flow* _memo_flow = nullptr;
  std::vector<std::unique_ptr<flow>> _zombies;    // closed, held messages not yet taken
  std::vector<std::unique_ptr<flow>> _graveyard;  // destroyed by the reaper
  std::vector<flow*> _ack_list;                   // flows with an ACK due at flush() (or held)
  machnet::timer _reaper;
  unsigned _depth = 0;
};

}  // namespace machnet::net::transport
