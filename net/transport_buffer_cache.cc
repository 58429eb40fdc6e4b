// transport_buffer_cache: the process-wide cache of large message buffers
// (anonymous mappings per power-of-two class, a mutex-guarded free list each).
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <bit>
#include <mutex>
#include <new>
#include <vector>

#include "machnet/net/transport/buffer_cache.hh"

namespace machnet::net::transport::buffer_cache {

namespace {

constexpr unsigned min_shift = std::countr_zero(min_class);
constexpr unsigned classes = std::countr_zero(max_class) - min_shift + 1;
static_assert(std::has_single_bit(min_class) && std::has_single_bit(max_class));

struct cache {
  std::mutex mu;
  std::array<std::vector<uint8_t*>, classes> idle;
  std::size_t idle_bytes = 0;
  std::size_t limit = std::size_t(64) << 20;
  stats st;
};

cache& the_cache() {
  static cache* c = new cache;  // never destroyed: put() may run during exit
  return *c;
}

unsigned index_of(std::size_t capacity) noexcept {
  return unsigned(std::countr_zero(capacity)) - min_shift;
}

uint8_t* map(std::size_t capacity) {
  // Plain 4 KiB pages: transparent huge pages (madvise) made an 8 MiB bulk
  // transfer 1.4-3.3x slower in this VM (3 alternated pairs).
  void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return static_cast<uint8_t*>(p);
}

// Unmaps idle buffers, largest first, until idle_bytes ≤ limit. Holds mu.
void trim(cache& c, std::vector<std::pair<uint8_t*, std::size_t>>& out) {
  for (unsigned k = classes; k-- > 0 && c.idle_bytes > c.limit;) {
    std::size_t cap = min_class << k;
    while (!c.idle[k].empty() && c.idle_bytes > c.limit) {
      out.emplace_back(c.idle[k].back(), cap);
      c.idle[k].pop_back();
      c.idle_bytes -= cap;
      ++c.st.unmaps;
    }
  }
}

}  // namespace

std::size_t class_of(std::size_t n) noexcept { return std::bit_ceil(std::max(n, min_class)); }

uint8_t* get(std::size_t capacity) {
  cache& c = the_cache();
  {
    std::lock_guard g(c.mu);
    auto& v = c.idle[index_of(capacity)];
    if (!v.empty()) {
      uint8_t* p = v.back();
      v.pop_back();
      c.idle_bytes -= capacity;
      ++c.st.hits;
      return p;
    }
    ++c.st.maps;
  }
  return map(capacity);
}

void put(uint8_t* p, std::size_t capacity) noexcept {
  if (!p) return;
  cache& c = the_cache();
  {
    std::lock_guard g(c.mu);
    if (c.idle_bytes + capacity <= c.limit) {
      try {
        c.idle[index_of(capacity)].push_back(p);
        c.idle_bytes += capacity;
        return;
      } catch (const std::bad_alloc&) {
        // fall through: unmap it
      }
    }
    ++c.st.unmaps;
  }
  ::munmap(p, capacity);
}

void set_idle_limit(std::size_t bytes) noexcept {
  cache& c = the_cache();
  std::vector<std::pair<uint8_t*, std::size_t>> out;
  {
    std::lock_guard g(c.mu);
    c.limit = bytes;
    try {
      trim(c, out);
    } catch (const std::bad_alloc&) {
    }
  }
  for (auto [p, cap] : out) ::munmap(p, cap);
}

stats get_stats() noexcept {
  cache& c = the_cache();
  std::lock_guard g(c.mu);
  stats s = c.st;
  s.idle_bytes = c.idle_bytes;
  s.idle_limit = c.limit;
  return s;
}

}  // namespace machnet::net::transport::buffer_cache
