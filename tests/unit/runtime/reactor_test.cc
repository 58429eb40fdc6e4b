// Tests of the reactor loop: scheduling, timers on the loop, idle sleep,
// wake-ups from other threads, pollers, clean abandon on shutdown.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <thread>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/smp.hh"

using namespace machnet;
using namespace std::chrono_literals;

namespace {
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}
// A poller that only counts its polls.
struct counting : pollfn {
  int polls = 0;
  bool poll() override {
    ++polls;
    return false;
  }
  bool pure_poll() override { return false; }
};

double wall_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}
}  // namespace

TEST_CASE("spawned tasks run; sleep resumes after the delay; stop ends run()") {
  reactor r(0, {});
  std::vector<int> order;
  uint64_t slept_us = 0;
  r.spawn([&]() -> task<void> {
    order.push_back(1);
    uint64_t t0 = now_us();
    co_await sleep(2ms);
    slept_us = now_us() - t0;
    order.push_back(3);
    reactor::local().stop(7);
  });
  r.spawn([&]() -> task<void> {
    order.push_back(2);
    co_return;
  });
  REQUIRE(r.run() == 7);
  REQUIRE(order == std::vector<int>{1, 2, 3});
  REQUIRE(slept_us >= 2000);
}

TEST_CASE("timers on the loop fire in deadline order") {
  reactor r(0, {poll_mode::sleep, 0, 500, -1});
  std::vector<int> order;
  for (int i : {5, 1, 4, 2, 3}) {
    r.spawn([&order, i]() -> task<void> {
      co_await sleep_for(uint64_t(i) * 1000);
      order.push_back(i);
      if (order.size() == 5) reactor::local().stop();
    });
  }
  r.run();
  REQUIRE(order == std::vector<int>{1, 2, 3, 4, 5});
}

TEST_CASE("an idle adaptive shard sleeps (near-zero CPU) and wakes for timers") {
  reactor_config cfg;
  cfg.mode = poll_mode::adaptive;
  cfg.idle_poll_us = 100;
  reactor r(0, cfg);
  double cpu = 0, wall = 0;
  r.spawn([&]() -> task<void> {
    double c0 = thread_cpu_seconds(), w0 = wall_seconds();
    for (int i = 0; i < 10; ++i) co_await sleep(30ms);
    cpu = thread_cpu_seconds() - c0;
    wall = wall_seconds() - w0;
    reactor::local().stop();
  });
  r.run();
  REQUIRE(wall >= 0.3);
  CHECK(r.stats().sleeps >= 10);
  // Busy polling would burn ~100 %; allow generous slack for a loaded machine.
  REQUIRE(cpu < 0.1 * wall);
}

TEST_CASE("a busy shard never sleeps") {
  reactor r(0, {poll_mode::busy, 0, 500, -1});
  r.spawn([&]() -> task<void> {
    co_await sleep(20ms);
    reactor::local().stop();
  });
  r.run();
  REQUIRE(r.stats().sleeps == 0);
}

TEST_CASE("a sleeping shard is woken by another thread's stop() and wake()") {
  reactor r(0, {poll_mode::sleep, 0, 500, -1});
  std::thread t([&] {
    while (!r.sleeping()) std::this_thread::sleep_for(1ms);
    r.stop(3);
  });
  REQUIRE(r.run() == 3);
  t.join();
  REQUIRE(r.stats().sleeps >= 1);
}

TEST_CASE("pollers run every turn and can veto sleeping") {
  struct vetoing : counting {
    bool veto = false;
    bool try_enter_interrupt_mode() override { return !veto; }
  };
  vetoing p;
  p.veto = true;
  reactor r(0, {poll_mode::sleep, 0, 500, -1});
  r.register_poller(&p);
  r.spawn([&]() -> task<void> {
    co_await sleep(5ms);
    reactor::local().stop();
  });
  r.run();
  REQUIRE(p.polls > 10);
  REQUIRE(r.stats().sleeps == 0);
  r.unregister_poller(&p);
}

TEST_CASE("tasks still suspended at shutdown are destroyed, not leaked or resumed") {
  int destroyed = 0;
  struct guard {
    int* n;
    ~guard() { ++*n; }
  };
  {
    reactor r(0, {poll_mode::sleep, 0, 500, -1});
    for (int i = 0; i < 3; ++i)
      r.spawn([](int* d) -> task<void> {
        guard g{d};
        co_await sleep(std::chrono::hours(1));
      }(&destroyed));
    r.spawn([]() -> task<void> {
      co_await sleep(1ms);
      reactor::local().stop();
    });
    r.run();
    REQUIRE(destroyed == 0);
  }
  REQUIRE(destroyed == 3);
}

TEST_CASE("the task quota lets pollers run between long runs of ready tasks") {
  counting p;
  reactor r(0, {poll_mode::busy, 0, 50, -1});
  r.register_poller(&p);
  int polls_seen_during_spin = 0;
  r.spawn([&]() -> task<void> {
    // ~20 ms of yields; each yield is a ready task.
    uint64_t end = now_us() + 20'000;
    int before = p.polls;
    while (now_us() < end) co_await yield{};
    polls_seen_during_spin = p.polls - before;
    reactor::local().stop();
  });
  r.run();
  REQUIRE(polls_seen_during_spin > 10);
  r.unregister_poller(&p);
}

TEST_CASE("yield lets the pollers run before the yielding task resumes") {
  counting p;
  // A quota far longer than the test: only yield's semantics can give pollers a turn.
  reactor r(0, {poll_mode::busy, 0, 10'000'000, -1});
  r.register_poller(&p);
  int missed = 0;
  r.spawn([&]() -> task<void> {
    for (int i = 0; i < 1000; ++i) {
      int before = p.polls;
      co_await yield{};
      if (p.polls == before) ++missed;
    }
    reactor::local().stop();
  });
  r.run();
  REQUIRE(missed == 0);
  r.unregister_poller(&p);
}
