// channel_engine: machnetd's side of one shared-memory channel — it owns the
// truth about who holds each buffer, validates every descriptor the app
// writes, copies messages out of and into the buffer pool, keeps the app's
// free ring topped up, serves the control queue and rings the app's doorbell.
// No DPDK (the shard's poller drives it; tests drive it directly).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "machnet/net/shm/channel.hh"

namespace machnet::shm {

/// Why a TX descriptor was refused.
enum class tx_refusal : uint8_t {
  none,
  bad_index,     ///< a buffer index outside the pool
  not_owned,     ///< a buffer the app does not hold (or twice in the chain)
  bad_length,    ///< len > data per buffer, or the sum differs from msg_len
  too_large,     ///< msg_len > 8 MiB
  bad_chain,     ///< nbufs does not match the chain, or a flagged head
};
const char* to_string(tx_refusal r) noexcept;

class channel_engine {
 public:
  /// Creates the region (memfd) and two eventfds; throws on failure.
  channel_engine(const channel_params& p, const char* name);
  channel_engine(const channel_engine&) = delete;
  channel_engine& operator=(const channel_engine&) = delete;
  ~channel_engine();

  /// The descriptors to pass to the app: region, engine doorbell (app
  /// writes), app doorbell (engine writes). Still owned by this object.
  int region_fd() const noexcept { return _map.fd(); }
  int engine_doorbell() const noexcept { return _engine_fd; }
  int app_doorbell() const noexcept { return _app_fd; }
  const channel_map& map() const noexcept { return _map; }

  /// Takes back returned buffers and tops up the free ring. Returns true if
  /// it freed any (held deliveries may now fit).
  bool reclaim();
  /// Next message the app queued for sending. `sink(flow, msg_len, spans)`
  /// gets the message as the buffer spans of its chain (valid during the
  /// call) and returns true when it took it: the buffers then return to the
  /// engine. When it returns false (e.g. the flow's queue is full) the message
  /// stays first in line for the next pop_tx. False when nothing was taken.
  /// Refused descriptors are counted, reclaimed and skipped.
  using tx_sink = std::function<bool(const flow_info&, std::size_t,
                                     std::span<const std::span<const uint8_t>>)>;
  bool pop_tx(const tx_sink& sink);
  /// Copies a received message into buffers and queues it for the app; false
  /// (nothing queued) when the free buffers are too few: call again after
  /// reclaim() freed some.
  bool deliver(const flow_info& f, std::span<const uint8_t> bytes);
  /// Next control request, if any.
  bool pop_ctrl(ctrl_req& r);
  /// Answers a control request.
  void complete(const ctrl_resp& r);
  /// Makes RX / CQ entries visible and rings the app's doorbell if it sleeps.
  /// Call once per poll after deliver()/complete().
  void flush();
  /// True if the app queued something (TX, control, returned buffers).
  bool pending() const noexcept;
  /// Shard idle: ask the app to ring the engine doorbell; false if work
  /// arrived meanwhile (stay awake).
  bool enter_sleep() noexcept;
  /// Shard awake again: clears the flag and drains the doorbell.
  void leave_sleep() noexcept;
  /// Marks the channel closed for the app and wakes it.
  void shut() noexcept;

  uint32_t engine_buffers() const noexcept { return uint32_t(_free.size()); }
  uint32_t app_buffers() const noexcept { return _map.params().buf_count - engine_buffers(); }
  uint64_t refusals() const noexcept { return _refusals; }
  tx_refusal last_refusal() const noexcept { return _last_refusal; }
  channel_stats& stats() const noexcept { return _map.header().stats; }

 private:
  void give_back(uint32_t i) noexcept;  // app -> engine, if the app owns it
  void refuse(tx_refusal r) noexcept;

  channel_map _map;
  int _engine_fd = -1;
  int _app_fd = -1;
  std::vector<uint8_t> _app_owned;   // per buffer: 1 if the app holds it
  std::vector<uint32_t> _free;       // engine-held free buffers (LIFO)
  std::vector<uint32_t> _chain;      // scratch: indices of the chain being read
  std::vector<std::span<const uint8_t>> _spans;
  ring_producer<uint32_t> _free_ring, _rx_ring;
  ring_consumer<uint32_t> _ret_ring, _tx_ring;
  ring_consumer<ctrl_req> _ctrl_sq;
  ring_producer<ctrl_resp> _ctrl_cq;
  uint32_t _free_target;
  uint32_t _retry = no_buffer;  // head the sink declined last time
  bool _produced = false;
  uint64_t _refusals = 0;
  tx_refusal _last_refusal = tx_refusal::none;
};

}  // namespace machnet::shm
