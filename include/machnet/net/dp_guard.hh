// dp_guard: keeps a device's shared memory mapped while a shard is inside its
// burst functions. When a memif peer hangs up (exits, crashes, is killed),
// DPDK 22.11's interrupt thread unmaps the rings at once (memif_disconnect),
// while a shard of this process may be inside rx_burst or tx_burst reading
// them: the survivor died of SIGSEGV in about one kill of eight. Shards mark
// their burst calls on such devices (a section); munmap, interposed for the
// whole process (net/dp_guard.cc), first waits until no other thread is
// inside a section. The PMD clears its "connected" flag before it unmaps, so
// a shard that enters afterwards returns at once.
#pragma once

#include <atomic>
#include <cstdint>

namespace machnet::net::dp_guard {

/// One thread's mark: odd while it is inside a section.
struct slot {
  std::atomic<uint64_t> seq{0};
};

/// The calling thread's slot (registered on first use, recycled at exit).
slot& this_thread_slot() noexcept;

/// Marks the calling thread inside a burst call for its lifetime (if `on`).
class section {
 public:
  explicit section(bool on) noexcept : _s(on ? &this_thread_slot() : nullptr) {
    // A full barrier (locked add): the mark must be visible before the PMD
    // reads its connected flag, or an unmap could slip in between.
    if (_s) _s->seq.fetch_add(1, std::memory_order_seq_cst);
  }
  ~section() {
    // Only this thread writes its slot: a plain release store suffices.
    if (_s) _s->seq.store(_s->seq.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  section(const section&) = delete;
  section& operator=(const section&) = delete;

 private:
  slot* _s;
};

/// Waits (at most `limit_us`) until every other thread that was inside a
/// section has left it. Returns false if the limit was reached.
bool wait_quiescent(uint64_t limit_us = 100'000) noexcept;

/// Times munmap waited for a section, and times it gave up waiting (tests,
/// counters).
uint64_t waits() noexcept;
uint64_t timeouts() noexcept;

}  // namespace machnet::net::dp_guard
