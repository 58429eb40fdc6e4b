// reactor: the per-shard loop (one turn: tasks, pollers, timers, RCU, maybe sleep).
#include "machnet/runtime/reactor.hh"

#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/log.hh"
#include "machnet/runtime/rcu.hh"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace machnet {

namespace {
thread_local reactor* tls_reactor = nullptr;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::system_category(), what);
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__)
  _mm_pause();
#endif
}
}  // namespace

poll_mode parse_poll_mode(const std::string& s) {
  if (s == "busy") return poll_mode::busy;
  if (s == "adaptive") return poll_mode::adaptive;
  if (s == "sleep") return poll_mode::sleep;
  throw std::invalid_argument("unknown poll mode '" + s + "' (expected busy|adaptive|sleep)");
}

const char* to_string(poll_mode m) noexcept {
  switch (m) {
    case poll_mode::busy: return "busy";
    case poll_mode::adaptive: return "adaptive";
    case poll_mode::sleep: return "sleep";
  }
  return "?";
}

}  // namespace machnet

namespace machnet::internal {

// A detached task's frame. Its promise links itself into the reactor's list of
// roots so that shutdown can destroy whatever is still suspended.
struct root_promise {
  reactor* owner;
  root_promise* prev = nullptr;
  root_promise* next = nullptr;

  explicit root_promise(reactor& r) : owner(&r) {
    next = r._roots;
    if (next) next->prev = this;
    r._roots = this;
  }
  template <typename... A>
  root_promise(reactor& r, A&...) : root_promise(r) {}
  ~root_promise() {
    if (prev) prev->next = next;
    else owner->_roots = next;
    if (next) next->prev = prev;
  }
  static void* operator new(std::size_t n) { return frame_allocator::allocate(n); }
  static void operator delete(void* p) noexcept { frame_allocator::deallocate(p); }
  struct handle {
    std::coroutine_handle<root_promise> h;
  };
  handle get_return_object() noexcept {
    return {std::coroutine_handle<root_promise>::from_promise(*this)};
  }
  std::suspend_always initial_suspend() noexcept { return {}; }
  std::suspend_never final_suspend() noexcept { return {}; }
  void return_void() noexcept {}
  void unhandled_exception() noexcept {}
};

}  // namespace machnet::internal

template <typename... A>
struct std::coroutine_traits<machnet::internal::root_promise::handle, machnet::reactor&, A...> {
  using promise_type = machnet::internal::root_promise;
};

namespace machnet {

namespace {
internal::root_promise::handle run_root(reactor&, task<void> t) {
  try {
    co_await std::move(t);
  } catch (const std::exception& e) {
    log::error("detached task failed: {}", e.what());
  } catch (...) {
    log::error("detached task failed with a non-standard exception");
  }
}
}  // namespace

reactor::reactor(unsigned shard_id, reactor_config cfg)
    : _id(shard_id), _cfg(cfg), _runq(256), _timers(now_us()) {
  const auto& clk = tsc_clock::get();
  _quota_tsc = clk.from_us(_cfg.task_quota_us);
  _idle_tsc = clk.from_us(_cfg.mode == poll_mode::sleep ? 0 : _cfg.idle_poll_us);
  _wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (_wake_fd < 0) throw_errno("eventfd");
  _epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (_epoll_fd < 0) throw_errno("epoll_create1");
  watch_fd(_wake_fd);
}

reactor::~reactor() {
  reactor* prev = tls_reactor;
  tls_reactor = this;
  destroy_roots();
  tls_reactor = prev;
  ::close(_epoll_fd);
  ::close(_wake_fd);
}

reactor& reactor::local() noexcept {
  if (!tls_reactor) {
    log::error("machnet: no reactor on this thread (call from a shard)");
    std::abort();
  }
  return *tls_reactor;
}

reactor* reactor::local_or_null() noexcept { return tls_reactor; }

void reactor::schedule(std::coroutine_handle<> h) {
  std::size_t cap = _runq.size();
  if (_rq_tail - _rq_head == cap) {
    std::vector<std::coroutine_handle<>> bigger(cap * 2);
    for (std::size_t i = 0; i < cap; ++i) bigger[i] = _runq[(_rq_head + i) & (cap - 1)];
    _runq.swap(bigger);
    _rq_tail -= _rq_head;
    _rq_head = 0;
    cap *= 2;
  }
  _runq[_rq_tail++ & (cap - 1)] = h;
}

void reactor::spawn(task<void> t) { schedule(run_root(*this, std::move(t)).h); }

void reactor::destroy_roots() noexcept {
  // Ready-but-not-run coroutines belong to roots (or are roots): forget them.
  _rq_head = _rq_tail = 0;
  while (_roots) std::coroutine_handle<internal::root_promise>::from_promise(*_roots).destroy();
}

void reactor::register_poller(pollfn* p) { _pollers.push_back(p); }

void reactor::unregister_poller(pollfn* p) {
  auto it = std::find(_pollers.begin(), _pollers.end(), p);
  if (it != _pollers.end()) *it = nullptr;  // compacted at the next poll
}

void reactor::watch_fd(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(_epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) throw_errno("epoll_ctl(ADD)");
}

void reactor::unwatch_fd(int fd) { ::epoll_ctl(_epoll_fd, EPOLL_CTL_DEL, fd, nullptr); }

void reactor::wake() noexcept {
  if (_cfg.mode == poll_mode::busy) return;  // never sleeps: nothing to wake
  // Pairs with the seq_cst store of _sleeping in try_sleep(): either the
  // sleeper sees our published work in its last pure_poll(), or we see it
  // sleeping and kick the eventfd.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (_sleeping.load(std::memory_order_relaxed)) {
    uint64_t one = 1;
    ssize_t rc = ::write(_wake_fd, &one, sizeof one);
    (void)rc;
  }
}

