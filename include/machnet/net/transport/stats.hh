// stats: the counters of one flow (packets, ACKs, retransmissions, timers),
// kept by the transport and shown in flow traces and to runtime apps.
#pragma once

#include <cstdint>

namespace machnet::net::transport {

/// Counters of one flow.
struct flow_stats {
  uint64_t msgs_sent = 0, msgs_acked = 0, msgs_delivered = 0;
  uint64_t tx_data = 0, tx_retx = 0, tx_acks = 0, tx_ctrl = 0, tx_alloc_failed = 0;
  uint64_t rto = 0, fast_retx = 0, probes = 0;
  uint64_t rx_data = 0, rx_dup = 0, rx_ooo = 0, rx_beyond_window = 0, rx_refused = 0;
  uint64_t rx_acks = 0, rx_stale_acks = 0, sack_reneged = 0;
  uint64_t tx_data_acks = 0;  ///< ACKs that rode on DATA (of tx_data + tx_retx)
  uint64_t rx_data_acks = 0;  ///< DATA packets that carried an ACK (of rx_acks)
  uint64_t tail_probes = 0;
  uint64_t timer_deferred = 0;  ///< loss timers held until RX was polled past them
  uint64_t spurious_rto = 0;    ///< RTOs undone: the peer had the packets (timestamp echo)
};

}  // namespace machnet::net::transport
