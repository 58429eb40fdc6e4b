// Tests of the channel's SPSC ring: wrap-around over many laps and across the
// 32-bit cursor wrap, a two-thread stream in order, and hostile cursors that
// must never make either side index outside the slot array.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include "machnet/net/shm/ring.hh"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define MACHNET_TEST_ASAN 1
#endif

using namespace machnet::shm;

namespace {

constexpr std::size_t guard_bytes = 256;
constexpr uint8_t guard_fill = 0xa5;

// A ring's shared part in its own allocation, followed by guard bytes: they
// are poisoned under ASan (any stray write is reported at once) and checked
// by value otherwise. Bytes in front of the ring are never touched either.
template <typename T>
class test_ring {
 public:
  explicit test_ring(uint32_t slots, uint32_t start = 0) : _slots(slots) {
    _bytes = ring_shared<T>::bytes(slots);
    _mem = static_cast<uint8_t*>(::operator new(_bytes + guard_bytes, std::align_val_t{64}));
    std::memset(_mem, 0, _bytes);
    std::memset(_mem + _bytes, guard_fill, guard_bytes);
#ifdef MACHNET_TEST_ASAN
    ASAN_POISON_MEMORY_REGION(_mem + _bytes, guard_bytes);
#endif
    shared()->head.store(start);
    shared()->tail.store(start);
  }
  test_ring(const test_ring&) = delete;
  test_ring& operator=(const test_ring&) = delete;
  ~test_ring() {
#ifdef MACHNET_TEST_ASAN
    ASAN_UNPOISON_MEMORY_REGION(_mem + _bytes, guard_bytes);
#endif
    ::operator delete(_mem, std::align_val_t{64});
  }

  ring_shared<T>* shared() const { return reinterpret_cast<ring_shared<T>*>(_mem); }
  uint32_t slots() const { return _slots; }
  T* slot_array() const { return reinterpret_cast<T*>(_mem + ring_shared<T>::offsetof_slot()); }
  bool guard_intact() const {
#ifdef MACHNET_TEST_ASAN
    ASAN_UNPOISON_MEMORY_REGION(_mem + _bytes, guard_bytes);
#endif
    bool ok = true;
    for (std::size_t i = 0; i < guard_bytes; ++i) ok = ok && _mem[_bytes + i] == guard_fill;
#ifdef MACHNET_TEST_ASAN
    ASAN_POISON_MEMORY_REGION(_mem + _bytes, guard_bytes);
#endif
    return ok;
  }

 private:
  uint32_t _slots;
  std::size_t _bytes = 0;
  uint8_t* _mem = nullptr;
};

}  // namespace

TEST_CASE("ring layout: cursors on their own cache lines, slots at 128") {
  REQUIRE(offsetof(ring_shared<uint32_t>, head) == 0);
  REQUIRE(offsetof(ring_shared<uint32_t>, tail) == 64);
  REQUIRE(offsetof(ring_shared<uint32_t>, slot) == ring_shared<uint32_t>::offsetof_slot());
  REQUIRE(ring_shared<uint32_t>::bytes(8) == 128 + 32);
  REQUIRE(ring_shared<uint64_t>::bytes(16) == 128 + 128);
}

TEST_CASE("ring: empty and full, publish makes entries visible") {
  test_ring<uint32_t> r(8);
  ring_producer<uint32_t> p(r.shared(), 8);
  ring_consumer<uint32_t> c(r.shared(), 8);
  uint32_t v = 0;
  REQUIRE(c.ready() == 0);
  REQUIRE_FALSE(c.pop(v));
  REQUIRE(p.room() == 8);
  for (uint32_t i = 0; i < 8; ++i) REQUIRE(p.push(100 + i));
  REQUIRE(p.room() == 0);
  REQUIRE_FALSE(p.push(999));
  REQUIRE(p.pushed() == 8);
  // Not published yet: the consumer sees nothing.
  REQUIRE(c.ready() == 0);
  p.publish();
  REQUIRE(r.shared()->head.load() == 8);
  REQUIRE(c.ready() == 8);
  REQUIRE(c.pop(v));
  REQUIRE(v == 100);
  REQUIRE(c.pop(v));
  REQUIRE(v == 101);
  // Popped slots are given back only at publish().
  REQUIRE(p.room() == 0);
  c.publish();
  REQUIRE(r.shared()->tail.load() == 2);
  REQUIRE(p.room() == 2);
  REQUIRE(c.ready() == 6);
  REQUIRE(r.guard_intact());
}

