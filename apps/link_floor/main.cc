// link_floor: raw DPDK ping-pong over one queue — the link floor every benchmark is divided by.
//
// Two processes, one per end of a link:
//   pong  receives bursts; echoes RTT frames back (MACs swapped), counts
//         stream frames (no echo) and reports the receive rate (Mpps, Gbps).
//   ping  rtt mode: sends one frame, busy-waits for its echo, records the RTT
//         with the TSC; stream mode: sends bursts of 32 as fast as it can.
// No runtime reactor, no protocol stack: just rx_burst/tx_burst on queue 0.
// Frames carry EtherType 0x88B5 (IEEE local experimental) and a small header;
// a final END/END_ACK exchange hands pong's counters to ping and tells pong
// to exit. Pong also exits on its own (idle timeout, time budget, signals).
#include <fmt/format.h>
#include <pthread.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "machnet/net/port.hh"
#include "machnet/runtime/clock.hh"

namespace po = boost::program_options;

namespace {

constexpr uint16_t kEtherType = 0x88B5;
constexpr uint32_t kMagic = 0x4C464C52;  // "LFLR"
constexpr uint16_t kBurst = 32;
constexpr std::size_t kMinFrame = 60;    // Ethernet minimum without FCS
constexpr std::size_t kMaxFrame = 1514;  // MTU 1500 + Ethernet header

enum kind : uint8_t { k_probe = 1, k_rtt = 2, k_stream = 3, k_end = 4, k_end_ack = 5 };
constexpr uint8_t f_warmup = 1;

// Follows the Ethernet header. Both ends run on the same host: native byte order.
struct lf_hdr {
  uint32_t magic;
  uint8_t kind;
  uint8_t flags;
  uint16_t reserved;
  uint64_t seq;
  uint64_t a;  // END: frames sent (measured); END_ACK: frames received (measured)
  uint64_t b;  // END: bytes sent;             END_ACK: bytes received
};
constexpr std::size_t kHdrLen = sizeof(rte_ether_hdr) + sizeof(lf_hdr);
static_assert(kHdrLen <= kMinFrame);

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal.store(sig, std::memory_order_relaxed); }
bool stopping() { return g_signal.load(std::memory_order_relaxed) != 0; }

struct options {
  std::string role, device, mode = "rtt", json;
  std::size_t size = 64;
  uint64_t count = 0;  // 0: the mode's default
  double duration = -1, warmup = 0.5, idle = 1.0, wait = 20.0;
  unsigned timeout_us = 10000;
  int core = -1;
  std::vector<std::string> eal_args;
  bool quiet = false;
};

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string iso_date() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20)
      o += fmt::format("\\u{:04x}", c);
    else
      o += c;
  }
  return o;
}

void write_json(const std::string& path, const std::string& body) {
  if (path.empty()) return;
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  std::fputs(body.c_str(), f);
  std::fputc('\n', f);
  std::fclose(f);
}

void pin_to_core(int core) {
  if (core < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  if (int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set); rc != 0)
    throw std::runtime_error(fmt::format("cannot pin to CPU {}: {}", core, std::strerror(rc)));
}

/// How long this thread sat runnable on a run queue while other tasks ran
/// (preempted), from /proc/thread-self/schedstat; the noise gauge of a run.
class preemption_meter {
 public:
  void start() {
    _wait0 = wait_ns();
    _t0 = machnet::now_ns();
  }
  void stop() {
    _wait1 = wait_ns();
    _t1 = machnet::now_ns();
  }
  double ms() const { return double(_wait1 - _wait0) / 1e6; }
  double pct() const { return _t1 > _t0 ? 100.0 * double(_wait1 - _wait0) / double(_t1 - _t0) : 0; }

 private:
  static uint64_t wait_ns() {
    unsigned long long run = 0, wait = 0;
    FILE* f = std::fopen("/proc/thread-self/schedstat", "r");
    if (!f) return 0;
    if (std::fscanf(f, "%llu %llu", &run, &wait) != 2) wait = 0;
    std::fclose(f);
    return wait;
  }
  uint64_t _wait0 = 0, _wait1 = 0, _t0 = 0, _t1 = 0;
};

