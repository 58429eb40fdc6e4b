// Tests of the transport's timing units: the RTT estimator (RFC 6298 shape,
// floor, ceiling, backoff) and the Swift-style congestion-control law.
#include <catch2/catch.hpp>
#include <cmath>

#include "machnet/net/transport/cc.hh"
#include "machnet/net/transport/rtt.hh"

using namespace machnet::net::transport;

TEST_CASE("rtt: first sample - smoothing - floor - ceiling", "[rtt]") {
  rtt_estimator r(1'000'000, 200'000, 100'000'000);
  CHECK(!r.has_sample());
  CHECK(r.rto_ns() == 1'000'000);  // initial
  r.sample(40'000);
  CHECK(r.srtt_ns() == 40'000);
  CHECK(r.rttvar_ns() == 20'000);
  // 40 + 4·20 = 120 µs, under the 200 µs floor.
  CHECK(r.rto_ns() == 200'000);
  r.sample(80'000);
  // rttvar = 3/4·20 + 1/4·|40 − 80| = 25; srtt = 7/8·40 + 1/8·80 = 45.
  CHECK(r.rttvar_ns() == 25'000);
  CHECK(r.srtt_ns() == 45'000);
  CHECK(r.min_rtt_ns() == 40'000);
  r.sample(1'000'000);
  CHECK(r.rto_ns() > 200'000);
  rtt_estimator big(1'000'000, 200'000, 5'000'000);
  big.sample(10'000'000);
  CHECK(big.rto_ns() == 5'000'000);  // ceiling
}

TEST_CASE("rtt: the minimum ages out - a path that got slower moves the base and the target", "[rtt]") {
  // Bug: a lifetime minimum from a fast start (both shards awake) kept the
  // target under every later sample once the peer slept between a paced
  // flow's packets: the window sat at min_cwnd (msg_gen: 3 msgs/s).
  rtt_estimator r(1'000'000, 200'000, 100'000'000);
  const uint64_t w = rtt_estimator::min_rtt_window_ns;
  uint64_t now = 1'000'000'000;
  for (int i = 0; i < 100; ++i, now += 1'000'000) r.sample(10'000, now);
  CHECK(r.min_rtt_ns() == 10'000);
  for (uint64_t t = 0; t < w / 2; t += 2'000'000, now += 2'000'000) r.sample(2'000'000, now);
  CHECK(r.min_rtt_ns() == 10'000);  // still remembered within the window
  for (uint64_t t = 0; t < 2 * w + 10'000'000; t += 2'000'000, now += 2'000'000) r.sample(2'000'000, now);
  CHECK(r.min_rtt_ns() == 2'000'000);
  swift_cc cc{cc_params{}};
  // The long-path rule now applies: the target sits above the slow samples.
  CHECK(cc.target_ns(r.min_rtt_ns()) > 2'000'000);
  // Without times (the simulation's old calls) the minimum never ages.
  rtt_estimator q(1'000'000, 200'000, 100'000'000);
  q.sample(10'000);
  q.sample(2'000'000);
  CHECK(q.min_rtt_ns() == 10'000);
}

TEST_CASE("rtt: exponential backoff - capped - reset", "[rtt]") {
  rtt_estimator r(1'000'000, 200'000, 3'000'000);
  r.sample(50'000);
  uint64_t base = r.rto_ns();
  r.backoff();
  CHECK(r.rto_ns() == 2 * base);
  r.backoff();
  CHECK(r.rto_ns() == 4 * base);
  for (int i = 0; i < 40; ++i) r.backoff();
  CHECK(r.rto_ns() == 3'000'000);
  r.reset_backoff();
  CHECK(r.rto_ns() == base);
}

namespace {
cc_params plain() {
  cc_params p;
  p.base_target_us = 50;
  p.min_headroom_us = 0;
  p.fs_range_us = 0;  // no flow scaling: target is exactly 50 µs
  p.init_cwnd = 10;
  return p;
}
}  // namespace

TEST_CASE("cc: additive increase below target - ai per window of ACKs", "[cc]") {
  swift_cc cc(plain());
  REQUIRE(cc.target_ns(0) == 50'000);
  cc.on_ack(1'000'000, 30'000, 1, 0, 30'000);
  CHECK(cc.cwnd() == Approx(10.1));
  // One window of ACKs adds about ai = 1 packet.
  swift_cc w(plain());
  for (int i = 0; i < 10; ++i) w.on_ack(1'000'000, 30'000, 1, 0, 30'000);
  CHECK(w.cwnd() == Approx(11.0).epsilon(0.01));
}

TEST_CASE("cc: multiplicative decrease above target - bounded - once per RTT", "[cc]") {
  swift_cc cc(plain());
  // rtt 100 µs, target 50: factor 1 − 0.8·50/100 = 0.6.
  cc.on_ack(1'000'000, 100'000, 1, 0, 100'000);
  CHECK(cc.cwnd() == Approx(6.0));
  // Within one RTT: no further decrease.
  cc.on_ack(1'050'000, 100'000, 1, 0, 100'000);
  CHECK(cc.cwnd() == Approx(6.0));
  // After an RTT: a huge delay decreases by at most max_mdf (0.5).
  cc.on_ack(1'100'000, 10'000'000, 1, 0, 100'000);
  CHECK(cc.cwnd() == Approx(3.0));
  CHECK(cc.decreases() == 2);
}

TEST_CASE("cc: fractional windows - pacing - clamps", "[cc]") {
  auto p = plain();
  p.init_cwnd = 0.5;
  swift_cc cc(p);
  CHECK(cc.window() == 1);
  CHECK(cc.pacing_gap_ns(40'000) == 80'000);  // srtt / cwnd
  cc.on_ack(1'000'000, 30'000, 1, 0, 40'000);
  CHECK(cc.cwnd() == Approx(1.5));  // below 1: + ai per ACKed packet
  CHECK(cc.pacing_gap_ns(40'000) == 0);
  for (int i = 0; i < 10; ++i) cc.on_rto();
  CHECK(cc.cwnd() == Approx(p.min_cwnd));
  swift_cc big(p);
  for (int i = 0; i < 100'000; ++i) big.on_ack(1'000'000, 10'000, 8, 0, 10'000);
  CHECK(big.cwnd() == Approx(p.max_cwnd));
}

TEST_CASE("cc: RTO halves - then resets to min after repeated RTOs", "[cc]") {
  swift_cc cc(plain());
  cc.on_rto();
  CHECK(cc.cwnd() == Approx(5.0));
  cc.on_rto();
  CHECK(cc.cwnd() == Approx(2.5));
  cc.on_rto();  // retx_reset_threshold = 3
  CHECK(cc.cwnd() == Approx(plain().min_cwnd));
}

TEST_CASE("cc: loss decreases once per RTT", "[cc]") {
  swift_cc cc(plain());
  cc.on_loss(1'000'000, 20'000);
  CHECK(cc.cwnd() == Approx(5.0));
  cc.on_loss(1'010'000, 20'000);
  CHECK(cc.cwnd() == Approx(5.0));
  cc.on_loss(1'020'000, 20'000);
  CHECK(cc.cwnd() == Approx(2.5));
}

TEST_CASE("cc: target = base (or min_rtt + headroom on a long path) + flow scaling", "[cc]") {
  cc_params p;
  p.base_target_us = 50;
  p.min_headroom_us = 10;
  p.fs_range_us = 20;
  p.fs_min_cwnd = 0.1;
  p.fs_max_cwnd = 100;
  p.init_cwnd = 100;
  swift_cc at_max(p);
  CHECK(at_max.target_ns(0) == 50'000);  // no scaling at fs_max_cwnd
  // A min RTT a standing queue can explain (≤ 50 + 20) changes nothing...
  CHECK(at_max.target_ns(65'000) == 50'000);
  // ...a long path (base RTT 200 µs) gets min_rtt + headroom, the headroom
  // growing with the path (half of it), at least min_headroom.
  CHECK(at_max.target_ns(200'000) == 300'000);
  CHECK(at_max.target_ns(75'000) == 75'000 + 37'500);
  p.headroom_frac = 0;
  swift_cc fixed(p);
  CHECK(fixed.target_ns(200'000) == 210'000);
  p.headroom_frac = 0.5;
  p.init_cwnd = 0.1;
  swift_cc at_min(p);
  CHECK(at_min.target_ns(0) == 70'000);  // full fs_range at fs_min_cwnd
  p.init_cwnd = 4;
  swift_cc mid(p);
  CHECK(mid.target_ns(0) > 50'000);
  CHECK(mid.target_ns(0) < 70'000);
}
