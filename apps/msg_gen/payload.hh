// payload: msg_gen's message framing — a 16-byte header (per-flow sequence
// number, flow index, magic) in messages of 16 bytes or more, and the
// per-sequence byte pattern --verify fills in and checks after it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace msg_gen {

struct msg_header {
  uint64_t seq;
  uint32_t flow;
  uint32_t magic;
};
static_assert(sizeof(msg_header) == 16);

inline constexpr uint32_t header_magic = 0x4d47454e;  // "MGEN"
inline constexpr std::size_t header_size = sizeof(msg_header);

/// True if messages of this size carry the header (else replies are matched
/// in order and carry no sequence number).
inline bool has_header(std::size_t msg_size) noexcept { return msg_size >= header_size; }

/// Writes the header into msg (msg.size() >= header_size).
void write_header(std::span<uint8_t> msg, uint64_t seq, uint32_t flow) noexcept;
/// Reads the header of a message; false if it is too short or the magic is wrong.
bool read_header(std::span<const uint8_t> msg, msg_header& out) noexcept;

/// Fills msg[header_size..] with the pattern of `seq`.
void fill_pattern(std::span<uint8_t> msg, uint64_t seq) noexcept;
/// Checks a reply against the message `seq` of flow `flow` with `msg_size`
/// bytes: "" when it matches, else what is wrong.
std::string check_reply(std::span<const uint8_t> reply, std::size_t msg_size, uint64_t seq,
                        uint32_t flow);

}  // namespace msg_gen
