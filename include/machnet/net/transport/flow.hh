// flow: one reliable, ordered message connection — its state machine, the
// sender (segmentation, window, SACK loss recovery, RTO, pacing) and the
// receiver (reassembly, ACK coalescing, back-pressure). See docs/protocol.md.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "machnet/net/transport/cc.hh"
#include "machnet/net/transport/config.hh"
#include "machnet/net/transport/env.hh"
#include "machnet/net/transport/header.hh"
#include "machnet/net/transport/message.hh"
#include "machnet/net/transport/rtt.hh"
#include "machnet/net/transport/stats.hh"
#include "machnet/net/types.hh"
#include "machnet/runtime/timer.hh"

namespace machnet::net::transport {

class endpoint;

/// The life of a flow (docs/protocol.md has the picture).
enum class flow_state : uint8_t {
  syn_sent,      ///< connector: SYN out, waiting for SYN-ACK
  syn_received,  ///< acceptor: SYN-ACK out, waiting for ACK or first DATA
  established,
  closing,   ///< close() called: sending what is queued, then RST
  rst_sent,  ///< orderly close: RST out, waiting for its ACK
  closed,
};
const char* to_string(flow_state s) noexcept;

enum class send_result : uint8_t {
  ok,
  queue_full,  ///< tx_queue_bytes reached: retry after on_writable
  too_big,     ///< more than 8 MiB
  empty,       ///< zero-length message
  not_open,    ///< closing or closed
};
const char* to_string(send_result r) noexcept;

/// One flow. Created by endpoint::connect() or by a listener; owned by the
/// endpoint. Not thread-safe: use it on its shard only.
class flow {
 public:
  flow(const flow&) = delete;
  flow& operator=(const flow&) = delete;
  ~flow();

  const flow_tuple& tuple() const noexcept { return _tuple; }
  flow_state state() const noexcept { return _state; }
  bool is_connector() const noexcept { return _connector; }
  /// Open means send() may queue: connecting, established.
  bool is_open() const noexcept {
    return _state == flow_state::syn_sent || _state == flow_state::established;
  }

  /// Queues a whole message; sent once established, in order.
  send_result send(message m);
  /// Orderly close: sends what is queued, then RST; on_closed() when the peer
  /// acknowledged (or on_error() if the queued messages cannot be delivered).
  void close();
  /// Immediate close: sends RST, returns every unacked message here (no
  /// callback follows). Held received messages are dropped.
  std::vector<message> abort();
  /// The owner has room again: delivers held messages (on_message) and, if
  /// packets were refused, tells the sender to resume.
  void resume_rx();
  /// Asks for on_writable() at the next ACK that leaves the queue below half
  /// of tx_queue_bytes (for an owner that keeps its own bound; send() asks by
  /// itself when it returns queue_full). Never fires from inside this call.
  void want_writable() noexcept { _want_writable = true; }

  /// Bytes of messages queued and not yet acknowledged.
  std::size_t tx_queued_bytes() const noexcept { return _txq_bytes; }
  std::size_t tx_queued_messages() const noexcept { return _txq.size(); }
  /// Bytes of complete messages the owner has not taken.
  std::size_t rx_held_bytes() const noexcept { return _held_bytes; }
  const flow_stats& stats() const noexcept { return _stats; }
  double cwnd() const noexcept { return _cc.cwnd(); }
  const rtt_estimator& rtt() const noexcept { return _rtt; }
  const swift_cc& cc() const noexcept { return _cc; }
  /// Unacknowledged packets in flight (sent, neither acked nor sacked).
  unsigned packets_in_flight() const noexcept { return _pipe; }
  /// When the peer was last heard (a valid ACK or DATA), in now_ns() time.
  uint64_t last_heard_ns() const noexcept { return _last_heard_ns; }
  /// Both ends offered ACKs on DATA (transport_config::data_acks).
  bool data_acks() const noexcept { return _data_acks; }
  /// An ACK of a delivered message may wait for the reply (ack_waits_for_reply).
  bool ack_may_wait() const noexcept { return _data_acks && _cfg.ack_waits_for_reply; }

  /// One line for logs: state, sequence numbers, window, RTT, timers and
  /// counters (flow traces and failure reports).
  std::string describe() const;

