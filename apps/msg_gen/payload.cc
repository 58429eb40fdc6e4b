// payload: header encoding and the --verify pattern (one 64-bit word per 8
// bytes derived from the sequence number, so every message differs).
#include "payload.hh"

#include <cstring>

namespace msg_gen {

namespace {

// The pattern word at byte offset `off` (a multiple of 8) of message `seq`.
inline uint64_t pattern_word(uint64_t seq, std::size_t off) noexcept {
  uint64_t x = (seq + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t(off) * 0xc2b2ae3d27d4eb4full);
  return x ^ (x >> 31);
}

}  // namespace

void write_header(std::span<uint8_t> msg, uint64_t seq, uint32_t flow) noexcept {
  msg_header h{seq, flow, header_magic};
  std::memcpy(msg.data(), &h, sizeof h);
}

bool read_header(std::span<const uint8_t> msg, msg_header& out) noexcept {
  if (msg.size() < header_size) return false;
  std::memcpy(&out, msg.data(), sizeof out);
  return out.magic == header_magic;
}

void fill_pattern(std::span<uint8_t> msg, uint64_t seq) noexcept {
  std::size_t off = header_size;
  for (; off + 8 <= msg.size(); off += 8) {
    uint64_t w = pattern_word(seq, off);
    std::memcpy(msg.data() + off, &w, 8);
  }
  if (off < msg.size()) {
    uint64_t w = pattern_word(seq, off);
    std::memcpy(msg.data() + off, &w, msg.size() - off);
  }
}

std::string check_reply(std::span<const uint8_t> reply, std::size_t msg_size, uint64_t seq,
                        uint32_t flow) {
  if (reply.size() != msg_size)
    return "size " + std::to_string(reply.size()) + ", expected " + std::to_string(msg_size);
  msg_header h;
  if (!read_header(reply, h)) return "bad header magic";
  if (h.seq != seq || h.flow != flow)
    return "header seq " + std::to_string(h.seq) + " flow " + std::to_string(h.flow) + ", expected seq " +
           std::to_string(seq) + " flow " + std::to_string(flow);
  std::size_t off = header_size;
  for (; off < reply.size(); off += 8) {
    uint64_t w = pattern_word(seq, off);
    std::size_t n = reply.size() - off < 8 ? reply.size() - off : 8;
    if (std::memcmp(reply.data() + off, &w, n) != 0) {
      for (std::size_t i = 0; i < n; ++i)
        if (reply[off + i] != reinterpret_cast<const uint8_t*>(&w)[i])
          return "payload differs at byte " + std::to_string(off + i);
    }
  }
  return {};
}

}  // namespace msg_gen
