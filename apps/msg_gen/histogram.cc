// histogram: bucket arithmetic, recording, merging and percentile walks.
#include "histogram.hh"

#include <algorithm>
#include <bit>
#include <cmath>

namespace msg_gen {

std::size_t histogram::bucket_of(uint64_t value) noexcept {
  if (value < exact_limit) return std::size_t(value);
  const unsigned msb = unsigned(std::bit_width(value)) - 1;  // >= sub_bits + 1
  const unsigned shift = msb - sub_bits;
  const uint64_t sub = (value >> shift) - sub_count;  // 0 .. sub_count - 1
  return std::size_t(exact_limit + uint64_t(msb - (sub_bits + 1)) * sub_count + sub);
}

uint64_t histogram::lowest_in(std::size_t bucket) noexcept {
  if (bucket < exact_limit) return bucket;
  const uint64_t i = bucket - exact_limit;
  const unsigned msb = unsigned(i / sub_count) + sub_bits + 1;
  return (sub_count + i % sub_count) << (msb - sub_bits);
}

uint64_t histogram::highest_in(std::size_t bucket) noexcept {
  if (bucket < exact_limit) return bucket;
  const unsigned msb = unsigned((bucket - exact_limit) / sub_count) + sub_bits + 1;
  return lowest_in(bucket) + ((uint64_t(1) << (msb - sub_bits)) - 1);
}

void histogram::record(uint64_t value, uint64_t n) noexcept {
  if (n == 0) return;
  _counts[bucket_of(value)] += n;
  _count += n;
  _min = std::min(_min, value);
  _max = std::max(_max, value);
  _sum += static_cast<unsigned __int128>(value) * n;
}

void histogram::merge(const histogram& o) noexcept {
  if (o._count == 0) return;
  for (std::size_t i = 0; i < bucket_count; ++i) _counts[i] += o._counts[i];
  _count += o._count;
  _min = std::min(_min, o._min);
  _max = std::max(_max, o._max);
  _sum += o._sum;
}

void histogram::reset() noexcept {
  _counts.fill(0);
  _count = 0;
  _min = UINT64_MAX;
  _max = 0;
  _sum = 0;
}

double histogram::mean() const noexcept {
  return _count ? double(_sum) / double(_count) : 0.0;
}

uint64_t histogram::percentile(double p) const noexcept {
  if (_count == 0) return 0;
  p = std::clamp(std::isnan(p) ? 100.0 : p, 0.0, 100.0);
  uint64_t want = uint64_t(std::llround(p / 100.0 * double(_count)));
  want = std::clamp<uint64_t>(want, 1, _count);
  uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += _counts[i];
    if (seen >= want) return std::min(highest_in(i), _max);
  }
  return _max;
}

}  // namespace msg_gen
