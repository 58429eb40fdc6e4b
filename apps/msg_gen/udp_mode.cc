// udp_mode: the kernel UDP baseline with the same framing and report — one
// socket per flow; udp blocks in recv (epoll for several flows), udp-busy
// spins on non-blocking recv (and asks for SO_BUSY_POLL when permitted).
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "client_core.hh"
#include "machnet/runtime/clock.hh"
#include "modes.hh"
#include "report.hh"
#include "signals.hh"

namespace msg_gen {

namespace {

// How long a blocking receive waits before the loop looks at the clock.
constexpr int recv_timeout_ms = 10;
// A message without a reply after this long is counted lost and resent.
constexpr uint64_t loss_timeout_ns = 500'000'000;
constexpr int socket_buffer_bytes = 4 << 20;

class fd_guard {
 public:
  explicit fd_guard(int fd = -1) noexcept : _fd(fd) {}
  fd_guard(fd_guard&& o) noexcept : _fd(o._fd) { o._fd = -1; }
  fd_guard& operator=(fd_guard&& o) noexcept {
    std::swap(_fd, o._fd);
    return *this;
  }
  ~fd_guard() {
    if (_fd >= 0) ::close(_fd);
  }
  int get() const noexcept { return _fd; }

 private:
  int _fd;
};

sockaddr_in address(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return a;
}

std::string errno_text(const std::string& what) { return fmt::format("{}: {}", what, std::strerror(errno)); }

// A UDP socket bound to ip:port, set up for the mode; throws on failure.
fd_guard make_socket(const options& o, const std::string& ip, uint16_t port, bool& busy_poll_denied) {
  fd_guard s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | (o.mode == run_mode::udp_busy ? SOCK_NONBLOCK : 0), 0));
  if (s.get() < 0) throw std::runtime_error(errno_text("socket"));
  int one = 1, bufsz = socket_buffer_bytes;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
  ::setsockopt(s.get(), SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
  if (o.mode == run_mode::udp_busy) {
    int us = 50;
    if (::setsockopt(s.get(), SOL_SOCKET, SO_BUSY_POLL, &us, sizeof us) != 0) busy_poll_denied = true;
  } else {
    timeval tv{0, recv_timeout_ms * 1000};
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  sockaddr_in a = address(ip, port);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    throw std::runtime_error(errno_text(fmt::format("bind {}:{}", ip, port)));
  return s;
}

bool transient(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ENOBUFS; }

int serve(const options& o) {
  bool denied = false;
  fd_guard s = make_socket(o, o.local_ip, o.local_port, denied);
  server_report rep(o, machnet::now_ns());
  fmt::print(rep.out(), "msg_gen: {} server listening on {}:{}{}\n", to_string(o.mode), o.local_ip,
             o.local_port, denied ? " (SO_BUSY_POLL not permitted)" : "");
  std::fflush(rep.out());
  std::vector<uint8_t> buf(65536);
  std::string fatal;
  const bool busy = o.mode == run_mode::udp_busy;
  for (;;) {
    const uint64_t now = machnet::now_ns();
    rep.tick(now);
    if (stop_requested() || now >= rep.end_ns()) break;
    sockaddr_in from{};
    socklen_t fromlen = sizeof from;
    ssize_t n = ::recvfrom(s.get(), buf.data(), buf.size(), busy ? MSG_DONTWAIT : 0,
                           reinterpret_cast<sockaddr*>(&from), &fromlen);
    if (n < 0) {
      if (transient(errno)) continue;
      fatal = errno_text("recvfrom");
      break;
    }
    for (;;) {
      if (::sendto(s.get(), buf.data(), std::size_t(n), 0, reinterpret_cast<sockaddr*>(&from), fromlen) >= 0) {
        rep.echoed(std::size_t(n));
        break;
      }
      if (!transient(errno) || stop_requested()) {
        rep.error(error_kind::send);
        break;
      }
    }
  }
  return rep.finish(machnet::now_ns(), fatal);
}

int client(const options& o) {
  bool denied = false;
  std::vector<fd_guard> socks;
  const sockaddr_in server = address(o.remote_ip, o.remote_port);
  for (uint32_t f = 0; f < o.flows; ++f) {
    socks.push_back(make_socket(o, o.local_ip, 0, denied));
    if (::connect(socks.back().get(), reinterpret_cast<const sockaddr*>(&server), sizeof server) != 0)
      throw std::runtime_error(errno_text(fmt::format("connect {}:{}", o.remote_ip, o.remote_port)));
  }
  const bool busy = o.mode == run_mode::udp_busy;
  fd_guard ep;
  if (!busy && o.flows > 1) {
    ep = fd_guard(::epoll_create1(EPOLL_CLOEXEC));
    if (ep.get() < 0) throw std::runtime_error(errno_text("epoll_create1"));
    for (uint32_t f = 0; f < o.flows; ++f) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = f;
      if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, socks[f].get(), &ev) != 0)
        throw std::runtime_error(errno_text("epoll_ctl"));
    }
  }
  std::FILE* out = o.json ? stderr : stdout;
  fmt::print(out, "msg_gen: {} client: {} flow(s) {} -> {}:{}, {} B, window {}, {} s{}\n", to_string(o.mode),
             o.flows, o.local_ip, o.remote_ip, o.remote_port, o.msg_size, o.window, o.duration_s,
             denied ? " (SO_BUSY_POLL not permitted)" : "");
  std::fflush(out);

  client_report rep(o, machnet::now_ns());
  client_core core(o, rep);
  std::string fatal;
  uint64_t refused = 0;
  auto send = [&](uint32_t f, uint64_t seq) {
    auto msg = core.build(f, seq);
    for (;;) {
      if (::send(socks[f].get(), msg.data(), msg.size(), 0) >= 0) return;
      // ECONNREFUSED: an ICMP error for an earlier datagram (no server yet);
      // the message is lost and the loss timeout resends it.
      if (errno == ECONNREFUSED) {
        ++refused;
        return;
      }
      if (!transient(errno)) {
        fatal = errno_text("send");
        return;
      }
      if (stop_requested()) return;
    }
  };
  for (uint32_t f = 0; f < o.flows && fatal.empty(); ++f)
    for (uint32_t s = 0; s < o.window && fatal.empty(); ++s) send(f, s);

  std::vector<uint8_t> buf(65536);
  // Receives on flow f without waiting (busy / epoll) or with the socket's
  // timeout (one flow, udp); handles the reply.
  auto receive = [&](uint32_t f, int flags) {
    ssize_t n = ::recv(socks[f].get(), buf.data(), buf.size(), flags);
    if (n < 0) {
      if (errno == ECONNREFUSED) ++refused;
      else if (!transient(errno)) fatal = errno_text("recv");
      return false;
    }
    if (auto next = core.on_reply(f, {buf.data(), std::size_t(n)}, machnet::now_ns())) send(f, *next);
    return true;
  };
  uint64_t next_expire = machnet::now_ns() + recv_timeout_ms * 1'000'000ull;
  uint32_t rr = 0;
  std::vector<epoll_event> events(std::min<uint32_t>(o.flows, 64));
  while (fatal.empty()) {
    uint64_t now = machnet::now_ns();
    rep.tick(now);
    if (stop_requested() || now >= rep.end_ns()) break;
    if (now >= next_expire) {
      core.expire(now, loss_timeout_ns, send);
      next_expire = now + recv_timeout_ms * 1'000'000ull;
    }
    if (busy) {
      // Spin over the flows, one receive attempt each per pass.
      for (uint32_t i = 0; i < o.flows && fatal.empty(); ++i) receive((rr + i) % o.flows, MSG_DONTWAIT);
      rr = (rr + 1) % o.flows;
    } else if (o.flows == 1) {
      receive(0, 0);
    } else {
      int k = ::epoll_wait(ep.get(), events.data(), int(events.size()), recv_timeout_ms);
      if (k < 0 && errno != EINTR) fatal = errno_text("epoll_wait");
      for (int i = 0; i < k && fatal.empty(); ++i)
        while (fatal.empty() && receive(events[i].data.u32, MSG_DONTWAIT)) {
        }
    }
  }
  if (refused)
    fmt::print(stderr, "msg_gen: {} datagram(s) refused by {}:{} (ICMP port unreachable: server not running?)\n",
               refused, o.remote_ip, o.remote_port);
  return rep.finish(machnet::now_ns(), fatal);
}

}  // namespace

int run_udp(const options& o) {
  try {
    return o.server() ? serve(o) : client(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "msg_gen: {}\n", e.what());
    return 1;
  }
}

}  // namespace msg_gen
