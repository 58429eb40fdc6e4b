// transport_bench: the transport over a real DPDK link between two hosts in
// one process (host A on shard 0, host B on shard 1, pinned apart): window-1
// request/echo latency percentiles, and bulk throughput of large messages;
// with optional injected loss. Table + JSON.
#include <rte_mbuf.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "machnet/net/transport/buffer_cache.hh"
#include "machnet/net/transport_shard.hh"
#include "machnet/runtime/app.hh"
#include "machnet/runtime/clock.hh"
#include "machnet/runtime/smp.hh"

namespace po = boost::program_options;
using namespace machnet;
using namespace machnet::net;
using namespace machnet::net::transport;

namespace {

const ipv4_addr ip_a{0x0a000001}, ip_b{0x0a000002};

// Host B: echoes small messages; for bulk, answers each message with 1 byte.
struct server_owner : transport_owner {
  bool bulk = false;
  flow* last = nullptr;  // B's flow, for its counters after the run
  bool on_message(flow& f, message& m) override {
    last = &f;
    if (bulk) {
      uint8_t ack = 1;
      f.send(message::copy_of({&ack, 1}));
    } else {
      f.send(std::move(m));
    }
    return true;
  }
  void on_error(flow&, flow_error, std::vector<message>) override {}
};

// Host A: counts replies; the driver coroutine waits on `got`. Acknowledged
// bulk messages come back through on_acked and are sent again (no copy).
struct client_owner : transport_owner {
  uint64_t got = 0;
  bool connected = false, failed = false;
  std::vector<message> spare;
  void on_connected(flow&) override { connected = true; }
  void on_acked(flow&, message& m) override {
    if (m.size() > 4096) spare.push_back(std::move(m));
  }
  bool on_message(flow&, message&) override {
    ++got;
    return true;
  }
  void on_error(flow& f, flow_error e, std::vector<message>) override {
    failed = true;
    fmt::print(stderr, "flow {} failed: {}\n", f.tuple().str(), to_string(e));
  }
};

// The raw link rate through these very ports, the way link_floor's stream
// mode measures it: A's shard sends 1514 B frames (bursts of 32) straight
// to the device for `secs`; B's engine drops them at parse (ethertype
// 0x88b5, local experimental) and its port counts them. The memif rate of
// this VM differs from one process to the next (docs/link-floor.md), so a
// floor from the same process is the fair pairing for the bulk figure.
task<double> raw_floor(port& pa, port& pb, double secs) {
  constexpr uint16_t frame = 1514, burst = 32;
  uint64_t rx0 = 0, rx1 = 0;
  co_await submit_to(1, [&] { rx0 = pb.stats(0).rx_packets; });
  rte_mempool* pool = pa.pool(0);
  rte_mbuf* pend[burst];
  uint16_t npend = 0;
  const uint64_t t0 = now_ns(), end = t0 + uint64_t(secs * 1e9);
  uint64_t iter = 0;
  while ((++iter & 15) != 0 || now_ns() < end) {
    if (npend < burst && rte_pktmbuf_alloc_bulk(pool, pend + npend, burst - npend) == 0) {
      for (uint16_t i = npend; i < burst; ++i) {
        rte_mbuf* m = pend[i];
        m->data_len = m->pkt_len = frame;
        auto* eth = rte_pktmbuf_mtod(m, uint8_t*);
        std::memcpy(eth, pb.mac().b.data(), 6);
        std::memcpy(eth + 6, pa.mac().b.data(), 6);
        eth[12] = 0x88;
        eth[13] = 0xb5;
      }
      npend = burst;
    }
    uint16_t sent = pa.tx_burst(0, pend, npend);
    std::memmove(pend, pend + sent, (npend - sent) * sizeof(rte_mbuf*));
    npend = uint16_t(npend - sent);
  }
  const double took = double(now_ns() - t0) / 1e9;
  if (npend) rte_pktmbuf_free_bulk(pend, npend);
  co_await sleep(std::chrono::milliseconds(20));  // B drains its ring
  co_await submit_to(1, [&] { rx1 = pb.stats(0).rx_packets; });
  co_return double(rx1 - rx0) * frame * 8 / took / 1e9;
}

double pct(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(q * double(v.size())))];
}

