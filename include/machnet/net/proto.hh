// proto: Ethernet/IPv4/UDP/ARP/ICMP-echo wire formats — classify a received
// frame in one pass (parse_frame) and build outgoing headers into a buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "machnet/net/types.hh"

namespace machnet::net {

// ---------------------------------------------------------------------------
// Wire layout. Only option-less IPv4 is ever built or accepted, so every
// offset below is fixed. All multi-byte wire fields are big-endian; the code
// never dereferences a header in place (it copies with memcpy), so frames may
// start at any alignment.
// ---------------------------------------------------------------------------

/// Ethernet II header: dst MAC, src MAC, ethertype (no VLAN tag, no FCS).
inline constexpr size_t eth_hdr_len = 14;
/// IPv4 header without options (IHL 5).
inline constexpr size_t ipv4_hdr_len = 20;
inline constexpr size_t udp_hdr_len = 8;
/// ICMP echo request/reply header: type, code, checksum, id, sequence.
inline constexpr size_t icmp_echo_hdr_len = 8;
/// ARP body for Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
inline constexpr size_t arp_body_len = 28;

inline constexpr size_t ipv4_offset = eth_hdr_len;               ///< 14
inline constexpr size_t l4_offset = eth_hdr_len + ipv4_hdr_len;  ///< 34
/// Where the UDP payload starts in every frame build_udp writes (42).
inline constexpr size_t udp_payload_offset = l4_offset + udp_hdr_len;
/// Ethernet + IPv4 + UDP header bytes in front of a UDP payload (42).
inline constexpr size_t udp_headers_len = udp_payload_offset;
/// Smallest Ethernet frame without FCS; ARP builders pad up to it.
inline constexpr size_t min_frame_len = 60;
/// Length of every ARP frame the builders write (42 bytes of ARP, zero-padded).
inline constexpr size_t arp_frame_len = min_frame_len;
/// Largest UDP payload an IPv4 datagram can carry (65535 - 20 - 8).
inline constexpr size_t max_udp_payload = 65535 - ipv4_hdr_len - udp_hdr_len;

inline constexpr uint16_t ethertype_ipv4 = 0x0800;
inline constexpr uint16_t ethertype_arp = 0x0806;
inline constexpr uint8_t ip_proto_icmp = 1;
inline constexpr uint8_t ip_proto_udp = 17;
/// TTL of every IPv4 header we build.
inline constexpr uint8_t default_ttl = 64;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Why parse_frame dropped a frame. `none` means "not dropped".
enum class drop_reason : uint8_t {
  none = 0,
  truncated_ethernet,  ///< shorter than an Ethernet header
  wrong_dst_mac,       ///< dst MAC neither ours nor broadcast (checked only if local_mac is set)
  not_ipv4,          ///< ethertype is neither IPv4 nor ARP — includes IPv6 and VLAN-tagged frames
  truncated_arp,     ///< ethertype ARP but shorter than the 28-byte ARP body
  bad_arp,           ///< wrong htype/ptype/hlen/plen, or opcode not request/reply
  arp_not_for_us,    ///< ARP target IP is not local_ip (sender fields are still filled in)
  truncated_ip,      ///< shorter than Ethernet + 20-byte IPv4 header
  bad_ip_version,    ///< IP version field is not 4
  ip_options,        ///< IHL > 5: options are not supported
  bad_ip_length,     ///< IHL < 5, or total length > bytes present or < header length
  bad_ip_checksum,   ///< IPv4 header checksum does not verify
  ip_fragment,       ///< MF set or fragment offset != 0 (no reassembly)
  wrong_dst_ip,      ///< IPv4 destination is not local_ip (IP broadcast is not accepted)
  unsupported_l4,    ///< IP protocol other than UDP or ICMP
  truncated_udp,     ///< IP payload shorter than a UDP header
  bad_udp_length,    ///< UDP length < 8 or larger than the IP payload
  bad_udp_checksum,  ///< UDP checksum non-zero and does not verify
  truncated_icmp,    ///< IP payload shorter than an ICMP echo header
  bad_icmp_checksum,  ///< ICMP checksum does not verify
  icmp_not_echo,      ///< ICMP other than echo request (type 8, code 0)
  count_              ///< number of reasons, not a reason
};
inline constexpr size_t drop_reason_count = static_cast<size_t>(drop_reason::count_);

/// Stable snake_case name of a reason ("bad_udp_checksum"), for logs and stats.
const char* to_string(drop_reason r) noexcept;

/// What a received frame is, as far as this stack cares.
enum class frame_kind : uint8_t {
  drop,               ///< see parse_result::reason
  udp,                ///< UDP datagram for local_ip
  arp_request,        ///< ARP request asking for local_ip
  arp_reply,          ///< ARP reply addressed to local_ip
  icmp_echo_request,  ///< ping of local_ip (answer with build_icmp_echo_reply)
};

const char* to_string(frame_kind k) noexcept;

/// Receive-side offload results, straight from the mbuf flags: set
/// `ip_cksum_good` when RTE_MBUF_F_RX_IP_CKSUM_GOOD is set and `l4_cksum_good`
/// when RTE_MBUF_F_RX_L4_CKSUM_GOOD is set; the matching software check is then
/// skipped. (`l4_cksum_good` applies to UDP only; ICMP is always verified in
/// software — NICs do not validate it and pings are rare.)
struct rx_cksum_flags {
  bool ip_cksum_good = false;
  bool l4_cksum_good = false;
};

/// The result of parse_frame. Which fields are meaningful depends on `kind`;
/// all multi-byte values are in host byte order; offsets are from the start of
/// the frame.
struct parse_result {
  frame_kind kind = frame_kind::drop;
  drop_reason reason = drop_reason::none;  ///< != none exactly when kind == drop

