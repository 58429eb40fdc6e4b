// rcu: liburcu (QSBR flavour) for read-mostly state shared by shards — each
// shard is a registered reader that reports a quiescent state once per loop
// turn, so reads on the hot path are plain loads.
#pragma once

#include <atomic>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace machnet::rcu {

/// Registers / unregisters the calling thread as an RCU reader (the reactor
/// does this for every shard).
void register_thread();
void unregister_thread();
/// Reports a quiescent state: no RCU-protected pointer read before this call
/// is used after it.
void quiescent_state();
/// Marks the thread offline (about to sleep) / online again.
void thread_offline();
void thread_online();
/// Waits until every registered reader has passed a quiescent state.
void synchronize();
/// Runs fn(arg) after a grace period, on liburcu's call_rcu worker.
void defer(void (*fn)(void*), void* arg);
/// Waits for every deferred callback queued so far to have run.
void barrier();

/// A read-mostly pointer: readers (any shard) load it without locks; a writer
/// publishes a replacement and the old object is freed after a grace period,
/// so no reader ever sees freed memory. Writers must be serialised (one owner
/// shard, or a lock).
template <typename T>
class rcu_ptr {
 public:
  rcu_ptr() = default;
  explicit rcu_ptr(std::unique_ptr<T> p) : _p(p.release()) {}
  rcu_ptr(const rcu_ptr&) = delete;
  rcu_ptr& operator=(const rcu_ptr&) = delete;
  /// Frees the current object immediately: only when no reader can hold it.
  ~rcu_ptr() { delete _p.load(std::memory_order_relaxed); }

  /// The current object, valid until the reading shard's next quiescent state.
  const T* read() const noexcept { return _p.load(std::memory_order_consume); }

  /// Publishes `next`; the previous object is deleted after a grace period.
  void publish(std::unique_ptr<T> next) {
    T* old = _p.exchange(next.release(), std::memory_order_acq_rel);
    if (old) defer([](void* o) { delete static_cast<T*>(o); }, old);
  }

  /// Publishes a copy of the current object changed by `fn` (read-copy-update).
  template <typename F>
  void update(F&& fn) {
    const T* cur = read();
    std::unique_ptr<T> next;
    if (cur) {
      next = std::make_unique<T>(*cur);
    } else if constexpr (std::is_default_constructible_v<T>) {
      next = std::make_unique<T>();
    } else {
      throw std::logic_error("rcu_ptr::update on an empty pointer of a type without a default");
    }
    fn(*next);
    publish(std::move(next));
  }

 private:
  std::atomic<T*> _p{nullptr};
};

}  // namespace machnet::rcu
