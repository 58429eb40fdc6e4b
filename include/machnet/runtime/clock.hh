// clock: the runtime's time source — the TSC, calibrated once against CLOCK_MONOTONIC.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace machnet {

/// Reads the time-stamp counter (on x86-64), or monotonic nanoseconds elsewhere.
inline uint64_t rdtsc() noexcept {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
#endif
}

/// TSC frequency and conversions. Calibrated on first use (about 10 ms), then
/// every conversion is one 128-bit multiply and one shift. Microseconds are
/// defined as nanoseconds / 1000, so the two never drift apart.
class tsc_clock {
 public:
  static const tsc_clock& get() noexcept;

  uint64_t hz() const noexcept { return _hz; }
  uint64_t to_ns(uint64_t ticks) const noexcept { return mul_shift(ticks, _ns_mult); }
  uint64_t to_us(uint64_t ticks) const noexcept { return to_ns(ticks) / 1000; }
  uint64_t from_ns(uint64_t ns) const noexcept { return mul_shift(ns, _from_ns_mult); }
  uint64_t from_us(uint64_t us) const noexcept { return from_ns(us * 1000); }

  /// For tests: a clock of a given frequency (no calibration).
  static tsc_clock with_hz(uint64_t hz) noexcept { return tsc_clock(hz); }

  /// Microseconds since an arbitrary epoch (the timer wheel's tick).
  uint64_t now_us() const noexcept { return to_us(rdtsc()); }
  uint64_t now_ns() const noexcept { return to_ns(rdtsc()); }

 private:
  tsc_clock() noexcept;
  explicit tsc_clock(uint64_t hz) noexcept;
  // 52 fractional bits: the conversion error stays below a nanosecond for
  // days of TSC ticks (with 32 bits it reached milliseconds within an hour).
  static constexpr unsigned shift = 52;
  static uint64_t mul_shift(uint64_t v, uint64_t mult) noexcept {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(v) * mult) >> shift);
  }
  uint64_t _hz;
  uint64_t _ns_mult;
  uint64_t _from_ns_mult;
};

inline uint64_t now_us() noexcept { return tsc_clock::get().now_us(); }
inline uint64_t now_ns() noexcept { return tsc_clock::get().now_ns(); }

}  // namespace machnet
