// timer: a per-shard hierarchical timer wheel with microsecond ticks, driven by
// the TSC. Arm, cancel and re-arm are O(1) and allocation-free (timers are
// intrusive), which is what per-ACK RTO re-arming and pacing need.
#pragma once

#include <array>
#include <cstdint>
#include <functional>

namespace machnet {

class timer_wheel;

namespace internal {
struct timer_link {
  timer_link* prev = nullptr;
  timer_link* next = nullptr;
};
}  // namespace internal

/// One timer. It belongs to the wheel of the shard that arms it; it must be
/// armed, cancelled and destroyed on that shard. Destroying an armed timer
/// cancels it. The callback runs on the shard's loop when the timer is due.
class timer : private internal::timer_link {
 public:
  using callback = std::function<void()>;

  timer() = default;
  explicit timer(callback cb) : _cb(std::move(cb)) {}
  timer(const timer&) = delete;
  timer& operator=(const timer&) = delete;
  ~timer() { cancel(); }

  void set_callback(callback cb) { _cb = std::move(cb); }

  /// Arms (or re-arms) to fire `delay_us` microseconds from now on the
  /// current shard's wheel.
  void arm(uint64_t delay_us);
  /// Arms (or re-arms) to fire at tick `deadline_us` of `wheel`.
  void arm_at(timer_wheel& wheel, uint64_t deadline_us);
  /// Cancels; a no-op if not armed. A cancelled timer never fires.
  void cancel() noexcept;

  bool armed() const noexcept { return _wheel != nullptr; }
  uint64_t deadline_us() const noexcept { return _deadline; }

 private:
  friend class timer_wheel;
  timer_wheel* _wheel = nullptr;
  uint64_t _deadline = 0;
  uint16_t _slot = 0;  // level * slots_per_level + slot
  callback _cb;
};

/// Eight levels of 64 slots: level k slot s holds timers whose deadline agrees
/// with the wheel's current tick above bit 6(k+1) and has s in bits 6k..6k+5.
/// Bitmaps per level find the next due slot in a few instructions, so the
/// wheel jumps over idle time instead of stepping every microsecond.
class timer_wheel {
 public:
  static constexpr unsigned bits_per_level = 6;
  static constexpr unsigned slots_per_level = 1u << bits_per_level;
  static constexpr unsigned levels = 8;  // 48 bits of µs: ~8.9 years

  explicit timer_wheel(uint64_t now_us);
  timer_wheel(const timer_wheel&) = delete;
  timer_wheel& operator=(const timer_wheel&) = delete;
  ~timer_wheel();

  /// Fires every timer due at or before `now_us`, in deadline order (arm order
  /// among equal deadlines). Returns how many fired.
  unsigned advance(uint64_t now_us);

  /// The earliest pending deadline, or UINT64_MAX when empty. Exact for the
  /// lowest level, a lower bound (the next cascade) otherwise: safe to sleep
  /// until.
  uint64_t next_deadline() const noexcept;

  /// The next tick that advance() will process (everything before it is done).
  uint64_t current_us() const noexcept { return _now; }
  std::size_t size() const noexcept { return _count; }
  bool empty() const noexcept { return _count == 0; }

 private:
  friend class timer;
  void insert(timer& t) noexcept;
  void remove(timer& t) noexcept;
  uint64_t next_event() const noexcept;
  void cascade(unsigned level) noexcept;

  uint64_t _now;
  std::size_t _count = 0;
  // A lower bound of next_event(): advance() before it has nothing to do
  // (the reactor calls advance() every turn). Inserts reset it to 0.
  uint64_t _next_hint = 0;
  std::array<uint64_t, levels> _occupied{};
  std::array<internal::timer_link, levels * slots_per_level> _slots;  // circular list heads
};

}  // namespace machnet