/// The link endpoint: a one-queue port plus the helpers both roles use.
class endpoint {
 public:
  explicit endpoint(const options& o) {
    machnet::net::port_config pc;
    pc.device = o.device;
    pc.queues = 1;
    pc.eal.extra_args = o.eal_args;
    _port = std::make_unique<machnet::net::port>(pc);
    _mac = _port->mac();
    _pool = _port->pool(0);
  }
  machnet::net::port& port() { return *_port; }
  rte_ether_addr mac() const {
    rte_ether_addr a;
    std::memcpy(a.addr_bytes, _mac.b.data(), 6);
    return a;
  }
  rte_mempool* pool() const { return _pool; }

  uint16_t rx(rte_mbuf** p, uint16_t n) { return _port->rx_burst(0, p, n); }
  uint16_t tx(rte_mbuf** p, uint16_t n) { return _port->tx_burst(0, p, n); }

  /// Sends all n frames, retrying while the device is full, for at most
  /// `budget` TSC ticks; frees what could not be sent. Returns frames sent.
  uint16_t tx_all(rte_mbuf** p, uint16_t n, uint64_t budget) {
    uint16_t sent = 0;
    uint64_t t0 = machnet::rdtsc();
    while (sent < n) {
      sent += tx(p + sent, n - sent);
      if (sent < n && machnet::rdtsc() - t0 > budget) break;
    }
    if (sent < n) rte_pktmbuf_free_bulk(p + sent, n - sent);
    return sent;
  }

  /// Waits for the link to report up (memif: the client connected).
  bool wait_link_up(double seconds) { return wait_link(RTE_ETH_LINK_UP, seconds); }
  /// Waits for the link to report down (memif: the peer closed).
  bool wait_link_down(double seconds) { return wait_link(RTE_ETH_LINK_DOWN, seconds); }

 private:
  bool wait_link(uint16_t status, double seconds) {
    double end = seconds_now() + seconds;
    while (!stopping() && seconds_now() < end) {
      rte_eth_link link{};
      if (rte_eth_link_get_nowait(_port->id(), &link) == 0 && link.link_status == status)
        return true;
      const timespec ts = {0, 1'000'000};
      nanosleep(&ts, nullptr);
    }
    return false;
  }

  std::unique_ptr<machnet::net::port> _port;
  machnet::net::mac_addr _mac;
  rte_mempool* _pool = nullptr;
};

lf_hdr* parse(rte_mbuf* m) {
  if (rte_pktmbuf_data_len(m) < kHdrLen) return nullptr;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  if (eth->ether_type != rte_cpu_to_be_16(kEtherType)) return nullptr;
  auto* h = reinterpret_cast<lf_hdr*>(eth + 1);
  return h->magic == kMagic ? h : nullptr;
}

/// Fills an mbuf with a `size`-byte frame: Ethernet header, lf_hdr, and
/// whatever the buffer already held as padding (the link doesn't look).
void fill(rte_mbuf* m, std::size_t size, const rte_ether_addr& dst, const rte_ether_addr& src,
          uint8_t k, uint8_t flags, uint64_t seq, uint64_t a = 0, uint64_t b = 0) {
  m->data_len = static_cast<uint16_t>(size);
  m->pkt_len = static_cast<uint32_t>(size);
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->dst_addr = dst;
  eth->src_addr = src;
  eth->ether_type = rte_cpu_to_be_16(kEtherType);
  auto* h = reinterpret_cast<lf_hdr*>(eth + 1);
  *h = lf_hdr{kMagic, k, flags, 0, seq, a, b};
}

