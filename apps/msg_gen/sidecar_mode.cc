// sidecar_mode: msg_gen over machnetd — libmachnet's C API, one channel for
// every flow, polled per --poll (busy, adaptive, sleep).
#include <errno.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include <machnet.h>

#include "client_core.hh"
#include "machnet/runtime/clock.hh"
#include "modes.hh"
#include "report.hh"
#include "signals.hh"

namespace msg_gen {

namespace {

constexpr uint64_t adaptive_spin_ns = 50'000;
// Longest sleep in machnet_recv_wait: stop requests are seen this often.
constexpr uint64_t max_wait_ns = 100'000'000;

std::string errno_text(const char* what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

// The next message on the channel, waiting per the policy until deadline_ns:
// its length, 0 if none came by then, -1 on error (errno).
ssize_t receive(const void* ch, poll_policy p, std::vector<uint8_t>& buf, MachnetFlow_t* flow,
                uint64_t deadline_ns) {
  uint64_t now = machnet::now_ns();
  if (p != poll_policy::sleep) {
    const uint64_t spin_end = p == poll_policy::busy ? deadline_ns : std::min(deadline_ns, now + adaptive_spin_ns);
    do {
      ssize_t n = machnet_recv(ch, buf.data(), buf.size(), flow);
      if (n != 0) return n;
      now = machnet::now_ns();
    } while (now < spin_end);
    if (p == poll_policy::busy) return 0;
  }
  const uint64_t left = deadline_ns > now ? deadline_ns - now : 0;
  const int ms = int(std::clamp<uint64_t>((left + 999'999) / 1'000'000, 1, max_wait_ns / 1'000'000));
  return machnet_recv_wait(ch, buf.data(), buf.size(), flow, ms);
}

// Sends one message; machnet_send already waits ~100 ms for buffers before
// ENOBUFS, so that is retried until it goes or a stop is requested.
// 0, or -1 (errno) on any other failure or a stop.
int send_one(const void* ch, const MachnetFlow_t& flow, std::span<const uint8_t> msg, error_counts& busy) {
  for (;;) {
    if (machnet_send(ch, flow, msg.data(), msg.size()) == 0) return 0;
    if (errno != ENOBUFS) return -1;
    busy.add(error_kind::send);
    if (stop_requested()) return -1;
  }
}

uint64_t flow_key(const MachnetFlow_t& f) {
  return (uint64_t(f.src_port) << 48) | (uint64_t(f.dst_port) << 32) | f.dst_ip;
}

std::string ip_str(uint32_t ip) {
  return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

int serve(void* ch, const options& o) {
  if (machnet_listen(ch, o.local_ip.c_str(), o.local_port) != 0) {
    fmt::print(stderr, "msg_gen: machnet_listen {}:{}: {}\n", o.local_ip, o.local_port, std::strerror(errno));
    return 1;
  }
  server_report rep(o, machnet::now_ns());
  fmt::print(rep.out(), "msg_gen: sidecar server listening on {}:{} (poll {})\n", o.local_ip, o.local_port,
             to_string(o.poll));
  std::fflush(rep.out());
  std::vector<uint8_t> buf(MACHNET_MSG_MAX_LEN);
  std::string fatal;
  error_counts retries;
  for (;;) {
    uint64_t now = machnet::now_ns();
    if (stop_requested() || now >= rep.end_ns()) break;
    const uint64_t deadline = std::min({rep.next_tick_ns(), rep.end_ns(), now + max_wait_ns});
    MachnetFlow_t flow;
    ssize_t n = receive(ch, o.poll, buf, &flow, deadline);
    if (n < 0) {
      fatal = errno_text("machnet_recv");
      break;
    }
    if (n > 0) {
      if (send_one(ch, flow, {buf.data(), std::size_t(n)}, retries) != 0) {
        if (stop_requested()) break;
        // A flow the client reset meanwhile: count it, keep serving.
        rep.error(error_kind::send);
        if (errno == ESHUTDOWN) {
          fatal = errno_text("machnet_send");
          break;
        }
      } else {
        rep.echoed(std::size_t(n));
      }
    }
    rep.tick(machnet::now_ns());
  }
  if (retries.send)
    fmt::print(stderr, "msg_gen: machnet_send waited out ENOBUFS {} time(s) (machnetd not keeping up)\n",
               retries.send);
  return rep.finish(machnet::now_ns(), fatal);
}

int client(void* ch, const options& o) {
  std::vector<MachnetFlow_t> flows(o.flows);
  std::unordered_map<uint64_t, uint32_t> by_key;
  for (uint32_t f = 0; f < o.flows; ++f) {
    if (machnet_connect(ch, o.local_ip.c_str(), o.remote_ip.c_str(), o.remote_port, &flows[f]) != 0) {
      fmt::print(stderr, "msg_gen: machnet_connect {} -> {}:{} (flow {}): {}\n", o.local_ip, o.remote_ip,
                 o.remote_port, f, std::strerror(errno));
      return 1;
    }
    by_key.emplace(flow_key(flows[f]), f);
  }
  std::FILE* out = o.json ? stderr : stdout;
  fmt::print(out, "msg_gen: sidecar client: {} flow(s) {}:{} -> {}:{}{}, {} B, window {}, {} s, poll {}\n",
             o.flows, ip_str(flows[0].src_ip), flows[0].src_port, ip_str(flows[0].dst_ip), flows[0].dst_port,
             o.flows > 1 ? ", ..." : "", o.msg_size, o.window, o.duration_s, to_string(o.poll));
  std::fflush(out);

  client_report rep(o, machnet::now_ns());
  client_core core(o, rep);
  error_counts retries;
  std::string fatal;
  auto send = [&](uint32_t f, uint64_t seq) {
    if (send_one(ch, flows[f], core.build(f, seq), retries) != 0 && !stop_requested()) {
      fatal = errno_text("machnet_send");
      return false;
    }
    return true;
  };
  for (uint32_t f = 0; f < o.flows && fatal.empty(); ++f)
    for (uint32_t s = 0; s < o.window && fatal.empty(); ++s) send(f, s);

  std::vector<uint8_t> buf(MACHNET_MSG_MAX_LEN);
  while (fatal.empty()) {
    uint64_t now = machnet::now_ns();
    if (stop_requested() || now >= rep.end_ns()) break;
    const uint64_t deadline = std::min({rep.next_tick_ns(), rep.end_ns(), now + max_wait_ns});
    MachnetFlow_t flow;
    ssize_t n = receive(ch, o.poll, buf, &flow, deadline);
    now = machnet::now_ns();
    if (n < 0) {
      fatal = errno_text("machnet_recv");
      break;
    }
    if (n > 0) {
      auto it = by_key.find(flow_key(flow));
      if (it == by_key.end()) {
        rep.error(error_kind::unexpected);
      } else if (auto next = core.on_reply(it->second, {buf.data(), std::size_t(n)}, now)) {
        send(it->second, *next);
      }
    }
    rep.tick(now);
  }
  if (retries.send)
    fmt::print(stderr, "msg_gen: machnet_send waited out ENOBUFS {} time(s) (machnetd not keeping up)\n",
               retries.send);
  return rep.finish(machnet::now_ns(), fatal);
}

}  // namespace

int run_sidecar(const options& o) {
  // --poll sleep: the app sleeps at once in machnet_recv_wait (no spin of
  // its own there), unless the user set MACHNET_WAIT_SPIN_US.
  if (o.poll == poll_policy::sleep) ::setenv("MACHNET_WAIT_SPIN_US", "0", 0);
  if (machnet_init() != 0) {
    const char* sock = std::getenv("MACHNET_CONTROL_SOCKET");
    fmt::print(stderr, "msg_gen: machnet_init: {} (is machnetd running on {}?)\n", std::strerror(errno),
               sock ? sock : "/run/machnet/machnetd.sock");
    return 1;
  }
  void* ch = machnet_attach();
  if (!ch) {
    fmt::print(stderr, "msg_gen: machnet_attach: {}\n", std::strerror(errno));
    return 1;
  }
  int rc = o.server() ? serve(ch, o) : client(ch, o);
  machnet_detach(ch);
  return rc;
}

}  // namespace msg_gen