  /// Ethernet source (every kind; also on drops past the Ethernet header).
  mac_addr src_mac;

  // --- udp and icmp_echo_request ---
  ipv4_addr src_ip;
  ipv4_addr dst_ip;
  uint16_t l3_offset = 0;  ///< IPv4 header (always 14)
  uint16_t l4_offset = 0;  ///< UDP / ICMP header (always 34)
  /// udp: the UDP payload (per the UDP length field — trailing Ethernet padding
  /// excluded). icmp_echo_request: the echo data after the 8-byte echo header.
  uint16_t payload_offset = 0;
  uint16_t payload_len = 0;

  // --- udp ---
  uint16_t src_port = 0;
  uint16_t dst_port = 0;

  // --- icmp_echo_request ---
  uint16_t icmp_id = 0;
  uint16_t icmp_seq = 0;

  // --- arp_request and arp_reply (also filled for arp_not_for_us drops, so a
  //     caller may refresh an existing cache entry from gratuitous ARP) ---
  ipv4_addr arp_sender_ip;
  mac_addr arp_sender_mac;
  ipv4_addr arp_target_ip;

  bool dropped() const noexcept { return kind == frame_kind::drop; }
  /// For a udp result: the flow this datagram belongs to, seen from this host
  /// (local = destination, remote = source).
  flow_tuple rx_flow() const noexcept { return {dst_ip, src_ip, dst_port, src_port}; }
};

/// Classifies one contiguous frame (Ethernet header first, no FCS) — e.g. the
/// data of a single-segment mbuf. Never reads outside [data, data + len) and
/// never writes. `local_mac` may be all-zero to skip the destination-MAC check
/// (broadcast is always accepted at the Ethernet level, but only ARP may use
/// it: an IPv4 packet must be addressed to `local_ip`). Checks run in wire
/// order and the first failure is reported.
parse_result parse_frame(const uint8_t* data, size_t len, ipv4_addr local_ip, mac_addr local_mac,
                         rx_cksum_flags offload = {}) noexcept;

/// Per-reason drop counts (one per shard; sum them with +=).
struct drop_counters {
  std::array<uint64_t, drop_reason_count> by_reason{};

