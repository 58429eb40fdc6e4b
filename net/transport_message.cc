// transport_message: the owning message buffer (heap, buffer_cache, or
// adopted foreign memory).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "machnet/net/transport/message.hh"

#include "machnet/net/transport/buffer_cache.hh"

namespace machnet::net::transport {

namespace {
// Small storage is malloc'd (growth is a realloc). From buffer_cache::min_class
// on it comes from the buffer cache: a fresh multi-MiB allocation per message
// page-faults through every page and glibc's free unmaps it again, and a
// reassembly that outgrows a heap block copies megabytes — each stalled the
// receiving shard past the sender's RTO (spurious retransmissions of bulk
// transfers).
uint8_t* checked_realloc(uint8_t* p, std::size_t n) {
  auto* q = static_cast<uint8_t*>(std::realloc(p, n));
  if (!q) throw std::bad_alloc();
  return q;
}

void release_cached(void* ctx, uint8_t* data, std::size_t) noexcept {
  buffer_cache::put(data, reinterpret_cast<std::size_t>(ctx));
}
}  // namespace

message::message(std::size_t size) {
  if (size >= buffer_cache::min_class && size <= buffer_cache::max_class) {
    grow(size);
  } else if (size) {
    _data = checked_realloc(nullptr, size);
    _capacity = size;
  }
  _size = size;
}


message& message::operator=(message&& o) noexcept {
  if (this != &o) {
    reset();
    steal(o);
  }
  return *this;
}

message message::copy_of(std::span<const uint8_t> bytes, uint64_t tag) {
  message m(bytes.size());
  if (!bytes.empty()) std::memcpy(m._data, bytes.data(), bytes.size());
  m._tag = tag;
  return m;
}

message message::adopt(uint8_t* data, std::size_t size, release_fn release, void* ctx,
                       uint64_t tag) noexcept {
  message m;
  m._data = data;
  m._size = size;
  m._release = release;
  m._ctx = ctx;
  m._tag = tag;
  return m;
}

void message::grow(std::size_t need) {
  need = std::max(need, _size);
  std::size_t cap = _capacity ? _capacity : 2048;
  while (cap < need) cap *= 2;
  // Beyond the largest class (more than a message may carry: only tests and
  // refused sends) storage is the heap's again.
  const bool big = cap >= buffer_cache::min_class && need <= buffer_cache::max_class;
  if (!big && !_release) {
    _data = checked_realloc(_data, cap);
    _capacity = cap;
    return;
  }
  uint8_t* d;
  release_fn rel = nullptr;
  void* ctx = nullptr;
  if (big) {
    cap = buffer_cache::class_of(need);
    d = buffer_cache::get(cap);
    rel = &release_cached;
    ctx = reinterpret_cast<void*>(cap);
  } else {
    d = checked_realloc(nullptr, cap);  // an adopted buffer becomes our own
  }
  if (_size) std::memcpy(d, _data, _size);
  const std::size_t size = _size;
  reset();  // the old storage, whatever kind (keeps the tag)
  _data = d;
  _size = size;
  _capacity = cap;
  _release = rel;
  _ctx = ctx;
}

void message::reserve(std::size_t n) {
  if (n > _capacity) grow(n);  // an adopted buffer (capacity 0) becomes our own
}

void message::append(const uint8_t* p, std::size_t n) {
  if (n == 0) return;
  if (_size + n > _capacity) grow(_size + n);
  std::memcpy(_data + _size, p, n);
  _size += n;
}

void message::reset() noexcept {
  if (_release)
    _release(_ctx, _data, _size);
  else
    std::free(_data);
  _data = nullptr;
  _size = _capacity = 0;
  _release = nullptr;
  _ctx = nullptr;
}

void message::steal(message& o) noexcept {
  _data = std::exchange(o._data, nullptr);
  _size = std::exchange(o._size, 0);
  _capacity = std::exchange(o._capacity, 0);
  _release = std::exchange(o._release, nullptr);
  _ctx = std::exchange(o._ctx, nullptr);
  _tag = o._tag;
}

}  // namespace machnet::net::transport
