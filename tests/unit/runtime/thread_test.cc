// Tests of machnet::thread: fibers interleaving with coroutines, blocking on
// runtime awaitables, results and exceptions, unwinding at shutdown.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/smp.hh"
#include "machnet/runtime/thread.hh"

using namespace machnet;
using namespace std::chrono_literals;

TEST_CASE("fibers and coroutines interleave on one shard") {
  reactor r(0, {poll_mode::sleep, 0, 500, -1});
  std::vector<std::string> log;
  r.spawn([&]() -> task<void> {
    machnet::thread a([&] {
      for (int i = 0; i < 50; ++i) {
        log.push_back("fiber");
        if (i % 2) machnet::thread_yield();
        else machnet::await(sleep_for(0));  // a timer-driven block, then a plain yield
      }
    });
    for (int i = 0; i < 50; ++i) {
      log.push_back("coro");
      co_await yield{};
    }
    co_await a.join();
    reactor::local().stop();
  });
  r.run();
  REQUIRE(log.size() == 100);
  // Both made progress while the other was blocked: neither ran to completion
  // before the other started.
  auto first_fiber = std::find(log.begin(), log.end(), "fiber") - log.begin();
  auto last_coro = std::find(log.rbegin(), log.rend(), "coro").base() - log.begin();
  auto first_coro = std::find(log.begin(), log.end(), "coro") - log.begin();
  auto last_fiber = std::find(log.rbegin(), log.rend(), "fiber").base() - log.begin();
  REQUIRE(first_fiber < last_coro - 1);
  REQUIRE(first_coro < last_fiber - 1);
}

TEST_CASE("a fiber gets results of tasks it awaits, and their exceptions") {
  reactor r(0, {poll_mode::sleep, 0, 500, -1});
  int got = 0;
  std::string caught;
  r.spawn([&]() -> task<void> {
    machnet::thread f([&] {
      got = machnet::await([]() -> task<int> {
        co_await sleep_for(100);
        co_return 42;
      }());
      try {
        machnet::await([]() -> task<void> {
          co_await yield{};
          throw std::runtime_error("inner");
        }());
      } catch (const std::runtime_error& e) {
        caught = e.what();
      }
    });
    co_await f.join();
    reactor::local().stop();
  });
  r.run();
  REQUIRE(got == 42);
  REQUIRE(caught == "inner");
}

TEST_CASE("join rethrows what escaped the fiber") {
  reactor r(0, {poll_mode::sleep, 0, 500, -1});
  bool rethrown = false;
  r.spawn([&]() -> task<void> {
    machnet::thread f([] { throw std::logic_error("escaped"); });
    try {
      co_await f.join();
    } catch (const std::logic_error&) {
      rethrown = true;
    }
    reactor::local().stop();
  });
  r.run();
  REQUIRE(rethrown);
}

TEST_CASE("many fibers yield round-robin with coroutines") {
  reactor r(0, {poll_mode::busy, 0, 500, -1});
  std::vector<int> order;
  r.spawn([&]() -> task<void> {
    std::vector<machnet::thread> fibers;
    for (int id = 0; id < 4; ++id)
      fibers.emplace_back([&order, id] {
        for (int k = 0; k < 3; ++k) {
          order.push_back(id);
          machnet::thread_yield();
        }
      });
    for (auto& f : fibers) co_await f.join();
    reactor::local().stop();
  });
  r.run();
  REQUIRE(order == std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3});
}

TEST_CASE("a fiber blocked at shutdown is unwound (its destructors run)") {
  int destroyed = 0;
  struct guard {
    int* n;
    ~guard() { ++*n; }
  };
  {
    reactor r(0, {poll_mode::sleep, 0, 500, -1});
    r.spawn([&]() -> task<void> {
      machnet::thread f([&] {
        guard g{&destroyed};
        machnet::await(sleep(std::chrono::hours(1)));
      });
      co_await sleep_for(1000);
      reactor::local().stop();
    });
    r.run();
    REQUIRE(destroyed == 0);
  }
  REQUIRE(destroyed == 1);
}

TEST_CASE("a fiber can call into another shard") {
  smp s(std::vector<reactor_config>(2));
  int rc = s.run([]() -> task<int> {
    unsigned where = 99;
    machnet::thread f([&] {
      where = machnet::await(submit_to(1, [] { return this_shard().shard_id(); }));
    });
    co_await f.join();
    co_return where == 1 ? 0 : 1;
  });
  REQUIRE(rc == 0);
}

TEST_CASE("await outside a fiber is an error") {
  REQUIRE_THROWS_AS(machnet::await(yield{}), std::logic_error);
}
