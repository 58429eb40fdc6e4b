// The congestion-control harness: N backlogged flows share one bottleneck
// link (bandwidth + FIFO) in the simulator; the delay-based CC must split it
// fairly (Jain's index), keep it busy, and hold the queue near its target.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <sstream>

#include "sim/traffic.hh"

using namespace machnet::net;
using namespace machnet::net::sim;

namespace {

const ipv4_addr ip_a{0x0a000001};
const ipv4_addr ip_b{0x0a000002};

struct bottleneck {
  unsigned flows = 8;
  unsigned late_flows = 0;  // started at late_start_ns
  uint64_t late_start_ns = 0;
  double gbps = 10;
  uint64_t delay_ns = 5'000;  // each way
  uint64_t measure_from_ns = 20'000'000, measure_to_ns = 100'000'000;
  cc_params cc;
};

struct outcome {
  std::vector<double> goodput_gbps;  // per flow, in the window
  double jain = 0, total_gbps = 0;
  double mean_queue_us = 0, max_queue_kb = 0;
  double base_rtt_us = 0, target_us = 0, mean_cwnd = 0;
  uint64_t drops = 0;
};

double jain(const std::vector<double>& x) {
  double s = 0, s2 = 0;
  for (double v : x) s += v, s2 += v * v;
  return s2 > 0 ? s * s / (double(x.size()) * s2) : 0;
}

outcome run(const bottleneck& bn) {
  world w(3);
  host& a = w.add_host(ip_a);
  host& b = w.add_host(ip_b);
  link_config fwd, rev;
  fwd.delay_ns = rev.delay_ns = bn.delay_ns;
  fwd.bandwidth_bps = bn.gbps * 1e9;
  fwd.queue_bytes = 4 << 20;
  auto [ab, ba] = w.connect(a, b, fwd, rev);
  (void)ba;
  message_gen gen{3};
  gen.size_of = [](uint64_t) -> std::size_t { return 64 * 1024; };
  traffic_app sender(w, gen, true), receiver(w, gen, false);
  sender.per_flow = 1'000'000;  // backlogged for the whole run
  sender.window_msgs = 4;
  receiver.per_flow = 0;
  uint64_t start = w.now_ns();
  unsigned total = bn.flows + bn.late_flows;
  std::vector<double> bytes(total, 0);
  receiver.on_delivered = [&](stream& s, const message& m) {
    uint64_t t = w.now_ns() - start;
    if (t >= bn.measure_from_ns && t < bn.measure_to_ns) bytes[s.id] += double(m.size());
  };
  transport_config cfg;
  cfg.cc = bn.cc;
  cfg.isn_seed = 1;
  auto& ea = a.start(sender, cfg);
  cfg.isn_seed = 2;
  auto& eb = b.start(receiver, cfg);
  eb.listen(5000);
  for (unsigned i = 0; i < bn.flows; ++i) sender.open(ea, ip_a, ip_b, 5000, i);
  for (unsigned i = bn.flows; i < total; ++i)
    w.at(start + bn.late_start_ns, [&, i] { sender.open(ea, ip_a, ip_b, 5000, i); });
  w.at(start + bn.measure_from_ns, [ab = ab] { ab->reset_stats(); });
  link_stats window;
  w.at(start + bn.measure_to_ns, [&, ab = ab] { window = ab->stats(); });
  w.run_until(start + bn.measure_to_ns + 1);

  outcome o;
  double secs = double(bn.measure_to_ns - bn.measure_from_ns) / 1e9;
  for (double v : bytes) o.goodput_gbps.push_back(v * 8 / secs / 1e9);
  o.jain = jain(o.goodput_gbps);
  o.total_gbps = std::accumulate(o.goodput_gbps.begin(), o.goodput_gbps.end(), 0.0);
  o.mean_queue_us = window.queued_packets
                        ? double(window.queue_wait_ns) / double(window.queued_packets) / 1000
                        : 0;
  o.max_queue_kb = double(window.max_queue_bytes) / 1024;
  o.drops = window.queue_drops;
  double tgt = 0, base = 1e18, cw = 0;
  unsigned n = 0;
  for (auto& [t, s] : sender.streams()) {
    if (!s.f) continue;
    tgt += double(s.f->cc().target_ns(s.f->rtt().min_rtt_ns())) / 1000;
    base = std::min(base, double(s.f->rtt().min_rtt_ns()) / 1000);
    cw += s.f->cwnd();
    ++n;
  }
  o.target_us = n ? tgt / n : 0;
  if (std::getenv("MACHNET_CC_DEBUG"))
    for (auto& [t, s] : sender.streams())
      if (s.f)
        std::printf(
            "flow %u cwnd %.3f srtt %.1f min %.1f target %.1f rto %lu fast %lu retx %lu probes %lu "
            "pipe %u\n",
            s.id, s.f->cwnd(), double(s.f->rtt().srtt_ns()) / 1000,
            double(s.f->rtt().min_rtt_ns()) / 1000,
            double(s.f->cc().target_ns(s.f->rtt().min_rtt_ns())) / 1000,
            (unsigned long)s.f->stats().rto, (unsigned long)s.f->stats().fast_retx,
            (unsigned long)s.f->stats().tx_retx, (unsigned long)s.f->stats().probes,
            s.f->packets_in_flight());
  o.base_rtt_us = base;
  o.mean_cwnd = n ? cw / n : 0;
  REQUIRE(sender.bad + receiver.bad == 0);
  REQUIRE(sender.errors + receiver.errors == 0);
  return o;
}

std::string describe(const outcome& o) {
  std::ostringstream s;
  s.precision(4);
  s << "goodput Gbps per flow:";
  for (double g : o.goodput_gbps) s << ' ' << g;
  s << "\ntotal " << o.total_gbps << " Gbps, Jain " << o.jain << ", mean queueing "
    << o.mean_queue_us << " us (max " << o.max_queue_kb << " KB, drops " << o.drops
    << "), base RTT " << o.base_rtt_us << " us, target " << o.target_us << " us, mean cwnd "
    << o.mean_cwnd;
  return s.str();
}

cc_params harness_cc() {
  cc_params p;
  p.base_target_us = 30;  // base RTT here ≈ 11 µs: ≈ 19 µs of queue allowed
  return p;
}

}  // namespace

