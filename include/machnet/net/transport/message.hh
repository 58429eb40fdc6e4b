// message: an owning, contiguous byte buffer — what the owner sends, what is
// delivered, and what a failed flow hands back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace machnet::net::transport {

/// A message: owns `size()` contiguous bytes (heap memory — from 256 KiB a
/// buffer_cache buffer — or a foreign buffer released through a callback,
/// e.g. a channel buffer), plus a `tag` for the owner's bookkeeping that the
/// transport never looks at. Move-only.
class message {
 public:
  /// Releases an adopted buffer.
  using release_fn = void (*)(void* ctx, uint8_t* data, std::size_t size) noexcept;

  message() noexcept = default;
  /// `size` bytes of uninitialised heap memory.
  explicit message(std::size_t size);
  message(message&& o) noexcept { steal(o); }
  message& operator=(message&& o) noexcept;
  message(const message&) = delete;
  message& operator=(const message&) = delete;
  ~message() { reset(); }

  /// A heap copy of `bytes`.
  static message copy_of(std::span<const uint8_t> bytes, uint64_t tag = 0);
  /// Adopts a foreign buffer; `release(ctx, data, size)` runs when the message dies.
  static message adopt(uint8_t* data, std::size_t size, release_fn release, void* ctx,
                       uint64_t tag = 0) noexcept;

  uint8_t* data() noexcept { return _data; }
  const uint8_t* data() const noexcept { return _data; }
  std::size_t size() const noexcept { return _size; }
  bool empty() const noexcept { return _size == 0; }
  std::span<const uint8_t> bytes() const noexcept { return {_data, _size}; }
  uint64_t tag() const noexcept { return _tag; }
  /// How an adopted buffer is released (nullptr: heap storage) and its context.
  release_fn releaser() const noexcept { return _release; }
  void* release_ctx() const noexcept { return _ctx; }
  void set_tag(uint64_t t) noexcept { _tag = t; }

  /// Appends bytes, growing storage geometrically (reassembly). An adopted
  /// buffer is first copied to storage of our own and released.
  void append(const uint8_t* p, std::size_t n);
  /// Makes room for `n` bytes in all, so appends up to there neither copy
  /// nor allocate (reassembly that expects a message of that size).
  void reserve(std::size_t n);
  /// Bytes the storage holds before append() must grow it (0 for an adopted
  /// buffer: the first append copies it).
  std::size_t capacity() const noexcept { return _capacity; }
  /// Frees the bytes; the message becomes empty.
  void reset() noexcept;

 private:
  void steal(message& o) noexcept;
  /// Moves the bytes to storage of at least `need` bytes.
  void grow(std::size_t need);

  uint8_t* _data = nullptr;
  std::size_t _size = 0;
  std::size_t _capacity = 0;  // heap and buffer_cache storage
  release_fn _release = nullptr;
  void* _ctx = nullptr;
  uint64_t _tag = 0;
};

}  // namespace machnet::net::transport
