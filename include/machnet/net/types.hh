// types: the small value types every part of net/ shares — addresses and the
// flow tuple — kept in host byte order; converted only at the wire.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace machnet::net {

/// An IPv4 address in host byte order (10.0.0.1 is 0x0a000001).
struct ipv4_addr {
  uint32_t v = 0;
  constexpr auto operator<=>(const ipv4_addr&) const = default;
  /// Parses dotted quad; nullopt on anything else.
  static std::optional<ipv4_addr> parse(std::string_view s);
  std::string str() const;
};

/// An Ethernet MAC address in wire order.
struct mac_addr {
  std::array<uint8_t, 6> b{};
  constexpr auto operator<=>(const mac_addr&) const = default;
  static constexpr mac_addr broadcast() { return {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}; }
  bool is_broadcast() const { return *this == broadcast(); }
  bool is_zero() const { return *this == mac_addr{}; }
  /// Parses aa:bb:cc:dd:ee:ff; nullopt on anything else.
  static std::optional<mac_addr> parse(std::string_view s);
  std::string str() const;
};

/// A UDP flow seen from this host: local and remote address and port, host
/// byte order. The packet we *receive* on this flow has src = remote, dst = local.
struct flow_tuple {
  ipv4_addr local_ip;
  ipv4_addr remote_ip;
  uint16_t local_port = 0;
  uint16_t remote_port = 0;
  constexpr auto operator<=>(const flow_tuple&) const = default;
  std::string str() const;
};

struct flow_tuple_hash {
  std::size_t operator()(const flow_tuple& f) const noexcept {
    uint64_t a = (uint64_t(f.local_ip.v) << 32) | f.remote_ip.v;
    uint64_t b = (uint64_t(f.local_port) << 16) | f.remote_port;
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);
    return static_cast<std::size_t>(h ^ (h >> 29));
  }
};

}  // namespace machnet::net
