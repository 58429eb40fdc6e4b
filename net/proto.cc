// proto: frame classification and header builders over DPDK's wire structs,
// always copied in and out with memcpy so frames need no particular alignment.
#include "machnet/net/proto.hh"

#include <fmt/format.h>
#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_udp.h>

#include <cstddef>
#include <cstring>

namespace machnet::net {

static_assert(sizeof(rte_ether_hdr) == eth_hdr_len);
static_assert(sizeof(rte_ipv4_hdr) == ipv4_hdr_len);
static_assert(sizeof(rte_udp_hdr) == udp_hdr_len);
static_assert(sizeof(rte_icmp_hdr) == icmp_echo_hdr_len);
static_assert(sizeof(rte_arp_hdr) == arp_body_len);
static_assert(eth_hdr_len + arp_body_len <= arp_frame_len);

namespace {

constexpr uint8_t ipv4_version_ihl = 0x45;  // version 4, 5 words, no options

// One's complement sum (folded to 16 bits, not complemented) in the native
// word order of rte_raw_cksum: storing it with memcpy yields wire bytes.
inline uint16_t fold(uint32_t s) noexcept {
  s = (s >> 16) + (s & 0xffff);
  s = (s >> 16) + (s & 0xffff);
  return static_cast<uint16_t>(s);
}

// Native-order sum of the IPv4 pseudo-header; addresses are wire order.
inline uint16_t pseudo_sum(rte_be32_t src, rte_be32_t dst, uint8_t proto,
                           uint16_t l4_len) noexcept {
  struct [[gnu::packed]] {
    rte_be32_t src;
    rte_be32_t dst;
    uint8_t zero;
    uint8_t proto;
    rte_be16_t len;
  } ph{src, dst, 0, proto, rte_cpu_to_be_16(l4_len)};
  static_assert(sizeof(ph) == 12);
  return rte_raw_cksum(&ph, sizeof(ph));
}

// Sum over pseudo-header + UDP segment (with whatever checksum field it holds).
inline uint16_t udp_sum(const rte_ipv4_hdr& ip, const uint8_t* udp, uint16_t udp_len) noexcept {
  return fold(uint32_t(pseudo_sum(ip.src_addr, ip.dst_addr, ip_proto_udp, udp_len)) +
              rte_raw_cksum(udp, udp_len));
}

inline mac_addr load_mac(const rte_ether_addr& a) noexcept {
  mac_addr m;
  std::memcpy(m.b.data(), a.addr_bytes, 6);
  return m;
}
inline rte_ether_addr to_rte(mac_addr m) noexcept {
  rte_ether_addr a;
  std::memcpy(a.addr_bytes, m.b.data(), 6);
  return a;
}

inline rte_ipv4_hdr make_ipv4(ipv4_addr src, ipv4_addr dst, uint8_t proto, uint16_t total_len,
                              uint16_t id) noexcept {
  rte_ipv4_hdr ip{};
  ip.version_ihl = ipv4_version_ihl;
  ip.type_of_service = 0;
  ip.total_length = rte_cpu_to_be_16(total_len);
  ip.packet_id = rte_cpu_to_be_16(id);
  ip.fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip.time_to_live = default_ttl;
  ip.next_proto_id = proto;
  ip.hdr_checksum = 0;
  ip.src_addr = rte_cpu_to_be_32(src.v);
  ip.dst_addr = rte_cpu_to_be_32(dst.v);
  ip.hdr_checksum = rte_ipv4_cksum(&ip);
  return ip;
}

// --- parsing ---------------------------------------------------------------

drop_reason parse_arp(const uint8_t* data, size_t len, ipv4_addr local_ip,
                      parse_result& r) noexcept {
  if (len < eth_hdr_len + arp_body_len) return drop_reason::truncated_arp;
  rte_arp_hdr arp;
  std::memcpy(&arp, data + eth_hdr_len, sizeof(arp));
  if (rte_be_to_cpu_16(arp.arp_hardware) != RTE_ARP_HRD_ETHER ||
      rte_be_to_cpu_16(arp.arp_protocol) != ethertype_ipv4 || arp.arp_hlen != 6 ||
      arp.arp_plen != 4)
    return drop_reason::bad_arp;
  const uint16_t op = rte_be_to_cpu_16(arp.arp_opcode);
  if (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY) return drop_reason::bad_arp;
  r.arp_sender_mac = load_mac(arp.arp_data.arp_sha);
  r.arp_sender_ip = ipv4_addr{rte_be_to_cpu_32(arp.arp_data.arp_sip)};
  r.arp_target_ip = ipv4_addr{rte_be_to_cpu_32(arp.arp_data.arp_tip)};
  if (r.arp_target_ip != local_ip) return drop_reason::arp_not_for_us;
  r.kind = op == RTE_ARP_OP_REQUEST ? frame_kind::arp_request : frame_kind::arp_reply;
  return drop_reason::none;
}

drop_reason parse_udp(const uint8_t* l4, uint16_t l4_len, const rte_ipv4_hdr& ip,
                      rx_cksum_flags offload, parse_result& r) noexcept {
  if (l4_len < udp_hdr_len) return drop_reason::truncated_udp;
  rte_udp_hdr udp;
  std::memcpy(&udp, l4, sizeof(udp));
  const uint16_t udp_len = rte_be_to_cpu_16(udp.dgram_len);
  if (udp_len < udp_hdr_len || udp_len > l4_len) return drop_reason::bad_udp_length;
  // A zero checksum means the sender computed none (allowed over IPv4).
  if (udp.dgram_cksum != 0 && !offload.l4_cksum_good && udp_sum(ip, l4, udp_len) != 0xffff)
    return drop_reason::bad_udp_checksum;
  r.src_port = rte_be_to_cpu_16(udp.src_port);
  r.dst_port = rte_be_to_cpu_16(udp.dst_port);
  r.payload_offset = static_cast<uint16_t>(udp_payload_offset);
  r.payload_len = static_cast<uint16_t>(udp_len - udp_hdr_len);
  r.kind = frame_kind::udp;
  return drop_reason::none;
}

drop_reason parse_icmp(const uint8_t* l4, uint16_t l4_len, parse_result& r) noexcept {
  if (l4_len < icmp_echo_hdr_len) return drop_reason::truncated_icmp;
  if (rte_raw_cksum(l4, l4_len) != 0xffff) return drop_reason::bad_icmp_checksum;
  rte_icmp_hdr icmp;
  std::memcpy(&icmp, l4, sizeof(icmp));
  if (icmp.icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp.icmp_code != 0)
    return drop_reason::icmp_not_echo;
  r.icmp_id = rte_be_to_cpu_16(icmp.icmp_ident);
  r.icmp_seq = rte_be_to_cpu_16(icmp.icmp_seq_nb);
  r.payload_offset = static_cast<uint16_t>(l4_offset + icmp_echo_hdr_len);
  r.payload_len = static_cast<uint16_t>(l4_len - icmp_echo_hdr_len);
  r.kind = frame_kind::icmp_echo_request;
  return drop_reason::none;
}

drop_reason parse_ipv4(const uint8_t* data, size_t len, ipv4_addr local_ip, rx_cksum_flags offload,
                       parse_result& r) noexcept {
  if (len < eth_hdr_len + ipv4_hdr_len) return drop_reason::truncated_ip;
  const uint8_t* l3 = data + eth_hdr_len;
  rte_ipv4_hdr ip;
  std::memcpy(&ip, l3, sizeof(ip));
  if ((ip.version_ihl >> 4) != 4) return drop_reason::bad_ip_version;
  const unsigned ihl = ip.version_ihl & RTE_IPV4_HDR_IHL_MASK;
  if (ihl < 5) return drop_reason::bad_ip_length;
  if (ihl > 5) return drop_reason::ip_options;
  const uint16_t total = rte_be_to_cpu_16(ip.total_length);
  if (total < ipv4_hdr_len || total > len - eth_hdr_len) return drop_reason::bad_ip_length;
  if (!offload.ip_cksum_good && rte_raw_cksum(l3, ipv4_hdr_len) != 0xffff)
    return drop_reason::bad_ip_checksum;
  if (rte_be_to_cpu_16(ip.fragment_offset) & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))
    return drop_reason::ip_fragment;
  r.src_ip = ipv4_addr{rte_be_to_cpu_32(ip.src_addr)};
  r.dst_ip = ipv4_addr{rte_be_to_cpu_32(ip.dst_addr)};
  if (r.dst_ip != local_ip) return drop_reason::wrong_dst_ip;
  r.l3_offset = static_cast<uint16_t>(ipv4_offset);
  r.l4_offset = static_cast<uint16_t>(l4_offset);
  const uint8_t* l4 = l3 + ipv4_hdr_len;
  const auto l4_len = static_cast<uint16_t>(total - ipv4_hdr_len);
  switch (ip.next_proto_id) {
    case ip_proto_udp:
      return parse_udp(l4, l4_len, ip, offload, r);
    case ip_proto_icmp:
      return parse_icmp(l4, l4_len, r);
    default:
      return drop_reason::unsupported_l4;
  }
}

// --- building --------------------------------------------------------------

// Validates a frame laid out by build_udp; on success fills ip and udp_len.
bool udp_frame_view(const uint8_t* frame, size_t len, rte_ipv4_hdr& ip,
                    uint16_t& udp_len) noexcept {
  if (frame == nullptr || len < udp_headers_len) return false;
  rte_ether_hdr eh;
  std::memcpy(&eh, frame, sizeof(eh));
  if (rte_be_to_cpu_16(eh.ether_type) != ethertype_ipv4) return false;
  std::memcpy(&ip, frame + ipv4_offset, sizeof(ip));
  if (ip.version_ihl != ipv4_version_ihl || ip.next_proto_id != ip_proto_udp) return false;
  const uint16_t total = rte_be_to_cpu_16(ip.total_length);
  if (total < ipv4_hdr_len + udp_hdr_len || eth_hdr_len + total > len) return false;
  rte_udp_hdr udp;
  std::memcpy(&udp, frame + l4_offset, sizeof(udp));
  udp_len = rte_be_to_cpu_16(udp.dgram_len);
  return udp_len == total - ipv4_hdr_len;
}

void store_udp_cksum(uint8_t* frame, rte_be16_t v) noexcept {
  std::memcpy(frame + l4_offset + offsetof(rte_udp_hdr, dgram_cksum), &v, sizeof(v));
}

size_t build_arp(uint8_t* buf, size_t cap, mac_addr eth_dst, uint16_t op, mac_addr sha,
                 ipv4_addr sip, mac_addr tha, ipv4_addr tip) noexcept {
  if (buf == nullptr || cap < arp_frame_len) return 0;
  rte_ether_hdr eh{};
  eh.dst_addr = to_rte(eth_dst);
  eh.src_addr = to_rte(sha);
  eh.ether_type = rte_cpu_to_be_16(ethertype_arp);
  rte_arp_hdr arp{};
  arp.arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp.arp_protocol = rte_cpu_to_be_16(ethertype_ipv4);
  arp.arp_hlen = 6;
  arp.arp_plen = 4;
  arp.arp_opcode = rte_cpu_to_be_16(op);
  arp.arp_data.arp_sha = to_rte(sha);
  arp.arp_data.arp_sip = rte_cpu_to_be_32(sip.v);
  arp.arp_data.arp_tha = to_rte(tha);
  arp.arp_data.arp_tip = rte_cpu_to_be_32(tip.v);
  std::memset(buf, 0, arp_frame_len);
  std::memcpy(buf, &eh, sizeof(eh));
  std::memcpy(buf + eth_hdr_len, &arp, sizeof(arp));
  return arp_frame_len;
}

}  // namespace

