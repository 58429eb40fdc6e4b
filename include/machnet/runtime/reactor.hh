// reactor: the loop of one shard — run ready coroutines within a task quota,
// poll every poller, fire due timers, report an RCU quiescent state, and sleep
// on an eventfd when every poller agrees there is nothing to do.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "machnet/runtime/poller.hh"
#include "machnet/runtime/task.hh"
#include "machnet/runtime/timer.hh"

namespace machnet {

namespace internal {
struct root_promise;
}

enum class poll_mode { busy, adaptive, sleep };

/// Parses "busy" / "adaptive" / "sleep"; throws std::invalid_argument otherwise.
poll_mode parse_poll_mode(const std::string& s);
const char* to_string(poll_mode m) noexcept;

/// Per-shard loop settings (flags --poll-mode, --idle-poll-us, --task-quota-us).
struct reactor_config {
  poll_mode mode = poll_mode::adaptive;
  /// adaptive: how long to keep polling after the last work before sleeping.
  uint32_t idle_poll_us = 200;
  /// Longest stretch of ready coroutines run before pollers get a turn.
  uint32_t task_quota_us = 500;
  /// CPU to pin the shard's thread to, or -1 for none.
  int cpu = -1;
};

/// Counters of one shard's loop (read by its own shard, or after it stopped).
struct reactor_stats {
  uint64_t turns = 0;
  uint64_t tasks_run = 0;
  uint64_t polls_with_work = 0;
  uint64_t timers_fired = 0;
  uint64_t sleeps = 0;
  uint64_t wakeups = 0;  // eventfd wake-ups received
  uint64_t slept_us = 0;
};

class reactor {
 public:
  reactor(unsigned shard_id, reactor_config cfg);
  reactor(const reactor&) = delete;
  reactor& operator=(const reactor&) = delete;
  ~reactor();

  /// The reactor of the calling thread (the current shard); aborts if none.
  static reactor& local() noexcept;
  static reactor* local_or_null() noexcept;

  unsigned shard_id() const noexcept { return _id; }
  const reactor_config& config() const noexcept { return _cfg; }
  const reactor_stats& stats() const noexcept { return _stats; }

  /// Runs the loop on the calling thread until stop(); returns the exit code.
  /// Binds this reactor to the thread for its duration.
  int run();
  /// Asks the loop to end after the current turn. Thread-safe.
  void stop(int exit_code = 0) noexcept;
  bool stopping() const noexcept { return _stop.load(std::memory_order_relaxed); }

  /// Makes a suspended coroutine ready; it resumes in a later task phase.
  void schedule(std::coroutine_handle<> h);
  /// Starts a detached task. If it is still suspended when the reactor is
  /// destroyed it is abandoned cleanly (its frame is destroyed).
  void spawn(task<void> t);
  /// Starts fn() as a detached task, keeping the callable (and so a lambda's
  /// captures) alive until the task ends: spawn([&]() -> task<void> {...}).
  template <typename F>
    requires std::is_invocable_r_v<task<void>, F&>
  void spawn(F fn) {
    spawn([](F f) -> task<void> { co_await f(); }(std::move(fn)));
  }

  void register_poller(pollfn* p);
  void unregister_poller(pollfn* p);

  timer_wheel& timers() noexcept { return _timers; }

  /// Wakes the shard if it sleeps. Thread-safe and async-signal-safe.
  void wake() noexcept;
  /// Adds / removes a readable fd to the sleep set: data on it wakes the shard.
  void watch_fd(int fd);
  void unwatch_fd(int fd);
  bool sleeping() const noexcept { return _sleeping.load(std::memory_order_relaxed); }

  /// Loop turns so far: lets awaitables detect that a turn has passed.
  uint64_t turn() const noexcept { return _stats.turns; }

 private:
  friend struct internal::root_promise;
  bool run_tasks();
  bool poll_once();
  void try_sleep();
  void destroy_roots() noexcept;

  unsigned _id;
  reactor_config _cfg;
  reactor_stats _stats;
  std::atomic<bool> _stop{false};
  /// Shortest sleep worth taking (below it, spin until the deadline).
  static constexpr uint64_t min_sleep_us = 50;

  std::atomic<bool> _sleeping{false};
  int _exit_code = 0;
  int _wake_fd = -1;
  int _epoll_fd = -1;
  int _timer_fd = -1;

  // Run queue: a power-of-two ring of handles, grown when full.
  std::vector<std::coroutine_handle<>> _runq;
  std::size_t _rq_head = 0, _rq_tail = 0;

  std::vector<pollfn*> _pollers;
  timer_wheel _timers;
  internal::root_promise* _roots = nullptr;  // detached tasks still alive
  uint64_t _quota_tsc;
  uint64_t _idle_tsc;
};

/// The current shard's reactor.
inline reactor& this_shard() noexcept { return reactor::local(); }

/// co_await sleep_for(us): resumes after at least `us` microseconds.
class sleep_for {
 public:
  explicit sleep_for(uint64_t us) : _us(us) {}
  /// Movable until awaited (the timer is armed only in await_suspend).
  sleep_for(sleep_for&& o) noexcept : _us(o._us) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    _timer.set_callback([h] { reactor::local().schedule(h); });
    _timer.arm(_us);
  }
  void await_resume() const noexcept {}

 private:
  uint64_t _us;
  timer _timer;
};

/// co_await sleep(std::chrono::duration)
template <typename Rep, typename Period>
sleep_for sleep(std::chrono::duration<Rep, Period> d) {
  return sleep_for(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count()));
}

/// co_await yield(): lets other ready coroutines and the pollers run.
struct yield {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { reactor::local().schedule(h); }
  void await_resume() const noexcept {}
};

}  // namespace machnet
