// engine_stream: streaming benchmark of the packet engine — a sender host
// blasts UDP datagrams through engine::send on every shard, a receiver host
// counts them per shard; prints Mpps/Gbps per shard and JSON.
#include <rte_mbuf.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "machnet/net/engine.hh"
#include "machnet/runtime/app.hh"
#include "machnet/runtime/clock.hh"
#include "machnet/runtime/smp.hh"

namespace po = boost::program_options;
using namespace machnet;
using namespace machnet::net;

namespace {

struct counter : udp_handler {
  uint64_t packets = 0, bytes = 0;
  void on_udp(engine&, rte_mbuf* m, const parse_result&) override {
    ++packets;
    bytes += rte_pktmbuf_pkt_len(m);
    rte_pktmbuf_free(m);
  }
};

struct shard_result {
  uint64_t packets = 0, bytes = 0, dropped = 0;
  double seconds = 0;
};

task<int> bench(const po::variables_map& vm) {
  const unsigned n = smp::count();
  const bool sender = vm["role"].as<std::string>() == "send";
  const unsigned size = vm["size"].as<unsigned>();
  const double duration = vm["duration"].as<double>();
  if (size < udp_headers_len + 1 || size > 1514) throw std::invalid_argument("--size must be 43..1514");
  port_config pc;
  pc.device = vm["device"].as<std::string>();
  pc.queues = uint16_t(n);
  pc.rss = rss_mode::emulated;
  pc.mac = mac_addr::parse(vm["local-mac"].as<std::string>());
  auto local = ipv4_addr::parse(vm["local-ip"].as<std::string>());
  auto remote = ipv4_addr::parse(vm["remote-ip"].as<std::string>());
  auto peer_mac = mac_addr::parse(vm["peer-mac"].as<std::string>());
  if (!local || !remote || !peer_mac || !pc.mac) throw std::invalid_argument("bad address flag");
  port p(pc);
  fmt::print(stderr, "{}\n", p.describe());
  for (int i = 0; i < 1000 && !p.link_up(); ++i) co_await sleep(std::chrono::milliseconds(5));
  if (!p.link_up()) throw std::runtime_error("link did not come up");
  engine_config ec;
  ec.ip = *local;
  ec.udp_checksum = checksum_policy::off;
  ec.gratuitous_arp = false;
  engine_group g(p, n, ec);
  g.arp().set_static(*remote, *peer_mac);

  std::vector<std::unique_ptr<engine>> es(n);
  std::vector<counter> counters(n);
  std::vector<shard_result> results(n);
  std::vector<task<void>> runs;
  for (unsigned i = 0; i < n; ++i)
    runs.push_back([](unsigned i, engine_group* g, std::vector<std::unique_ptr<engine>>* es,
                      std::vector<counter>* counters, std::vector<shard_result>* results,
                      bool sender, unsigned size, double duration, ipv4_addr local,
                      ipv4_addr remote) -> task<void> {
      co_await submit_to(i, [=]() -> task<void> {
        auto& e = *((*es)[i] = std::make_unique<engine>(*g, i));
        auto& r = (*results)[i];
        if (!sender) {
          e.listen(7000, &(*counters)[i]);
          // Count from the first packet until `duration` after it (or give up).
          uint64_t give_up = now_us() + uint64_t((duration + 30) * 1e6);
          while ((*counters)[i].packets == 0 && now_us() < give_up) co_await sleep_for(100);
          uint64_t t0 = now_ns();
          uint64_t p0 = (*counters)[i].packets, b0 = (*counters)[i].bytes;
          co_await sleep_for(uint64_t(duration * 1e6));
          r.packets = (*counters)[i].packets - p0;
          r.bytes = (*counters)[i].bytes - b0;
          r.seconds = double(now_ns() - t0) / 1e9;
        } else {
          // Flows whose packets the receiver's RSS puts on queue i.
          std::vector<flow_tuple> flows;
          for (uint16_t port = 10000; flows.size() < 8; ++port) {
            flow_tuple f{local, remote, port, 7000};
            if (e.tx_queue_for(f) == i) flows.push_back(f);
          }
          uint16_t payload = uint16_t(size - udp_headers_len);
          uint64_t t0 = now_ns(), end = now_us() + uint64_t(duration * 1e6);
          uint64_t sent = 0;
          while (now_us() < end) {
            for (unsigned k = 0; k < 32; ++k) {
              rte_mbuf* m = e.alloc_udp(flows[k & 7], payload);
              if (!m) break;
              e.send(m, flows[k & 7]);
              ++sent;
            }
            co_await yield{};
          }
          r.seconds = double(now_ns() - t0) / 1e9;
          r.packets = e.counters().tx_packets;
          r.bytes = e.counters().tx_bytes;
          r.dropped = e.counters().tx_dropped;
          (void)sent;
        }
        co_await sleep(std::chrono::milliseconds(50));
        (*es)[i].reset();
      });
    }(i, &g, &es, &counters, &results, sender, size, duration, *local, *remote));
  for (auto& t : runs) co_await std::move(t);

  std::string json = fmt::format("{{\"role\":\"{}\",\"size\":{},\"shards\":[", sender ? "send" : "recv", size);
  double total = 0;
  for (unsigned i = 0; i < n; ++i) {
    auto& r = results[i];
    double mpps = r.seconds > 0 ? double(r.packets) / r.seconds / 1e6 : 0;
    double gbps = r.seconds > 0 ? double(r.bytes) * 8 / r.seconds / 1e9 : 0;
    total += mpps;
    fmt::print("{} shard {}: {:.2f} Mpps, {:.2f} Gbps ({} packets in {:.2f} s, {} dropped at TX)\n",
               sender ? "send" : "recv", i, mpps, gbps, r.packets, r.seconds, r.dropped);
    json += fmt::format("{}{{\"shard\":{},\"mpps\":{:.3f},\"gbps\":{:.3f},\"packets\":{}}}",
                        i ? "," : "", i, mpps, gbps, r.packets);
  }
  json += fmt::format("],\"total_mpps\":{:.3f}}}", total);
  fmt::print("{} total: {:.2f} Mpps\n", sender ? "send" : "recv", total);
  if (vm.count("json")) {
    if (FILE* f = std::fopen(vm["json"].as<std::string>().c_str(), "w")) {
      std::fprintf(f, "%s\n", json.c_str());
      std::fclose(f);
    }
  }
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  app_template app("engine_stream", "streaming benchmark of the packet engine over a DPDK device");
  app.add_options()
    ("role", po::value<std::string>()->required(), "send | recv")
    ("device", po::value<std::string>()->required(), "DPDK device string (e.g. net_memif0,role=server,socket=/tmp/s.sock,socket-abstract=no)")
    ("local-ip", po::value<std::string>()->default_value("10.0.0.1"), "our IPv4 address")
    ("remote-ip", po::value<std::string>()->default_value("10.0.0.2"), "the peer's IPv4 address")
    ("local-mac", po::value<std::string>()->default_value("02:00:00:00:00:01"), "our MAC")
    ("peer-mac", po::value<std::string>()->default_value("02:00:00:00:00:02"), "the peer's MAC (static ARP)")
    ("size", po::value<unsigned>()->default_value(64), "frame size in bytes (without FCS)")
    ("duration", po::value<double>()->default_value(5), "seconds to send / measure")
    ("json", po::value<std::string>(), "write results as JSON to this file");
  return app.run(argc, argv, bench);
}
