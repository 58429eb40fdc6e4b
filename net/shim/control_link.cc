// control_link: the process's connection to machnetd's control socket (hello,
// attach, detach) and the record of which connections hung up.
#include "control_link.hh"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "app_channel.hh"
#include "machnet/net/shm/control.hh"

namespace machnet::shim {
namespace {

constexpr int reply_timeout_ms = 5000;

struct link_state {
  std::mutex mu;
  int fd = -1;              // the control socket, or -1 before machnet_init
  uint64_t generation = 0;  // of fd; each connection gets a new one
  uint64_t next_id = 0;
  std::vector<const void*> channels;  // live channels (see link_track)
};

void before_fork();
void after_fork_in_parent();
void after_fork_in_child();

// Never destroyed: channels may be used by threads still running at exit.
link_state& the_link() {
  static link_state* l = [] {
    auto* s = new link_state;
    ::pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
    return s;
  }();
  return *l;
}

// A forked child is another app: it must not speak on its parent's control
// connection nor touch its parent's channels (each ring has one producer and
// one consumer), and its copies of their fds would keep them open after the
// parent is gone. So the child closes them all; its calls on inherited
// channels fail with ESHUTDOWN, and machnet_init() connects it anew.
void before_fork() { the_link().mu.lock(); }

void after_fork_in_parent() { the_link().mu.unlock(); }

void after_fork_in_child() {
  link_state& l = the_link();
  if (l.fd >= 0) ::close(l.fd);
  l.fd = -1;
  link_mark_dead(l.generation);
  for (const void* c : l.channels)
    if (app_channel* ch = app_channel::from(c)) ch->orphan();
  l.mu.unlock();
}

// Connections 1 .. dead_upto are gone (a reconnect only happens after the
// previous connection hung up, so the dead ones are always a prefix).
std::atomic<uint64_t> dead_upto{0};

std::string program_name() {
  char buf[64]{};
  int fd = ::open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "unknown";
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  std::string s(buf, n > 0 ? std::size_t(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

void close_all(std::vector<int>& fds) noexcept {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

// Sends `req` and waits for the reply with the same type and id (late replies
// to earlier requests are dropped). 0 or an errno value (ECONNRESET: hang-up).
int request(int fd, uint64_t& next_id, shm::ctl_msg req, shm::ctl_msg& reply,
            std::vector<int>& fds) {
  req.id = ++next_id;
  if (int e = shm::send_ctl(fd, req)) return e;
  timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    long waited = (t.tv_sec - start.tv_sec) * 1000 + (t.tv_nsec - start.tv_nsec) / 1'000'000;
    if (waited >= reply_timeout_ms) return ETIMEDOUT;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, int(reply_timeout_ms - waited));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return ETIMEDOUT;
    if (int e = shm::recv_ctl(fd, reply, fds)) return e;
    if (reply.id == req.id && reply.type == req.type) return 0;
    close_all(fds);
  }
}

void report(const char* what, const std::string& why) {
  std::fprintf(stderr, "libmachnet: %s: %s\n", what, why.c_str());
}

}  // namespace

bool hung_up(int fd) noexcept {
  pollfd p{fd, POLLRDHUP, 0};
  int n = ::poll(&p, 1, 0);
  return n > 0 && (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL));
}

void link_track(const void* channel, bool live) noexcept {
  link_state& l = the_link();
  std::lock_guard lock(l.mu);
  try {
    if (live) {
      l.channels.push_back(channel);
    } else {
      std::erase(l.channels, channel);
    }
  } catch (const std::bad_alloc&) {
  }
}

bool link_dead(uint64_t generation) noexcept {
  return generation <= dead_upto.load(std::memory_order_acquire);
}

void link_mark_dead(uint64_t generation) noexcept {
  uint64_t cur = dead_upto.load(std::memory_order_relaxed);
  while (cur < generation &&
         !dead_upto.compare_exchange_weak(cur, generation, std::memory_order_acq_rel)) {
  }
}

int link_init() noexcept {
  link_state& l = the_link();
  std::lock_guard lock(l.mu);
  if (l.fd >= 0) {
    if (!link_dead(l.generation) && !hung_up(l.fd)) return 0;
    link_mark_dead(l.generation);
    ::close(l.fd);
    l.fd = -1;
  }
  try {
    const std::string path = shm::control_socket_path();
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return ENAMETOOLONG;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    // Bounds connect() when machnetd's backlog is full.
    timeval tv{reply_timeout_ms / 1000, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      int e = errno == EINPROGRESS || errno == EAGAIN ? ETIMEDOUT : errno;
      ::close(fd);
      return e;
    }
    shm::ctl_msg hello{};
    hello.type = shm::ctl_type::hello;
    shm::set_text(hello, program_name());
    shm::ctl_msg reply;
    std::vector<int> fds;
    int e = request(fd, l.next_id, hello, reply, fds);
    close_all(fds);
    if (e == 0 && reply.status != 0) {
      e = reply.status > 0 ? reply.status : EPROTO;
      if (reply.text[0]) report("machnetd refused hello", reply.text);
    }
    if (e == EPROTO)
      report(("control socket " + path).c_str(), "not a machnetd of this protocol version");
    if (e) {
      ::close(fd);
      return e == ECONNRESET ? ECONNREFUSED : e;
    }
    l.fd = fd;
    // Generations never go back: the dead prefix stays below the new one.
    l.generation = std::max(l.generation, dead_upto.load()) + 1;
    return 0;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
}

int link_attach(attach_grant& out) noexcept {
  link_state& l = the_link();
  std::lock_guard lock(l.mu);
  if (l.fd < 0) return ENOTCONN;
  if (link_dead(l.generation) || hung_up(l.fd)) {
    link_mark_dead(l.generation);
    return ESHUTDOWN;
  }
  int watch = ::fcntl(l.fd, F_DUPFD_CLOEXEC, 0);
  if (watch < 0) return errno;
  std::vector<int> fds;
  try {
    shm::ctl_msg req{};
    req.type = shm::ctl_type::attach;  // params zero: machnetd's default
    shm::ctl_msg reply;
    int e = request(l.fd, l.next_id, req, reply, fds);
    if (e == ECONNRESET || e == EPIPE) {
      link_mark_dead(l.generation);
      e = ESHUTDOWN;
    }
    if (e == 0 && reply.status != 0) e = reply.status > 0 ? reply.status : EPROTO;
    if (e == 0 && fds.size() != 3) {
      report("attach", "machnetd sent " + std::to_string(fds.size()) + " descriptors, not 3");
      e = EPROTO;
    }
    if (e == 0) {
      try {
        out.map = shm::channel_map::attach(fds[0]);
      } catch (const std::bad_alloc&) {
        throw;
      } catch (const std::exception& ex) {
        report("attach", ex.what());
        e = EPROTO;
      }
    }
    if (e) {
      close_all(fds);
      ::close(watch);
      // machnetd made a channel we cannot use: give it back.
      if (reply.status == 0 && reply.channel_id != 0 && e != ESHUTDOWN) {
        shm::ctl_msg d{};
        d.type = shm::ctl_type::detach;
        d.id = ++l.next_id;
        d.channel_id = reply.channel_id;
        (void)shm::send_ctl(l.fd, d);
      }
      return e;
    }
    out.map.close_fd();  // the mapping stays
    out.engine_bell = fds[1];
    out.app_bell = fds[2];
    out.watch_fd = watch;
    out.generation = l.generation;
    out.channel_id = reply.channel_id;
    return 0;
  } catch (const std::bad_alloc&) {
    close_all(fds);
    ::close(watch);
    return ENOMEM;
  }
}

void link_detach(uint32_t channel_id, uint64_t generation) noexcept {
  link_state& l = the_link();
  std::lock_guard lock(l.mu);
  if (l.fd < 0 || l.generation != generation || link_dead(generation)) return;
  try {
    shm::ctl_msg req{};
    req.type = shm::ctl_type::detach;
    req.channel_id = channel_id;
    shm::ctl_msg reply;
    std::vector<int> fds;
    int e = request(l.fd, l.next_id, req, reply, fds);
    close_all(fds);
    if (e == ECONNRESET || e == EPIPE) link_mark_dead(generation);
  } catch (const std::bad_alloc&) {
  }
}

}  // namespace machnet::shim
