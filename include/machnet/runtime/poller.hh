// poller: what a shard's loop polls each turn (NIC queue, channels, cross-shard
// queues, sockets), and how a poller agrees to let the shard sleep.
#pragma once

#include <cstdint>

namespace machnet {

/// A source of work polled once per loop turn (Seastar's pollfn).
class pollfn {
 public:
  virtual ~pollfn() = default;
  /// Does available work; returns true if it did any.
  virtual bool poll() = 0;
  /// Returns true if poll() would find work; must not consume it.
  virtual bool pure_poll() = 0;
  /// Called before the shard sleeps: arrange to be woken (e.g. register an fd
  /// or a wake-up word) and return true, or return false to keep the shard
  /// awake. A poller that cannot be woken but tolerates a bounded sleep returns
  /// true and a finite max_sleep_us().
  virtual bool try_enter_interrupt_mode() { return true; }
  /// Called after the shard wakes, for every poller that entered interrupt mode.
  virtual void exit_interrupt_mode() {}
  /// Longest the shard may sleep without this poller being polled.
  virtual uint64_t max_sleep_us() const { return UINT64_MAX; }
};

}  // namespace machnet
