// Tests of the flow state machine and data path in exact scenarios: the
// handshake and its losses, repeated SYN, RST, restarts, close and abort,
// segmentation/reassembly, SACK bit placement, back-pressure, failure.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>

#include "sim/recorder.hh"

using namespace machnet::net;
using namespace machnet::net::sim;

namespace {

const ipv4_addr ip_a{0x0a000001};
const ipv4_addr ip_b{0x0a000002};

// Two hosts, 5 µs each way, B listening on 5000; A's flow is 10000 → 5000.
struct pair_fixture {
  world w{1};
  host& a = w.add_host(ip_a);
  host& b = w.add_host(ip_b);
  std::pair<sim::link*, sim::link*> links = w.connect(a, b, {}, {});
  sim::link* ab = links.first;
  sim::link* ba = links.second;
  recorder ra{w}, rb{w};
  tap tab, tba;
  transport_config cfg;
  transport::endpoint* ea = nullptr;
  transport::endpoint* eb = nullptr;
  flow_tuple t_a{ip_a, ip_b, 10000, 5000};  // A's view
  flow_tuple t_b{ip_b, ip_a, 5000, 10000};  // B's view

  void start() {
    cfg.isn_seed = 1;
    ea = &a.start(ra, cfg);
    cfg.isn_seed = 2;
    eb = &b.start(rb, cfg);
    eb->listen(5000);
    tab.attach(w, ab);
    tba.attach(w, ba);
  }
  void run_us(uint64_t us) { w.run_until(w.now_ns() + us * 1000); }
  flow* connect_and_wait() {
    flow* f = ea->connect(t_a);
    run_us(200);
    REQUIRE(ra.connected.size() == 1);
    REQUIRE(rb.accepted.size() == 1);
    return f;
  }
  // Connects, then warms the RTT estimate with five loss-free messages.
  flow* connect_and_warm_up() {
    flow* f = connect_and_wait();
    for (int i = 0; i < 5; ++i) {
      f->send(pattern(100, uint8_t(i)));
      run_us(100);
    }
    REQUIRE(rb.received.size() == 5);
    REQUIRE(ra.acked_tags.size() == 5);
    return f;
  }
  void inject(transport::endpoint& ep, const flow_tuple& t, const header& h,
              std::vector<uint8_t> payload = {}) {
    std::vector<uint8_t> b(header_size + payload.size());
    encode(h, b.data());
    std::copy(payload.begin(), payload.end(), b.begin() + header_size);
    ep.on_packet(t, b);
    ep.flush();
  }
};

}  // namespace

