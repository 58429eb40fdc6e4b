// thread: stackful fibers (Boost.Context) inside a shard, for blocking-style
// code. A fiber blocks on any runtime awaitable with machnet::await(...); the
// shard keeps running other coroutines and fibers meanwhile.
#pragma once

#include <boost/context/fiber.hpp>

#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/task.hh"

namespace machnet {

namespace internal {

/// Thrown inside a fiber whose shard shuts down while it is blocked, to unwind
/// its stack. Code that catches (...) inside a fiber must rethrow it.
struct fiber_cancelled {};

struct fiber_context {
  boost::context::fiber fiber;   // the fiber (while switched out)
  boost::context::fiber caller;  // the shard's stack (while the fiber runs)
  task<void> pending;            // what the fiber waits for
  std::exception_ptr error;
  std::coroutine_handle<> joiner;
  bool done = false;
  bool cancelled = false;
  // Stack bounds, for AddressSanitizer's fiber annotations.
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
  const void* caller_bottom = nullptr;
  std::size_t caller_size = 0;

  void switch_in();   // from the shard: run the fiber until it blocks or ends
  void switch_out();  // from the fiber: back to the shard (throws fiber_cancelled)
  ~fiber_context();   // unwinds an unfinished fiber
};

fiber_context* current_fiber() noexcept;

template <typename A>
auto as_task(A a) -> task<std::remove_cvref_t<decltype(std::declval<A&>().await_resume())>> {
  co_return co_await std::move(a);
}
template <typename T>
task<T> as_task(task<T> t) {
  return t;
}

}  // namespace internal

/// A stackful fiber running `fn` on the current shard. Start is deferred to
/// the shard's next task phase; join() awaits the end (rethrows its exception).
/// Destroying an unjoined thread detaches it: it runs to its end, or is
/// unwound (its stack's destructors run) when the shard shuts down.
class thread {
 public:
  static constexpr std::size_t default_stack_size = 128 * 1024;

  explicit thread(std::function<void()> fn, std::size_t stack_size = default_stack_size);
  thread(thread&&) noexcept = default;
  thread& operator=(thread&&) noexcept = default;

  /// Awaits the fiber's end; rethrows what escaped it.
  task<void> join();

 private:
  std::shared_ptr<internal::fiber_context> _ctx;  // shared with the driver
};

/// True when called from inside a machnet::thread.
inline bool in_thread() noexcept { return internal::current_fiber() != nullptr; }

/// From inside a machnet::thread: blocks the fiber (not the shard) until `a`
/// (a task<T> or any awaitable) completes, and returns its result.
template <typename A>
decltype(auto) await(A&& a) {
  auto* f = internal::current_fiber();
  if (!f) throw std::logic_error("machnet::await outside a machnet::thread");
  auto t = internal::as_task(std::forward<A>(a));
  using T = typename decltype(t)::value_type;
  if constexpr (std::is_void_v<T>) {
    f->pending = [](decltype(t)& inner) -> task<void> { co_await inner.when_ready(); }(t);
    f->switch_out();
    t.result();
  } else {
    f->pending = [](decltype(t)& inner) -> task<void> { co_await inner.when_ready(); }(t);
    f->switch_out();
    return t.result();
  }
}

/// From inside a machnet::thread: lets the shard run other work.
void thread_yield();

}  // namespace machnet
