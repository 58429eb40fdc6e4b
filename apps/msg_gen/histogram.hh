// histogram: a log-linear latency histogram (HdrHistogram-style, 2
// significant digits) — values below 256 are exact, every power-of-two range
// above is split into 128 linear sub-buckets, so a value is kept within
// 1/128 (< 0.8 %) of itself; min, max and the sum are exact.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace msg_gen {

class histogram {
 public:
  /// Sub-buckets per power-of-two range (2^sub_bits).
  static constexpr unsigned sub_bits = 7;
  static constexpr uint64_t sub_count = uint64_t(1) << sub_bits;
  /// Values below this are counted exactly (one bucket per value).
  static constexpr uint64_t exact_limit = 2 * sub_count;
  /// Buckets: the exact range, then 128 per power of two up to 2^64.
  static constexpr std::size_t bucket_count = exact_limit + (64 - (sub_bits + 1)) * sub_count;

  /// Counts `value` `n` times.
  void record(uint64_t value, uint64_t n = 1) noexcept;
  /// Adds another histogram's counts.
  void merge(const histogram& o) noexcept;
  void reset() noexcept;

  uint64_t count() const noexcept { return _count; }
  bool empty() const noexcept { return _count == 0; }
  /// Exact smallest / largest value recorded (0 when empty).
  uint64_t min() const noexcept { return _count ? _min : 0; }
  uint64_t max() const noexcept { return _max; }
  /// Exact mean (0 when empty).
  double mean() const noexcept;

  /// The value at percentile `p` (0..100): the highest value of the bucket
  /// holding the k-th smallest sample, k = p% of count rounded (at least 1),
  /// capped at max() — as HdrHistogram's value_at_percentile. 0 when empty.
  uint64_t percentile(double p) const noexcept;

  /// The bucket of a value, and a bucket's value range [lowest, highest].
  static std::size_t bucket_of(uint64_t value) noexcept;
  static uint64_t lowest_in(std::size_t bucket) noexcept;
  static uint64_t highest_in(std::size_t bucket) noexcept;

 private:
  std::array<uint64_t, bucket_count> _counts{};
  uint64_t _count = 0;
  uint64_t _min = UINT64_MAX;
  uint64_t _max = 0;
  unsigned __int128 _sum = 0;
};

}  // namespace msg_gen
