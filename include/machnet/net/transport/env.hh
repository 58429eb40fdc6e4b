// env: what the transport needs from its surroundings (clock, timer wheel,
// packet buffers and TX) and what it tells its owner (connections, messages,
// errors). The core knows nothing of DPDK; the engine and the simulation
// implement these two interfaces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "machnet/net/transport/message.hh"
#include "machnet/net/types.hh"

namespace machnet {
class timer_wheel;
}

namespace machnet::net::transport {

class flow;

/// An opaque handle for one packet being built (e.g. an rte_mbuf*).
struct tx_handle {
  void* p = nullptr;
  uintptr_t aux = 0;
};

/// The I/O side of one shard. All calls happen on the shard's thread.
class transport_env {
 public:
  virtual ~transport_env() = default;
  /// Monotonic nanoseconds, > 0. now_ns() / 1000 must be the clock of wheel().
  virtual uint64_t now_ns() = 0;
  /// The shard's timer wheel (µs ticks); the env advances it.
  virtual timer_wheel& wheel() = 0;
  /// Room for one UDP payload of `len` bytes (Machnet header + data) toward
  /// flow `t` (t.local_* is our side). The transport writes the bytes at the
  /// returned pointer, then calls transmit() with the same handle. nullptr
  /// when out of buffers: the transport treats the packet as lost.
  virtual uint8_t* alloc_tx(const flow_tuple& t, std::size_t len, tx_handle& h) = 0;
  /// Sends the packet built in `h` (ownership passes to the env). It must not
  /// feed packets back into the same endpoint synchronously (queue them).
  virtual void transmit(const flow_tuple& t, tx_handle& h) = 0;
  /// Zero-copy variant of alloc_tx: room for `head_len` bytes (the Machnet
  /// header) followed by `len` bytes of `m` from `off`, which the packet
  /// refers to instead of copying. The env may change how `m` holds its
  /// storage (never its bytes) so that the storage outlives every packet
  /// referring to it. nullptr: not available (the transport copies instead).
  virtual uint8_t* alloc_tx_ref(const flow_tuple& /*t*/, std::size_t /*head_len*/, message& /*m*/,
                                std::size_t /*off*/, std::size_t /*len*/, tx_handle& /*h*/) {
    return nullptr;
  }
  /// Sends what transmit() queued so far now rather than at the end of the
  /// turn: an ACK due in the middle of a long RX burst leaves at once, so the
  /// sender's window reopens while this side still works through the burst.
  /// Default: nothing (an env that sends at transmit()).
  virtual void push_tx() {}
  /// When the shard last started draining its RX queue (now_ns() clock). A
  /// loss timer (RTO, tail probe) that falls due while the shard is busy —
  /// sending a window takes a while — would find the peer's ACKs still in
  /// the RX queue: the transport acts on it only once RX was polled after the
  /// deadline. Default: now (an env that delivers packets synchronously).
  virtual uint64_t rx_polled_ns() { return now_ns(); }
  /// Asks for endpoint::flush() once more soon (the next turn of the shard)
  /// even if no packet arrives: an ACK is waiting there for a reply to carry
  /// it (transport_config::ack_waits_for_reply). Called from inside flush().
  virtual void want_flush() = 0;
};

/// Why a flow ended badly (or `none` for an orderly close).
enum class flow_error : uint8_t {
  none,
  connect_timeout,  ///< no SYN-ACK after max_connect_retries
  refused,          ///< the peer answered SYN with RST (nobody listening)
  timeout,          ///< the peer stopped answering (retries or time exhausted)
  peer_reset,       ///< the peer reset or closed the flow while we had unacked messages
  peer_restarted,   ///< a SYN with a new initial sequence number on this tuple
  protocol_error,   ///< the peer broke message framing (or sent > 8 MiB)
};
const char* to_string(flow_error e) noexcept;

/// The owner of an endpoint's flows (the engine, a channel, a test). Every
/// callback runs on the shard; the flow reference stays valid during the
/// callback and, for on_error / on_closed, dies when it returns. Callbacks may
/// call back into the transport (send, close, abort, resume_rx, connect).
class transport_owner {
 public:
  virtual ~transport_owner() = default;
  /// A connect() completed.
  virtual void on_connected(flow&) {}
  /// A listener accepted a new flow (it is established).
  virtual void on_accept(flow&) {}
  /// A whole message arrived, in order. Take it (move from `m`) and return
  /// true; or return false to leave it with the transport, which then holds it
  /// (and what follows) until flow::resume_rx() — that is back-pressure.
  virtual bool on_message(flow& f, message& m) = 0;
  /// The flow failed. `unacked` holds, in send order and whole, every message
  /// the peer did not acknowledge completely (partially acked ones included).
  virtual void on_error(flow& f, flow_error e, std::vector<message> unacked) = 0;
  /// The flow closed in order (ours or the peer's close, nothing was pending).
  virtual void on_closed(flow&) {}
  /// The peer acknowledged every packet of `m` (called in send order, after
  /// the ACK was processed; `m` is freed when this returns). Use it for
  /// delivery notification or to send more.
  virtual void on_acked(flow&, message& /*m*/) {}
  /// send() had returned queue_full; there is room again.
  virtual void on_writable(flow&) {}
};

}  // namespace machnet::net::transport
