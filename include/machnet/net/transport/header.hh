// header: the 54-byte Machnet transport header (shared/design/WIRE.md) — its
// fields, the 256-bit SACK bitmap, and big-endian encode/decode with validation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "machnet/net/transport/seq.hh"

namespace machnet::net::transport {

inline constexpr uint16_t header_magic = 0x4e53;
/// Bytes of the Machnet header on the wire (after Eth/IPv4/UDP).
inline constexpr std::size_t header_size = 54;
/// Largest payload per packet: MTU 1500 − IPv4 20 − UDP 8 − Machnet 54.
inline constexpr std::size_t max_payload = 1418;
/// Largest message: 8 MiB.
inline constexpr std::size_t max_message_size = std::size_t(8) << 20;
/// Value of `ackno` in DATA packets that carry no acknowledgement (always,
/// toward a reference peer; see msg_flag::syn_data_acks for the other case).
inline constexpr seq_t data_ackno = 0xffffffff;

/// The packet type (`net_flags`). SYN-ACK is SYN|ACK; any other value is invalid.
enum class net_flag : uint8_t {
  data = 0x00,
  syn = 0x01,
  ack = 0x02,
  syn_ack = 0x03,
  rst = 0x80,
};
const char* to_string(net_flag f) noexcept;

/// Bits of `msg_flags`. On DATA packets they frame messages; on ACK packets
/// only `ack_rx_full` is defined (our extension, see docs/protocol.md).
namespace msg_flag {
inline constexpr uint8_t first = 0x01;   ///< first packet of a message
inline constexpr uint8_t more = 0x02;    ///< more packets of this message follow
inline constexpr uint8_t last = 0x04;    ///< last packet of a message
inline constexpr uint8_t chain = 0x08;   ///< reference: scatter-gather chain (ignored)
inline constexpr uint8_t notify = 0x80;  ///< reference: notify delivery (ignored)
/// Every bit a DATA packet may carry.
inline constexpr uint8_t data_mask = first | more | last | chain | notify;
/// On an ACK: the receiver's buffer for its application is full; packets
/// beyond `ackno` were not accepted. The sender stops and probes.
inline constexpr uint8_t ack_rx_full = 0x01;
/// On a SYN or SYN-ACK (our extension): the sender takes acknowledgements
/// carried by DATA packets. When both ends said so, a DATA packet may carry
/// `ackno`, the SACK bitmap and a timestamp echo (docs/protocol.md, "ACKs on
/// DATA"). The reference sends 0 here and ignores it.
inline constexpr uint8_t syn_data_acks = 0x40;
}  // namespace msg_flag

/// 256 selective-acknowledgement bits relative to `ackno`: bit i set ⇔ the
/// packet `ackno + i` arrived. Bit i lives in word i / 64 at bit position
/// i % 64 (value 1 << (i % 64)); each word goes on the wire big-endian, words
/// in index order. Bit 0 (`ackno` itself, missing by definition) is always 0.
struct sack_bitmap {
  static constexpr unsigned bits = 256;
  std::array<uint64_t, 4> w{};

  constexpr bool test(unsigned i) const noexcept { return (w[i / 64] >> (i % 64)) & 1; }
  constexpr void set(unsigned i) noexcept { w[i / 64] |= uint64_t(1) << (i % 64); }
  constexpr void clear(unsigned i) noexcept { w[i / 64] &= ~(uint64_t(1) << (i % 64)); }
  unsigned count() const noexcept;
  bool empty() const noexcept { return (w[0] | w[1] | w[2] | w[3]) == 0; }
  /// The highest set bit, or -1 when empty.
  int highest() const noexcept;
  constexpr bool operator==(const sack_bitmap&) const = default;
};

/// A decoded header, host byte order.
struct header {
  uint16_t magic = header_magic;
  net_flag flags = net_flag::data;
  uint8_t msg_flags = 0;
  seq_t seqno = 0;
  seq_t ackno = 0;
  sack_bitmap sack;
  uint16_t sack_count = 0;  ///< number of bits set in `sack`
  /// DATA: the sender's clock (ns) when the packet left. ACK: the echo of the
  /// DATA timestamp that triggered it, advanced by the time the receiver held
  /// it (docs/protocol.md); 0 = no sample. DATA carrying an ACK: the low 32
  /// bits of each, the sender's clock in the high half (data_ack_stamps).
  uint64_t timestamp1 = 0;
};

/// timestamp1 of a DATA packet that carries an ACK: the low 32 bits of the
/// sender's clock (high half) and of the echo (low half).
constexpr uint64_t data_ack_stamps(uint64_t sent_ns, uint64_t echo) noexcept {
  return (uint64_t(uint32_t(sent_ns)) << 32) | uint32_t(echo);
}

/// Writes `h` into `out[0..header_size)`, big-endian.
void encode(const header& h, uint8_t* out) noexcept;

enum class decode_error : uint8_t {
  ok,
  truncated,        ///< fewer than header_size bytes
  bad_magic,        ///< magic is not 0x4e53
  bad_net_flags,    ///< not DATA/SYN/ACK/SYN-ACK/RST
  bad_msg_flags,    ///< DATA with undefined bits, or MORE and LAST together
  payload_too_big,  ///< more than max_payload bytes after the header
  empty_data,       ///< a DATA packet without payload
};
const char* to_string(decode_error e) noexcept;

/// Parses and validates a header at the start of `pkt` (header + payload).
/// Never reads past `pkt`; returns why a packet is rejected.
decode_error decode(std::span<const uint8_t> pkt, header& out) noexcept;

}  // namespace machnet::net::transport