  void add(drop_reason r, uint64_t n = 1) noexcept { by_reason[static_cast<size_t>(r)] += n; }
  /// Counts `r.reason` if `r` is a drop; returns whether it was.
  bool count(const parse_result& r) noexcept {
    if (!r.dropped()) return false;
    add(r.reason);
    return true;
  }
  uint64_t operator[](drop_reason r) const noexcept { return by_reason[static_cast<size_t>(r)]; }
  uint64_t total() const noexcept;
  drop_counters& operator+=(const drop_counters& o) noexcept;
  /// "bad_ip_checksum=2 wrong_dst_ip=17" — non-zero reasons only; "none" if all zero.
  std::string str() const;
};

// ---------------------------------------------------------------------------
// Building. Every builder writes into the caller's buffer and returns the
// number of bytes written, or 0 (writing nothing) if `cap` is too small or an
// argument is out of range.
// ---------------------------------------------------------------------------

/// Writes Ethernet + IPv4 + UDP headers (42 bytes) for a datagram whose
/// `payload_len`-byte payload lives at buf + udp_payload_offset. The builder
/// never touches the payload bytes, so the caller may write the payload before
/// or after; `cap` must cover headers and payload. IPv4: DF set, TTL 64, the
/// given id, header checksum computed. UDP checksum: if `compute_l4_cksum`, it
/// is computed now over the payload *already in place*; otherwise it is 0
/// ("none") — write the payload later and call finalize_udp_cksum, or call
/// set_udp_pseudo_cksum for NIC TX checksum offload. Returns 42, or 0 if
/// `cap < 42 + payload_len` or `payload_len > max_udp_payload`.
size_t build_udp(uint8_t* buf, size_t cap, mac_addr src_mac, mac_addr dst_mac, ipv4_addr src_ip,
                 ipv4_addr dst_ip, uint16_t src_port, uint16_t dst_port, size_t payload_len,
                 bool compute_l4_cksum, uint16_t ip_id = 0) noexcept;

/// build_udp's headers for one flow, built once and stamped per packet: the
/// lengths are patched and the IPv4 checksum updated incrementally (RFC 1624)
/// from the sum of the headers at payload length 0. The bytes are exactly
/// build_udp's (with ip_id 0 and no L4 checksum); the TX path of the engine
/// sends a flow's packets with it (building anew was ~5 % of a bulk
/// sender's cycles).
class udp_header_template {
 public:
  void build(mac_addr src_mac, mac_addr dst_mac, ipv4_addr src_ip, ipv4_addr dst_ip,
             uint16_t src_port, uint16_t dst_port) noexcept;
  /// Writes the 42 header bytes for a `payload_len`-byte payload; false (and
  /// nothing written) if payload_len > max_udp_payload.
  bool write(uint8_t* frame, size_t payload_len) const noexcept;

 private:
  std::array<uint8_t, 42> _h{};
  uint32_t _ip_sum = 0;  // ones'-complement sum of the IPv4 header at length 0, checksum 0
};

/// Computes and stores the UDP checksum of a frame written by build_udp, once
/// its payload is in place (`len` is the frame length, at least 42 + payload).
/// Returns false (changing nothing) if the headers do not describe such a frame.
bool finalize_udp_cksum(uint8_t* frame, size_t len) noexcept;

/// Stores the IPv4 pseudo-header checksum (not complemented) in the UDP
/// checksum field — what NICs expect with RTE_MBUF_F_TX_UDP_CKSUM offload.
/// Same preconditions as finalize_udp_cksum.
bool set_udp_pseudo_cksum(uint8_t* frame, size_t len) noexcept;

/// Broadcast ARP request "who has target_ip? tell src_ip" (target MAC zero).
/// Returns arp_frame_len (zero-padded to 60 bytes).
size_t build_arp_request(uint8_t* buf, size_t cap, mac_addr src_mac, ipv4_addr src_ip,
                         ipv4_addr target_ip) noexcept;

/// Unicast ARP reply "src_ip is at src_mac" to the requester (dst_mac, dst_ip),
/// i.e. to a request's arp_sender_mac / arp_sender_ip. Returns arp_frame_len.
size_t build_arp_reply(uint8_t* buf, size_t cap, mac_addr src_mac, ipv4_addr src_ip,
                       mac_addr dst_mac, ipv4_addr dst_ip) noexcept;

/// Gratuitous ARP (announcement): a broadcast request with sender IP = target
/// IP = src_ip and target MAC zero, so neighbours refresh their entry for us.
/// Returns arp_frame_len.
size_t build_gratuitous_arp(uint8_t* buf, size_t cap, mac_addr src_mac, ipv4_addr src_ip) noexcept;

/// Builds the echo reply to `req`, a frame parse_frame classified as
/// icmp_echo_request: Ethernet and IP addresses swapped (Ethernet source is
/// `local_mac`), ICMP type 0, same id/sequence/data, fresh IPv4 header (DF, TTL
/// 64) and both checksums recomputed. Trailing Ethernet padding of the request
/// is not copied. `buf` may equal or overlap `req` (e.g. reply in place: all of
/// the request is read before anything is written). Returns the reply length (14 + the request's IP
/// total length), or 0 if `req` is not an option-less IPv4 ICMP echo request or cap is short.
size_t build_icmp_echo_reply(uint8_t* buf, size_t cap, const uint8_t* req, size_t req_len,
                             mac_addr local_mac) noexcept;

// ---------------------------------------------------------------------------
// Checksum helpers (exposed for tests and for code that patches headers).
// ---------------------------------------------------------------------------

/// The Internet checksum (RFC 1071) of a byte range — the complement of its
/// one's complement sum — in host byte order (store it big-endian). A range
/// that already contains its correct checksum yields 0. `len` up to 64 KiB.
uint16_t inet_cksum(const uint8_t* data, size_t len) noexcept;

}  // namespace machnet::net