task<int> bench(const po::variables_map& vm) {
  if (smp::count() != 2) throw std::invalid_argument("run with --smp 2 (host A on shard 0, B on 1)");
  const std::string link = vm["link"].as<std::string>();
  const double loss = vm["loss"].as<double>();
  const unsigned samples = vm["samples"].as<unsigned>();
  const std::size_t bulk_size = vm["bulk-size"].as<std::size_t>();
  const unsigned bulk_count = vm["bulk-count"].as<unsigned>();
  std::string sock = fmt::format("/tmp/mn-tb-{}.sock", ::getpid());
  port_config ca, cb;
  if (link == "memif") {
    cb.device = "net_memif0,role=server,socket=" + sock + ",socket-abstract=no";
    ca.device = "net_memif1,role=client,socket=" + sock + ",socket-abstract=no";
  } else {
    throw std::invalid_argument("--link: only memif is supported here");
  }
  ca.mac = mac_addr{{2, 0, 0, 0, 0, 1}};
  cb.mac = mac_addr{{2, 0, 0, 0, 0, 2}};
  ca.faults.rx_drop = vm["loss-side"].as<std::string>() != "b" ? loss : 0;
  cb.faults.rx_drop = vm["loss-side"].as<std::string>() != "a" ? loss : 0;
  ca.faults.seed = 1;
  cb.faults.seed = 2;
  // Both memif ends live in this process: they are closed client first,
  // after everything that uses them (see the end).
  auto pb_owner = std::make_unique<port>(cb), pa_owner = std::make_unique<port>(ca);
  port &pb = *pb_owner, &pa = *pa_owner;
  for (int i = 0; i < 1000 && !(pa.link_up() && pb.link_up()); ++i)
    co_await sleep(std::chrono::milliseconds(5));
  engine_config ea, eb;
  ea.ip = ip_a;
  ea.zero_copy_tx = eb.zero_copy_tx = !vm.count("no-zero-copy");
  ea.udp_checksum = eb.udp_checksum = parse_checksum_policy(vm["checksum"].as<std::string>());
  eb.ip = ip_b;
  auto ga_owner = std::make_unique<engine_group>(pa, 1, ea);
  auto gb_owner = std::make_unique<engine_group>(pb, 1, eb);
  engine_group &ga = *ga_owner, &gb = *gb_owner;
  ga.arp().set_static(ip_b, pb.mac());
  gb.arp().set_static(ip_a, pa.mac());
  server_owner so;
  client_owner co;
  so.bulk = false;
  std::unique_ptr<engine> eng_b;
  std::unique_ptr<transport_shard> tb;
  co_await submit_to(1, [&] {
    eng_b = std::make_unique<engine>(gb, 0);
    transport::transport_config tcb;
    tcb.min_rto_us = vm["min-rto-us"].as<uint64_t>();
    tcb.cc.base_target_us = vm["target-us"].as<double>();
    tcb.window_pkts = vm["window"].as<unsigned>();
    tcb.cc.max_cwnd = tcb.window_pkts;
    tb = std::make_unique<transport_shard>(*eng_b, so, tcb);
    tb->listen(7000);
  });
  auto eng_a_owner = std::make_unique<engine>(ga, 0);
  engine& eng_a = *eng_a_owner;
  transport::transport_config tc;
  tc.min_rto_us = vm["min-rto-us"].as<uint64_t>();
  tc.cc.base_target_us = vm["target-us"].as<double>();
  tc.window_pkts = vm["window"].as<unsigned>();
  tc.cc.max_cwnd = tc.window_pkts;
  auto ta_owner = std::make_unique<transport_shard>(eng_a, co, tc);
  transport_shard& ta = *ta_owner;
  flow* f = ta.connect(ip_b, 7000);
  if (!f) throw std::runtime_error("connect: no source port");
  while (!co.connected && !co.failed) co_await yield{};

  const bool trace = vm.count("trace") != 0;
  std::string json = fmt::format("{{\"link\":\"{}\",\"loss\":{}", link, loss);
  // Window-1 latency per --sizes (default 64 B and 1 KB).
  for (std::size_t size : vm["sizes"].as<std::vector<std::size_t>>()) {
    std::vector<double> rtt;
    std::vector<uint8_t> buf(size, 0x5a);
    for (unsigned i = 0; i < samples + samples / 10 && !co.failed; ++i) {
      uint64_t want = co.got + 1;
      uint64_t t0 = now_ns();
      uint64_t rto0 = f->stats().rto, probes0 = f->stats().tail_probes;
      f->send(message::copy_of(buf));
      while (co.got < want && !co.failed) co_await yield{};
      uint64_t took_ns = now_ns() - t0;
      if (i >= samples / 10) rtt.push_back(double(took_ns) / 1000.0);
      if (trace && took_ns > 100'000)
        fmt::print(stderr,
                   "slow exchange {}: {} us; RTOs {} tail probes {} (during it: {} / {}), cwnd {:.2f}, "
                   "srtt {} ns, rto {} ns\n",
                   i, took_ns / 1000, f->stats().rto, f->stats().tail_probes,
                   f->stats().rto - rto0, f->stats().tail_probes - probes0, f->cwnd(),
                   f->rtt().srtt_ns(), f->rtt().rto_ns());
    }
    double p50 = pct(rtt, 0.5), p99 = pct(rtt, 0.99), p999 = pct(rtt, 0.999), mx = rtt.empty() ? 0 : rtt.back();
    fmt::print("window-1 {:5} B: p50 {:7.2f} us  p99 {:7.2f} us  p99.9 {:7.2f} us  max {:8.2f} us  ({} samples, loss {}; "
               "A's RTOs so far {}, tail probes {}, cwnd {:.1f})\n",
               size, p50, p99, p999, mx, rtt.size(), loss, f->stats().rto, f->stats().tail_probes, f->cwnd());
    json += fmt::format(",\"rtt_{}\":{{\"p50\":{:.3f},\"p99\":{:.3f},\"p999\":{:.3f},\"max\":{:.3f}}}",
                        size, p50, p99, p999, mx);
  }
  // Bulk: bulk_count messages of bulk_size, one reply byte each, between
  // two raw-stream floors through the same ports.
  const double floor_s = vm["floor-s"].as<double>();
  double floor_before = 0, floor_after = 0;
  if (floor_s > 0) {
    floor_before = co_await raw_floor(pa, pb, floor_s);
    fmt::print("raw floor (same ports, 1514 B frames) before bulk: {:.2f} Gbps\n", floor_before);
  }
  co_await submit_to(1, [&] { so.bulk = true; });
  {
    // Two messages in flight: the next is queued while one crosses. The app
    // builds them once; the transport hands each back when acknowledged
    // (on_acked) and it is sent again, so the figure is the transport's,
    // not an app's 8 MiB memcpy per message.
    std::vector<uint8_t> big(bulk_size, 0x33);
    for (int i = 0; i < 3; ++i) co.spare.push_back(message::copy_of(big));
    uint64_t base = co.got, want = base + bulk_count;
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < bulk_count && !co.failed; ++i) {
      while ((i >= co.got - base + 2 || co.spare.empty()) && !co.failed) co_await yield{};
      if (co.failed) break;
      message m = std::move(co.spare.back());
      co.spare.pop_back();
      if (f->send(std::move(m)) != send_result::ok) throw std::runtime_error("send refused");
    }
    while (co.got < want && !co.failed) co_await yield{};
    double s = double(now_ns() - t0) / 1e9;
    double gbps = double(bulk_size) * bulk_count * 8 / s / 1e9;
    fmt::print("bulk {} x {} B: {:.3f} s, {:.2f} Gbps goodput, {} retransmits, {} RTOs, cwnd {:.1f}, "
               "srtt {:.1f} us, min RTT {:.1f} us\n",
               bulk_count, bulk_size, s, gbps, f->stats().tx_retx, f->stats().rto, f->cwnd(),
               f->rtt().srtt_ns() / 1e3, f->rtt().min_rtt_ns() / 1e3);
    auto& c = eng_a.counters();
    fmt::print("engine A: tx {} dropped {} no-mbuf {}; port A tx-full {}; port B rx {}\n",
               c.tx_packets, c.tx_dropped, c.tx_no_mbuf, pa.stats(0).tx_full, pb.stats(0).rx_packets);
    auto& st = f->stats();
    fmt::print("flow A: data {} retx {} fast_retx {} rto {} (spurious {}) deferred {} probes {} tail_probes {} rx_acks {} stale {} reneged {}\n",
               st.tx_data, st.tx_retx, st.fast_retx, st.rto, st.spurious_rto, st.timer_deferred, st.probes, st.tail_probes, st.rx_acks,
               st.rx_stale_acks, st.sack_reneged);
    flow_stats sb;
    co_await submit_to(1, [&] {
      if (so.last) sb = so.last->stats();
    });
    fmt::print("flow B: rx_data {} dup {} ooo {} beyond_window {} refused {} tx_acks {}\n", sb.rx_data,
               sb.rx_dup, sb.rx_ooo, sb.rx_beyond_window, sb.rx_refused, sb.tx_acks);
    auto bc = buffer_cache::get_stats();
    fmt::print("buffer cache: {} hits, {} maps, {} unmaps, {} MiB idle\n", bc.hits, bc.maps, bc.unmaps,
               bc.idle_bytes >> 20);
    if (floor_s > 0) {
      floor_after = co_await raw_floor(pa, pb, floor_s);
      fmt::print("raw floor (same ports, 1514 B frames) after bulk: {:.2f} Gbps; bulk is {:.0f} % of their mean\n",
                 floor_after, 100 * gbps / ((floor_before + floor_after) / 2));
    }
    json += fmt::format(",\"bulk\":{{\"size\":{},\"count\":{},\"gbps\":{:.3f}", bulk_size,
                        bulk_count, gbps);
    if (floor_s > 0)
      json += fmt::format(",\"floor_before_gbps\":{:.3f},\"floor_after_gbps\":{:.3f}", floor_before,
                          floor_after);
    json += "}";
  }
  json += "}";
  if (vm.count("json"))
    if (FILE* fp = std::fopen(vm["json"].as<std::string>().c_str(), "w")) {
      std::fprintf(fp, "%s\n", json.c_str());
      std::fclose(fp);
    }
  co_await submit_to(1, [&] {
    tb.reset();
    eng_b.reset();
  });
  ta_owner.reset();
  eng_a_owner.reset();
  ga_owner.reset();
  gb_owner.reset();
  // The client first; the server once its control thread saw the hang-up
  // (DPDK 22.11's memif PMD crashes in its interrupt thread when both ends
  // of one process close at once: docs/net.md).
  pa_owner.reset();
  for (int i = 0; i < 100 && pb.link_up(); ++i) co_await sleep(std::chrono::milliseconds(5));
  co_await sleep(std::chrono::milliseconds(20));
  pb_owner.reset();
  co_return co.failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  app_template app("transport_bench", "transport latency and bulk throughput over a DPDK link");
  app.add_options()
    ("link", po::value<std::string>()->default_value("memif"), "memif")
    ("loss", po::value<double>()->default_value(0), "injected RX loss per port (0..1)")
    ("loss-side", po::value<std::string>()->default_value("both"), "a | b | both: which host's RX drops")
    ("samples", po::value<unsigned>()->default_value(20000), "window-1 exchanges per size")
    ("sizes", po::value<std::vector<std::size_t>>()->multitoken()->default_value({64, 1024}, "64 1024"),
     "message sizes of the window-1 exchanges (echoed in full)")
    ("bulk-size", po::value<std::size_t>()->default_value(8 << 20), "bulk message size")
    ("bulk-count", po::value<unsigned>()->default_value(20), "bulk messages")
    ("min-rto-us", po::value<uint64_t>()->default_value(transport::transport_config{}.min_rto_us),
     "RTO floor of both ends")
    ("checksum", po::value<std::string>()->default_value("automatic"),
     "UDP checksums: automatic (off on memif) | on | off")
    ("target-us", po::value<double>()->default_value(transport::cc_params{}.base_target_us),
     "congestion control's base target delay of both ends")
    ("window", po::value<unsigned>()->default_value(transport::transport_config{}.window_pkts),
     "packets in flight per flow (both ends; ≤ 4096; the CC window is capped there too)")
    ("no-zero-copy", "copy every payload into its packet (engine_config::zero_copy_tx off)")
    ("floor-s", po::value<double>()->default_value(0),
     "seconds of raw 1514 B frames through the same ports before and after the bulk (0: none)")
    ("trace", "print flow state for exchanges slower than 100 us")
    ("json", po::value<std::string>(), "write results as JSON");
  return app.run(argc, argv, bench);
}
