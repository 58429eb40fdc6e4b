// condition: a shard-local wait queue for coroutines — co_await c.wait()
// suspends until notify_one/notify_all (or the optional deadline); the
// building block of the awaitable flow API. One shard only, no locks.
#pragma once

#include <coroutine>
#include <cstdint>
#include <deque>

#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/timer.hh"

namespace machnet {

class condition {
 public:
  condition() = default;
  condition(const condition&) = delete;
  condition& operator=(const condition&) = delete;
  /// Waiters still queued are resumed (they must re-check their predicate).
  ~condition() { notify_all(); }

  struct awaiter {
    condition& c;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { c._waiters.push_back(h); }
    void await_resume() const noexcept {}
  };
  /// Suspends until notified. Spurious wake-ups are possible: loop on a predicate.
  awaiter wait() noexcept { return awaiter{*this}; }

  void notify_one() {
    if (_waiters.empty()) return;
    auto h = _waiters.front();
    _waiters.pop_front();
    reactor::local().schedule(h);
  }
  void notify_all() {
    while (!_waiters.empty()) notify_one();
  }
  bool has_waiters() const noexcept { return !_waiters.empty(); }

 private:
  std::deque<std::coroutine_handle<>> _waiters;
};

}  // namespace machnet
