// buffer_cache: large message buffers (256 KiB to 8 MiB, power-of-two
// classes) kept mapped and populated between messages, so that building or
// reassembling a big message neither page-faults through fresh memory nor
// copies megabytes as it grows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "machnet/net/transport/header.hh"

namespace machnet::net::transport::buffer_cache {

/// Smallest and largest class. Smaller messages live in malloc'd memory.
inline constexpr std::size_t min_class = std::size_t(256) << 10;
inline constexpr std::size_t max_class = max_message_size;

/// The capacity of the class that holds `n` bytes: the smallest power of two
/// ≥ max(n, min_class). `n` ≤ max_class.
std::size_t class_of(std::size_t n) noexcept;

/// A buffer of `capacity` bytes (a class_of() value): an idle one if the
/// cache has one, else a new anonymous mapping (whose first touch of each
/// page faults: 2048 faults per 8 MiB).
/// Throws std::bad_alloc.
uint8_t* get(std::size_t capacity);

/// Gives a buffer from get() back; any thread may call it. It is kept for
/// the next get() while the cache's idle bytes stay within the limit, else
/// unmapped.
void put(uint8_t* p, std::size_t capacity) noexcept;

/// The most idle bytes kept, process-wide (default 64 MiB). 0: every put()
/// unmaps. Lowering it unmaps what is above the new limit.
void set_idle_limit(std::size_t bytes) noexcept;

struct stats {
  uint64_t hits = 0;      ///< get() served from the cache
  uint64_t maps = 0;      ///< get() that mapped new memory
  uint64_t unmaps = 0;    ///< put() or set_idle_limit() that unmapped
  std::size_t idle_bytes = 0;
  std::size_t idle_limit = 0;
};
stats get_stats() noexcept;

}  // namespace machnet::net::transport::buffer_cache