struct quantiles {
  double min = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

quantiles rtt_quantiles(std::vector<uint64_t>& ticks) {
  quantiles q;
  if (ticks.empty()) return q;
  std::sort(ticks.begin(), ticks.end());
  const double us_per_tick = 1e6 / double(machnet::tsc_clock::get().hz());
  auto at = [&](double p) {
    // Nearest rank: the smallest sample with at least p of all samples <= it.
    auto rank = static_cast<std::size_t>(std::max(1.0, std::ceil(p * double(ticks.size()))));
    return double(ticks[std::min(rank, ticks.size()) - 1]) * us_per_tick;
  };
  q.min = double(ticks.front()) * us_per_tick;
  q.max = double(ticks.back()) * us_per_tick;
  q.p50 = at(0.50);
  q.p90 = at(0.90);
  q.p99 = at(0.99);
  q.p999 = at(0.999);
  long double sum = 0;
  for (auto t : ticks) sum += t;
  q.mean = double(sum / ticks.size()) * us_per_tick;
  return q;
}

std::string json_common(const options& o, endpoint& ep, const std::string& mode, std::size_t size,
                        const preemption_meter& pm) {
  return fmt::format(
      "\"tool\":\"link_floor\",\"role\":\"{}\",\"mode\":\"{}\",\"device\":\"{}\",\"driver\":\"{}\","
      "\"size\":{},\"core\":{},\"date\":\"{}\",\"tsc_hz\":{},\"preempted_ms\":{:.3f},"
      "\"preempted_pct\":{:.3f}",
      o.role, mode, json_escape(o.device), json_escape(ep.port().caps().driver), size, o.core,
      iso_date(), machnet::tsc_clock::get().hz(), pm.ms(), pm.pct());
}

// ---------------------------------------------------------------- pong ----

int run_pong(const options& o, endpoint& ep) {
  const auto& clk = machnet::tsc_clock::get();
  const rte_ether_addr self = ep.mac();
  const uint64_t idle_ticks = clk.from_us(static_cast<uint64_t>(o.idle * 1e6));
  const uint64_t wait_ticks = clk.from_us(static_cast<uint64_t>(o.wait * 1e6));
  // The budget after the first frame: warm-up + measured time + idle timeout.
  const double duration = o.duration < 0 ? 10.0 : o.duration;
  const uint64_t budget_ticks =
      duration > 0 ? clk.from_us(static_cast<uint64_t>((o.warmup + duration + o.idle) * 1e6)) : 0;
  const uint64_t linger_ticks = clk.from_us(100'000);  // answer repeated ENDs, then go

  uint64_t echoed = 0, rx_warm = 0, rx_pkts = 0, rx_bytes = 0, other = 0, tx_drop = 0;
  uint64_t first_tsc = 0, last_tsc = 0, first_burst = 0, first_stream_tsc = 0, last_stream_tsc = 0;
  uint64_t ping_tx = 0, ping_tx_bytes = 0;
  std::size_t frame_size = 0;  // as received: pong doesn't need --size
  bool got_end = false, saw_stream = false;
  std::string why = "signal";
  const uint64_t start = machnet::rdtsc();
  preemption_meter pm;  // from the first frame to END (or the exit)

  // Always printed: runners wait for this line before starting ping.
  fmt::print("pong: ready on {} (MAC {})\n", o.device, ep.port().mac().str());
  std::fflush(stdout);

  rte_mbuf* in[kBurst];
  rte_mbuf* echo[kBurst];
  rte_mbuf* drop[kBurst];
  while (!stopping()) {
    uint16_t n = ep.rx(in, kBurst);
    uint64_t now = machnet::rdtsc();
    if (n == 0) {
      if (!first_tsc) {
        if (now - start > wait_ticks) {
          why = "no-peer";
          break;
        }
      } else {
        if (got_end && now - last_tsc > linger_ticks) {
          why = "end";
          break;
        }
        if (now - last_tsc > idle_ticks) {
          why = "idle";
          break;
        }
        if (budget_ticks && now - first_tsc > budget_ticks) {
          why = "time-budget";
          break;
        }
      }
      continue;
    }
    if (!first_tsc) {
      first_tsc = now;
      pm.start();
    }
    last_tsc = now;
    uint16_t ne = 0, nd = 0;
    uint64_t burst_pkts = 0, burst_bytes = 0;
    for (uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = in[i];
      lf_hdr* h = parse(m);
      if (!h) {
        ++other;
        drop[nd++] = m;
        continue;
      }
      auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
      switch (h->kind) {
        case k_stream:
          frame_size = rte_pktmbuf_pkt_len(m);
          if (h->flags & f_warmup) {
            ++rx_warm;
          } else {
            ++burst_pkts;
            burst_bytes += rte_pktmbuf_pkt_len(m);
          }
          drop[nd++] = m;
          break;
        case k_rtt:
          frame_size = rte_pktmbuf_pkt_len(m);
          std::swap(eth->dst_addr, eth->src_addr);
          echo[ne++] = m;
          if (!(h->flags & f_warmup)) ++echoed;
          break;
        case k_probe:
          eth->dst_addr = eth->src_addr;
          eth->src_addr = self;
          echo[ne++] = m;
          break;
        case k_end:
          if (!got_end) {
            got_end = true;
            pm.stop();
            ping_tx = h->a;
            ping_tx_bytes = h->b;
          }
          eth->dst_addr = eth->src_addr;
          eth->src_addr = self;
          h->kind = k_end_ack;
          h->a = saw_stream ? rx_pkts + burst_pkts : echoed;
          h->b = rx_bytes + burst_bytes;
          echo[ne++] = m;
          break;
        default:
          ++other;
          drop[nd++] = m;
      }
    }
    if (burst_pkts) {
      if (!saw_stream) {
        // The first burst's frames arrived before we looked: the rate window
        // starts at this burst, so they are counted outside it.
        saw_stream = true;
        first_stream_tsc = now;
        first_burst = burst_pkts;
      }
      last_stream_tsc = now;
      rx_pkts += burst_pkts;
      rx_bytes += burst_bytes;
    }
    if (nd) rte_pktmbuf_free_bulk(drop, nd);
    if (ne) tx_drop += ne - ep.tx_all(echo, ne, clk.from_us(1000));
  }
  if (stopping()) why = "signal";
  if (!got_end) pm.stop();

  const std::string mode = saw_stream ? "stream" : "rtt";
  std::string j =
      "{" + json_common(o, ep, mode, frame_size, pm) + fmt::format(",\"exit\":\"{}\"", why);
  if (saw_stream) {
    double secs = last_stream_tsc > first_stream_tsc
                      ? double(last_stream_tsc - first_stream_tsc) / double(clk.hz())
                      : 0.0;
    uint64_t in_window = rx_pkts - first_burst;
    double avg = rx_pkts ? double(rx_bytes) / double(rx_pkts) : 0.0;
    double mpps = secs > 0 ? double(in_window) / secs / 1e6 : 0.0;
    double gbps = mpps * avg * 8 / 1e3;
    uint64_t loss = ping_tx > rx_pkts ? ping_tx - rx_pkts : 0;
    double loss_pct = ping_tx ? 100.0 * double(loss) / double(ping_tx) : 0.0;
    fmt::print(
        "pong: stream {} B frames: received {} frames in {:.3f} s: {:.3f} Mpps, {:.3f} Gbps "
        "(frame bytes); ping sent {}, lost {} ({:.2f}%); warm-up frames {}; exit: {}\n",
        frame_size, rx_pkts, secs, mpps, gbps, got_end ? fmt::format("{}", ping_tx) : "?",
        got_end ? fmt::format("{}", loss) : "?", loss_pct, rx_warm, why);
    j += fmt::format(
        ",\"rx_packets\":{},\"rx_bytes\":{},\"seconds\":{:.6f},\"mpps\":{:.4f},\"gbps\":{:.4f},"
        "\"ping_tx_packets\":{},\"ping_tx_bytes\":{},\"loss_packets\":{},\"loss_pct\":{:.4f},"
        "\"warmup_packets\":{}",
        rx_pkts, rx_bytes, secs, mpps, gbps, got_end ? ping_tx : 0, ping_tx_bytes,
        got_end ? loss : 0, loss_pct, rx_warm);
  } else if (!first_tsc) {
    if (why == "no-peer")
      fmt::print("pong: no frames arrived within {} s\n", o.wait);
    else
      fmt::print("pong: no frames arrived; exit: {}\n", why);
    j += ",\"echoed\":0";
  } else {
    fmt::print("pong: rtt {} B frames: echoed {} (+ warm-up); exit: {}\n", frame_size, echoed, why);
    j += fmt::format(",\"echoed\":{}", echoed);
  }
  if (first_tsc) fmt::print("pong: preempted {:.1f} ms ({:.2f}% of the run)\n", pm.ms(), pm.pct());
  j += fmt::format(",\"other_frames\":{},\"tx_dropped\":{}}}", other, tx_drop);
  write_json(o.json, j);
  return why == "no-peer" ? 3 : 0;
}

// ---------------------------------------------------------------- ping ----

struct ping_ctx {
  const options& o;
  endpoint& ep;
  rte_ether_addr self, peer;
  uint64_t seq = 0;
};

rte_mbuf* alloc_or_throw(rte_mempool* mp) {
  rte_mbuf* m = rte_pktmbuf_alloc(mp);
  if (!m) throw std::runtime_error("mbuf pool exhausted");
  return m;
}

/// Broadcasts probes until pong answers; learns pong's MAC. False on timeout.
bool probe(ping_ctx& c) {
  const auto& clk = machnet::tsc_clock::get();
  rte_ether_addr bcast;
  std::memset(bcast.addr_bytes, 0xff, 6);
  double end = seconds_now() + c.o.wait;
  rte_mbuf* in[kBurst];
  while (!stopping() && seconds_now() < end) {
    rte_mbuf* m = alloc_or_throw(c.ep.pool());
    uint64_t s = ++c.seq;
    fill(m, c.o.size, bcast, c.self, k_probe, 0, s);
    c.ep.tx_all(&m, 1, clk.from_us(1000));
    uint64_t t0 = machnet::rdtsc();
    while (machnet::rdtsc() - t0 < clk.from_us(20'000)) {
      uint16_t n = c.ep.rx(in, kBurst);
      bool ok = false;
      for (uint16_t i = 0; i < n; ++i) {
        lf_hdr* h = parse(in[i]);
        if (h && h->kind == k_probe && h->seq == s) {
          c.peer = rte_pktmbuf_mtod(in[i], rte_ether_hdr*)->src_addr;
          ok = true;
        }
      }
      if (n) rte_pktmbuf_free_bulk(in, n);
      if (ok) return true;
    }
  }
  return false;
}

/// END/END_ACK: tells pong we are done and gets its counters (nullopt if it
/// never answered).
std::optional<std::pair<uint64_t, uint64_t>> finish(ping_ctx& c, uint64_t sent, uint64_t bytes) {
  const auto& clk = machnet::tsc_clock::get();
  rte_mbuf* in[kBurst];
  for (int attempt = 0; attempt < 100 && !stopping(); ++attempt) {
    rte_mbuf* m = alloc_or_throw(c.ep.pool());
    uint64_t s = ++c.seq;
    fill(m, c.o.size, c.peer, c.self, k_end, 0, s, sent, bytes);
    c.ep.tx_all(&m, 1, clk.from_us(1000));
    uint64_t t0 = machnet::rdtsc();
    while (machnet::rdtsc() - t0 < clk.from_us(20'000)) {
      uint16_t n = c.ep.rx(in, kBurst);
      std::optional<std::pair<uint64_t, uint64_t>> r;
      for (uint16_t i = 0; i < n; ++i) {
        lf_hdr* h = parse(in[i]);
        if (h && h->kind == k_end_ack) r = std::pair{h->a, h->b};
      }
      if (n) rte_pktmbuf_free_bulk(in, n);
      if (r) return r;
    }
  }
  return std::nullopt;
}

int run_ping_rtt(ping_ctx& c) {
  const auto& clk = machnet::tsc_clock::get();
  const options& o = c.o;
  const uint64_t count = o.count ? o.count : 100'000;
  const double duration = o.duration < 0 ? 10.0 : o.duration;
  const uint64_t timeout = clk.from_us(o.timeout_us);
  std::vector<uint64_t> ticks;
  ticks.reserve(count);
  uint64_t lost = 0, stale = 0;
  rte_mbuf* in[kBurst];

  // One round trip: the clock starts right before tx_burst and stops right
  // after the rx_burst that brought the echo back. 0 means lost.
  auto one = [&](uint8_t flags) -> uint64_t {
    rte_mbuf* m = alloc_or_throw(c.ep.pool());
    uint64_t s = ++c.seq;
    fill(m, o.size, c.peer, c.self, k_rtt, flags, s);
    uint64_t t0 = machnet::rdtsc();
    if (c.ep.tx_all(&m, 1, timeout) != 1) return 0;
    for (;;) {
      uint16_t n = c.ep.rx(in, kBurst);
      uint64_t t1 = machnet::rdtsc();
      bool ok = false;
      for (uint16_t i = 0; i < n; ++i) {
        lf_hdr* h = parse(in[i]);
        if (h && h->kind == k_rtt && h->seq == s)
          ok = true;
        else
          ++stale;
      }
      if (n) rte_pktmbuf_free_bulk(in, n);
      if (ok) return std::max<uint64_t>(t1 - t0, 1);
      if (t1 - t0 > timeout) return 0;
    }
  };

  double warm_end = seconds_now() + o.warmup;
  while (!stopping() && seconds_now() < warm_end) one(f_warmup);
  stale = 0;

  preemption_meter pm;
  pm.start();
  const uint64_t t_start = machnet::rdtsc();
  const uint64_t t_cap = duration > 0 ? clk.from_us(static_cast<uint64_t>(duration * 1e6)) : 0;
  uint64_t done = 0;
  while (done < count && !stopping()) {
    uint64_t t = one(0);
    ++done;
    if (t)
      ticks.push_back(t);
    else
      ++lost;
    if (t_cap && (done & 63) == 0 && machnet::rdtsc() - t_start > t_cap) break;
  }
  double secs = double(machnet::rdtsc() - t_start) / double(clk.hz());
  pm.stop();
  auto pong = finish(c, done, 0);
  quantiles q = rtt_quantiles(ticks);

  fmt::print("ping: rtt {} B over {} ({}): {} round trips in {:.2f} s, {} lost\n", o.size, o.device,
             c.ep.port().caps().driver, ticks.size(), secs, lost);
  fmt::print(
      "ping: RTT us: min {:.3f}  p50 {:.3f}  p90 {:.3f}  p99 {:.3f}  p99.9 {:.3f}  max {:.3f}  "
      "mean {:.3f}\n",
      q.min, q.p50, q.p90, q.p99, q.p999, q.max, q.mean);
  if (!pong) fmt::print("ping: pong did not acknowledge the end of the run\n");
  fmt::print("ping: preempted {:.1f} ms ({:.2f}% of the run)\n", pm.ms(), pm.pct());
  std::string j =
      "{" + json_common(o, c.ep, "rtt", o.size, pm) +
      fmt::format(
          ",\"count\":{},\"lost\":{},\"stale\":{},\"seconds\":{:.6f},"
          "\"warmup_s\":{},\"pong_echoed\":{},\"rtt_us\":{{\"min\":{:.4f},"
          "\"p50\":{:.4f},\"p90\":{:.4f},\"p99\":{:.4f},\"p999\":{:.4f},"
          "\"max\":{:.4f},\"mean\":{:.4f}}}}}",
          ticks.size(), lost, stale, secs, o.warmup, pong ? static_cast<int64_t>(pong->first) : -1,
          q.min, q.p50, q.p90, q.p99, q.p999, q.max, q.mean);
  write_json(o.json, j);
  return ticks.empty() ? 1 : 0;
}

int run_ping_stream(ping_ctx& c) {
  const auto& clk = machnet::tsc_clock::get();
  const options& o = c.o;
  const double duration = o.duration < 0 ? 2.0 : o.duration;
  rte_mbuf* pend[kBurst];
  uint16_t npend = 0;
  rte_mbuf* in[kBurst];
  uint64_t sent = 0, bytes = 0, full = 0;

  // Sends bursts of 32 (topping up what the device refused last time) until
  // `ticks` have passed or `limit` frames were sent; returns frames sent.
  auto blast = [&](uint8_t flags, uint64_t ticks, uint64_t limit) -> uint64_t {
    uint64_t n_sent = 0;
    const uint64_t t0 = machnet::rdtsc();
    uint64_t iter = 0;
    while (!stopping()) {
      if ((++iter & 15) == 0) {
        if (machnet::rdtsc() - t0 >= ticks) break;
        // Nothing should come back, but don't let the RX ring fill with noise.
        if (uint16_t n = c.ep.rx(in, kBurst)) rte_pktmbuf_free_bulk(in, n);
      }
      if (limit && n_sent + npend >= limit) {
        if (!npend) break;
      } else {
        uint16_t want = kBurst - npend;
        if (limit) want = static_cast<uint16_t>(std::min<uint64_t>(want, limit - n_sent - npend));
        if (want && rte_pktmbuf_alloc_bulk(c.ep.pool(), pend + npend, want) == 0) {
          for (uint16_t i = 0; i < want; ++i)
            fill(pend[npend + i], o.size, c.peer, c.self, k_stream, flags, ++c.seq);
          npend += want;
        }
      }
      uint16_t s = c.ep.tx(pend, npend);
      if (s < npend) {
        ++full;
        std::memmove(pend, pend + s, (npend - s) * sizeof(rte_mbuf*));
      }
      npend -= s;
      n_sent += s;
    }
    return n_sent;
  };

  blast(f_warmup, clk.from_us(static_cast<uint64_t>(o.warmup * 1e6)), 0);
  // Frames of the warm-up still queued go out marked as warm-up: drop them.
  if (npend) rte_pktmbuf_free_bulk(pend, npend);
  npend = 0;
  full = 0;
  preemption_meter pm;
  pm.start();
  const uint64_t t0 = machnet::rdtsc();
  sent = blast(0, duration > 0 ? clk.from_us(static_cast<uint64_t>(duration * 1e6)) : UINT64_MAX,
               o.count);
  const double secs = double(machnet::rdtsc() - t0) / double(clk.hz());
  pm.stop();
  if (npend) rte_pktmbuf_free_bulk(pend, npend);
  bytes = sent * o.size;
  // Let the receiver drain before END, so END doesn't overtake nothing and
  // pong's window closes on the last data frame.
  const timespec ts = {0, 20'000'000};
  nanosleep(&ts, nullptr);
  auto pong = finish(c, sent, bytes);

  double mpps = secs > 0 ? double(sent) / secs / 1e6 : 0;
  double gbps = mpps * double(o.size) * 8 / 1e3;
  fmt::print(
      "ping: stream {} B over {} ({}): sent {} frames in {:.3f} s: {:.3f} Mpps, {:.3f} Gbps "
      "offered; device full {} times\n",
      o.size, o.device, c.ep.port().caps().driver, sent, secs, mpps, gbps, full);
  if (pong)
    fmt::print("ping: pong received {} ({:.2f}% lost)\n", pong->first,
               sent ? 100.0 * double(sent - std::min(sent, pong->first)) / double(sent) : 0.0);
  else
    fmt::print("ping: pong did not acknowledge the end of the run\n");
  fmt::print("ping: preempted {:.1f} ms ({:.2f}% of the run)\n", pm.ms(), pm.pct());
  std::string j =
      "{" + json_common(o, c.ep, "stream", o.size, pm) +
      fmt::format(
          ",\"tx_packets\":{},\"tx_bytes\":{},\"seconds\":{:.6f},"
          "\"tx_mpps\":{:.4f},\"tx_gbps\":{:.4f},\"tx_full\":{},"
          "\"pong_rx_packets\":{}}}",
          sent, bytes, secs, mpps, gbps, full, pong ? static_cast<int64_t>(pong->first) : -1);
  write_json(o.json, j);
  return sent ? 0 : 1;
}

int run_ping(const options& o, endpoint& ep) {
  ping_ctx c{o, ep, ep.mac(), {}};
  if (!ep.wait_link_up(o.wait)) {
    fmt::print(stderr, "link_floor ping: link {} did not come up within {} s\n", o.device, o.wait);
    return 3;
  }
  if (!probe(c)) {
    fmt::print(stderr,
               "link_floor ping: no answer from pong on {} within {} s (is pong running?)\n",
               o.device, o.wait);
    return 3;
  }
  if (!o.quiet) {
    char mac[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(mac, sizeof mac, &c.peer);
    fmt::print("ping: pong found at {}\n", mac);
  }
  int rc = o.mode == "rtt" ? run_ping_rtt(c) : run_ping_stream(c);
  // Let pong stop polling and close first. The memif PMD (DPDK 22.11) unmaps
  // the shared rings from its interrupt thread when the peer goes away, while
  // a concurrent rx_burst may still read them: pong crashed now and then when
  // ping closed first. Pong leaves 100 ms after the last END; a memif link then
  // reports down. Ping doesn't poll the rings meanwhile.
  ep.wait_link_down(1.0);
  return rc;
}

options parse_options(int argc, char** argv) {
  options o;
  po::options_description d(
      "link_floor: raw DPDK ping-pong over one queue (the link floor)\n"
      "  pong: link_floor --role pong --device 'net_memif0,role=server,socket=/tmp/lf.sock,"
      "socket-abstract=no'\n"
      "  ping: link_floor --role ping --device 'net_memif0,role=client,socket=/tmp/lf.sock,"
      "socket-abstract=no' --mode rtt\n"
      "Options");
  d.add_options()("help,h", "this help")("role", po::value(&o.role)->required(), "ping | pong")(
      "device", po::value(&o.device)->required(), "DPDK device string (vdev or PCI address)")(
      "mode", po::value(&o.mode)->default_value("rtt"),
      "ping: rtt (one frame in flight) | stream (bursts of 32, pong counts); pong serves both")(
      "size", po::value(&o.size)->default_value(64), "frame bytes without FCS (60..1514)")(
      "count", po::value(&o.count)->default_value(0),
      "rtt: measured round trips (0 = 100000); stream: frames to send (0 = until --duration)")(
      "duration", po::value(&o.duration)->default_value(-1),
      "seconds: stream: how long to send (default 2); rtt: cap on the measured phase "
      "(default 10); pong: time budget after the first frame is warm-up + this + --idle "
      "(default 10; 0 = none)")("warmup", po::value(&o.warmup)->default_value(0.5),
                                "seconds of unmeasured traffic first")(
      "idle", po::value(&o.idle)->default_value(1.0),
      "pong: exit when nothing arrived for this many seconds (after the first frame)")(
      "wait", po::value(&o.wait)->default_value(20.0),
      "seconds to wait for the peer (pong: first frame; ping: link up and pong's answer)")(
      "timeout-us", po::value(&o.timeout_us)->default_value(10000),
      "rtt: a round trip taking longer than this counts as lost")(
      "core", po::value(&o.core)->default_value(-1), "pin the polling thread to this CPU")(
      "json", po::value(&o.json), "write the results as JSON to this file")(
      "eal-arg", po::value(&o.eal_args)->composing(), "extra EAL argument (repeatable)")(
      "quiet,q", po::bool_switch(&o.quiet), "no start-up report");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, d), vm);
  if (vm.count("help")) {
    std::cout << d << "\n";
    std::exit(0);
  }
  po::notify(vm);
  if (o.role != "ping" && o.role != "pong")
    throw std::invalid_argument("--role must be ping or pong, not '" + o.role + "'");
  if (o.mode != "rtt" && o.mode != "stream")
    throw std::invalid_argument("--mode must be rtt or stream, not '" + o.mode + "'");
  if (o.size < kMinFrame || o.size > kMaxFrame)
    throw std::invalid_argument(fmt::format("--size must be {}..{} bytes", kMinFrame, kMaxFrame));
  if (o.warmup < 0 || o.idle <= 0 || o.wait <= 0)
    throw std::invalid_argument("--warmup must be >= 0, --idle and --wait > 0");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse_options(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "link_floor: {} (see --help)\n", e.what());
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  try {
    machnet::tsc_clock::get();  // calibrate before anything is timed
    endpoint ep(o);
    // The EAL pins the main thread to its main lcore: re-pin where we were asked.
    pin_to_core(o.core);
    if (!o.quiet) fmt::print(stderr, "{}\n", ep.port().describe());
    return o.role == "pong" ? run_pong(o, ep) : run_ping(o, ep);
  } catch (const std::exception& e) {
    fmt::print(stderr, "link_floor {}: {}\n", o.role, e.what());
    return 1;
  }
}
