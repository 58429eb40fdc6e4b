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
#include <new>
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

// The awaiter owns the callable, the result and the exception in raw
// storage with explicit lifetimes: the callable is destroyed on the target
// right after it ran, and the awaiter's own destructor is trivial, so the
// duplicated temporaries GCC 12 makes in co_await expressions (see
// submit_to) cannot destroy anything twice through it.
template <typename F, typename R>
class submit_awaiter final : public smp_message {
  using fn_result = std::invoke_result_t<F&>;
  static constexpr bool has_value = !std::is_void_v<R>;
  using value_t = std::conditional_t<has_value, R, char>;

 public:
  submit_awaiter(unsigned shard, F&& fn) {
    ::new (static_cast<void*>(_fn)) F(std::move(fn));
    _has_fn = true;
    to = shard;
  }
  submit_awaiter(submit_awaiter&& o) noexcept(std::is_nothrow_move_constructible_v<F>) : smp_message(o) {
    if (o._has_fn) {
      ::new (static_cast<void*>(_fn)) F(std::move(o.fn()));
      o.destroy_fn();
      _has_fn = true;
    }
  }
  submit_awaiter& operator=(submit_awaiter&&) = delete;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    _waiter = h;
    from = reactor::local().shard_id();
    smp::instance().enqueue(from, to, this);
  }
  R await_resume() {
    if (_ex) {
      std::exception_ptr e = std::move(*_ex);
      delete _ex;
      _ex = nullptr;
      std::rethrow_exception(e);
    }
    if constexpr (has_value) {
      R& v = *std::launder(reinterpret_cast<R*>(_value));
      R out = std::move(v);
      v.~R();
      _has_value = false;
      return out;
    }
  }

  void run_on_target() override {
    if constexpr (unwrap_task<fn_result>::is_task) {
      reactor::local().spawn(run_task(this));
    } else {
      try {
        if constexpr (has_value) {
          ::new (static_cast<void*>(_value)) R(fn()());
          _has_value = true;
        } else {
          fn()();
        }
      } catch (...) {
        _ex = new std::exception_ptr(std::current_exception());
      }
      destroy_fn();  // on the target, where it ran
      respond();
    }
  }
  void complete_on_source() override { reactor::local().schedule(_waiter); }

 private:
  F& fn() noexcept { return *std::launder(reinterpret_cast<F*>(_fn)); }
  void destroy_fn() noexcept {
    if (_has_fn) fn().~F();
    _has_fn = false;
  }
  static task<void> run_task(submit_awaiter* self) {
    try {
      if constexpr (has_value) {
        R v = co_await self->fn()();
        ::new (static_cast<void*>(self->_value)) R(std::move(v));
        self->_has_value = true;
      } else {
        co_await self->fn()();
      }
    } catch (...) {
      self->_ex = new std::exception_ptr(std::current_exception());
    }
    self->destroy_fn();  // after the task: it may refer to the callable's captures
    self->respond();
  }

  alignas(F) unsigned char _fn[sizeof(F)];
  alignas(value_t) unsigned char _value[sizeof(value_t)];
  std::coroutine_handle<> _waiter;
  std::exception_ptr* _ex = nullptr;
  bool _has_fn = false;
  bool _has_value = false;
};

}  // namespace internal

/// Runs fn() on `shard` and returns its result to the caller's shard. fn may
/// return a value or a task<T> (awaited on the target). Exceptions propagate.
/// Must be awaited from a shard.
///
/// GCC 12: a prvalue lambda written inside `co_await submit_to(s, [...]{})`
/// is bitwise duplicated and destroyed twice. Harmless for lambdas that
/// capture pointers, references and plain values; a lambda that *owns*
/// something (a message, a unique_ptr) must be named first and moved in:
///   auto fn = [m = std::move(m)]() mutable {...};
///   co_await submit_to(s, std::move(fn));
/// (tests/unit/runtime/smp_test.cc shows both).
template <typename F>
auto submit_to(unsigned shard, F fn) {
  using R = typename internal::unwrap_task<std::invoke_result_t<F&>>::type;
  return internal::submit_awaiter<F, R>(shard, std::move(fn));
}

}  // namespace machnet