const char* to_string(drop_reason r) noexcept {
  switch (r) {
    case drop_reason::none:
      return "none";
    case drop_reason::truncated_ethernet:
      return "truncated_ethernet";
    case drop_reason::wrong_dst_mac:
      return "wrong_dst_mac";
    case drop_reason::not_ipv4:
      return "not_ipv4";
    case drop_reason::truncated_arp:
      return "truncated_arp";
    case drop_reason::bad_arp:
      return "bad_arp";
    case drop_reason::arp_not_for_us:
      return "arp_not_for_us";
    case drop_reason::truncated_ip:
      return "truncated_ip";
    case drop_reason::bad_ip_version:
      return "bad_ip_version";
    case drop_reason::ip_options:
      return "ip_options";
    case drop_reason::bad_ip_length:
      return "bad_ip_length";
    case drop_reason::bad_ip_checksum:
      return "bad_ip_checksum";
    case drop_reason::ip_fragment:
      return "ip_fragment";
    case drop_reason::wrong_dst_ip:
      return "wrong_dst_ip";
    case drop_reason::unsupported_l4:
      return "unsupported_l4";
    case drop_reason::truncated_udp:
      return "truncated_udp";
    case drop_reason::bad_udp_length:
      return "bad_udp_length";
    case drop_reason::bad_udp_checksum:
      return "bad_udp_checksum";
    case drop_reason::truncated_icmp:
      return "truncated_icmp";
    case drop_reason::bad_icmp_checksum:
      return "bad_icmp_checksum";
    case drop_reason::icmp_not_echo:
      return "icmp_not_echo";
    case drop_reason::count_:
      break;
  }
  return "unknown";
}

