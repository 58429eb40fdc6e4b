// dp_guard: the registry of burst-call marks and the process-wide munmap that
// waits for them (see include/machnet/net/dp_guard.hh for why).
#include "machnet/net/dp_guard.hh"

#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "machnet/runtime/clock.hh"

namespace machnet::net::dp_guard {

namespace {
// Slots live forever (a dying thread returns its slot for reuse), so munmap
// can scan them without a lock. Threads beyond the table go unguarded.
constexpr std::size_t max_slots = 1024;
std::array<slot, max_slots> g_slots;
std::array<std::atomic<bool>, max_slots> g_used{};
std::atomic<std::size_t> g_high{0};  // slots [0, g_high) were ever handed out
std::atomic<uint64_t> g_waits{0}, g_timeouts{0};
slot g_overflow;  // shared by threads beyond the table: never waited for

struct owner {
  std::size_t index = max_slots;
  ~owner() {
    if (index < max_slots) g_used[index].store(false, std::memory_order_release);
  }
};
thread_local owner t_owner;
thread_local slot* t_slot = nullptr;

slot* acquire() noexcept {
  for (std::size_t i = 0; i < max_slots; ++i) {
    bool expected = false;
    if (g_used[i].compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      std::size_t h = g_high.load(std::memory_order_relaxed);
      while (h < i + 1 && !g_high.compare_exchange_weak(h, i + 1, std::memory_order_acq_rel)) {
      }
      t_owner.index = i;
      return &g_slots[i];
    }
  }
  return &g_overflow;
}

inline void relax() noexcept {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

using munmap_fn = int (*)(void*, size_t);
munmap_fn g_next_munmap = nullptr;

// The next munmap in the lookup order (a sanitizer's interceptor, or libc's),
// found before main; the raw system call until then.
__attribute__((constructor)) void find_next_munmap() {
  g_next_munmap = reinterpret_cast<munmap_fn>(::dlsym(RTLD_NEXT, "munmap"));
}
}  // namespace

slot& this_thread_slot() noexcept {
  if (!t_slot) t_slot = acquire();
  return *t_slot;
}

bool wait_quiescent(uint64_t limit_us) noexcept {
  // Pairs with the locked add of section(): whatever the PMD cleared before
  // calling munmap is visible to a shard that enters after this point.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const slot* self = t_slot;
  const std::size_t high = g_high.load(std::memory_order_acquire);
  uint64_t deadline = 0;
  bool ok = true, waited = false;
  for (std::size_t i = 0; i < high; ++i) {
    const slot& s = g_slots[i];
    if (&s == self) continue;
    const uint64_t v = s.seq.load(std::memory_order_acquire);
    if (!(v & 1)) continue;
    waited = true;
    for (unsigned spins = 0; s.seq.load(std::memory_order_acquire) == v; ++spins) {
      if (spins < 1024) {
        relax();
        continue;
      }
      if (!deadline) deadline = machnet::now_us() + limit_us;
      if (machnet::now_us() >= deadline) {
        ok = false;
        break;
      }
      std::this_thread::yield();
    }
  }
  if (waited) g_waits.fetch_add(1, std::memory_order_relaxed);
  if (!ok) g_timeouts.fetch_add(1, std::memory_order_relaxed);
  return ok;
}

uint64_t waits() noexcept { return g_waits.load(std::memory_order_relaxed); }
uint64_t timeouts() noexcept { return g_timeouts.load(std::memory_order_relaxed); }

}  // namespace machnet::net::dp_guard

// Every munmap of the process (the memif PMD's included: the executable
// exports this symbol, see net/CMakeLists.txt) waits for burst calls first.
// Bursts take microseconds; munmap is rare outside start and stop.
extern "C" __attribute__((visibility("default"))) int munmap(void* addr, size_t len) noexcept {
  machnet::net::dp_guard::wait_quiescent();
  if (auto next = machnet::net::dp_guard::g_next_munmap) return next(addr, len);
  return static_cast<int>(::syscall(SYS_munmap, addr, len));
}
