// Tests of smp: shards on threads, submit_to chains across shards, exceptions,
// waking a sleeping shard, clean shutdown with calls in flight.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>

#include "machnet/runtime/smp.hh"
#include "machnet/runtime/when_all.hh"

using namespace machnet;
using namespace std::chrono_literals;

namespace {
std::vector<reactor_config> shards(unsigned n, poll_mode m = poll_mode::adaptive) {
  reactor_config c;
  c.mode = m;
  c.idle_poll_us = 50;
  return std::vector<reactor_config>(n, c);
}

// Walks the ring of shards `hops` times, checking each hop runs where it should.
task<unsigned> hop(unsigned hops, unsigned expected_shard) {
  REQUIRE(this_shard().shard_id() == expected_shard);
  if (hops == 0) co_return 0;
  unsigned next = (expected_shard + 1) % smp::count();
  co_return 1 + co_await submit_to(next, [=] { return hop(hops - 1, next); });
}
}  // namespace

TEST_CASE("a task chain across shards returns to its origin with the result") {
  for (unsigned n : {1u, 2u, 3u}) {
    smp s(shards(n));
    int rc = s.run([]() -> task<int> {
      unsigned got = co_await hop(300, 0);
      co_return got == 300 ? 0 : 1;
    });
    REQUIRE(rc == 0);
  }
}

TEST_CASE("submit_to returns values, runs void functions, propagates exceptions") {
  smp s(shards(2));
  std::atomic<unsigned> ran_on{99};
  int rc = s.run([&]() -> task<int> {
    int v = co_await submit_to(1, [] { return int(this_shard().shard_id()) * 10 + 5; });
    REQUIRE(v == 15);
    co_await submit_to(1, [&] { ran_on = this_shard().shard_id(); });
    REQUIRE(ran_on == 1);
    bool caught = false;
    try {
      co_await submit_to(1, []() -> int { throw std::runtime_error("remote failure"); });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "remote failure";
    }
    REQUIRE(caught);
    // A remote coroutine that suspends (sleeps) before answering.
    auto s2 = co_await submit_to(1, []() -> task<std::string> {
      co_await sleep(1ms);
      co_return std::string("slept on ") + std::to_string(this_shard().shard_id());
    });
    REQUIRE(s2 == "slept on 1");
    co_return 0;
  });
  REQUIRE(rc == 0);
}

TEST_CASE("many concurrent calls to a sleeping shard all complete") {
  smp s(shards(2, poll_mode::sleep));
  int rc = s.run([]() -> task<int> {
    for (int round = 0; round < 20; ++round) {
      co_await sleep(1ms);  // let shard 1 fall asleep
      std::vector<task<int>> calls;
      for (int i = 0; i < 100; ++i)
        calls.push_back([](int i) -> task<int> { co_return co_await submit_to(1, [i] { return i; }); }(i));
      auto r = co_await when_all(std::move(calls));
      for (int i = 0; i < 100; ++i) REQUIRE(r[i] == i);
    }
    co_return 0;
  });
  REQUIRE(rc == 0);
  REQUIRE(s.shard(1).stats().wakeups > 0);
}

TEST_CASE("more calls in flight than a ring holds are staged, not lost") {
  smp s(shards(2, poll_mode::busy));
  int rc = s.run([]() -> task<int> {
    constexpr int n = int(smp::ring_capacity) * 3;
    std::vector<task<int>> calls;
    for (int i = 0; i < n; ++i)
      calls.push_back([](int i) -> task<int> { co_return co_await submit_to(1, [i] { return i; }); }(i));
    auto r = co_await when_all(std::move(calls));
    long sum = 0;
    for (int v : r) sum += v;
    co_return sum == long(n) * (n - 1) / 2 ? 0 : 1;
  });
  REQUIRE(rc == 0);
}

TEST_CASE("stopping with a remote call still suspended abandons it cleanly") {
  smp s(shards(2));
  int rc = s.run([]() -> task<int> {
    this_shard().spawn([]() -> task<void> {
      co_await submit_to(1, []() -> task<int> {
        co_await sleep(std::chrono::hours(1));
        co_return 1;
      });
    });
    co_await sleep(5ms);
    co_return 4;
  });
  REQUIRE(rc == 4);
}

TEST_CASE("a main task that throws anything ends run() with code 1 instead of hanging") {
  struct not_std {};
  smp s(shards(2));
  int rc = s.run([]() -> task<int> {
    co_await submit_to(1, [] { return 0; });
    throw not_std{};
  });
  REQUIRE(rc == 1);
}

namespace {
// Counts live instances: a double destruction drives it negative.
struct tracked {
  static inline std::atomic<int> live{0}, destroyed_empty{0};
  bool owns = true;
  tracked() { ++live; }
  tracked(tracked&& o) noexcept : owns(o.owns) { o.owns = false; ++live; }
  tracked(const tracked&) = delete;
  ~tracked() { --live; }
};
}  // namespace

TEST_CASE("owning captures handed to submit_to are destroyed exactly once (named-lambda rule)") {
  // The machnetd double free: a spawned coroutine lambda owning a move-only
  // capture hands it to a submit_to lambda written as a prvalue inside the
  // co_await, which GCC 12 duplicates. The documented pattern (name the
  // lambda, move it in) must construct and destroy every object in pairs.
  tracked::live = 0;
  std::atomic<int> delivered{0};
  {
    smp s(shards(2));
    int rc = s.run([&]() -> task<int> {
      for (int i = 0; i < 100; ++i) {
        tracked t;
        reactor::local().spawn([&delivered, t = std::move(t)]() mutable -> task<void> {
          auto hop = [&delivered, t = std::move(t)]() mutable {
            tracked mine = std::move(t);
            delivered += mine.owns ? 1 : 0;
          };
          co_await submit_to(1, std::move(hop));
        });
      }
      while (delivered < 100) co_await yield{};
      for (int i = 0; i < 10; ++i) co_await yield{};
      co_return 0;
    });
    REQUIRE(rc == 0);
  }
  CHECK(delivered == 100);
  CHECK(tracked::live == 0);
}
