// machnet.hh: the C++ API of runtime apps — the network stack runs in the
// app's own shards (no sidecar, no shared-memory hop): listen, connect,
// accept, and per-flow send / recv awaitables over owning messages.
//
//   machnet::stack_config cfg;  cfg.port.device = "..."; cfg.ip = ...;
//   co_await machnet::start_stack(cfg);            // on shard 0: every shard
//   auto l = co_await machnet::listen(7000);        // on a shard: its flows
//   machnet::connection c = co_await l.accept();
//   machnet::message m = co_await c.recv();
//   co_await c.send(std::move(m));
//
// Errors are exceptions: std::system_error with an errno code (ECONNREFUSED,
// ETIMEDOUT, ECONNRESET, EPIPE after close, EADDRINUSE, EMSGSIZE, ...).
// A flow belongs to the shard RSS gave it: use a connection on that shard
// only. From machnet::thread fibers, wrap calls in machnet::await(...).
// Documented with examples in docs/api.md.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "machnet/net/port.hh"
#include "machnet/net/transport/config.hh"
#include "machnet/net/transport/message.hh"
#include "machnet/net/transport/stats.hh"
#include "machnet/net/types.hh"
#include "machnet/runtime/task.hh"

namespace machnet {

/// An owning, contiguous message (up to 8 MiB). Building one is the only
/// copy on the sending side; receiving hands over the reassembly buffer.
using message = net::transport::message;

struct stack_config {
  net::port_config port;  ///< device, MAC; queues = the app's shards
  net::ipv4_addr ip;      ///< this host's address
  std::vector<std::pair<net::ipv4_addr, net::mac_addr>> static_arp;
  net::transport::transport_config transport;
  /// UDP checksums (automatic: off on a memif link, docs/net.md).
  net::checksum_policy udp_checksum = net::checksum_policy::automatic;
  /// Received bytes a connection keeps for recv() before the transport
  /// withholds ACKs (back-pressure).
  std::size_t rx_queue_bytes = std::size_t(16) << 20;
};

/// Starts the stack on every shard (call once, from shard 0). Throws on
/// start-up failure (device, RSS verification).
task<void> start_stack(stack_config cfg);
/// Stops it on every shard: flows are reset (call from shard 0, before the
/// app's smp stops).
task<void> stop_stack();

namespace detail {
struct conn_state;
struct listener_state;
}  // namespace detail

/// One flow, on the shard that owns it. Movable; destroying it closes the
/// flow in order (queued messages are still delivered).
class connection {
 public:
  connection() = default;
  explicit connection(std::shared_ptr<detail::conn_state> s) noexcept : _s(std::move(s)) {}
  connection(connection&&) noexcept = default;
  connection& operator=(connection&&) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  /// Queues a message; completes when the transport took it (waits while
  /// the flow's send queue is full). Throws on a failed flow or after close.
  task<void> send(message m);
  /// Copies `bytes` into a new message and sends it.
  task<void> send(std::span<const uint8_t> bytes);
  /// The next whole message, in order. Throws when the flow failed or the
  /// peer closed it (ECONNRESET / ETIMEDOUT / EPIPE...).
  task<message> recv();
  /// A message if one is ready, else an empty message (never waits).
  message try_recv();
  /// Orderly close (queued messages still go out).
  void close();

  bool valid() const noexcept { return bool(_s); }
  net::flow_tuple tuple() const;
  unsigned shard() const;
  /// The flow's counters (packets, ACKs, retransmissions; docs/protocol.md),
  /// as of its end once it ended.
  net::transport::flow_stats stats() const;

 private:
  std::shared_ptr<detail::conn_state> _s;
};

/// Accepts the flows RSS brings to this shard for a listening port.
class listener {
 public:
  listener() = default;
  explicit listener(std::shared_ptr<detail::listener_state> s) noexcept : _s(std::move(s)) {}
  listener(listener&&) noexcept = default;
  listener& operator=(listener&&) noexcept = default;
  ~listener();
  task<connection> accept();
  uint16_t port() const;

 private:
  std::shared_ptr<detail::listener_state> _s;
};

/// Listens on `port` on every shard; returns this shard's listener (each
/// shard that wants flows calls listen() and accept() itself; flows that hash
/// to a shard without a listener wait there until one is made).
task<listener> listen(uint16_t port);
/// Opens a flow from this shard (the source port makes RSS bring the replies
/// here); completes when established.
task<connection> connect(net::ipv4_addr remote, uint16_t port);

}  // namespace machnet
