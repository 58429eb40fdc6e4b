// Tests of ACKs on DATA (transport_config::data_acks, docs/protocol.md): the
// offer in SYN / SYN-ACK, the reply that carries the request's ACK, the ACK
// that waits one flush for it, honest RTT samples from the 32-bit stamps.
#include <catch2/catch.hpp>
#include <cstdint>

#include "sim/recorder.hh"

using namespace machnet::net;
using namespace machnet::net::sim;

namespace {

const ipv4_addr ip_a{0x0a000001};
const ipv4_addr ip_b{0x0a000002};

// A request/response pair: B answers each message with one of the same size
// (from on_message, or reply_after_ns later); A sends the next request from
// on_message when the answer arrives, until `rounds` are done.
struct rpc_owner : recorder {
  using recorder::recorder;
  bool server = false;
  uint64_t reply_after_ns = 0;
  unsigned rounds = 0, answers = 0;
  bool on_message(flow& f, message& m) override {
    const std::size_t n = m.size();
    recorder::on_message(f, m);
    if (server) {
      if (reply_after_ns == 0) {
        f.send(pattern(n, 3));
      } else {
        flow* p = &f;
        w.at(w.now_ns() + reply_after_ns, [p, n] { p->send(pattern(n, 3)); });
      }
    } else if (++answers < rounds) {
      f.send(pattern(n, 5));
    }
    return true;
  }
};

struct rpc_fixture {
  explicit rpc_fixture(uint64_t start_ns = 1'000'000'000) : w(1, start_ns) {}
  world w;
  host& a = w.add_host(ip_a);
  host& b = w.add_host(ip_b);
  std::pair<sim::link*, sim::link*> links = w.connect(a, b, {}, {});  // 5 µs each way
  rpc_owner ra{w}, rb{w};
  tap tab, tba;
  transport::endpoint* ea = nullptr;
  transport::endpoint* eb = nullptr;
  flow_tuple t_a{ip_a, ip_b, 10000, 5000};

  double init_cwnd = 16.0;
  bool b_waits = true;  // B's ack_waits_for_reply
  flow* start(bool a_offers, bool b_offers) {
    transport_config ca, cb;
    ca.cc.init_cwnd = cb.cc.init_cwnd = init_cwnd;
    cb.ack_waits_for_reply = b_waits;
    ca.isn_seed = 1;
    cb.isn_seed = 2;
    ca.data_acks = a_offers;
    cb.data_acks = b_offers;
    ea = &a.start(ra, ca);
    eb = &b.start(rb, cb);
    eb->listen(5000);
    rb.server = true;
    tab.attach(w, links.first);
    tba.attach(w, links.second);
    flow* f = ea->connect(t_a);
    w.run_until(w.now_ns() + 200'000);
    REQUIRE(ra.connected.size() == 1);
    REQUIRE(rb.accepted.size() == 1);
    return f;
  }
  // Runs `rounds` request/response exchanges of `size` bytes.
  void exchange(flow* f, unsigned rounds, std::size_t size = 64) {
    ra.rounds = rounds;
    ra.answers = 0;
    f->send(pattern(size, 5));
    w.run_until(w.now_ns() + 20'000'000);
    REQUIRE(ra.answers == rounds);
  }
};

// DATA packets (after the handshake) that carry an ACK, and pure ACKs.
struct counts {
  std::size_t data = 0, data_with_ack = 0, acks = 0;
};
counts count(const tap& t) {
  counts c;
  for (auto& p : t.seen) {
    if (p.h.flags == net_flag::data) {
      ++c.data;
      c.data_with_ack += p.h.ackno != data_ackno;
    } else if (p.h.flags == net_flag::ack) {
      ++c.acks;
    }
  }
  return c;
}

}  // namespace

TEST_CASE("data acks: offered in SYN and SYN-ACK, used only when both ends offer", "[flow][ack]") {
  for (auto [a_offers, b_offers] : {std::pair{true, true}, {true, false}, {false, true}, {false, false}}) {
    CAPTURE(a_offers, b_offers);
    rpc_fixture x;
    flow* f = x.start(a_offers, b_offers);
    const bool both = a_offers && b_offers;
    CHECK(f->data_acks() == both);
    CHECK(x.rb.accepted[0]->data_acks() == both);
    auto syn = x.tab.of(net_flag::syn);
    auto syn_ack = x.tba.of(net_flag::syn_ack);
    REQUIRE(syn.size() == 1);
    REQUIRE(syn_ack.size() == 1);
    CHECK(bool(syn[0]->h.msg_flags & msg_flag::syn_data_acks) == a_offers);
    CHECK(bool(syn_ack[0]->h.msg_flags & msg_flag::syn_data_acks) == both);
    x.exchange(f, 20);
    counts ab = count(x.tab), ba = count(x.tba);
    if (both) {
      CHECK(ab.data_with_ack > 0);
      CHECK(ba.data_with_ack > 0);
    } else {
      // Toward a peer that did not offer (the reference never does): DATA
      // says ackno 0xffffffff, every ACK is its own packet.
      CHECK(ab.data_with_ack == 0);
      CHECK(ba.data_with_ack == 0);
      CHECK(ab.acks >= 20);
      CHECK(ba.acks >= 20);
    }
  }
}

TEST_CASE("data acks: a reply sent from on_message carries the request's ACK - two packets per round trip",
          "[flow][ack]") {
  rpc_fixture x;
  flow* f = x.start(true, true);
  const counts ab0 = count(x.tab), ba0 = count(x.tba);
  x.exchange(f, 100);
  counts ab = count(x.tab), ba = count(x.tba);
  // B answers every request from on_message: each answer carries its ACK.
  CHECK(ba.data - ba0.data == 100);
  CHECK(ba.data_with_ack - ba0.data_with_ack == 100);
  CHECK(ba.acks == ba0.acks);
  // A's next request carries the answer's ACK; the last answer's ACK leaves
  // alone, one flush later.
  CHECK(ab.data - ab0.data == 100);
  CHECK(ab.data_with_ack - ab0.data_with_ack == 99);
  CHECK(ab.acks - ab0.acks == 1);
  CHECK(x.rb.received.size() == 100);
  CHECK(x.ra.acked_tags.size() == 100);
  CHECK(x.rb.accepted[0]->stats().tx_data_acks == 100);
  CHECK(f->stats().rx_data_acks == 100);
  // Nothing was resent: the held ACKs never let a timer fire.
  CHECK(f->stats().tx_retx == 0);
  CHECK(x.rb.accepted[0]->stats().tx_retx == 0);
}

TEST_CASE("data acks: without a reply the ACK waits one flush, then leaves alone", "[flow][ack]") {
  rpc_fixture x;
  x.b.rx_batch_ns = 2'000;  // a flush of B comes 2 µs after a request arrives
  flow* f = x.start(true, true);
  x.rb.reply_after_ns = 50'000;  // the answer comes 50 µs later
  const uint64_t requests = x.b.flush_requests;
  x.ra.rounds = 1;
  f->send(pattern(64, 5));
  x.w.run_until(x.w.now_ns() + 1'000'000);
  REQUIRE(x.ra.answers == 1);
  CHECK(x.b.flush_requests - requests == 1);
  auto data = x.tab.of(net_flag::data);
  auto acks = x.tba.of(net_flag::ack);
  REQUIRE(data.size() == 1);
  REQUIRE(acks.size() == 1);  // the request's (B sent no other ACK)
  // The request arrives 5 µs after it left; B holds its ACK through the
  // burst's flush (2 µs) and sends it at the next one (2 µs more).
  const uint64_t ack_delay = acks[0]->at_ns - data[0]->at_ns;
  CHECK(ack_delay >= 5'000 + 2'000);
  CHECK(ack_delay <= 5'000 + 4'000 + 1'000);
  // The answer found no ACK due: ackno says none.
  auto answers = x.tba.of(net_flag::data);
  REQUIRE(answers.size() == 1);
  CHECK(answers[0]->h.ackno == data_ackno);
  // And A's RTT sample left B's wait out (the echo is advanced by it).
  CHECK(f->rtt().srtt_ns() < 20'000);
}

TEST_CASE("data acks: RTT samples stay honest while the 32-bit stamps wrap", "[flow][ack][rtt]") {
  // The clock crosses a multiple of 2^32 ns during the exchange.
  rpc_fixture x((uint64_t(3) << 32) - 300'000);
  flow* f = x.start(true, true);
  x.exchange(f, 300);
  flow* g = x.rb.accepted[0];
  CHECK(x.w.now_ns() > (uint64_t(3) << 32));
  CHECK(f->stats().rx_data_acks >= 299);
  CHECK(g->stats().rx_data_acks >= 299);
  // 5 µs each way: every sample is about 10 µs, on both sides.
  CHECK(f->rtt().has_sample());
  CHECK(g->rtt().has_sample());
  CHECK(f->rtt().srtt_ns() >= 9'000);
  CHECK(f->rtt().srtt_ns() <= 15'000);
  CHECK(g->rtt().srtt_ns() >= 9'000);
  CHECK(g->rtt().srtt_ns() <= 15'000);
  CHECK(f->rtt().min_rtt_ns() >= 9'000);
  CHECK(g->rtt().min_rtt_ns() >= 9'000);
  CHECK(f->stats().tx_retx == 0);
  CHECK(g->stats().tx_retx == 0);
}

TEST_CASE("data acks: a lost answer took its ACK along - the resent answer carries it again",
          "[flow][ack]") {
  rpc_fixture x;
  flow* f = x.start(true, true);
  x.exchange(f, 5);
  // Drop B's next DATA (an answer carrying a request's ACK) once.
  std::size_t dropped = SIZE_MAX;
  x.tba.drop = [&](const header& h, std::size_t i) {
    if (dropped != SIZE_MAX || h.flags != net_flag::data) return false;
    dropped = i;
    return true;
  };
  x.exchange(f, 5);
  REQUIRE(dropped != SIZE_MAX);
  CHECK(x.rb.received.size() == 10);
  CHECK(x.ra.acked_tags.size() == 10);
  CHECK(x.rb.accepted[0]->stats().tx_retx >= 1);
  // B's next DATA is the same answer again, and it carries an ACK too.
  const header& lost = x.tba.seen[dropped].h;
  CHECK(lost.ackno != data_ackno);
  const tap::packet* again = nullptr;
  for (std::size_t i = dropped + 1; i < x.tba.seen.size() && !again; ++i)
    if (x.tba.seen[i].h.flags == net_flag::data) again = &x.tba.seen[i];
  REQUIRE(again);
  CHECK(again->h.seqno == lost.seqno);
  CHECK(again->h.ackno != data_ackno);
  CHECK(!seq_lt(again->h.ackno, lost.ackno));
}

TEST_CASE("data acks: a burst of more than ack_every_pkts requests is acknowledged by the first answer",
          "[flow][ack]") {
  rpc_fixture x;
  x.init_cwnd = 64;  // the 20 requests leave together
  flow* f = x.start(true, true);
  x.exchange(f, 50);
  REQUIRE(f->cwnd() >= 20);
  x.b.rx_batch_ns = 3'000;      // (they arrive together: one RX burst at B)
  x.rb.reply_after_ns = 1'000;  // answered after the burst, before B's next flush
  x.ra.rounds = 0;              // A sends no more requests from on_message
  const counts ba0 = count(x.tba);
  const std::size_t seen0 = x.tba.seen.size();
  for (int i = 0; i < 20; ++i) f->send(pattern(64, uint8_t(i)));
  x.w.run_until(x.w.now_ns() + 2'000'000);
  REQUIRE(x.rb.received.size() == 70);
  CHECK(x.ra.acked_tags.size() == 70);
  const counts ba = count(x.tba);
  CHECK(ba.data - ba0.data == 20);
  // No ACK alone at the 16th packet (ack_every_pkts): B's first answer
  // acknowledges all 20 requests.
  CHECK(ba.acks == ba0.acks);
  REQUIRE(x.tba.seen.size() > seen0);
  const header& first = x.tba.seen[seen0].h;
  CHECK(first.flags == net_flag::data);
  CHECK(first.ackno == x.tab.of(net_flag::data).back()->h.seqno + 1);
}

TEST_CASE("data acks: an owner that answers later than a turn stops making its ACKs wait - until it is quick again",
          "[flow][ack]") {
  rpc_fixture x;
  x.b.rx_batch_ns = 2'000;  // B's next flush comes 2 µs after the last
  flow* f = x.start(true, true);
  flow* g = nullptr;
  // Slow answers (50 µs): the first holds are in vain, then B mostly stops.
  x.rb.reply_after_ns = 50'000;
  const uint64_t holds0 = x.b.flush_requests;
  x.exchange(f, 64);
  g = x.rb.accepted[0];
  const uint64_t slow_holds = x.b.flush_requests - holds0;
  CHECK(slow_holds >= 4);
  CHECK(slow_holds <= 4 + 64 / 16 + 1);
  // The last request's ACK left without the wait (5 µs after it left A, plus
  // B's 2 µs burst delay).
  auto reqs = x.tab.of(net_flag::data);
  auto acks = x.tba.of(net_flag::ack);
  REQUIRE(!acks.empty());
  CHECK(acks.back()->at_ns - reqs.back()->at_ns <= 5'000 + 2'000 + 500);
  // Quick answers again (1 µs, within a turn): within 16 ACKs a hold is
  // tried, it pays off, and from then on the answers carry the ACKs.
  x.rb.reply_after_ns = 1'000;
  const counts ba0 = count(x.tba);
  const uint64_t carried0 = g->stats().tx_data_acks;
  x.exchange(f, 64);
  const counts ba = count(x.tba);
  CHECK(ba.acks - ba0.acks <= 16);
  CHECK(g->stats().tx_data_acks - carried0 >= 64 - 16);
}

TEST_CASE("data acks: with ack_waits_for_reply off (the sidecar) ACKs never wait, DATA still carries due ones",
          "[flow][ack]") {
  rpc_fixture x;
  x.b_waits = false;
  x.b.rx_batch_ns = 2'000;
  flow* f = x.start(true, true);
  flow* g = x.rb.accepted[0];
  CHECK(g->data_acks());
  CHECK_FALSE(g->ack_may_wait());
  CHECK(f->ack_may_wait());
  x.rb.reply_after_ns = 1'000;  // within B's turn: a wait would have paid off
  const counts ba0 = count(x.tba);
  x.exchange(f, 20);
  const counts ba = count(x.tba);
  CHECK(x.b.flush_requests == 0);  // B never held an ACK
  CHECK(ba.acks - ba0.acks == 20);  // each request's ACK left at B's first flush
  // A answers from on_message: its requests still carry B's answers' ACKs.
  CHECK(count(x.tab).data_with_ack >= 19);
}