TEST_CASE("handshake: connect completes in one RTT", "[flow][handshake]") {
  pair_fixture x;
  x.start();
  uint64_t t0 = x.w.now_ns();
  flow* f = x.ea->connect(x.t_a);
  REQUIRE(f);
  CHECK(f->state() == flow_state::syn_sent);
  CHECK(x.ea->connect(x.t_a) == nullptr);  // the tuple is taken
  x.run_us(100);
  REQUIRE(x.ra.connected.size() == 1);
  REQUIRE(x.rb.accepted.size() == 1);
  CHECK(x.ra.connected_at_ns - t0 <= 11'000);  // 2 × 5 µs
  CHECK(x.rb.accepted_at_ns - t0 <= 16'000);
  CHECK(f->state() == flow_state::established);
  CHECK(x.rb.accepted[0]->state() == flow_state::established);
  auto syn = x.tab.of(net_flag::syn);
  auto synack = x.tba.of(net_flag::syn_ack);
  auto ack = x.tab.of(net_flag::ack);
  REQUIRE(syn.size() == 1);
  REQUIRE(synack.size() == 1);
  REQUIRE(ack.size() == 1);
  CHECK(synack[0]->h.ackno == syn[0]->h.seqno + 1);  // connector's snd_nxt after SYN
  CHECK(ack[0]->h.ackno == synack[0]->h.seqno + 1);  // the SYN-ACK consumed one too
  CHECK(ack[0]->h.seqno == syn[0]->h.seqno + 1);
  CHECK(synack[0]->h.timestamp1 == syn[0]->h.timestamp1);  // echo: first RTT sample
  CHECK(f->rtt().has_sample());
}

TEST_CASE("handshake: a lost SYN is retransmitted on the fine timer", "[flow][handshake]") {
  pair_fixture x;
  x.start();
  uint64_t t0 = x.w.now_ns();
  x.tab.drop = [n = 0](const header& h, std::size_t) mutable {
    return h.flags == net_flag::syn && n++ == 0;
  };
  x.ea->connect(x.t_a);
  x.run_us(5000);
  REQUIRE(x.ra.connected.size() == 1);
  // initial_rto (1 ms) + one RTT: milliseconds, not the reference's ~1 s.
  CHECK(x.ra.connected_at_ns - t0 < 1'100'000);
  auto syn = x.tab.of(net_flag::syn);
  REQUIRE(syn.size() == 2);
  CHECK(syn[0]->h.seqno == syn[1]->h.seqno);
}

TEST_CASE("handshake: a repeated SYN gets a repeated SYN-ACK - one flow", "[flow][handshake]") {
  pair_fixture x;
  x.start();
  x.tba.drop = [](const header& h, std::size_t i) {
    return h.flags == net_flag::syn_ack && i == 0;
  };
  x.ea->connect(x.t_a);
  x.run_us(5000);
  REQUIRE(x.ra.connected.size() == 1);
  CHECK(x.rb.accepted.size() == 1);
  CHECK(x.eb->flow_count() == 1);
  // The retransmitted SYN is answered (and the acceptor's own RTO may have
  // repeated the SYN-ACK too): all copies identical.
  auto synack = x.tba.of(net_flag::syn_ack);
  REQUIRE(synack.size() >= 2);
  for (auto* p : synack) {
    CHECK(p->h.seqno == synack[0]->h.seqno);
    CHECK(p->h.ackno == synack[0]->h.ackno);
  }
  std::size_t before = synack.size();

  // A duplicate SYN after establishment: answered again, nothing else changes.
  auto syn = *x.tab.of(net_flag::syn)[0];
  x.inject(*x.eb, x.t_b, syn.h);
  x.run_us(100);
  CHECK(x.tba.of(net_flag::syn_ack).size() == before + 1);
  CHECK(x.rb.accepted.size() == 1);
  CHECK(x.rb.errors.empty());
  CHECK(x.ra.errors.empty());
}

TEST_CASE("handshake: lost final ACK — the first DATA establishes the acceptor",
          "[flow][handshake]") {
  pair_fixture x;
  x.start();
  x.tab.drop = [](const header& h, std::size_t) { return h.flags == net_flag::ack; };
  flow* f = x.ea->connect(x.t_a);
  REQUIRE(f->send(pattern(10, 1)) == send_result::ok);
  x.run_us(300);
  REQUIRE(x.rb.accepted.size() == 1);
  REQUIRE(x.rb.received.size() == 1);
  CHECK(is_pattern(x.rb.received[0].second, 10, 1));
}

TEST_CASE("handshake: lost final ACK - no data — SYN-ACK retransmitted - re-ACKed",
          "[flow][handshake]") {
  pair_fixture x;
  x.start();
  x.tab.drop = [n = 0](const header& h, std::size_t) mutable {
    return h.flags == net_flag::ack && n++ == 0;
  };
  x.ea->connect(x.t_a);
  x.run_us(5000);
  CHECK(x.rb.accepted.size() == 1);
  CHECK(x.tba.count(net_flag::syn_ack) >= 2);
  CHECK(x.tab.count(net_flag::ack) >= 2);
}

TEST_CASE("connect: nobody listening — refused at once - queued messages returned",
          "[flow][handshake]") {
  pair_fixture x;
  x.start();
  x.eb->unlisten(5000);
  uint64_t t0 = x.w.now_ns();
  flow* f = x.ea->connect(x.t_a);
  f->send(pattern(100, 3, 7));
  x.run_us(1000);
  REQUIRE(x.ra.errors.size() == 1);
  CHECK(x.ra.errors[0].e == flow_error::refused);
  CHECK(x.ra.errors[0].at_ns - t0 < 20'000);
  REQUIRE(x.ra.errors[0].unacked.size() == 1);
  CHECK(is_pattern(x.ra.errors[0].unacked[0], 100, 3));
  CHECK(x.ra.errors[0].unacked[0].tag() == 7);
  CHECK(x.ea->flow_count() == 0);
}

TEST_CASE("connect: unreachable — connect_timeout after the SYN retries", "[flow][handshake]") {
  pair_fixture x;
  x.cfg.max_connect_retries = 3;
  x.cfg.connect_timeout_us = 0;
  x.start();
  x.ab->set_up(false);
  x.ea->connect(x.t_a)->send(pattern(5, 0));
  x.run_us(100'000);
  REQUIRE(x.ra.errors.size() == 1);
  CHECK(x.ra.errors[0].e == flow_error::connect_timeout);
  CHECK(x.ra.errors[0].unacked.size() == 1);
  CHECK(x.tab.count(net_flag::syn) == 4);
}

TEST_CASE("connect: a peer unreachable for 2 s is still reached (seconds of budget, not retries)",
          "[flow][handshake]") {
  // Bug: 10 SYNs with backoff gave up after ~0.5 s; on a loaded VM (shards
  // starved for that long) connects failed that would have succeeded.
  pair_fixture x;
  x.start();
  x.ab->set_up(false);
  x.ea->connect(x.t_a);
  x.run_us(2'000'000);
  CHECK(x.ra.errors.empty());
  x.ab->set_up(true);
  x.run_us(300'000);
  CHECK(x.ra.errors.empty());
  CHECK(x.rb.accepted.size() == 1);
}

TEST_CASE("connect: gives up after connect_timeout_us", "[flow][handshake]") {
  pair_fixture x;
  x.start();
  x.ab->set_up(false);
  uint64_t t0 = x.w.now_ns();
  x.ea->connect(x.t_a);
  x.run_us(7'000'000);
  REQUIRE(x.ra.errors.size() == 1);
  CHECK(x.ra.errors[0].e == flow_error::connect_timeout);
  CHECK(x.ra.errors[0].at_ns - t0 >= 5'000'000'000ull);
  CHECK(x.ra.errors[0].at_ns - t0 < 5'200'000'000ull);
}

TEST_CASE("close: orderly - after the queue drains - both owners told", "[flow][close]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  for (int i = 0; i < 3; ++i) f->send(pattern(3000, uint8_t(i)));
  f->close();
  CHECK(f->send(pattern(1, 0)) == send_result::not_open);
  x.run_us(2000);
  REQUIRE(x.rb.received.size() == 3);
  CHECK(x.ra.closed.size() == 1);
  CHECK(x.rb.closed.size() == 1);
  CHECK(x.ra.errors.empty());
  CHECK(x.rb.errors.empty());
  CHECK(x.ea->flow_count() == 0);
  CHECK(x.eb->flow_count() == 0);
  auto rst = x.tab.of(net_flag::rst);
  REQUIRE(rst.size() == 1);
  bool acked = false;
  for (auto* p : x.tba.of(net_flag::ack)) acked |= p->h.ackno == rst[0]->h.seqno + 1;
  CHECK(acked);
}

TEST_CASE("close: before the handshake completes waits for it and the queue", "[flow][close]") {
  pair_fixture x;
  x.start();
  flow* f = x.ea->connect(x.t_a);
  f->send(pattern(2000, 1));
  f->send(pattern(20, 2));
  f->close();
  x.run_us(2000);
  CHECK(x.rb.received.size() == 2);
  CHECK(x.ra.closed.size() == 1);
  CHECK(x.rb.closed.size() == 1);
}

TEST_CASE("close: a lost RST is retransmitted", "[flow][close]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  x.tab.drop = [n = 0](const header& h, std::size_t) mutable {
    return h.flags == net_flag::rst && n++ == 0;
  };
  f->close();
  x.run_us(5000);
  CHECK(x.tab.count(net_flag::rst) == 2);
  CHECK(x.ra.closed.size() == 1);
  CHECK(x.rb.closed.size() == 1);
}

TEST_CASE("RST: out of sequence ignored - in sequence closes", "[flow][rst]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  seq_t b_isn = x.tba.of(net_flag::syn_ack)[0]->h.seqno;
  header rst;
  rst.flags = net_flag::rst;
  rst.seqno = b_isn + 1 + 5;  // not rcv_nxt
  rst.ackno = 12345;          // names nothing we sent
  x.inject(*x.ea, x.t_a, rst);
  CHECK(f->state() == flow_state::established);
  CHECK(x.ra.closed.empty());
  rst.seqno = b_isn + 1;  // == A's rcv_nxt
  x.inject(*x.ea, x.t_a, rst);
  CHECK(x.ra.closed.size() == 1);
  CHECK(x.ea->flow_count() == 0);
}

TEST_CASE("restart: the acceptor restarts — next DATA is answered by RST - messages returned",
          "[flow][restart]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  recorder rb2(x.w);
  x.b.start(rb2, x.cfg).listen(5000);  // all of B's state is gone
  f->send(pattern(5000, 9, 1));
  f->send(pattern(10, 8, 2));
  x.run_us(1000);
  REQUIRE(x.ra.errors.size() == 1);
  CHECK(x.ra.errors[0].e == flow_error::peer_reset);
  REQUIRE(x.ra.errors[0].unacked.size() == 2);
  CHECK(is_pattern(x.ra.errors[0].unacked[0], 5000, 9));
  CHECK(is_pattern(x.ra.errors[0].unacked[1], 10, 8));
  CHECK(rb2.received.empty());
}

TEST_CASE("restart: the connector restarts and reconnects on the same tuple", "[flow][restart]") {
  pair_fixture x;
  x.start();
  x.connect_and_wait();
  flow* fb = x.rb.accepted[0];
  // B has a message A never acknowledges.
  x.tba.drop = [](const header& h, std::size_t) { return h.flags == net_flag::data; };
  fb->send(pattern(300, 4, 42));
  x.run_us(100);
  x.tba.drop = nullptr;
  recorder ra2(x.w);
  auto cfg2 = x.cfg;
  cfg2.isn_seed = 99;  // a new incarnation: a new initial sequence number
  auto& ea2 = x.a.start(ra2, cfg2);
  ea2.connect(x.t_a);
  x.run_us(500);
  REQUIRE(x.rb.errors.size() == 1);
  CHECK(x.rb.errors[0].e == flow_error::peer_restarted);
  REQUIRE(x.rb.errors[0].unacked.size() == 1);
  CHECK(x.rb.errors[0].unacked[0].tag() == 42);
  CHECK(x.rb.accepted.size() == 2);
  CHECK(ra2.connected.size() == 1);
}

TEST_CASE("abort: returns the unacked messages at once", "[flow][close]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  x.tab.drop = [](const header& h, std::size_t) { return h.flags == net_flag::data; };
  f->send(pattern(100, 1, 1));
  f->send(pattern(5000, 2, 2));
  auto back = f->abort();
  REQUIRE(back.size() == 2);
  CHECK(back[0].tag() == 1);
  CHECK(is_pattern(back[1], 5000, 2));
  CHECK(x.ra.errors.empty());  // no callback after abort
  x.run_us(200);
  CHECK(x.ea->flow_count() == 0);
  CHECK(x.eb->flow_count() == 0);  // B took the RST
}

TEST_CASE("unknown tuples: DATA and SYN-ACK get a reply RST - ACK and RST do not", "[flow][rst]") {
  pair_fixture x;
  x.start();
  header h;
  h.flags = net_flag::data;
  h.msg_flags = msg_flag::first | msg_flag::last;
  h.seqno = 777;
  x.inject(*x.eb, x.t_b, h, {1, 2, 3});
  h = {};
  h.flags = net_flag::ack;
  x.inject(*x.eb, x.t_b, h);
  h.flags = net_flag::rst;
  x.inject(*x.eb, x.t_b, h);
  h.flags = net_flag::syn_ack;
  h.seqno = 888;
  x.inject(*x.eb, x.t_b, h);
  x.run_us(50);
  auto rst = x.tba.of(net_flag::rst);
  REQUIRE(rst.size() == 2);
  CHECK(rst[0]->h.ackno == 777);
  CHECK(rst[1]->h.ackno == 888);
  CHECK(x.eb->stats().rst_replies == 2);
  CHECK(x.eb->flow_count() == 0);
}

TEST_CASE("segmentation: FIRST/MORE/LAST - sizes - in-order reassembly", "[flow][segment]") {
  pair_fixture x;
  x.cfg.mss = 100;
  x.start();
  flow* f = x.connect_and_wait();
  std::vector<std::size_t> sizes{1, 100, 101, 250};
  for (std::size_t i = 0; i < sizes.size(); ++i) f->send(pattern(sizes[i], uint8_t(i)));
  x.run_us(1000);
  auto data = x.tab.of(net_flag::data);
  using F = std::vector<uint8_t>;
  F flags, lens;
  for (auto* p : data) {
    flags.push_back(p->h.msg_flags);
    lens.push_back(uint8_t(p->payload.size()));
    CHECK(p->h.ackno == data_ackno);
  }
  const uint8_t fl = msg_flag::first | msg_flag::last, fm = msg_flag::first | msg_flag::more,
                m = msg_flag::more, l = msg_flag::last;
  CHECK(flags == F{fl, fl, fm, l, fm, m, l});
  CHECK(lens == F{1, 100, 100, 1, 100, 100, 50});
  for (std::size_t i = 1; i < data.size(); ++i) CHECK(data[i]->h.seqno == data[i - 1]->h.seqno + 1);
  REQUIRE(x.rb.received.size() == sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i)
    CHECK(is_pattern(x.rb.received[i].second, sizes[i], uint8_t(i)));
}

TEST_CASE("segmentation: an 8 MiB message is 5916 packets of ≤ 1418 bytes", "[flow][segment]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  REQUIRE(f->send(pattern(max_message_size, 5)) == send_result::ok);
  CHECK(f->send(pattern(max_message_size + 1, 5)) == send_result::too_big);
  CHECK(f->send(message()) == send_result::empty);
  x.run_us(200'000);
  auto data = x.tab.of(net_flag::data);
  REQUIRE(data.size() == 5916);
  CHECK(data.front()->h.msg_flags == (msg_flag::first | msg_flag::more));
  CHECK(data.back()->h.msg_flags == msg_flag::last);
  CHECK(data.back()->payload.size() == max_message_size - 5915 * max_payload);
  for (std::size_t i = 0; i + 1 < data.size(); ++i) CHECK(data[i]->payload.size() == max_payload);
  REQUIRE(x.rb.received.size() == 1);
  CHECK(is_pattern(x.rb.received[0].second, max_message_size, 5));
  CHECK(x.ra.acked_tags.size() == 1);
}

TEST_CASE("retransmission rebuilds the same bytes from the message", "[flow][segment]") {
  pair_fixture x;
  x.cfg.mss = 100;
  x.start();
  flow* f = x.connect_and_wait();
  seq_t first = 0;
  bool dropped = false;
  x.tab.drop = [&](const header& h, std::size_t) {
    if (h.flags != net_flag::data) return false;
    if (!first) first = h.seqno;
    if (h.seqno == first + 2 && !dropped) return dropped = true;
    return false;
  };
  f->send(pattern(1000, 7));
  x.run_us(3000);
  std::vector<const tap::packet*> copies;
  for (auto* p : x.tab.of(net_flag::data))
    if (p->h.seqno == first + 2) copies.push_back(p);
  REQUIRE(copies.size() >= 2);
  CHECK(copies[0]->payload == copies[1]->payload);
  CHECK(copies[0]->h.msg_flags == copies[1]->h.msg_flags);
  REQUIRE(x.rb.received.size() == 1);
  CHECK(is_pattern(x.rb.received[0].second, 1000, 7));
  CHECK(f->stats().tx_retx >= 1);
}

TEST_CASE("SACK: bit i of an ACK means packet ackno + i arrived", "[flow][sack]") {
  pair_fixture x;
  x.cfg.mss = 100;
  x.start();
  flow* f = x.connect_and_wait();
  seq_t hole = 0;
  bool dropped = false;
  x.tab.drop = [&](const header& h, std::size_t) {
    if (h.flags != net_flag::data) return false;
    if (!hole) hole = h.seqno + 3;
    if (h.seqno == hole && !dropped) return dropped = true;  // its first transmission only
    return false;
  };
  f->send(pattern(2000, 1));  // 20 packets
  x.run_us(3000);
  unsigned with_sack = 0;
  for (auto* p : x.tba.of(net_flag::ack)) {
    if (p->h.ackno != hole || p->h.sack.empty()) continue;
    ++with_sack;
    CHECK(!p->h.sack.test(0));  // ackno itself is missing
    int hi = p->h.sack.highest();
    for (int i = 1; i <= hi; ++i) CHECK(p->h.sack.test(unsigned(i)));  // all later ones arrived
    CHECK(p->h.sack_count == p->h.sack.count());
  }
  CHECK(with_sack > 0);
  REQUIRE(x.rb.received.size() == 1);
  CHECK(is_pattern(x.rb.received[0].second, 2000, 1));
  CHECK(f->stats().fast_retx >= 1);
}

TEST_CASE("reassembly: a continuation without FIRST is a protocol error", "[flow][segment]") {
  pair_fixture x;
  x.start();
  x.connect_and_wait();
  seq_t a_isn = x.tab.of(net_flag::syn)[0]->h.seqno;
  header h;
  h.flags = net_flag::data;
  h.msg_flags = msg_flag::last;
  h.seqno = a_isn + 1;  // B's rcv_nxt
  h.ackno = data_ackno;
  x.inject(*x.eb, x.t_b, h, {1, 2, 3});
  REQUIRE(x.rb.errors.size() == 1);
  CHECK(x.rb.errors[0].e == flow_error::protocol_error);
  x.run_us(100);
  CHECK(x.ea->flow_count() == 0);  // B reset A
}

TEST_CASE("flow control: a full receiver refuses and flags its ACKs - resume reopens",
          "[flow][backpressure]") {
  pair_fixture x;
  x.cfg.rx_buffer_bytes = 1000;
  x.start();
  flow* f = x.connect_and_wait();
  flow* fb = x.rb.accepted[0];
  x.rb.refuse = true;
  for (int i = 0; i < 5; ++i) f->send(pattern(600, uint8_t(i), uint64_t(i)));
  x.run_us(20'000);
  CHECK(x.rb.received.empty());
  CHECK(fb->rx_held_bytes() >= 1000);
  CHECK(fb->rx_held_bytes() <= 1200);  // limit + one message
  CHECK(fb->stats().rx_refused > 0);
  bool flagged = false;
  for (auto* p : x.tba.of(net_flag::ack)) flagged |= (p->h.msg_flags & msg_flag::ack_rx_full) != 0;
  CHECK(flagged);
  CHECK(x.ra.errors.empty());
  CHECK(f->stats().probes > 0);
  x.rb.refuse = false;
  fb->resume_rx();
  x.run_us(5000);
  REQUIRE(x.rb.received.size() == 5);
  for (int i = 0; i < 5; ++i)
    CHECK(is_pattern(x.rb.received[std::size_t(i)].second, 600, uint8_t(i)));
  CHECK(x.ra.acked_tags == std::vector<uint64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("send: queue_full beyond tx_queue_bytes - then on_writable", "[flow]") {
  pair_fixture x;
  x.cfg.tx_queue_bytes = 10'000;
  x.start();
  flow* f = x.connect_and_wait();
  CHECK(f->send(pattern(6000, 1)) == send_result::ok);
  CHECK(f->send(pattern(6000, 2)) == send_result::ok);
  CHECK(f->send(pattern(10, 3)) == send_result::queue_full);
  x.run_us(1000);
  CHECK(f->tx_queued_bytes() == 0);
  CHECK(x.ra.writable == 1);
  CHECK(f->send(pattern(10, 3)) == send_result::ok);
}

TEST_CASE("failure: retries exhausted — timeout - unacked messages returned whole",
          "[flow][failure]") {
  pair_fixture x;
  x.cfg.mss = 100;
  x.start();
  flow* f = x.connect_and_wait();
  seq_t a_isn = x.tab.of(net_flag::syn)[0]->h.seqno;
  // Packets from the 6th on are lost forever: message 1 is partially acked.
  x.tab.drop = [&](const header& h, std::size_t) {
    return h.flags == net_flag::data && seq_ge(h.seqno, a_isn + 1 + 5);
  };
  f->send(pattern(1000, 1, 1));
  f->send(pattern(50, 2, 2));
  uint64_t t0 = x.w.now_ns();
  x.run_us(5'000'000);
  REQUIRE(x.ra.errors.size() == 1);
  auto& e = x.ra.errors[0];
  CHECK(e.e == flow_error::timeout);
  REQUIRE(e.unacked.size() == 2);
  CHECK(is_pattern(e.unacked[0], 1000, 1));
  CHECK(e.unacked[0].tag() == 1);
  CHECK(is_pattern(e.unacked[1], 50, 2));
  // 15 backed-off RTOs from 200 µs, capped at 100 ms: well under a second.
  CHECK(e.at_ns - t0 < 1'000'000'000ull);
  CHECK(x.ea->flow_count() == 0);
  CHECK(x.rb.received.empty());
}

TEST_CASE("mss: a peer's full-size packets fit a receiver configured with a small mss",
          "[flow][segment]") {
  pair_fixture x;
  x.start();
  // B cuts 100-byte packets; A (default mss) sends 1418-byte ones, some out of order.
  recorder rb2(x.w);
  auto small = x.cfg;
  small.mss = 100;
  x.eb = &x.b.start(rb2, small);
  x.eb->listen(5000);
  flow* f = x.ea->connect(x.t_a);
  bool dropped = false;
  x.tab.drop = [&](const header& h, std::size_t) {
    if (h.flags == net_flag::data && !dropped) return dropped = true;
    return false;
  };
  f->send(pattern(20'000, 3));
  x.run_us(5000);
  REQUIRE(rb2.received.size() == 1);
  CHECK(is_pattern(rb2.received[0].second, 20'000, 3));
  rb2.accepted[0]->send(pattern(1000, 4));
  x.run_us(1000);
  REQUIRE(x.ra.received.size() == 1);
  CHECK(x.tba.of(net_flag::data).size() == 10);
}

TEST_CASE("fuzz: mutated packets of a live session never break the endpoints", "[flow][fuzz]") {
  pair_fixture x;
  x.cfg.mss = 200;
  x.ab->config().loss = 0.05;
  x.ba->config().loss = 0.05;
  x.start();
  flow* f = x.connect_and_wait();
  flow* fb = x.rb.accepted[0];
  for (int i = 0; i < 20; ++i) {
    f->send(pattern(1000 + 37 * std::size_t(i), uint8_t(i)));
    fb->send(pattern(500 + 11 * std::size_t(i), uint8_t(i)));
  }
  x.run_us(300);
  std::mt19937_64 rng(7);
  const net_flag flags[] = {net_flag::data, net_flag::ack, net_flag::syn, net_flag::syn_ack,
                            net_flag::rst};
  unsigned sessions = 1, live = 0;
  for (int i = 0; i < 20'000; ++i) {
    if (!x.ea->find(x.t_a) && !x.eb->find(x.t_b)) {
      // Killed (RST, restart, protocol error): start a new session.
      if (flow* nf = x.ea->connect(x.t_a)) {
        ++sessions;
        for (int k = 0; k < 5; ++k) nf->send(pattern(700 + std::size_t(k), uint8_t(k)));
      }
      x.run_us(50);
    }
    live += x.ea->find(x.t_a) != nullptr;
    bool to_b = rng() & 1;
    auto& seen = to_b ? x.tab.seen : x.tba.seen;
    if (seen.empty()) continue;
    auto p = seen[rng() % seen.size()];
    header h = p.h;
    switch (rng() % 6) {
      case 0:
        h.seqno += uint32_t(int32_t(rng() % 601) - 300);
        break;
      case 1:
        h.ackno += uint32_t(int32_t(rng() % 601) - 300);
        break;
      case 2:
        for (auto& w : h.sack.w) w = rng() & rng();
        break;
      case 3:
        h.flags = rng() % 20 ? flags[rng() % 4] : net_flag::rst;
        break;
      case 4:
        h.msg_flags = uint8_t(rng() & msg_flag::data_mask);
        break;
      case 5:
        h.timestamp1 = rng();
        break;
    }
    // A SYN with a new ISN is a (correctly handled) restart: keep them rare
    // so most mutations hit live flows.
    if (h.flags == net_flag::syn && h.seqno != p.h.seqno && rng() % 20) continue;
    if (h.flags == net_flag::data && p.payload.empty()) p.payload.assign(1 + rng() % 200, 0x5a);
    if ((h.msg_flags & msg_flag::more) && (h.msg_flags & msg_flag::last))
      h.msg_flags &= ~msg_flag::more;
    x.inject(to_b ? *x.eb : *x.ea, to_b ? x.t_b : x.t_a, h, p.payload);
    if (i % 100 == 0) x.run_us(20);
    if (seen.size() > 5000) seen.erase(seen.begin(), seen.begin() + 1000);
  }
  x.run_us(2'000'000);
  // Whatever happened (resets, protocol errors), nothing may be left in a
  // broken state: flows either run or have reported to their owner.
  for (auto* e : {x.ea, x.eb})
    for (auto& t : {x.t_a, x.t_b})
      if (auto* fl = e->find(t)) CHECK(fl->packets_in_flight() <= 256);
  std::map<std::string, int> kinds;
  for (auto* r : {&x.ra, &x.rb})
    for (auto& e : r->errors) ++kinds[std::string(r == &x.ra ? "A " : "B ") + to_string(e.e)];
  std::string k;
  for (auto& [n, c] : kinds) k += n + "=" + std::to_string(c) + " ";
  INFO("sessions " << sessions << ", iterations with a live flow " << live << ", errors " << k);
  CHECK(live > 10'000);
}

TEST_CASE("tail-loss probe: a lost single-packet message is recovered in a few RTTs, not an RTO",
          "[flow][tlp]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_warm_up();
  bool dropped = false;
  x.tab.drop = [&](const header& h, std::size_t) {
    return h.flags == net_flag::data && !dropped && (dropped = true);
  };
  uint64_t t0 = x.w.now_ns();
  f->send(pattern(100, 9));
  uint64_t t_done = 0;
  for (int us = 0; us < 1000 && !t_done; ++us) {
    x.run_us(1);
    if (x.rb.received.size() == 6) t_done = x.w.now_ns();
  }
  REQUIRE(dropped);
  REQUIRE(t_done != 0);
  // RTT is 10 µs; the RTO floor is 200 µs. The probe fires after
  // max(2·SRTT, tlp_min) and one more one-way trip delivers it.
  CHECK(t_done - t0 < 60'000);
  CHECK(f->stats().tail_probes == 1);
  CHECK(f->stats().rto == 0);
  CHECK(is_pattern(x.rb.received[5].second, 100, 9));
}

TEST_CASE("loss timers wait for ACKs still queued at a busy sender: no spurious RTO or probe",
          "[flow][rto][tlp]") {
  // Regression: a shard that spent longer than an RTO in one turn (sending a
  // window at 25 Gbps) fired its RTO before reading the ACKs that had long
  // arrived: every retransmission of a loss-free 8 MiB transfer was spurious.
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_warm_up();
  const std::size_t data_before = x.tab.of(net_flag::data).size();
  // A is busy for 1 ms, five RTO floors: B's ACK waits in A's RX queue.
  x.a.pause_rx_until(x.w.now_ns() + 1'000'000);
  f->send(pattern(100, 9));
  x.run_us(900);
  REQUIRE(x.rb.received.size() == 6);  // B got it at once and ACKed
  CHECK(x.ra.acked_tags.size() == 5);       // A has not read the ACK yet
  CHECK(f->stats().rto == 0);
  CHECK(f->stats().tail_probes == 0);
  CHECK(f->stats().timer_deferred > 0);
  CHECK(x.tab.of(net_flag::data).size() == data_before + 1);  // nothing resent
  x.run_us(200);  // A reads the ACK first
  CHECK(x.ra.acked_tags.size() == 6);
  CHECK(f->stats().rto == 0);
  CHECK(f->stats().tail_probes == 0);
  CHECK(x.tab.of(net_flag::data).size() == data_before + 1);
  CHECK(f->packets_in_flight() == 0);
}

TEST_CASE("a spurious RTO (the receiver stalled, nothing was lost) is undone", "[flow][rto]") {
  // Regression: a receiving shard descheduled for longer than the RTO (this
  // VM does that for 0.2-1 ms a few times a second) made the sender resend
  // its whole flight and halve its window, though every packet had arrived.
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_warm_up();
  const double cwnd = f->cwnd();
  REQUIRE(cwnd >= 8);
  // B stalls for 1 ms (five RTO floors) just as a 10-packet message leaves.
  x.b.pause_rx_until(x.w.now_ns() + 1'000'000);
  f->send(pattern(10 * 1418, 7));
  x.run_us(5000);
  REQUIRE(x.rb.received.size() == 6);
  CHECK(is_pattern(x.rb.received[5].second, 10 * 1418, 7));
  CHECK(f->stats().rto >= 1);
  CHECK(f->stats().spurious_rto == 1);
  // The window is back (less the delay-based cut for the 1 ms RTT sample the
  // stall produced), not RTO-halved twice (2.4 before).
  CHECK(f->cwnd() >= 0.45 * cwnd);
  // The tail-loss probe and one forced packet per RTO; not the flight again.
  CHECK(f->stats().tx_retx <= f->stats().rto + 1);
  CHECK(x.ra.errors.empty());
}

namespace {
// `from` sends one 100-byte message whose packet and tail-loss probe are both
// lost on `link`, so only an RTO can recover it: it must arrive at `to_rec`
// without `from_rec` seeing an error.
void deliver_through_an_rto(pair_fixture& x, tap& link, flow& from, const recorder& from_rec,
                            const recorder& to_rec, uint8_t seed) {
  const std::size_t before = to_rec.received.size();
  int dropped = 0;
  link.drop = [&](const header& h, std::size_t) { return h.flags == net_flag::data && dropped++ < 2; };
  from.send(pattern(100, seed));
  x.run_us(20'000);
  link.drop = nullptr;  // it refers to `dropped`
  CHECK(dropped >= 2);
  CHECK(from.stats().rto >= 1);
  CHECK(from_rec.errors.empty());
  REQUIRE(to_rec.received.size() == before + 1);
  CHECK(is_pattern(to_rec.received[before].second, 100, seed));
}
}  // namespace

// Regression (an 8 MiB echo hung the runtime-app test): the failure clock ran
// from the last ACK, so a flow that had sent nothing for longer than
// fail_timeout_us failed at the first RTO of its next message.
TEST_CASE("failure: a flow idle for longer than fail_timeout survives a lost packet of its next message",
          "[flow][failure]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  f->send(pattern(100, 1));
  x.run_us(200);
  REQUIRE(x.rb.received.size() == 1);
  x.run_us(x.cfg.fail_timeout_us * 2);  // idle, nothing outstanding
  deliver_through_an_rto(x, x.tab, *f, x.ra, x.rb, 2);
}

// ... and a receiver that only took DATA for longer than fail_timeout_us
// (hearing the peer all along) failed at the first RTO of its reply.
TEST_CASE("failure: DATA from the peer counts as hearing from it", "[flow][failure]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  const uint64_t until = x.w.now_ns() + x.cfg.fail_timeout_us * 2000;
  int sent = 0;
  while (x.w.now_ns() < until) {  // A streams to B; B sends nothing
    f->send(pattern(100, uint8_t(sent++)));
    x.run_us(10'000);
  }
  REQUIRE(x.rb.received.size() == std::size_t(sent));
  REQUIRE(x.rb.accepted.size() == 1);
  deliver_through_an_rto(x, x.tba, *x.rb.accepted[0], x.rb, x.ra, 77);
}

// A flow that times out tells its peer (best effort): the peer, waiting for a
// reply that will never come, fails with peer_reset instead of waiting forever.
TEST_CASE("failure: a timed-out flow sends RST - a peer waiting for a reply learns", "[flow][failure]") {
  pair_fixture x;
  x.start();
  flow* f = x.connect_and_wait();
  REQUIRE(x.rb.accepted.size() == 1);
  // B's DATA never reaches A; everything else (B's RST included) does.
  x.tba.drop = [&](const header& h, std::size_t) { return h.flags == net_flag::data; };
  x.rb.accepted[0]->send(pattern(100, 5));
  x.run_us(5'000'000);
  REQUIRE(x.rb.errors.size() == 1);
  CHECK(x.rb.errors[0].e == flow_error::timeout);
  REQUIRE(x.ra.errors.size() == 1);
  CHECK(x.ra.errors[0].e == flow_error::peer_reset);
  (void)f;
}

TEST_CASE("an ACK due in the middle of an RX burst is pushed out at once", "[flow][ack]") {
  // ack_every_pkts in-order packets within one burst: that ACK leaves before
  // the rest of the burst is handled (push_tx), so the sender's window
  // reopens while the receiver is still busy.
  pair_fixture x;
  x.cfg.mss = 100;
  x.start();
  flow* f = x.connect_and_warm_up();
  x.b.rx_batch_ns = 1'000'000;  // everything arriving within 1 ms is one burst
  const uint64_t pushes = x.b.pushes;
  f->send(pattern(100 * 16, 7));  // 16 packets: exactly ack_every_pkts
  x.run_us(3000);
  REQUIRE(x.rb.received.size() == 6);
  CHECK(x.b.pushes - pushes == 1);
  CHECK(x.ra.acked_tags.size() == 6);
}

TEST_CASE("a run of DATA packets is pushed to the device every tx_push_pkts", "[flow][tx]") {
  for (unsigned every : {8u, 0u}) {
    CAPTURE(every);
    pair_fixture x;
    x.cfg.mss = 100;
    x.cfg.tx_push_pkts = every;
    x.start();
    flow* f = x.connect_and_warm_up();
    REQUIRE(f->cwnd() >= 16);
    const uint64_t pushes = x.a.pushes;
    f->send(pattern(100 * 16, 9));  // 16 packets in one try_send
    x.run_us(3000);
    REQUIRE(x.rb.received.size() == 6);
    CHECK(x.a.pushes - pushes == (every ? 2u : 0u));
  }
}