  /// A pointer for the owner (e.g. its channel).
  void* context() const noexcept { return _context; }
  void set_context(void* c) noexcept { _context = c; }

 private:
  friend class endpoint;

  // One packet of the send window [snd_una, snd_nxt): where its bytes live.
  struct tx_message;
  struct segment {
    tx_message* msg = nullptr;
    uint32_t pkt = 0;       // packet index within the message
    uint64_t tx_order = 0;  // per-flow transmission counter at the last send
    uint64_t tx_ns = 0;     // time of the last send
    uint16_t tx_count = 0;
    uint8_t state = 0;  // seg_* bits
  };
  struct tx_message {
    message msg;
    uint32_t npkts = 0;
  };
  // One out-of-order packet held by the receiver.
  struct ooo_slot {
    uint8_t* buf = nullptr;  // endpoint pool chunk
    uint16_t len = 0;
    uint8_t flags = 0;
    bool present = false;
  };
  /// Slots of the sender's segment ring and the receiver's out-of-order
  /// ring: window_pkts rounded up to a power of two, at least the SACK
  /// bitmap's 256 (a window beyond it works; only the first 256 packets past
  /// the cumulative ACK can be reported selectively).
  static unsigned ring_for(unsigned window_pkts) noexcept;
  static constexpr uint8_t seg_sacked = 1, seg_lost = 2;

  flow(endpoint& ep, const flow_tuple& t, bool connector);

  // --- flow.cc: life cycle, handshake, dispatch, failure ---
  void start_connect(seq_t isn);
  void start_accept(const header& syn, seq_t isn);
  void on_packet(const header& h, std::span<const uint8_t> payload);
  void on_syn_dup(const header& h);
  void on_rst(const header& h);
  bool rst_acceptable(const header& h) const noexcept;
  void become_established_acceptor();
  void on_rto();
  bool rx_behind(timer& t);
  void fail(flow_error e);
  void finish(flow_error e);
  void complete_finish();
  void send_control(net_flag f, seq_t seqno, seq_t ackno, uint64_t ts = 0, uint8_t msg_flags = 0);
  /// msg_flags of our SYN / SYN-ACK: what we offer.
  uint8_t syn_options() const noexcept;
  /// The time an ACK's echo stands for, in now_ns() time (0: no sample).
  uint64_t echo_time(uint64_t field, uint64_t now) const noexcept;
  void heard_from_peer() noexcept;
  void arm_rto();
  void arm_tlp();
  void on_tlp();
  uint64_t now_ns() const noexcept;

  // --- transport_flow_tx.cc: sender ---
  void try_send();
  bool transmit_segment(seq_t s, bool retx, uint64_t now);
  /// Builds and emits DATA packet `s` (no window accounting). A resent
  /// packet carries the current ACK where the peer takes ACKs on DATA (the
  /// one its first copy carried may have been lost with it).
  bool emit_segment(seq_t s, uint64_t now, bool resend);
  void on_ack(const header& h);
  void detect_losses();
  void mark_lost(seq_t s) noexcept;
  void release_acked_message();
  void notify_acked();
  void maybe_send_rst();
  void maybe_writable();
  std::vector<message> take_unacked();
  segment& seg(seq_t s) noexcept { return _segs[s & _ring_mask]; }
  bool has_new_data() const noexcept { return _tx_next_msg < _txq.size(); }

  // --- transport_flow_rx.cc: receiver ---
  void on_data(const header& h, std::span<const uint8_t> payload);
  /// DATA that carries an ACK (both ends offered data_acks): the ACK first.
  void on_data_with_ack(const header& h, std::span<const uint8_t> payload);
  bool consume(const uint8_t* p, std::size_t n, uint8_t flags);
  void deliver(message&& m);
  void deliver_held();
  void send_ack();
  /// Puts the ACK that is due (ackno, SACK) into `h`; returns the echo at
  /// time `now`.
  uint64_t fill_ack(header& h, uint64_t now);
  /// An ACK is due: at flush() (at_flush) or after ack_delay_us. `may_wait`:
  /// only for a delivered message, so it may wait a flush for a reply.
  void want_ack(bool at_flush, bool may_wait = false);
  /// At flush(): hold the due ACK one more flush for DATA to carry it —
  /// unless the last holds were in vain (then only now and then, to notice
  /// when the owner answers quickly again).
  bool hold_ack() noexcept;
  void ack_sent() noexcept;
  bool rx_full() const noexcept { return _held_bytes >= _cfg.rx_buffer_bytes; }
  void release_rx_buffers() noexcept;

