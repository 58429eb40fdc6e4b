// app_channel: setting up and tearing down the app side of a channel, its
// liveness checks (closed word, control socket hang-up), doorbells and sleep.
#include "app_channel.hh"

#include <poll.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include <utility>

namespace machnet::shim {
namespace {

constexpr uint64_t channel_magic = 0x6c656e6e61686343ULL;  // "Cchannel"
constexpr uint64_t dead_magic = 0x646165646c6e6843ULL;
constexpr int64_t watch_period_ns = 1'000'000;

int64_t coarse_now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t parse_wait_spin_ns() noexcept {
  constexpr int64_t fallback = 30'000;
  const char* v = std::getenv("MACHNET_WAIT_SPIN_US");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  unsigned long long us = std::strtoull(v, &end, 10);
  if (errno || *end || v[0] == '-' || us > 1'000'000) {
    std::fprintf(stderr, "libmachnet: MACHNET_WAIT_SPIN_US='%s' is not 0..1000000 (µs): using 30\n", v);
    return fallback;
  }
  return int64_t(us) * 1000;
}

}  // namespace

int64_t wait_spin_ns() noexcept {
  static const int64_t ns = parse_wait_spin_ns();
  return ns;
}

app_channel::app_channel(attach_grant&& g)
    : _magic(channel_magic),
      _map(std::move(g.map)),
      _hdr(&_map.header()),
      _params(_map.params()),
      _engine_bell(g.engine_bell),
      _app_bell(g.app_bell),
      _watch_fd(g.watch_fd),
      _generation(g.generation),
      _id(g.channel_id),
      _free(_map.free_ring(), _map.ring_slots()),
      _ret(_map.ret_ring(), _map.ring_slots()),
      _tx(_map.tx_ring(), _map.ring_slots()),
      _rx(_map.rx_ring(), _map.ring_slots()),
      _sq(_map.ctrl_sq(), _params.ctrl_slots),
      _cq(_map.ctrl_cq(), _params.ctrl_slots) {
  _tx_bufs.reserve(_params.buf_count);
  _rx_bufs.reserve(_params.buf_count);
}

app_channel::~app_channel() {
  _magic = dead_magic;
  for (int fd : {_engine_bell, _app_bell, _watch_fd})
    if (fd >= 0) ::close(fd);
}

void app_channel::orphan() noexcept {
  for (int* fd : {&_engine_bell, &_app_bell, &_watch_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  _dead = true;
  _orphaned = true;
}

app_channel* app_channel::from(const void* handle) noexcept {
  auto* c = static_cast<app_channel*>(const_cast<void*>(handle));
  return c && c->_magic == channel_magic ? c : nullptr;
}

int app_channel::shut_down() noexcept {
  _dead = true;
  return ESHUTDOWN;
}

int app_channel::alive() noexcept {
  if (_dead) return ESHUTDOWN;
  if (_hdr->closed.load(std::memory_order_acquire) != 0) return shut_down();
  if (link_dead(_generation)) return shut_down();
  int64_t t = coarse_now_ns();
  if (t >= _next_watch) {
    _next_watch = t + watch_period_ns;
    if (hung_up(_watch_fd)) {
      link_mark_dead(_generation);
      return shut_down();
    }
  }
  return 0;
}

int app_channel::sleep_once(int64_t deadline) noexcept {
  pollfd fds[2] = {{_app_bell, POLLIN, 0}, {_watch_fd, POLLRDHUP, 0}};
  timespec ts;
  timespec* tsp = nullptr;
  if (deadline != no_deadline) {
    int64_t left = deadline - now_ns();
    if (left < 0) left = 0;
    ts.tv_sec = time_t(left / 1'000'000'000);
    ts.tv_nsec = long(left % 1'000'000'000);
    tsp = &ts;
  }
  int n = ::ppoll(fds, 2, tsp, nullptr);
  _hdr->app_sleeping.store(0, std::memory_order_relaxed);
  if (n <= 0) return alive();  // timeout or EINTR: the caller checks the time
  if (fds[1].revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) {
    link_mark_dead(_generation);
    return shut_down();
  }
  if (fds[0].revents & POLLIN) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = ::read(_app_bell, &v, sizeof v);
  }
  return alive();
}

void app_channel::ring_engine() noexcept {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(_engine_bell, &one, sizeof one);
}

void app_channel::wake_engine_if_sleeping() noexcept {
  // Either side publishes, fences, then reads the other's word.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (_hdr->engine_sleeping.load(std::memory_order_relaxed) != 0) ring_engine();
}

void app_channel::give_back(const uint32_t* idx, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    // The ring has a slot for every buffer: it is full only if machnetd
    // stopped consuming, and then the buffer is lost to this channel anyway.
    (void)_ret.push(idx[i]);
  }
  _ret.publish();
  wake_engine_if_sleeping();
}

void app_channel::give_back_chain(uint32_t head) noexcept {
  _rx_bufs.clear();
  uint32_t i = head;
  for (uint32_t k = 0; k < _params.buf_count && i < _params.buf_count; ++k) {
    _rx_bufs.push_back(i);
    i = _map.buffer(i)->next;
  }
  give_back(_rx_bufs.data(), _rx_bufs.size());
  _rx_bufs.clear();
}

}  // namespace machnet::shim
