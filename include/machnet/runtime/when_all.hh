// when_all: await several tasks concurrently; results in order, first
// exception rethrown after all have finished.
#pragma once

#include <coroutine>
#include <cstddef>
#include <tuple>
#include <vector>

#include "machnet/runtime/task.hh"

namespace machnet {

namespace internal {

struct when_all_counter {
  std::size_t remaining;
  std::coroutine_handle<> parent;
};

/// A child runner: starts one task, and when it finishes, decrements the
/// counter; the last one resumes the parent (symmetric transfer).
struct when_all_runner {
  struct promise_type {
    when_all_counter* counter = nullptr;
    static void* operator new(std::size_t n) { return frame_allocator::allocate(n); }
    static void operator delete(void* p) noexcept { frame_allocator::deallocate(p); }
    when_all_runner get_return_object() noexcept {
      return {std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        auto* c = h.promise().counter;
        return --c->remaining == 0 ? c->parent : std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // when_ready() never throws
  };
  std::coroutine_handle<promise_type> h;
};

template <typename T>
when_all_runner make_runner(task<T>& t) {
  co_await t.when_ready();
}

/// Owns the runners; awaiting it starts them all and resumes when all are done.
struct when_all_group {
  when_all_counter counter{0, {}};
  std::vector<std::coroutine_handle<when_all_runner::promise_type>> runners;

  ~when_all_group() {
    for (auto h : runners) h.destroy();
  }
  void add(when_all_runner r) {
    r.h.promise().counter = &counter;
    runners.push_back(r.h);
  }
  bool await_ready() const noexcept { return runners.empty(); }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) {
    counter.remaining = runners.size();
    counter.parent = parent;
    // Start all but the last; each runs until its first suspension. The last
    // is started by symmetric transfer; whichever child finishes last resumes
    // the parent.
    for (std::size_t i = 0; i + 1 < runners.size(); ++i) runners[i].resume();
    return runners.back();
  }
  void await_resume() const noexcept {}
};

}  // namespace internal

/// Awaits every task (non-void results); returns a tuple of their results.
template <typename... T>
task<std::tuple<T...>> when_all(task<T>... tasks) {
  internal::when_all_group g;
  (g.add(internal::make_runner(tasks)), ...);
  co_await g;
  co_return std::tuple<T...>{tasks.result()...};
}

/// Awaits every task<void>.
inline task<void> when_all(std::vector<task<void>> tasks) {
  internal::when_all_group g;
  for (auto& t : tasks) g.add(internal::make_runner(t));
  co_await g;
  for (auto& t : tasks) t.result();
}

/// Awaits every task<T>; results in order.
template <typename T>
task<std::vector<T>> when_all(std::vector<task<T>> tasks) {
  internal::when_all_group g;
  for (auto& t : tasks) g.add(internal::make_runner(t));
  co_await g;
  std::vector<T> out;
  out.reserve(tasks.size());
  for (auto& t : tasks) out.push_back(t.result());
  co_return out;
}

}  // namespace machnet
