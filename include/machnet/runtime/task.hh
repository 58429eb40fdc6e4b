// task: the runtime's coroutine type — lazy, single-awaiter, symmetric transfer,
// exceptions propagate to the awaiter.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "machnet/runtime/frame_allocator.hh"

namespace machnet {

template <typename T = void>
class task;

namespace internal {

struct promise_base {
  std::coroutine_handle<> _continuation = std::noop_coroutine();
  std::exception_ptr _exception;

  static void* operator new(std::size_t n) { return frame_allocator::allocate(n); }
  static void operator delete(void* p) noexcept { frame_allocator::deallocate(p); }

  std::suspend_always initial_suspend() noexcept { return {}; }

  struct final_awaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      return h.promise()._continuation;
    }
    void await_resume() noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { _exception = std::current_exception(); }
};

template <typename T>
struct task_promise : promise_base {
  std::optional<T> _value;
  task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& v) {
    _value.emplace(std::forward<U>(v));
  }
  T take() {
    if (_exception) std::rethrow_exception(_exception);
    return std::move(*_value);
  }
};

template <>
struct task_promise<void> : promise_base {
  task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void take() {
    if (_exception) std::rethrow_exception(_exception);
  }
};

}  // namespace internal

/// A lazily started coroutine producing a T. Awaiting it starts it (symmetric
/// transfer: no stack growth along chains); it resumes its awaiter when done.
/// A task owns its frame: destroying a suspended task destroys the frame.
template <typename T>
class [[nodiscard]] task {
 public:
  using promise_type = internal::task_promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;
  using value_type = T;

  task() noexcept = default;
  explicit task(handle_type h) noexcept : _h(h) {}
  task(task&& o) noexcept : _h(std::exchange(o._h, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      reset();
      _h = std::exchange(o._h, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { reset(); }

  bool valid() const noexcept { return bool(_h); }
  bool done() const noexcept { return !_h || _h.done(); }

  auto operator co_await() && noexcept {
    struct awaiter {
      handle_type h;
      bool await_ready() noexcept { return !h || h.done(); }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) noexcept {
        h.promise()._continuation = c;
        return h;
      }
      T await_resume() { return h.promise().take(); }
    };
    return awaiter{_h};
  }

  /// Awaits completion without taking the result (used by when_all and
  /// bridges); fetch it afterwards with result().
  auto when_ready() noexcept {
    struct awaiter {
      handle_type h;
      bool await_ready() noexcept { return !h || h.done(); }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) noexcept {
        h.promise()._continuation = c;
        return h;
      }
      void await_resume() noexcept {}
    };
    return awaiter{_h};
  }

  /// The result of a finished task (rethrows its exception).
  T result() { return _h.promise().take(); }

  /// Releases ownership of the frame (for the reactor's detached roots).
  handle_type release() noexcept { return std::exchange(_h, {}); }
  handle_type handle() const noexcept { return _h; }

 private:
  void reset() noexcept {
    if (_h) _h.destroy();
    _h = {};
  }
  handle_type _h;
};

namespace internal {
template <typename T>
task<T> task_promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
  return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}
}  // namespace internal

/// What co_await of A yields.
template <typename A>
using await_result_t =
    decltype(std::declval<decltype(std::declval<A>().operator co_await())>().await_resume());

}  // namespace machnet