const char* to_string(frame_kind k) noexcept {
  switch (k) {
    case frame_kind::drop:
      return "drop";
    case frame_kind::udp:
      return "udp";
    case frame_kind::arp_request:
      return "arp_request";
    case frame_kind::arp_reply:
      return "arp_reply";
    case frame_kind::icmp_echo_request:
      return "icmp_echo_request";
  }
  return "unknown";
}

parse_result parse_frame(const uint8_t* data, size_t len, ipv4_addr local_ip, mac_addr local_mac,
                         rx_cksum_flags offload) noexcept {
  parse_result r;
  drop_reason why = drop_reason::none;
  if (data == nullptr || len < eth_hdr_len) {
    why = drop_reason::truncated_ethernet;
  } else {
    rte_ether_hdr eh;
    std::memcpy(&eh, data, sizeof(eh));
    r.src_mac = load_mac(eh.src_addr);
    const mac_addr dst = load_mac(eh.dst_addr);
    const uint16_t type = rte_be_to_cpu_16(eh.ether_type);
    if (!local_mac.is_zero() && dst != local_mac && !dst.is_broadcast())
      why = drop_reason::wrong_dst_mac;
    else if (type == ethertype_ipv4)
      why = parse_ipv4(data, len, local_ip, offload, r);
    else if (type == ethertype_arp)
      why = parse_arp(data, len, local_ip, r);
    else
      why = drop_reason::not_ipv4;
  }
  if (why != drop_reason::none) {
    r.kind = frame_kind::drop;
    r.reason = why;
  }
  return r;
}

