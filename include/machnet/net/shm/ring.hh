// ring: the single-producer single-consumer ring of a shared-memory channel.
// Each side keeps its own cursor privately and only publishes it, so a side
// never trusts what the other wrote into the shared cursor words: a hostile
// peer can make a ring look full or empty, never make us index out of bounds.
#pragma once

#include <atomic>
#include <cstdint>
#include <type_traits>

namespace machnet::shm {

/// The shared part of a ring: two published cursors on their own cache lines,
/// then `slots` entries of T (slots is a power of two, fixed at creation and
/// known to both sides from the channel parameters, not read from here).
template <typename T>
struct ring_shared {
  static_assert(std::is_trivially_copyable_v<T>);
  alignas(64) std::atomic<uint32_t> head;  ///< producer: entries published
  alignas(64) std::atomic<uint32_t> tail;  ///< consumer: entries consumed
  alignas(64) T slot[1];                   ///< really `slots` entries

  static constexpr std::size_t bytes(uint32_t slots) noexcept {
    return offsetof_slot() + sizeof(T) * slots;
  }
  static constexpr std::size_t offsetof_slot() noexcept { return 128; }
};
static_assert(sizeof(std::atomic<uint32_t>) == 4);

/// The producing side of a ring.
template <typename T>
class ring_producer {
 public:
  ring_producer() = default;
  ring_producer(ring_shared<T>* r, uint32_t slots) noexcept
      : _r(r), _mask(slots - 1), _head(r->head.load(std::memory_order_relaxed)) {}

  /// Entries that fit now (0 when the consumer's cursor makes no sense).
  uint32_t room() const noexcept {
    uint32_t used = _head - _r->tail.load(std::memory_order_acquire);
    return used > _mask + 1 ? 0 : _mask + 1 - used;
  }
  /// Writes one entry (not yet visible); false when full.
  bool push(const T& v) noexcept {
    if (room() == 0) return false;
    slots()[_head & _mask] = v;
    ++_head;
    return true;
  }
  /// Makes pushed entries visible to the consumer.
  void publish() noexcept { _r->head.store(_head, std::memory_order_release); }
  /// Pushed, published or not.
  uint32_t pushed() const noexcept { return _head; }

 private:
  T* slots() const noexcept { return reinterpret_cast<T*>(reinterpret_cast<char*>(_r) + ring_shared<T>::offsetof_slot()); }
  ring_shared<T>* _r = nullptr;
  uint32_t _mask = 0;
  uint32_t _head = 0;
};

/// The consuming side of a ring.
template <typename T>
class ring_consumer {
 public:
  ring_consumer() = default;
  ring_consumer(ring_shared<T>* r, uint32_t slots) noexcept
      : _r(r), _mask(slots - 1), _tail(r->tail.load(std::memory_order_relaxed)) {}

  /// Entries ready (0 when the producer's cursor makes no sense).
  uint32_t ready() const noexcept {
    uint32_t n = _r->head.load(std::memory_order_acquire) - _tail;
    return n > _mask + 1 ? 0 : n;
  }
  /// Reads one entry (its slot is released at publish()); false when empty.
  bool pop(T& out) noexcept {
    if (ready() == 0) return false;
    out = slots()[_tail & _mask];
    ++_tail;
    return true;
  }
  /// Gives consumed slots back to the producer.
  void publish() noexcept { _r->tail.store(_tail, std::memory_order_release); }

 private:
  T* slots() const noexcept { return reinterpret_cast<T*>(reinterpret_cast<char*>(_r) + ring_shared<T>::offsetof_slot()); }
  ring_shared<T>* _r = nullptr;
  uint32_t _mask = 0;
  uint32_t _tail = 0;
};

}  // namespace machnet::shm