TEST_CASE("cc: 8 flows on one 10 Gbps bottleneck — fair - busy - queue near target", "[cc][sim]") {
  bottleneck bn;
  bn.cc = harness_cc();
  auto o = run(bn);
  WARN(describe(o));
  CHECK(o.jain >= 0.9);
  CHECK(o.total_gbps >= 0.8 * bn.gbps);
  double target_queue = o.target_us - o.base_rtt_us;
  CHECK(o.mean_queue_us >= 0.5 * target_queue);
  CHECK(o.mean_queue_us <= 1.5 * target_queue);
  CHECK(o.drops == 0);
}

TEST_CASE("cc: 4 late flows converge to a fair share", "[cc][sim]") {
  bottleneck bn;
  bn.cc = harness_cc();
  bn.flows = 4;
  bn.late_flows = 4;
  bn.late_start_ns = 20'000'000;
  bn.measure_from_ns = 60'000'000;
  bn.measure_to_ns = 140'000'000;
  auto o = run(bn);
  WARN(describe(o));
  CHECK(o.jain >= 0.9);
  CHECK(o.total_gbps >= 0.8 * bn.gbps);
}

TEST_CASE("cc: 64 flows share a BDP of ~9 packets with fractional windows and pacing",
          "[cc][sim]") {
  bottleneck bn;
  bn.cc = harness_cc();
  bn.flows = 64;
  bn.measure_from_ns = 40'000'000;
  bn.measure_to_ns = 200'000'000;
  auto o = run(bn);
  WARN(describe(o));
  CHECK(o.mean_cwnd < 1.0);  // the pacing regime
  CHECK(o.jain >= 0.9);
  CHECK(o.total_gbps >= 0.7 * bn.gbps);
  // Queueing stays bounded near the (flow-scaled) target, not the 4 MB buffer.
  CHECK(o.mean_queue_us <= 2.0 * (o.target_us - o.base_rtt_us));
  CHECK(o.drops == 0);
}

TEST_CASE("cc: a long path (base RTT 200 us above the target) keeps the link busy", "[cc][sim]") {
  bottleneck bn;
  bn.cc = harness_cc();  // base target 30 µs, far below this path's RTT
  bn.flows = 4;
  bn.delay_ns = 100'000;
  bn.measure_from_ns = 40'000'000;
  bn.measure_to_ns = 120'000'000;
  auto o = run(bn);
  WARN(describe(o));
  CHECK(o.base_rtt_us > 200);
  CHECK(o.target_us > o.base_rtt_us);  // the long-path rule moved the target
  CHECK(o.total_gbps >= 0.8 * bn.gbps);
  CHECK(o.jain >= 0.9);
}
