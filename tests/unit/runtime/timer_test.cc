// Tests of the timer wheel: order, exactness, cancel, re-arm, long jumps.
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "machnet/runtime/timer.hh"

using machnet::timer;
using machnet::timer_wheel;

namespace {
struct fired_log {
  std::vector<std::pair<uint64_t, int>> events;  // (wheel time at fire, id)
};
}  // namespace

TEST_CASE("timers fire in deadline order, each exactly once, never early or late") {
  std::mt19937_64 rng(GENERATE(1, 2, 3, 42));
  const uint64_t start = rng() % (uint64_t(1) << 40);
  timer_wheel w(start);
  constexpr int n = 2000;
  std::vector<std::unique_ptr<timer>> timers;
  std::vector<uint64_t> deadline(n);
  std::vector<int> fired_at_step(n, -1);
  uint64_t now = start;
  std::vector<int> order;
  for (int i = 0; i < n; ++i) {
    // Deadlines spread over several wheel levels: µs to ~100 s.
    uint64_t span = uint64_t(1) << (rng() % 27);
    deadline[i] = start + rng() % span;
    timers.push_back(std::make_unique<timer>([&, i] {
      CHECK(deadline[i] <= now);
      order.push_back(i);
    }));
    timers.back()->arm_at(w, deadline[i]);
  }
  REQUIRE(w.size() == n);
  uint64_t last_now = now;
  while (!w.empty()) {
    uint64_t next = w.next_deadline();
    REQUIRE(next >= last_now);
    now += 1 + rng() % 5000;
    w.advance(now);
    // Nothing due at or before `now` may remain.
    for (int i = 0; i < n; ++i)
      if (timers[i]->armed()) REQUIRE(deadline[i] > now);
    last_now = now;
  }
  REQUIRE(order.size() == n);
  for (std::size_t k = 1; k < order.size(); ++k)
    REQUIRE(deadline[order[k - 1]] <= deadline[order[k]]);
}

TEST_CASE("equal deadlines fire in arm order") {
  timer_wheel w(1000);
  std::vector<int> order;
  std::vector<std::unique_ptr<timer>> ts;
  for (int i = 0; i < 10; ++i) {
    ts.push_back(std::make_unique<timer>([&order, i] { order.push_back(i); }));
    ts.back()->arm_at(w, 5000);
  }
  w.advance(4999);
  REQUIRE(order.empty());
  w.advance(5000);
  REQUIRE(order == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
}

TEST_CASE("cancelled timers never fire; re-armed timers fire once at the new deadline") {
  std::mt19937_64 rng(7);
  timer_wheel w(0);
  constexpr int n = 1000;
  std::vector<int> fires(n, 0);
  std::vector<uint64_t> deadline(n);
  std::vector<std::unique_ptr<timer>> ts;
  uint64_t now = 0;
  for (int i = 0; i < n; ++i) {
    ts.push_back(std::make_unique<timer>([&, i] {
      ++fires[i];
      CHECK(deadline[i] <= now);
    }));
    deadline[i] = rng() % 1'000'000;
    ts.back()->arm_at(w, deadline[i]);
  }
  // Cancel every third, re-arm every third (later or earlier), keep the rest.
  for (int i = 0; i < n; ++i) {
    if (i % 3 == 0) ts[i]->cancel();
    if (i % 3 == 1) {
      deadline[i] = rng() % 2'000'000;
      ts[i]->arm_at(w, deadline[i]);
    }
  }
  while (!w.empty()) {
    now += 777;
    w.advance(now);
  }
  for (int i = 0; i < n; ++i) REQUIRE(fires[i] == (i % 3 == 0 ? 0 : 1));
}

TEST_CASE("a callback may cancel a timer due in the same tick, and re-arm itself") {
  timer_wheel w(0);
  int a_fired = 0, b_fired = 0, c_fired = 0;
  timer b([&] { ++b_fired; });
  timer c;
  timer a([&] {
    ++a_fired;
    b.cancel();
    if (a_fired < 5) a.arm_at(w, w.current_us());  // zero delay: next tick, not a loop
  });
  c.set_callback([&] { ++c_fired; });
  a.arm_at(w, 100);
  b.arm_at(w, 100);
  c.arm_at(w, 100);
  REQUIRE(w.advance(100) == 2);  // a and c; b was cancelled by a
  REQUIRE(a_fired == 1);
  REQUIRE(b_fired == 0);
  REQUIRE(c_fired == 1);
  w.advance(1000);
  REQUIRE(a_fired == 5);
}

TEST_CASE("deadlines in the past fire at the next advance; far ones survive long jumps") {
  timer_wheel w(1'000'000);
  int past = 0, far = 0;
  timer tp([&] { ++past; });
  timer tf([&] { ++far; });
  tp.arm_at(w, 5);  // already passed
  const uint64_t far_deadline = 1'000'000 + (uint64_t(1) << 40);
  tf.arm_at(w, far_deadline);
  w.advance(1'000'000);
  REQUIRE(past == 1);
  w.advance(far_deadline - 1);
  REQUIRE(far == 0);
  REQUIRE(w.next_deadline() <= far_deadline);
  w.advance(far_deadline);
  REQUIRE(far == 1);
  REQUIRE(w.empty());
}

TEST_CASE("destroying an armed timer removes it from the wheel") {
  timer_wheel w(0);
  {
    timer t([] { FAIL("destroyed timer fired"); });
    t.arm_at(w, 10);
    REQUIRE(w.size() == 1);
  }
  REQUIRE(w.empty());
  w.advance(100);
}

TEST_CASE("interleaved arm, re-arm, cancel and advance: every timer fires on its tick") {
  // The reactor's pattern: advance() only while the wheel is non-empty (so its
  // clock goes stale when idle), timers re-armed relative to the real clock.
  std::mt19937_64 rng(GENERATE(5, 6, 7, 8));
  uint64_t clock = 1'000'000 + rng() % 100'000;
  timer_wheel w(clock);
  constexpr int n = 8;
  std::vector<std::unique_ptr<timer>> ts;
  std::vector<uint64_t> deadline(n, 0);
  uint64_t late = 0, early = 0, fired = 0;
  uint64_t prev_advance = 0;  // a timer due by then should have fired then
  for (int i = 0; i < n; ++i)
    ts.push_back(std::make_unique<timer>([&, i] {
      ++fired;
      if (clock < deadline[i]) ++early;
      if (deadline[i] <= prev_advance) ++late;
    }));
  for (int step = 0; step < 200'000; ++step) {
    // Time moves: mostly a few µs, sometimes a long idle gap.
    clock += (rng() % 100 == 0) ? rng() % 20'000 : rng() % 4;
    int i = int(rng() % n);
    switch (rng() % 4) {
      case 0:
      case 1:
        deadline[i] = clock + 1 + rng() % 600;
        ts[i]->arm_at(w, deadline[i]);
        break;
      case 2:
        ts[i]->cancel();
        break;
      default:
        break;
    }
    if (!w.empty()) {
      w.advance(clock);
      prev_advance = clock;
    }
  }
  INFO("fired " << fired << " late " << late << " early " << early);
  REQUIRE(fired > 1000);
  REQUIRE(early == 0);
  REQUIRE(late == 0);
}
