// transport_shard: the Machnet transport on one shard's packet engine — the
// transport_env over engine mbufs and the shard's timer wheel, and the UDP
// handler that feeds received packets to the endpoint (ACKs at burst end).
#pragma once

#include <optional>

#include "machnet/net/engine.hh"
#include "machnet/net/rss.hh"
#include "machnet/net/transport/endpoint.hh"
#include "machnet/runtime/poller.hh"
#include "machnet/runtime/timer.hh"

namespace machnet::net {

class transport_shard final : public udp_handler,
                              public transport::transport_env,
                              private transport::transport_owner,
                              private pollfn {
 public:
  /// Must be built on the engine's shard; the owner gets this shard's flows.
  transport_shard(engine& e, transport::transport_owner& owner,
                  transport::transport_config cfg = {});
  transport_shard(const transport_shard&) = delete;
  transport_shard& operator=(const transport_shard&) = delete;
  ~transport_shard() override;

  /// Accepts flows to `port` on this shard (listen on every shard: a SYN may
  /// hash to any queue). False if the port is taken.
  bool listen(uint16_t port);
  /// Stops accepting flows to `port` on this shard (existing flows stay).
  void unlisten(uint16_t port);
  /// Opens a flow to remote:port from a source port whose replies RSS brings
  /// back to this shard. nullptr (and *why set) when no port is free.
  transport::flow* connect(ipv4_addr remote, uint16_t remote_port,
                           port_error* why = nullptr);

  transport::endpoint& endpoint() noexcept { return *_ep; }
  engine& eng() noexcept { return _engine; }

  // transport_env
  uint64_t now_ns() override;
  timer_wheel& wheel() override;
  uint64_t rx_polled_ns() override;
  void push_tx() override;
  void want_flush() override;
  uint8_t* alloc_tx(const flow_tuple& t, std::size_t len, transport::tx_handle& h) override;
  void transmit(const flow_tuple& t, transport::tx_handle& h) override;
  uint8_t* alloc_tx_ref(const flow_tuple& t, std::size_t head_len, transport::message& m,
                        std::size_t off, std::size_t len, transport::tx_handle& h) override;

  // udp_handler
  void on_udp(engine& e, rte_mbuf* m, const parse_result& p) override;
  void on_burst_end(engine& e) override;

 private:
  // transport_owner: forwards to the app's owner; when a connected flow ends,
  // frees its source port and its demux entry.
  void on_connected(transport::flow& f) override { _owner.on_connected(f); }
  void on_accept(transport::flow& f) override { _owner.on_accept(f); }
  bool on_message(transport::flow& f, transport::message& m) override {
    return _owner.on_message(f, m);
  }
  void on_error(transport::flow& f, transport::flow_error e,
                std::vector<transport::message> unacked) override;
  void on_closed(transport::flow& f) override;
  void on_acked(transport::flow& f, transport::message& m) override { _owner.on_acked(f, m); }
  void on_writable(transport::flow& f) override { _owner.on_writable(f); }
  void release(const transport::flow& f);
  // pollfn: keeps the shard awake while a flow waits for ACKs. A sleeping
  // sender would add its wake-up latency (tens of µs on a VM) to every RTT
  // sample, and the delay-based congestion control would read it as queueing.
  bool poll() override { return false; }
  bool pure_poll() override { return false; }
  bool try_enter_interrupt_mode() override;

  engine& _engine;
  transport::transport_owner& _owner;
  source_port_allocator _ports;
  std::optional<transport::endpoint> _ep;
  machnet::timer _trace;  // MACHNET_TRACE_FLOWS=1: every flow, once a second
};

}  // namespace machnet::net
