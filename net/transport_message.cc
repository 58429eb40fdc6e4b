// transport_message: the owning message buffer (heap or adopted foreign memory).
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "machnet/net/transport/message.hh"

namespace machnet::net::transport {

namespace {
// Heap storage is malloc'd so that growing a large reassembly buffer is a
// realloc — for big blocks glibc remaps pages instead of copying megabytes
// (a copy of several MiB stalls the shard long enough to trip the peer's RTO).
uint8_t* checked_realloc(uint8_t* p, std::size_t n) {
  auto* q = static_cast<uint8_t*>(std::realloc(p, n));
  if (!q) throw std::bad_alloc();
  return q;
}
}  // namespace

message::message(std::size_t size)
    : _data(size ? checked_realloc(nullptr, size) : nullptr), _size(size), _capacity(size) {}

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

void message::append(const uint8_t* p, std::size_t n) {
  if (n == 0) return;
  if (_size + n > _capacity) {
    std::size_t cap = _capacity ? _capacity : 2048;
    while (cap < _size + n) cap *= 2;
    if (_release) {  // an adopted buffer becomes a heap copy
      auto* d = checked_realloc(nullptr, cap);
      if (_size) std::memcpy(d, _data, _size);
      _release(_ctx, _data, _size);
      _release = nullptr;
      _ctx = nullptr;
      _data = d;
    } else {
      _data = checked_realloc(_data, cap);
    }
    _capacity = cap;
  }
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