void reactor::stop(int exit_code) noexcept {
  _exit_code = exit_code;
  _stop.store(true, std::memory_order_release);
  wake();
}

bool reactor::run_tasks() {
  if (_rq_head == _rq_tail) return false;
  uint64_t deadline = rdtsc() + _quota_tsc;
  uint64_t n = 0;
  // Only what was ready when the phase began: a task that yields (schedules
  // itself again) runs in the next turn, after the pollers.
  const std::size_t end = _rq_tail;
  while (_rq_head != end) {
    auto h = _runq[_rq_head++ & (_runq.size() - 1)];
    h.resume();
    if ((++n & 15) == 0 && rdtsc() > deadline) break;
  }
  _stats.tasks_run += n;
  return true;
}

bool reactor::poll_once() {
  bool work = false;
  bool holes = false;
  for (std::size_t i = 0; i < _pollers.size(); ++i) {
    pollfn* p = _pollers[i];
    if (!p) {
      holes = true;
      continue;
    }
    work |= p->poll();
  }
  if (holes) std::erase(_pollers, nullptr);
  return work;
}

void reactor::try_sleep() {
  std::size_t entered = 0;
  for (; entered < _pollers.size(); ++entered) {
    pollfn* p = _pollers[entered];
    if (p && !p->try_enter_interrupt_mode()) break;
  }
  bool can_sleep = entered == _pollers.size();
  if (can_sleep) {
    _sleeping.store(true, std::memory_order_seq_cst);
    bool work = _rq_head != _rq_tail || _stop.load(std::memory_order_relaxed);
    uint64_t limit_us = UINT64_MAX;
    for (pollfn* p : _pollers) {
      if (!p) continue;
      if (!work) work = p->pure_poll();
      limit_us = std::min(limit_us, p->max_sleep_us());
    }
    uint64_t now = now_us();
    uint64_t next = _timers.next_deadline();
    if (next != UINT64_MAX) limit_us = std::min(limit_us, next > now ? next - now : 0);
    // A sleep shorter than a wake-up (tens of µs on a VM: a halt exit and an
    // interrupt) only makes the timer late: spin through short gaps instead.
    // (Sleeping through every µs-scale pacing gap slowed an 8 MiB transfer
    // over memif from milliseconds to seconds.)
    if (!work && limit_us >= min_sleep_us) {
      timespec ts{};
      timespec* tsp = nullptr;
      if (limit_us != UINT64_MAX) {
        ts.tv_sec = static_cast<time_t>(limit_us / 1'000'000);
        ts.tv_nsec = static_cast<long>((limit_us % 1'000'000) * 1000);
        tsp = &ts;
      }
      epoll_event evs[16];
      rcu::thread_offline();
      int n = ::epoll_pwait2(_epoll_fd, evs, 16, tsp, nullptr);
      rcu::thread_online();
      ++_stats.sleeps;
      _stats.slept_us += now_us() - now;
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.fd == _wake_fd) {
          uint64_t v;
          ssize_t rc = ::read(_wake_fd, &v, sizeof v);
          (void)rc;
          ++_stats.wakeups;
        }
      }
    }
    _sleeping.store(false, std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < entered; ++i)
    if (_pollers[i]) _pollers[i]->exit_interrupt_mode();
}

int reactor::run() {
  reactor* prev = tls_reactor;
  tls_reactor = this;
  if (_cfg.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(_cfg.cpu, &set);
    if (int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set); rc != 0)
      log::warn("cannot pin shard {} to cpu {}: {}", _id, _cfg.cpu, std::strerror(rc));
  }
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // precise sleeps for timers
  rcu::register_thread();

  uint64_t last_work = rdtsc();
  while (!_stop.load(std::memory_order_acquire)) {
    ++_stats.turns;
    bool work = run_tasks();
    if (poll_once()) {
      ++_stats.polls_with_work;
      work = true;
    }
    uint64_t now = rdtsc();
    if (!_timers.empty()) {
      unsigned fired = _timers.advance(tsc_clock::get().to_us(now));
      _stats.timers_fired += fired;
      work |= fired != 0;
    }
    rcu::quiescent_state();
    if (work || _rq_head != _rq_tail) {
      last_work = now;
      continue;
    }
    if (_cfg.mode == poll_mode::busy) continue;
    if (now - last_work < _idle_tsc) {
      cpu_relax();
      continue;
    }
    try_sleep();
    // A woken shard polls a whole idle window before it sleeps again: the
    // replies to what it sent usually follow within it. (Re-sleeping sooner
    // saves CPU when idle, but then delay-based congestion control sees the
    // wake-up latency in every RTT and collapses: an 8 MiB transfer over
    // memif took seconds. Idle cost is bounded by the engine's RX backoff.)
    last_work = rdtsc();
  }
  rcu::unregister_thread();
  tls_reactor = prev;
  return _exit_code;
}

}  // namespace machnet