uint64_t drop_counters::total() const noexcept {
  uint64_t t = 0;
  for (uint64_t n : by_reason) t += n;
  return t;
}

drop_counters& drop_counters::operator+=(const drop_counters& o) noexcept {
  for (size_t i = 0; i < drop_reason_count; ++i) by_reason[i] += o.by_reason[i];
  return *this;
}

std::string drop_counters::str() const {
  std::string s;
  for (size_t i = 0; i < drop_reason_count; ++i) {
    if (by_reason[i] == 0) continue;
    if (!s.empty()) s += ' ';
    s += fmt::format("{}={}", to_string(static_cast<drop_reason>(i)), by_reason[i]);
  }
  return s.empty() ? "none" : s;
}

void udp_header_template::build(mac_addr src_mac, mac_addr dst_mac, ipv4_addr src_ip,
                                ipv4_addr dst_ip, uint16_t src_port, uint16_t dst_port) noexcept {
  static_assert(udp_headers_len == sizeof(_h));
  build_udp(_h.data(), _h.size(), src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, 0, false);
  // Length 0 and checksum 0 in the stored copy's IPv4 header: write() adds
  // the real length to this sum.
  std::memset(_h.data() + ipv4_offset + offsetof(rte_ipv4_hdr, total_length), 0, 2);
  std::memset(_h.data() + ipv4_offset + offsetof(rte_ipv4_hdr, hdr_checksum), 0, 2);
  _ip_sum = rte_raw_cksum(_h.data() + ipv4_offset, ipv4_hdr_len);
}

