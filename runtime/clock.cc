// clock: TSC calibration against CLOCK_MONOTONIC_RAW.
#include "machnet/runtime/clock.hh"

#include <time.h>

namespace machnet {

namespace {
uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

uint64_t calibrate_hz() {
#if defined(__x86_64__)
  // Median of three 4 ms windows: robust against one preempted window.
  uint64_t est[3];
  for (auto& e : est) {
    uint64_t n0 = mono_ns(), t0 = rdtsc();
    uint64_t n1;
    do {
      n1 = mono_ns();
    } while (n1 - n0 < 4'000'000);
    uint64_t t1 = rdtsc();
    e = static_cast<uint64_t>((static_cast<unsigned __int128>(t1 - t0) * 1'000'000'000ull) /
                              (n1 - n0));
  }
  if (est[0] > est[1]) std::swap(est[0], est[1]);
  if (est[1] > est[2]) std::swap(est[1], est[2]);
  if (est[0] > est[1]) std::swap(est[0], est[1]);
  return est[1];
#else
  return 1'000'000'000ull;  // rdtsc() returns nanoseconds.
#endif
}
}  // namespace

tsc_clock::tsc_clock() noexcept : tsc_clock(calibrate_hz()) {}

tsc_clock::tsc_clock(uint64_t hz) noexcept : _hz(hz) {
  using u128 = unsigned __int128;
  _ns_mult = static_cast<uint64_t>((u128(1'000'000'000ull) << shift) / _hz);
  _from_ns_mult = static_cast<uint64_t>((u128(_hz) << shift) / 1'000'000'000ull);
}

const tsc_clock& tsc_clock::get() noexcept {
  static const tsc_clock clock;
  return clock;
}

}  // namespace machnet