TEST_CASE("ring: wrap-around over many laps, batches of every size") {
  // Start near the 32-bit wrap so the cursors overflow during the run.
  for (uint32_t start : {0u, 0xfffffff0u}) {
    INFO("start cursor " << start);
    test_ring<uint32_t> r(8, start);
    ring_producer<uint32_t> p(r.shared(), 8);
    ring_consumer<uint32_t> c(r.shared(), 8);
    REQUIRE(p.pushed() == start);
    uint32_t next_in = 0, next_out = 0;
    for (uint32_t lap = 0; lap < 5000; ++lap) {
      const uint32_t batch = lap % 9;  // 0..8 (a full ring)
      REQUIRE(p.room() == 8);
      for (uint32_t k = 0; k < batch; ++k) REQUIRE(p.push(next_in++));
      REQUIRE(p.room() == 8 - batch);
      p.publish();
      REQUIRE(c.ready() == batch);
      uint32_t v = 0;
      for (uint32_t k = 0; k < batch; ++k) {
        REQUIRE(c.pop(v));
        REQUIRE(v == next_out++);
      }
      REQUIRE_FALSE(c.pop(v));
      c.publish();
    }
    REQUIRE(next_out == next_in);
    REQUIRE(r.shared()->head.load() == start + next_in);
    REQUIRE(r.shared()->tail.load() == start + next_in);
    REQUIRE(r.guard_intact());
  }
}

TEST_CASE("ring: the slot of entry n is n mod slots") {
  test_ring<uint32_t> r(4, 0xfffffffeu);
  ring_producer<uint32_t> p(r.shared(), 4);
  ring_consumer<uint32_t> c(r.shared(), 4);
  for (uint32_t k = 0; k < 4; ++k) REQUIRE(p.push(10 + k));
  p.publish();
  // Cursors 0xfffffffe, 0xffffffff, 0, 1 -> slots 2, 3, 0, 1.
  REQUIRE(r.slot_array()[2] == 10);
  REQUIRE(r.slot_array()[3] == 11);
  REQUIRE(r.slot_array()[0] == 12);
  REQUIRE(r.slot_array()[1] == 13);
  REQUIRE(r.shared()->head.load() == 2);
  uint32_t v = 0;
  for (uint32_t k = 0; k < 4; ++k) {
    REQUIRE(c.pop(v));
    REQUIRE(v == 10 + k);
  }
}

TEST_CASE("ring: two threads, 1e6 entries arrive in order") {
  constexpr uint32_t total = 1'000'000;
  test_ring<uint64_t> r(64);
  std::thread producer([&] {
    ring_producer<uint64_t> p(r.shared(), 64);
    uint64_t i = 0;
    while (i < total) {
      uint32_t pushed = 0;
      // Publish in batches of varying sizes.
      const uint32_t batch = 1 + uint32_t(i % 37);
      while (pushed < batch && i < total && p.push(i * 3 + 1)) {
        ++i;
        ++pushed;
      }
      p.publish();
      if (pushed == 0) std::this_thread::yield();
    }
  });
  ring_consumer<uint64_t> c(r.shared(), 64);
  uint64_t expect = 0, v = 0, wrong = 0;
  while (expect < total) {
    uint32_t got = 0;
    while (c.pop(v)) {
      if (v != expect * 3 + 1) ++wrong;
      ++expect;
      if (++got == 20) break;
    }
    c.publish();
    if (got == 0) std::this_thread::yield();
  }
  producer.join();
  REQUIRE(wrong == 0);
  REQUIRE(expect == total);
  REQUIRE(c.ready() == 0);
  REQUIRE(r.shared()->head.load() == total);
  REQUIRE(r.shared()->tail.load() == total);
  REQUIRE(r.guard_intact());
}