bool udp_header_template::write(uint8_t* frame, size_t payload_len) const noexcept {
  if (payload_len > max_udp_payload) return false;
  std::memcpy(frame, _h.data(), _h.size());
  const auto udp_len = static_cast<uint16_t>(udp_hdr_len + payload_len);
  const rte_be16_t total = rte_cpu_to_be_16(static_cast<uint16_t>(ipv4_hdr_len + udp_len));
  uint32_t sum = _ip_sum + total;  // the same 16-bit words as rte_raw_cksum reads
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  const auto cksum = static_cast<rte_be16_t>(~sum & 0xffff);
  const rte_be16_t ulen = rte_cpu_to_be_16(udp_len);
  std::memcpy(frame + ipv4_offset + offsetof(rte_ipv4_hdr, total_length), &total, 2);
  std::memcpy(frame + ipv4_offset + offsetof(rte_ipv4_hdr, hdr_checksum), &cksum, 2);
  std::memcpy(frame + l4_offset + offsetof(rte_udp_hdr, dgram_len), &ulen, 2);
  return true;
}

size_t build_udp(uint8_t* buf, size_t cap, mac_addr src_mac, mac_addr dst_mac, ipv4_addr src_ip,
                 ipv4_addr dst_ip, uint16_t src_port, uint16_t dst_port, size_t payload_len,
                 bool compute_l4_cksum, uint16_t ip_id) noexcept {
  if (buf == nullptr || payload_len > max_udp_payload || cap < udp_headers_len ||
      cap - udp_headers_len < payload_len)
    return 0;
  rte_ether_hdr eh{};
  eh.dst_addr = to_rte(dst_mac);
  eh.src_addr = to_rte(src_mac);
  eh.ether_type = rte_cpu_to_be_16(ethertype_ipv4);
  const auto udp_len = static_cast<uint16_t>(udp_hdr_len + payload_len);
  const rte_ipv4_hdr ip =
      make_ipv4(src_ip, dst_ip, ip_proto_udp, static_cast<uint16_t>(ipv4_hdr_len + udp_len), ip_id);
  rte_udp_hdr udp{};
  udp.src_port = rte_cpu_to_be_16(src_port);
  udp.dst_port = rte_cpu_to_be_16(dst_port);
  udp.dgram_len = rte_cpu_to_be_16(udp_len);
  udp.dgram_cksum = 0;
  std::memcpy(buf, &eh, sizeof(eh));
  std::memcpy(buf + ipv4_offset, &ip, sizeof(ip));
  std::memcpy(buf + l4_offset, &udp, sizeof(udp));
  if (compute_l4_cksum) finalize_udp_cksum(buf, udp_headers_len + payload_len);
  return udp_headers_len;
}

bool finalize_udp_cksum(uint8_t* frame, size_t len) noexcept {
  rte_ipv4_hdr ip;
  uint16_t udp_len = 0;
  if (!udp_frame_view(frame, len, ip, udp_len)) return false;
  store_udp_cksum(frame, 0);
  uint16_t c = static_cast<uint16_t>(~udp_sum(ip, frame + l4_offset, udp_len));
  if (c == 0) c = 0xffff;  // 0 would mean "no checksum" (RFC 768)
  store_udp_cksum(frame, c);
  return true;
}

bool set_udp_pseudo_cksum(uint8_t* frame, size_t len) noexcept {
  rte_ipv4_hdr ip;
  uint16_t udp_len = 0;
  if (!udp_frame_view(frame, len, ip, udp_len)) return false;
  store_udp_cksum(frame, pseudo_sum(ip.src_addr, ip.dst_addr, ip_proto_udp, udp_len));
  return true;
}

