// smp: N shards on a cpuset, and submit_to(shard, fn) — cross-shard calls over
// one SPSC ring per ordered pair of shards, batched once per loop turn, waking
// a sleeping target.
#pragma once

#include <boost/lockfree/spsc_queue.hpp>

#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/task.hh"

namespace machnet {

namespace internal {

/// A cross-shard message: run on the target, then completed on the source.
/// It lives in the awaiting coroutine's frame: no allocation per call.
struct smp_message {
  unsigned from = 0, to = 0;
  bool responded = false;
  virtual void run_on_target() = 0;
  virtual void complete_on_source() = 0;
  void respond();  // send back to `from` (called on the target)

 protected:
  ~smp_message() = default;
};

template <typename T>
struct unwrap_task {
  using type = T;
  static constexpr bool is_task = false;
};
template <typename T>
struct unwrap_task<task<T>> {
  using type = T;
  static constexpr bool is_task = true;
};

}  // namespace internal

/// The shards of this process. One instance at a time; shard 0 runs on the
/// thread that calls run(), shards 1..N-1 on threads of their own.
class smp {
 public:
  static constexpr std::size_t ring_capacity = 4096;

  explicit smp(std::vector<reactor_config> shards);
  smp(const smp&) = delete;
  smp& operator=(const smp&) = delete;
  /// Stops and joins every shard; abandons (destroys) suspended tasks.
  ~smp();

  /// Runs `main` on shard 0 until it completes (its value is the exit code) or
  /// stop() is called; then stops every shard.
  int run(task<int> main);
  /// Same, for a callable returning task<int>; the callable (and its lambda
  /// captures) lives until main ends: run([&]() -> task<int> {...}).
  template <typename F>
    requires std::is_invocable_r_v<task<int>, F&>
  int run(F fn) {
    return run([](F f) -> task<int> { co_return co_await f(); }(std::move(fn)));
  }
  /// Stops every shard. Thread-safe.
  void stop(int exit_code = 0) noexcept;

  static smp& instance() noexcept;
  static smp* instance_or_null() noexcept;
  static unsigned count() noexcept;
  reactor& shard(unsigned i) noexcept { return *_reactors[i]; }

  /// Queues `m` for m->to (or for m->from when it carries a response).
  void enqueue(unsigned from_shard, unsigned to_shard, internal::smp_message* m);

 private:
  class queue_poller;
  using ring = boost::lockfree::spsc_queue<internal::smp_message*,
                                           boost::lockfree::capacity<ring_capacity>>;
  ring& ring_of(unsigned from, unsigned to) noexcept { return *_rings[from * _n + to]; }

  unsigned _n;
  std::vector<std::unique_ptr<reactor>> _reactors;
  std::vector<std::unique_ptr<ring>> _rings;
  std::vector<std::unique_ptr<queue_poller>> _pollers;
  std::vector<std::thread> _threads;
  std::atomic<bool> _started{false};
};

namespace internal {

template <typename F, typename R>
class submit_awaiter final : public smp_message {
  using fn_result = std::invoke_result_t<F&>;

 public:
  submit_awaiter(unsigned shard, F&& fn) : _fn(std::move(fn)) { to = shard; }
  submit_awaiter(submit_awaiter&&) = default;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    _waiter = h;
    from = reactor::local().shard_id();
    smp::instance().enqueue(from, to, this);
  }
  R await_resume() {
    if (_ex) std::rethrow_exception(_ex);
    if constexpr (!std::is_void_v<R>) return std::move(*_value);
  }

  void run_on_target() override {
    if constexpr (unwrap_task<fn_result>::is_task) {
      reactor::local().spawn(run_task(this));
    } else {
      try {
        if constexpr (std::is_void_v<R>) _fn();
        else _value.emplace(_fn());
      } catch (...) {
        _ex = std::current_exception();
      }
      respond();
    }
  }
  void complete_on_source() override { reactor::local().schedule(_waiter); }

 private:
  static task<void> run_task(submit_awaiter* self) {
    try {
      if constexpr (std::is_void_v<R>) co_await self->_fn();
      else self->_value.emplace(co_await self->_fn());
    } catch (...) {
      self->_ex = std::current_exception();
    }
    self->respond();
  }

  F _fn;
  std::coroutine_handle<> _waiter;
  std::exception_ptr _ex;
  std::conditional_t<std::is_void_v<R>, char, std::optional<R>> _value;
};

}  // namespace internal

/// Runs fn() on `shard` and returns its result to the caller's shard. fn may
/// return a value or a task<T> (awaited on the target). Exceptions propagate.
/// Must be awaited from a shard.
template <typename F>
auto submit_to(unsigned shard, F fn) {
  using R = typename internal::unwrap_task<std::invoke_result_t<F&>>::type;
  return internal::submit_awaiter<F, R>(shard, std::move(fn));
}

}  // namespace machnet