  endpoint& _ep;
  const transport_config& _cfg;
  flow_tuple _tuple;
  bool _connector;
  bool _accepted = false;  // acceptor: owner told (on_accept)
  flow_state _state;
  void* _context = nullptr;
  flow_stats _stats;

  // Sender.
  seq_t _isn = 0;
  seq_t _snd_una = 0, _snd_nxt = 0;
  std::deque<tx_message> _txq;   // front: oldest not fully acked
  std::vector<message> _acked;   // fully acked by the ACK being processed
  std::size_t _tx_next_msg = 0;  // _txq index of the next message to start/continue
  uint32_t _tx_next_pkt = 0;     // next packet within it
  std::size_t _txq_bytes = 0;
  bool _want_writable = false;
  bool _close_requested = false;  // close() before the handshake completed
  const unsigned _ring_mask;     // ring_for(window_pkts) - 1
  std::vector<segment> _segs;    // by seq & _ring_mask
  unsigned _pipe = 0;  // sent, not sacked, not lost
  unsigned _lost = 0;  // marked lost, awaiting retransmission
  uint64_t _tx_order = 0;
  seq_t _high_sacked = 0;
  bool _have_sack = false;
  seq_t _lost_hint = 0;     // no lost segment below this
  bool _peer_full = false;  // last ACK said ack_rx_full
  bool _force_one = false;  // RTO: send one packet past window and pacing
  uint64_t _next_send_ns = 0;
  unsigned _retries = 0;
  uint64_t _last_heard_ns = 0;  // last valid ACK or DATA from the peer
  uint64_t _waiting_since_ns = 0;  // nothing was outstanding before this send
  rtt_estimator _rtt;
  swift_cc _cc;
  machnet::timer _rto_timer;
  machnet::timer _pace_timer;
  machnet::timer _tlp_timer;
  bool _tlp_sent = false;  // one probe per flight: reset by ACK progress
  // Spurious-RTO detection: the window before the first of a run of RTOs and
  // when it fired; the first ACK with progress after it decides.
  bool _rto_undo_armed = false;  // also: only the forced packet goes out until that ACK
  double _rto_undo_cwnd = 0;
  uint64_t _rto_at_ns = 0;

  // Receiver.
  seq_t _peer_isn = 0;
  seq_t _rcv_nxt = 0;
  std::vector<ooo_slot> _ooo;         // by seq & _ring_mask
  std::vector<uint64_t> _ooo_bits;    // bit (seq & _ring_mask): slot present
  unsigned _ooo_count = 0;
  message _reasm;
  bool _in_msg = false;
  /// Size of the last message received: the next big one is reassembled in
  /// storage reserved for that much (no copies while it grows).
  std::size_t _rx_size_hint = 0;
  std::deque<message> _held;
  std::size_t _held_bytes = 0;
  bool _delivering = false;
  bool _full_signalled = false;  // the last ACK we sent said ack_rx_full
  unsigned _unacked = 0;         // in-order packets since the last ACK
  bool _ack_pending = false, _in_ack_list = false;
  bool _data_acks = false;      // both ends offered ACKs on DATA
  bool _ack_no_wait = false;    // the due ACK covers more than delivered messages
  bool _ack_held = false;       // the due ACK already waited one flush
  uint8_t _hold_misses = 0;     // held ACKs in a row that no DATA carried
  uint8_t _hold_skips = 0;      // counts ACKs not held while misses are many
  uint64_t _echo_ts = 0, _echo_arrival_ns = 0;
  machnet::timer _ack_timer;

  // Ending.
  bool _aborted = false;
  bool _finishing = false;  // waiting for held messages to drain
  flow_error _final_error = flow_error::none;
  std::vector<message> _final_unacked;
};

}  // namespace machnet::net::transport
