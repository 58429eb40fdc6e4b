// Tests of the TSC clock: conversions stay exact enough over long uptimes,
// and microseconds and nanoseconds agree (timers and the transport use both).
#include <catch2/catch.hpp>

#include "machnet/runtime/clock.hh"

using machnet::tsc_clock;

TEST_CASE("conversions stay within a few ns of exact after days of ticks") {
  for (uint64_t hz : {1'000'000'000ull, 2'095'078'000ull, 2'999'999'999ull, 3'700'000'001ull}) {
    auto c = tsc_clock::with_hz(hz);
    for (uint64_t secs : {1ull, 3600ull, 86'400ull, 7 * 86'400ull}) {
      uint64_t ticks = hz * secs + 12345;
      auto exact_ns = static_cast<uint64_t>((static_cast<unsigned __int128>(ticks) * 1'000'000'000ull) / hz);
      INFO("hz " << hz << " after " << secs << " s");
      uint64_t ns = c.to_ns(ticks);
      REQUIRE((ns > exact_ns ? ns - exact_ns : exact_ns - ns) <= 2);
      // Microseconds are the same clock: the timer wheel (µs) and the
      // transport's deadlines (ns) must not drift apart.
      REQUIRE(c.to_us(ticks) == ns / 1000);
      uint64_t back = c.from_ns(ns);
      REQUIRE((back > ticks ? back - ticks : ticks - back) <= 4);
    }
  }
}

TEST_CASE("the calibrated clock agrees with itself in ns and us") {
  const auto& c = tsc_clock::get();
  REQUIRE(c.hz() > 0);
  uint64_t t = machnet::rdtsc();
  REQUIRE(c.to_us(t) == c.to_ns(t) / 1000);
}