TEST_CASE("ring hostile: a producer head far ahead reads as empty") {
  test_ring<uint32_t> r(16, 1000);
  ring_consumer<uint32_t> c(r.shared(), 16);
  uint32_t v = 0;
  // Exactly full is legal.
  r.shared()->head.store(1000 + 16);
  REQUIRE(c.ready() == 16);
  // Anything beyond the slot count is nonsense: empty, no read.
  for (uint32_t ahead : {17u, 18u, 1000u, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu}) {
    INFO("head = tail + " << ahead);
    r.shared()->head.store(1000 + ahead);
    REQUIRE(c.ready() == 0);
    REQUIRE_FALSE(c.pop(v));
  }
  // A head behind our tail (the producer went backwards) is nonsense too.
  r.shared()->head.store(999);
  REQUIRE(c.ready() == 0);
  REQUIRE_FALSE(c.pop(v));
  // Back to a sane head: the consumer continues from its own cursor.
  r.slot_array()[1000 % 16] = 77;
  r.shared()->head.store(1001);
  REQUIRE(c.ready() == 1);
  REQUIRE(c.pop(v));
  REQUIRE(v == 77);
  REQUIRE(r.guard_intact());
}

TEST_CASE("ring hostile: the consumer never trusts a rewritten tail") {
  test_ring<uint32_t> r(16, 50);
  ring_consumer<uint32_t> c(r.shared(), 16);
  uint32_t v = 0;
  r.slot_array()[50 % 16] = 5;
  r.shared()->head.store(51);
  // The producer scribbles our published tail: we keep our own.
  r.shared()->tail.store(12345);
  REQUIRE(c.ready() == 1);
  REQUIRE(c.pop(v));
  REQUIRE(v == 5);
  c.publish();
  REQUIRE(r.shared()->tail.load() == 51);
}

TEST_CASE("ring hostile: a bogus tail gives room 0 or a bounded room") {
  test_ring<uint32_t> r(16, 200);
  ring_producer<uint32_t> p(r.shared(), 16);
  // A tail ahead of our head (consumed more than was produced): no room.
  for (uint32_t ahead : {1u, 2u, 16u, 1000u, 0x80000000u}) {
    INFO("tail = head + " << ahead);
    r.shared()->tail.store(200 + ahead);
    REQUIRE(p.room() == 0);
    REQUIRE_FALSE(p.push(1));
  }
  // A tail more than a ring behind: no room.
  r.shared()->tail.store(200 - 17);
  REQUIRE(p.room() == 0);
  // A full ring, then legal fills.
  r.shared()->tail.store(200 - 16);
  REQUIRE(p.room() == 0);
  r.shared()->tail.store(200 - 3);
  REQUIRE(p.room() == 13);
  r.shared()->tail.store(200);
  REQUIRE(p.room() == 16);
  REQUIRE(p.pushed() == 200);
  REQUIRE(r.guard_intact());
}

TEST_CASE("ring hostile: random cursors never make a side index outside the slots") {
  // A consumer that keeps rewriting the tail and a producer that keeps
  // rewriting the head, against honest peers. ASan (poisoned guard) or the
  // guard check reports any write past the slot array.
  for (uint32_t slots : {1u, 2u, 8u, 64u}) {
    INFO("slots " << slots);
    test_ring<uint32_t> r(slots, 0xfffffff0u);
    ring_producer<uint32_t> p(r.shared(), slots);
    ring_consumer<uint32_t> c(r.shared(), slots);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    auto rnd = [&] {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return x;
    };
    uint64_t pushes = 0, pops = 0;
    uint32_t consumed = 0xfffffff0u;  // the consumer's own cursor
    for (int step = 0; step < 20000; ++step) {
      const uint32_t base = uint32_t(rnd());
      switch (rnd() % 4) {
        case 0: r.shared()->tail.store(base); break;
        case 1: r.shared()->tail.store(p.pushed() - uint32_t(rnd() % (2 * slots + 3)) + 1); break;
        case 2: r.shared()->head.store(base); break;
        default: r.shared()->head.store(consumed + uint32_t(rnd() % (2 * slots + 3)) - 1); break;
      }
      const uint32_t room = p.room();
      REQUIRE(room <= slots);
      for (uint32_t k = 0; k < room; ++k) {
        REQUIRE(p.push(uint32_t(step)));
        ++pushes;
      }
      REQUIRE_FALSE(p.push(0));
      const uint32_t ready = c.ready();
      REQUIRE(ready <= slots);
      uint32_t v = 0;
      for (uint32_t k = 0; k < ready; ++k) {
        REQUIRE(c.pop(v));
        ++pops;
        ++consumed;
      }
      REQUIRE_FALSE(c.pop(v));
    }
    // Both sides did work between the lies.
    REQUIRE(pushes > 500);
    REQUIRE(pops > 500);
    REQUIRE(r.guard_intact());
  }
}
