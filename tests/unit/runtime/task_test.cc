// Tests of task<T> and when_all: chains, values, exceptions, laziness, frames.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

#include "machnet/runtime/task.hh"
#include "machnet/runtime/when_all.hh"

using machnet::task;

namespace {

// Drives a task to completion without a reactor (everything here completes
// synchronously or via the manual `gate` below).
template <typename T>
T run_sync(task<T> t) {
  auto h = t.handle();
  h.resume();
  REQUIRE(t.done());
  return t.result();
}

task<int> leaf(int v) { co_return v; }
task<int> chain(int depth) {
  if (depth == 0) co_return 0;
  co_return 1 + co_await chain(depth - 1);
}
task<int> thrower() {
  throw std::runtime_error("boom");
  co_return 0;
}
task<std::string> catcher() {
  try {
    co_await thrower();
  } catch (const std::runtime_error& e) {
    co_return std::string("caught ") + e.what();
  }
  co_return "not caught";
}

// A manual event: coroutines wait on it; set() resumes them.
struct gate {
  std::vector<std::coroutine_handle<>> waiters;
  bool open = false;
  auto wait() {
    struct aw {
      gate& g;
      bool await_ready() const noexcept { return g.open; }
      void await_suspend(std::coroutine_handle<> h) { g.waiters.push_back(h); }
      void await_resume() const noexcept {}
    };
    return aw{*this};
  }
  void set() {
    open = true;
    auto w = std::move(waiters);
    for (auto h : w) h.resume();
  }
};

}  // namespace

// Coroutine lambdas take what they use as parameters: a capture lives in the
// closure object, which is gone by the time a lazy task runs.
TEST_CASE("tasks are lazy and return values through awaits") {
  bool started = false;
  auto t = [](bool* s) -> task<int> {
    *s = true;
    co_return co_await leaf(41) + 1;
  }(&started);
  REQUIRE_FALSE(started);
  REQUIRE(run_sync(std::move(t)) == 42);
}

TEST_CASE("deep chains use symmetric transfer (no stack overflow)") {
#if defined(__SANITIZE_ADDRESS__)
  constexpr int depth = 10'000;  // ASan frames defeat the tail call; still checks the chain
#else
  constexpr int depth = 1'000'000;  // ~100 MB of stack if each resume nested
#endif
  REQUIRE(run_sync(chain(depth)) == depth);
}

TEST_CASE("exceptions propagate to the awaiter") {
  REQUIRE(run_sync(catcher()) == "caught boom");
  REQUIRE_THROWS_AS(run_sync(thrower()), std::runtime_error);
}

TEST_CASE("destroying a suspended task destroys its frame and children") {
  gate g;
  int alive = 0;
  struct guard {
    int& n;
    explicit guard(int& c) : n(c) { ++n; }
    ~guard() { --n; }
  };
  {
    auto child = [](int* n, gate* g) -> task<void> {
      guard gd(*n);
      co_await g->wait();
    };
    auto parent = [](int* n, gate* g, decltype(child) c) -> task<void> {
      guard gd(*n);
      co_await c(n, g);
    }(&alive, &g, child);
    parent.handle().resume();
    REQUIRE(alive == 2);
    g.waiters.clear();  // abandon: nobody will resume it
  }
  REQUIRE(alive == 0);
}

TEST_CASE("when_all awaits all, keeps order, rethrows after all finished") {
  gate g;
  int finished = 0;
  auto slow = [](gate* g, int* finished, int v) -> task<int> {
    co_await g->wait();
    ++*finished;
    co_return v;
  };
  auto all = machnet::when_all(slow(&g, &finished, 1), leaf(2), slow(&g, &finished, 3));
  all.handle().resume();
  REQUIRE_FALSE(all.done());
  g.set();
  REQUIRE(all.done());
  auto [a, b, c] = all.result();
  REQUIRE(a == 1);
  REQUIRE(b == 2);
  REQUIRE(c == 3);
  REQUIRE(finished == 2);

  std::vector<task<int>> v;
  v.push_back(leaf(5));
  v.push_back(thrower());
  v.push_back(leaf(7));
  auto failing = machnet::when_all(std::move(v));
  failing.handle().resume();
  REQUIRE(failing.done());
  REQUIRE_THROWS_AS(failing.result(), std::runtime_error);
}

TEST_CASE("when_all over task<void> and over an empty set") {
  int n = 0;
  std::vector<task<void>> v;
  for (int i = 0; i < 5; ++i) v.push_back([](int* n) -> task<void> {
    ++*n;
    co_return;
  }(&n));
  run_sync(machnet::when_all(std::move(v)));
  REQUIRE(n == 5);
  REQUIRE(run_sync(machnet::when_all(std::vector<task<int>>{})).empty());
}
