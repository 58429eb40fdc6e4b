// types: parsing and printing of addresses and flow tuples.
#include "machnet/net/types.hh"

#include <fmt/format.h>

#include <charconv>

namespace machnet::net {

std::optional<ipv4_addr> ipv4_addr::parse(std::string_view s) {
  uint32_t v = 0;
  const char* p = s.data();
  const char* end = s.data() + s.size();
  for (int i = 0; i < 4; ++i) {
    unsigned octet = 0;
    auto [q, ec] = std::from_chars(p, end, octet);
    if (ec != std::errc() || q == p || octet > 255 || q - p > 3) return std::nullopt;
    v = (v << 8) | octet;
    p = q;
    if (i < 3) {
      if (p == end || *p != '.') return std::nullopt;
      ++p;
    }
  }
  if (p != end) return std::nullopt;
  return ipv4_addr{v};
}

std::string ipv4_addr::str() const {
  return fmt::format("{}.{}.{}.{}", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
}

std::optional<mac_addr> mac_addr::parse(std::string_view s) {
  if (s.size() != 17) return std::nullopt;
  mac_addr m;
  for (int i = 0; i < 6; ++i) {
    unsigned byte = 0;
    auto [q, ec] = std::from_chars(s.data() + i * 3, s.data() + i * 3 + 2, byte, 16);
    if (ec != std::errc() || q != s.data() + i * 3 + 2) return std::nullopt;
    if (i < 5 && s[i * 3 + 2] != ':') return std::nullopt;
    m.b[i] = static_cast<uint8_t>(byte);
  }
  return m;
}

std::string mac_addr::str() const {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4],
                     b[5]);
}

std::string flow_tuple::str() const {
  return fmt::format("{}:{} <-> {}:{}", local_ip.str(), local_port, remote_ip.str(), remote_port);
}

}  // namespace machnet::net