size_t build_arp_request(uint8_t* buf, size_t cap, mac_addr src_mac, ipv4_addr src_ip,
                         ipv4_addr target_ip) noexcept {
  return build_arp(buf, cap, mac_addr::broadcast(), RTE_ARP_OP_REQUEST, src_mac, src_ip, mac_addr{},
                   target_ip);
}

size_t build_arp_reply(uint8_t* buf, size_t cap, mac_addr src_mac, ipv4_addr src_ip,
                       mac_addr dst_mac, ipv4_addr dst_ip) noexcept {
  return build_arp(buf, cap, dst_mac, RTE_ARP_OP_REPLY, src_mac, src_ip, dst_mac, dst_ip);
}

size_t build_gratuitous_arp(uint8_t* buf, size_t cap, mac_addr src_mac, ipv4_addr src_ip) noexcept {
  return build_arp(buf, cap, mac_addr::broadcast(), RTE_ARP_OP_REQUEST, src_mac, src_ip, mac_addr{},
                   src_ip);
}

size_t build_icmp_echo_reply(uint8_t* buf, size_t cap, const uint8_t* req, size_t req_len,
                             mac_addr local_mac) noexcept {
  if (buf == nullptr || req == nullptr || req_len < l4_offset + icmp_echo_hdr_len) return 0;
  // Read everything needed from the request before writing (buf may be req).
  rte_ether_hdr req_eh;
  rte_ipv4_hdr req_ip;
  rte_icmp_hdr req_icmp;
  std::memcpy(&req_eh, req, sizeof(req_eh));
  std::memcpy(&req_ip, req + ipv4_offset, sizeof(req_ip));
  std::memcpy(&req_icmp, req + l4_offset, sizeof(req_icmp));
  if (rte_be_to_cpu_16(req_eh.ether_type) != ethertype_ipv4 ||
      req_ip.version_ihl != ipv4_version_ihl || req_ip.next_proto_id != ip_proto_icmp ||
      req_icmp.icmp_type != RTE_IP_ICMP_ECHO_REQUEST || req_icmp.icmp_code != 0)
    return 0;
  const uint16_t total = rte_be_to_cpu_16(req_ip.total_length);
  if (total < ipv4_hdr_len + icmp_echo_hdr_len || eth_hdr_len + total > req_len) return 0;
  const size_t frame_len = eth_hdr_len + total;
  if (cap < frame_len) return 0;
  const size_t data_len = total - ipv4_hdr_len - icmp_echo_hdr_len;
  const size_t data_off = l4_offset + icmp_echo_hdr_len;

  rte_ether_hdr eh{};
  eh.dst_addr = req_eh.src_addr;
  eh.src_addr = to_rte(local_mac);
  eh.ether_type = req_eh.ether_type;
  const rte_ipv4_hdr ip =
      make_ipv4(ipv4_addr{rte_be_to_cpu_32(req_ip.dst_addr)},
                ipv4_addr{rte_be_to_cpu_32(req_ip.src_addr)}, ip_proto_icmp, total, 0);
  rte_icmp_hdr icmp{};
  icmp.icmp_type = RTE_IP_ICMP_ECHO_REPLY;
  icmp.icmp_code = 0;
  icmp.icmp_cksum = 0;
  icmp.icmp_ident = req_icmp.icmp_ident;
  icmp.icmp_seq_nb = req_icmp.icmp_seq_nb;

  if (buf != req) std::memmove(buf + data_off, req + data_off, data_len);
  std::memcpy(buf, &eh, sizeof(eh));
  std::memcpy(buf + ipv4_offset, &ip, sizeof(ip));
  std::memcpy(buf + l4_offset, &icmp, sizeof(icmp));
  const auto c = static_cast<uint16_t>(~rte_raw_cksum(buf + l4_offset, total - ipv4_hdr_len));
  std::memcpy(buf + l4_offset + offsetof(rte_icmp_hdr, icmp_cksum), &c, sizeof(c));
  return frame_len;
}

uint16_t inet_cksum(const uint8_t* data, size_t len) noexcept {
  const auto c = static_cast<uint16_t>(~rte_raw_cksum(data, len));
  return rte_be_to_cpu_16(c);
}

}  // namespace machnet::net
