// seq: 32-bit packet sequence numbers and their wrap-around comparisons.
#pragma once

#include <cstdint>

namespace machnet::net::transport {

/// A packet sequence number. Every DATA packet, SYN, SYN-ACK and RST consumes
/// one; comparisons are modulo 2^32 (valid while the two numbers are less than
/// 2^31 apart, which the 256-packet window guarantees).
using seq_t = uint32_t;

constexpr bool seq_lt(seq_t a, seq_t b) noexcept { return int32_t(a - b) < 0; }
constexpr bool seq_le(seq_t a, seq_t b) noexcept { return int32_t(a - b) <= 0; }
constexpr bool seq_gt(seq_t a, seq_t b) noexcept { return int32_t(a - b) > 0; }
constexpr bool seq_ge(seq_t a, seq_t b) noexcept { return int32_t(a - b) >= 0; }
/// True when `s` lies in the half-open range [lo, hi).
constexpr bool seq_in(seq_t s, seq_t lo, seq_t hi) noexcept {
  return seq_t(s - lo) < seq_t(hi - lo);
}
/// True when `s` lies in the closed range [lo, hi].
constexpr bool seq_in_closed(seq_t s, seq_t lo, seq_t hi) noexcept {
  return seq_t(s - lo) <= seq_t(hi - lo);
}

}  // namespace machnet::net::transport
