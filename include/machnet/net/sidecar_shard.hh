// sidecar_shard: one shard of machnetd — its engine and transport, the
// channels it serves, the listeners (replicated on every shard) and the
// routing of flows to channels, also across shards: a listener's flows live
// on whichever shard RSS picked and are forwarded to the listening channel.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "machnet/net/engine.hh"
#include "machnet/net/shm/channel_engine.hh"
#include "machnet/net/transport_shard.hh"
#include "machnet/runtime/poller.hh"
#include "machnet/runtime/task.hh"
#include "machnet/runtime/timer.hh"

namespace machnet::net {

class sidecar_shard;

/// Every shard of one sidecar, indexed by shard id (fixed after start).
struct sidecar_shards {
  std::vector<sidecar_shard*> shard;
  ipv4_addr ip;
};

/// flow_info (the app's view) <-> flow_tuple (the transport's).
inline shm::flow_info to_info(const flow_tuple& t) noexcept {
  return {t.local_ip.v, t.remote_ip.v, t.local_port, t.remote_port};
}
inline flow_tuple to_tuple(const shm::flow_info& f) noexcept {
  return {ipv4_addr{f.src_ip}, ipv4_addr{f.dst_ip}, f.src_port, f.dst_port};
}

class sidecar_shard final : public transport::transport_owner, public pollfn {
 public:
  /// Builds the engine and transport of `shard`; must run on that shard.
  sidecar_shard(sidecar_shards& all, engine_group& g, unsigned shard,
                const transport::transport_config& tc);
  sidecar_shard(const sidecar_shard&) = delete;
  sidecar_shard& operator=(const sidecar_shard&) = delete;
  ~sidecar_shard() override;

  /// A new channel served here; returns it (its fds go to the app).
  shm::channel_engine& open_channel(uint32_t id, uint64_t app, const shm::channel_params& p);
  /// Ends a channel: resets its flows (on every shard), drops its listeners,
  /// unmaps it. `tell_app` marks it closed for a live app first.
  void close_channel(uint32_t id, bool tell_app);
  /// Closes every channel (shutdown), telling the apps.
  void close_all();

  // Listener replicas (called on every shard by the listening channel's shard).
  bool add_listener(uint16_t port, unsigned shard, uint32_t channel);
  void remove_listener(uint16_t port, uint32_t channel);

  struct counters {
    uint64_t channels = 0, flows = 0, engine_bufs = 0, app_bufs = 0, bad_input = 0, held = 0, listeners = 0;
  };
  counters count() const;
  unsigned id() const noexcept { return _id; }
  transport_shard& transport() noexcept { return *_ts; }

 private:
  struct route {
    unsigned shard;  // where the flow lives
    bool connecting = false;
    uint64_t ctrl_id = 0;  // the connect request to answer
  };
  struct held_rx {
    shm::flow_info flow;
    transport::message msg;
  };
  struct channel {
    uint32_t id;
    uint64_t app;
    std::unique_ptr<shm::channel_engine> ch;
    std::unordered_map<flow_tuple, route, flow_tuple_hash> flows;
    std::deque<held_rx> pending;              // forwarded messages waiting for buffers
    std::unordered_set<flow_tuple, flow_tuple_hash> held_local;  // local flows holding messages
    std::vector<uint16_t> ports;              // listening
    std::unordered_map<flow_tuple, unsigned, flow_tuple_hash> remote_tx;  // sends in flight to other shards
    bool tx_stalled = false;
    uint64_t bad_input = 0;
  };
  struct listener {
    unsigned shard;
    uint32_t channel;
  };

  // pollfn: serve every channel.
  bool poll() override;
  bool pure_poll() override;
  bool try_enter_interrupt_mode() override;
  void exit_interrupt_mode() override;

  // transport_owner
  void on_connected(transport::flow& f) override;
  void on_accept(transport::flow& f) override;
  bool on_message(transport::flow& f, transport::message& m) override;
  void on_error(transport::flow& f, transport::flow_error e,
                std::vector<transport::message> unacked) override;
  void on_closed(transport::flow& f) override;
  void on_writable(transport::flow& f) override;

  bool serve(channel& c);
  void handle_ctrl(channel& c, const shm::ctrl_req& r);
  bool send_tx(channel& c, const shm::flow_info& fi, std::size_t len,
               std::span<const std::span<const uint8_t>> parts);
  /// Delivers now or queues behind earlier forwarded messages.
  void deliver_or_queue(channel& c, const shm::flow_info& fi, transport::message m);
  /// Cross-shard hops of one message (accepted flows on another shard).
  task<void> forward_rx(sidecar_shard* dst, uint32_t id, flow_tuple t, transport::message m);
  task<void> forward_tx(sidecar_shard* dst, uint32_t id, flow_tuple t, transport::message m);
  /// A flow of channel (shard, id) ended on this shard: drop its route there.
  void flow_gone(const flow_tuple& t, uint32_t id, unsigned shard, int status);
  void abort_flow(const flow_tuple& t);
  void close_flow(const flow_tuple& t);
  channel* find(uint32_t id) noexcept;
  void unwatch(channel& c);
  void spawn_on(unsigned shard, std::function<void()> fn);

  sidecar_shards& _all;
  unsigned _id;
  std::unique_ptr<engine> _engine;
  std::unique_ptr<transport_shard> _ts;
  std::unordered_map<uint32_t, std::unique_ptr<channel>> _channels;
  std::unordered_map<uint16_t, listener> _listeners;
  // Forwarding of accepted flows' messages to channels on other shards.
  std::unordered_map<flow_tuple, unsigned, flow_tuple_hash> _fwd_inflight;
  std::unordered_set<flow_tuple, flow_tuple_hash> _fwd_held;
  bool _sleeping = false;
  static constexpr int linger_s = 2;
  std::shared_ptr<bool> _alive = std::make_shared<bool>(true);  // for lingering closes
};

}  // namespace machnet::net
