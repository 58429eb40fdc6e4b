// Tests of msg_gen's latency histogram: exact below 256, within 1/128 above,
// bucket bounds that tile the value range, percentiles as HdrHistogram
// reports them, merge / reset, and the extremes of the 64-bit range.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "histogram.hh"

using msg_gen::histogram;

TEST_CASE("values below 256 have a bucket each") {
  for (uint64_t v = 0; v < 256; ++v) {
    REQUIRE(histogram::bucket_of(v) == v);
    REQUIRE(histogram::lowest_in(v) == v);
    REQUIRE(histogram::highest_in(v) == v);
  }
}

TEST_CASE("buckets tile the whole 64-bit range in order") {
  REQUIRE(histogram::bucket_of(UINT64_MAX) == histogram::bucket_count - 1);
  REQUIRE(histogram::highest_in(histogram::bucket_count - 1) == UINT64_MAX);
  for (std::size_t b = 0; b + 1 < histogram::bucket_count; ++b) {
    INFO("bucket " << b);
    REQUIRE(histogram::lowest_in(b) <= histogram::highest_in(b));
    REQUIRE(histogram::highest_in(b) + 1 == histogram::lowest_in(b + 1));
    REQUIRE(histogram::bucket_of(histogram::lowest_in(b)) == b);
    REQUIRE(histogram::bucket_of(histogram::highest_in(b)) == b);
  }
}

TEST_CASE("each power-of-two range is split into 128 equal sub-buckets") {
  for (unsigned m = 8; m < 64; ++m) {
    const uint64_t lo = uint64_t(1) << m;
    const std::size_t first = histogram::bucket_of(lo);
    REQUIRE(histogram::lowest_in(first) == lo);
    REQUIRE(histogram::bucket_of(lo - 1) + 1 == first);
    const uint64_t width = lo / 128;
    for (std::size_t k = 0; k < 128; ++k)
      REQUIRE(histogram::highest_in(first + k) - histogram::lowest_in(first + k) + 1 == width);
  }
}

TEST_CASE("a value's bucket keeps it within 1/128 (two significant digits)") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const unsigned bits = unsigned(rng() % 64) + 1;
    const uint64_t v = bits == 64 ? rng() : rng() & ((uint64_t(1) << bits) - 1);
    const std::size_t b = histogram::bucket_of(v);
    const uint64_t lo = histogram::lowest_in(b), hi = histogram::highest_in(b);
    INFO("value " << v);
    REQUIRE(lo <= v);
    REQUIRE(v <= hi);
    REQUIRE(double(hi - lo) <= double(v) / 128.0);
  }
}

TEST_CASE("an empty histogram reports zeros") {
  histogram h;
  REQUIRE(h.empty());
  REQUIRE(h.count() == 0);
  REQUIRE(h.min() == 0);
  REQUIRE(h.max() == 0);
  REQUIRE(h.mean() == 0);
  REQUIRE(h.percentile(50) == 0);
  REQUIRE(h.percentile(100) == 0);
}

TEST_CASE("percentiles of 1..10000 are within the resolution of the exact ones") {
  histogram h;
  for (uint64_t v = 1; v <= 10000; ++v) h.record(v);
  REQUIRE(h.count() == 10000);
  REQUIRE(h.min() == 1);
  REQUIRE(h.max() == 10000);
  REQUIRE(h.mean() == Approx(5000.5));
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
    const uint64_t exact = uint64_t(p * 100 + 0.5);
    const uint64_t got = h.percentile(p);
    INFO("p" << p << ": exact " << exact << " got " << got);
    // The bucket's highest value: never below the exact one, at most 1/128 above.
    REQUIRE(got >= exact);
    REQUIRE(double(got - exact) <= double(exact) / 128.0);
  }
  REQUIRE(h.percentile(100) == 10000);
  REQUIRE(h.percentile(0) == 1);
}

TEST_CASE("percentiles follow HdrHistogram: the k-th smallest, k = p% of count rounded") {
  histogram h;
  // 990 samples of 100 ns, 9 of 5000 ns, one of 1'000'000 ns.
  h.record(100, 990);
  h.record(5000, 9);
  h.record(1'000'000);
  REQUIRE(h.count() == 1000);
  REQUIRE(h.percentile(50) == 100);
  REQUIRE(h.percentile(99) == 100);    // the 990th sample
  REQUIRE(h.percentile(99.1) == histogram::highest_in(histogram::bucket_of(5000)));
  REQUIRE(h.percentile(99.9) == histogram::highest_in(histogram::bucket_of(5000)));
  REQUIRE(h.percentile(99.99) == 1'000'000);  // capped at the exact max
  REQUIRE(h.percentile(100) == 1'000'000);
  // Out-of-range arguments are clamped.
  REQUIRE(h.percentile(250) == 1'000'000);
  REQUIRE(h.percentile(-5) == 100);
}

TEST_CASE("percentiles never exceed the max nor fall below the min") {
  std::mt19937_64 rng(11);
  histogram h;
  std::vector<uint64_t> vals;
  for (int i = 0; i < 5000; ++i) {
    uint64_t v = 20'000 + rng() % 3'000'000;
    vals.push_back(v);
    h.record(v);
  }
  std::sort(vals.begin(), vals.end());
  REQUIRE(h.min() == vals.front());
  REQUIRE(h.max() == vals.back());
  for (double p = 0; p <= 100; p += 0.5) {
    const uint64_t got = h.percentile(p);
    REQUIRE(got >= h.min());
    REQUIRE(got <= h.max());
    std::size_t k = std::clamp<std::size_t>(std::size_t(p / 100 * 5000 + 0.5), 1, 5000);
    const uint64_t exact = vals[k - 1];
    REQUIRE(histogram::bucket_of(got) == histogram::bucket_of(exact));
  }
}

TEST_CASE("merge adds counts; reset empties") {
  histogram a, b, both;
  for (uint64_t v = 0; v < 1000; ++v) {
    a.record(v * 3);
    both.record(v * 3);
  }
  for (uint64_t v = 0; v < 500; ++v) {
    b.record(100'000 + v * 7);
    both.record(100'000 + v * 7);
  }
  a.merge(b);
  REQUIRE(a.count() == both.count());
  REQUIRE(a.min() == both.min());
  REQUIRE(a.max() == both.max());
  REQUIRE(a.mean() == Approx(both.mean()));
  for (double p : {10.0, 50.0, 66.0, 67.0, 90.0, 99.0})
    REQUIRE(a.percentile(p) == both.percentile(p));
  histogram empty;
  a.merge(empty);
  REQUIRE(a.count() == both.count());
  REQUIRE(a.min() == both.min());
  a.reset();
  REQUIRE(a.empty());
  REQUIRE(a.max() == 0);
  REQUIRE(a.percentile(99) == 0);
  a.record(42);
  REQUIRE(a.min() == 42);
  REQUIRE(a.max() == 42);
  REQUIRE(a.percentile(50) == 42);
}

TEST_CASE("extreme values are counted without overflow") {
  histogram h;
  h.record(UINT64_MAX);
  h.record(UINT64_MAX);
  h.record(0);
  REQUIRE(h.count() == 3);
  REQUIRE(h.max() == UINT64_MAX);
  REQUIRE(h.min() == 0);
  REQUIRE(h.percentile(100) == UINT64_MAX);
  REQUIRE(h.percentile(10) == 0);
  REQUIRE(h.mean() == Approx(double(UINT64_MAX) * 2 / 3));
  h.record(5, 0);  // a zero count records nothing
  REQUIRE(h.count() == 3);
}
