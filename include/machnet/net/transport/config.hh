// config: every tunable of the transport in one place — timers, retries, ACK
// coalescing, buffers, and the congestion-control law's parameters.
#pragma once

#include <cstddef>
#include <cstdint>

#include "machnet/net/transport/header.hh"

namespace machnet::net::transport {

/// Parameters of the delay-based congestion control (Swift family; see
/// docs/protocol.md "Congestion control" for the law). Windows are in packets
/// and may be fractional; below one packet the flow is paced.
struct cc_params {
  /// Target round-trip time when the window is large (µs). The effective
  /// target adds up to `fs_range_us` as the window shrinks (flow scaling).
  /// On a long path — a minimum RTT above base_target + fs_range, which no
  /// standing queue of this law explains — the base becomes min_rtt +
  /// `min_headroom_us`, so a target set under the path's RTT cannot starve it.
  /// The headroom grows with the path (headroom_frac × min_rtt): a slow path
  /// (a loaded VM, a sleeping peer shard) also has proportionally more
  /// jitter, and a fixed 10 µs above it pinned the window at min_cwnd.
  double base_target_us = 200.0;
  double min_headroom_us = 10.0;
  double headroom_frac = 0.5;
  /// Flow scaling: flows with small windows get up to this much more target
  /// delay (∝ 1/√cwnd between fs_min_cwnd and fs_max_cwnd), which pulls
  /// competing flows toward equal windows. 0 disables.
  double fs_range_us = 20.0;
  double fs_min_cwnd = 0.1;
  double fs_max_cwnd = 100.0;
  /// Additive increase (packets per RTT) while below target.
  double ai = 1.0;
  /// Multiplicative-decrease gain: cwnd ×= 1 − beta·(rtt − target)/rtt.
  double beta = 0.8;
  /// Largest decrease factor per event; decreases happen at most once per RTT.
  double max_mdf = 0.5;
  double min_cwnd = 0.01;
  /// Packets; the flow's window_pkts caps what is in flight anyway.
  double max_cwnd = 256.0;
  double init_cwnd = 16.0;
  /// Consecutive RTOs after which the window drops to min_cwnd.
  unsigned retx_reset_threshold = 3;
};

/// The largest transport_config::window_pkts (the rest is clamped).
inline constexpr unsigned max_window_pkts = 4096;

/// Transport tunables (per endpoint; every flow of the endpoint uses them).
struct transport_config {
  /// Payload bytes per DATA packet (≤ max_payload; smaller values are for tests).
  std::size_t mss = max_payload;
  /// Packets in flight per flow, ≤ max_window_pkts; also what the receiver
  /// holds out of order. Beyond 256 (the SACK bitmap's reach) only the first
  /// 256 packets past the cumulative ACK can be acknowledged selectively.
  /// The congestion window is capped by cc.max_cwnd too: raise both.
  unsigned window_pkts = 256;
  /// A flow sending a run of packets pushes every this many to the device at
  /// once (transport_env::push_tx) instead of leaving them in the turn's TX
  /// batch: the receiver starts on a message while its sender still builds
  /// the rest (memif, 64 KB window 1: p50 −25 %). 0: only full batches and
  /// the end of the turn send.
  unsigned tx_push_pkts = 8;

  // --- Timers (µs) ---
  /// RTO before any RTT sample: SYN retransmission and the first data.
  uint64_t initial_rto_us = 1000;
  /// Floor and ceiling of the RTO computed from SRTT/RTTVAR (RFC 6298 shape).
  uint64_t min_rto_us = 200;
  uint64_t max_rto_us = 100'000;
  /// Tail-loss probe: when nothing is acknowledged for max(2·SRTT, this floor)
  /// while data is in flight, resend the newest packet once (no cwnd
  /// reaction), so a lost tail — a window-1 request, the end of a burst — is
  /// recovered in about two RTTs instead of an RTO. 0 disables probes.
  uint64_t tlp_min_us = 10;

  /// A shard keeps polling (does not sleep) while a flow has packets in
  /// flight or heard its peer within this many µs: a receiver asleep between
  /// a paced sender's packets adds its wake-up to every RTT, which the
  /// delay-based CC reads as queueing (an 8 MiB echo fell to cwnd 0.01).
  uint64_t stay_awake_us = 1000;

  // --- Failure ---
  /// Consecutive RTO expirations without hearing from the peer that fail an
  /// established flow (any valid ACK from the peer resets the count).
  unsigned max_retries = 15;
  /// ... or this long without hearing from the peer while data is
  /// outstanding (0 disables the time bound).
  uint64_t fail_timeout_us = 2'000'000;
  /// Connect fails after at least this many SYN retransmissions (backoff
  /// from initial_rto_us, capped at max_rto_us) *and* connect_timeout_us: a
  /// loaded VM or a slow-starting peer gets seconds, not half a second.
  unsigned max_connect_retries = 10;
  uint64_t connect_timeout_us = 5'000'000;
  /// SYN-ACK retransmissions by a half-open accepted flow before it is dropped.
  unsigned max_syn_ack_retries = 6;
  /// RST retransmissions of an orderly close waiting for the peer's ACK.
  unsigned max_rst_retries = 3;

  // --- ACKs ---
  /// Send an ACK at least every this many in-order DATA packets, even in the
  /// middle of an RX burst. Otherwise ACKs go out at flush() (end of burst).
  unsigned ack_every_pkts = 16;
  /// If > 0, in-order packets that are not the LAST of a message may wait this
  /// long for more before being acknowledged (across bursts). 0: ACK at flush().
  uint64_t ack_delay_us = 0;
  /// ACKs on DATA: offered in the SYN / SYN-ACK; where the peer offers it too,
  /// an ACK that is due rides on the next DATA packet of the flow. Off: DATA
  /// never carries an ACK.
  bool data_acks = true;
  /// With data_acks: an ACK for a message just delivered waits one flush() (a
  /// turn of the shard) for the owner's reply to carry it. A request/response
  /// round trip then takes two packets instead of four. For owners that answer
  /// within a turn (runtime apps); the sidecar's apps answer later, so its
  /// ACKs do not wait (sidecar_config).
  bool ack_waits_for_reply = true;

  // --- Buffers / flow control ---
  /// Completed messages the owner has not taken (on_message returned false)
  /// may hold this many bytes; beyond it new packets are refused (not acked)
  /// and ACKs carry ack_rx_full, so the sender stops and probes.
  std::size_t rx_buffer_bytes = std::size_t(16) << 20;
  /// Bytes queued for sending on one flow before send() returns queue_full.
  std::size_t tx_queue_bytes = std::size_t(64) << 20;

  /// Seed of the initial sequence numbers (0: from std::random_device).
  uint64_t isn_seed = 0;
  /// If nonzero, every flow starts at this sequence number instead (tests:
  /// sequence-number wrap-around).
  seq_t fixed_isn = 0;

  cc_params cc;
};

}  // namespace machnet::net::transport
