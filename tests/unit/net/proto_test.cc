// Tests of net/proto: builder/parser round trips, every drop reason, truncation
// at every length, checksums against a bytewise reference, and a fuzz run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "machnet/net/proto.hh"

using namespace machnet::net;

namespace {

const mac_addr local_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
const mac_addr peer_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}};
const mac_addr other_mac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x03}};
const ipv4_addr local_ip{0x0a000001};  // 10.0.0.1
const ipv4_addr peer_ip{0x0a000002};   // 10.0.0.2
const ipv4_addr other_ip{0x0a000003};  // 10.0.0.3

using bytes = std::vector<uint8_t>;

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// Reference Internet checksum, big-endian word at a time, written
// independently of the DPDK-based implementation under test.
uint32_t ref_sum(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += get16(p + i);
  if (n % 2) s += uint32_t(p[n - 1]) << 8;
  return s;
}
uint16_t ref_fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}
uint16_t ref_cksum(const uint8_t* p, size_t n) {
  return static_cast<uint16_t>(~ref_fold(ref_sum(p, n)));
}

// Sum of the UDP pseudo-header of the frame's IPv4 header.
uint32_t ref_pseudo(const uint8_t* f, uint16_t udp_len) {
  uint32_t s = ref_sum(f + 26, 8);  // src + dst address
  return s + 17 + udp_len;
}
void fix_ip_cksum(bytes& f) {
  put16(&f[24], 0);
  put16(&f[24], ref_cksum(&f[14], 20));
}
void fix_udp_cksum(bytes& f) {
  const uint16_t ulen = get16(&f[38]);
  put16(&f[40], 0);
  uint16_t c = static_cast<uint16_t>(~ref_fold(ref_sum(&f[34], ulen, ref_pseudo(f.data(), ulen))));
  put16(&f[40], c == 0 ? 0xffff : c);
}
void fix_icmp_cksum(bytes& f) {
  const size_t n = get16(&f[16]) - 20;
  put16(&f[36], 0);
  put16(&f[36], ref_cksum(&f[34], n));
}

bytes payload_pattern(size_t n, uint8_t seed = 7) {
  bytes p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(seed + i * 13);
  return p;
}

// A UDP frame peer -> local with payload written before the headers.
bytes udp_frame(size_t payload_len, bool cksum = true, uint16_t sport = 40000,
                uint16_t dport = 5000) {
  bytes f(udp_headers_len + payload_len);
  auto p = payload_pattern(payload_len);
  if (payload_len) std::memcpy(&f[udp_payload_offset], p.data(), payload_len);
  REQUIRE(build_udp(f.data(), f.size(), peer_mac, local_mac, peer_ip, local_ip, sport, dport,
                    payload_len, cksum, 0x1234) == udp_headers_len);
  return f;
}

// An ICMP echo request peer -> local, built by hand.
bytes echo_request(size_t data_len, uint16_t id = 0x4242, uint16_t seq = 7) {
  bytes f(34 + 8 + data_len, 0);
  std::memcpy(&f[0], local_mac.b.data(), 6);
  std::memcpy(&f[6], peer_mac.b.data(), 6);
  put16(&f[12], 0x0800);
  f[14] = 0x45;
  put16(&f[16], static_cast<uint16_t>(20 + 8 + data_len));
  put16(&f[18], 99);
  f[22] = 64;
  f[23] = 1;
  put16(&f[26], static_cast<uint16_t>(peer_ip.v >> 16));
  put16(&f[28], static_cast<uint16_t>(peer_ip.v));
  put16(&f[30], static_cast<uint16_t>(local_ip.v >> 16));
  put16(&f[32], static_cast<uint16_t>(local_ip.v));
  fix_ip_cksum(f);
  f[34] = 8;
  put16(&f[38], id);
  put16(&f[40], seq);
  auto d = payload_pattern(data_len, 3);
  if (data_len) std::memcpy(&f[42], d.data(), data_len);
  fix_icmp_cksum(f);
  return f;
}

bytes arp_request_from_peer(ipv4_addr target = local_ip) {
  bytes f(arp_frame_len);
  REQUIRE(build_arp_request(f.data(), f.size(), peer_mac, peer_ip, target) == arp_frame_len);
  return f;
}

parse_result parse(const bytes& f, rx_cksum_flags off = {}) {
  return parse_frame(f.data(), f.size(), local_ip, local_mac, off);
}

// Parses a copy held in an exactly-sized heap block, so ASan flags any overread.
parse_result parse_exact(const uint8_t* data, size_t len, rx_cksum_flags off = {}) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[len == 0 ? 1 : len]);
  if (len) std::memcpy(copy.get(), data, len);
  return parse_frame(len == 0 ? nullptr : copy.get(), len, local_ip, local_mac, off);
}

}  // namespace

TEST_CASE("build_udp writes the expected header bytes") {
  bytes f = udp_frame(100, true);
  CHECK(std::memcmp(&f[0], local_mac.b.data(), 6) == 0);
  CHECK(std::memcmp(&f[6], peer_mac.b.data(), 6) == 0);
  CHECK(get16(&f[12]) == 0x0800);
  CHECK(f[14] == 0x45);
  CHECK(f[15] == 0);
  CHECK(get16(&f[16]) == 20 + 8 + 100);
  CHECK(get16(&f[18]) == 0x1234);
  CHECK(get16(&f[20]) == 0x4000);  // DF, offset 0
  CHECK(f[22] == 64);
  CHECK(f[23] == 17);
  CHECK(ref_cksum(&f[14], 20) == 0);
  CHECK(get16(&f[26]) == 0x0a00);
  CHECK(get16(&f[28]) == 0x0002);
  CHECK(get16(&f[30]) == 0x0a00);
  CHECK(get16(&f[32]) == 0x0001);
  CHECK(get16(&f[34]) == 40000);
  CHECK(get16(&f[36]) == 5000);
  CHECK(get16(&f[38]) == 108);
  CHECK(get16(&f[40]) != 0);
  CHECK(ref_fold(ref_sum(&f[34], 108, ref_pseudo(f.data(), 108))) == 0xffff);
  CHECK(inet_cksum(&f[14], 20) == 0);
  CHECK(f == udp_frame(100, true));  // deterministic
}

TEST_CASE("udp_header_template writes build_udp's bytes for every payload length") {
  // Addresses with carries in the checksum sum, and with none.
  const struct {
    ipv4_addr src, dst;
    uint16_t sport, dport;
  } flows[] = {{ipv4_addr{0x0a000002}, ipv4_addr{0x0a000001}, 40000, 5000},
               {ipv4_addr{0xffffffff}, ipv4_addr{0xfffefdfc}, 65535, 65535},
               {ipv4_addr{0}, ipv4_addr{0}, 0, 0},
               {ipv4_addr{0xc0a80001}, ipv4_addr{0xc0a800c7}, 1, 2}};
  for (const auto& fl : flows) {
    udp_header_template t;
    t.build(local_mac, peer_mac, fl.src, fl.dst, fl.sport, fl.dport);
    std::size_t mismatches = 0;
    for (std::size_t len = 0; len <= max_udp_payload; ++len) {
      uint8_t want[udp_headers_len], got[udp_headers_len];
      std::vector<uint8_t> full(udp_headers_len + len);
      REQUIRE(build_udp(full.data(), full.size(), local_mac, peer_mac, fl.src, fl.dst, fl.sport,
                        fl.dport, len, false) == udp_headers_len);
      std::memcpy(want, full.data(), udp_headers_len);
      REQUIRE(t.write(got, len));
      mismatches += std::memcmp(want, got, udp_headers_len) != 0;
    }
    CHECK(mismatches == 0);
  }
  uint8_t f[udp_headers_len] = {};
  udp_header_template t;
  t.build(local_mac, peer_mac, ipv4_addr{1}, ipv4_addr{2}, 3, 4);
  CHECK_FALSE(t.write(f, max_udp_payload + 1));
  CHECK(std::all_of(std::begin(f), std::end(f), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("IPv4 header checksum matches the textbook example") {
  // 4500 0073 0000 4000 4011 ---- c0a8 0001 c0a8 00c7 has checksum b861.
  bytes f(udp_headers_len + 0x73 - 28);
  REQUIRE(build_udp(f.data(), f.size(), peer_mac, local_mac, ipv4_addr{0xc0a80001},
                    ipv4_addr{0xc0a800c7}, 1, 2, 0x73 - 28, false, 0) == udp_headers_len);
  CHECK(get16(&f[24]) == 0xb861);
  put16(&f[24], 0);
  CHECK(inet_cksum(&f[14], 20) == 0xb861);
}

TEST_CASE("UDP frames round-trip through parse_frame") {
  const size_t len = GENERATE(0, 1, 2, 17, 18, 1000, 1458, 8972);
  const bool cksum = GENERATE(true, false);
  bytes f = udp_frame(len, cksum, 1234, 4321);
  if (!cksum) CHECK(get16(&f[40]) == 0);
  auto r = parse(f);
  REQUIRE(r.kind == frame_kind::udp);
  CHECK(r.reason == drop_reason::none);
  CHECK(!r.dropped());
  CHECK(r.src_mac == peer_mac);
  CHECK(r.src_ip == peer_ip);
  CHECK(r.dst_ip == local_ip);
  CHECK(r.src_port == 1234);
  CHECK(r.dst_port == 4321);
  CHECK(r.l3_offset == 14);
  CHECK(r.l4_offset == 34);
  CHECK(r.payload_offset == 42);
  CHECK(r.payload_len == len);
  auto p = payload_pattern(len);
  CHECK(std::equal(p.begin(), p.end(), f.begin() + r.payload_offset));
  CHECK(r.rx_flow() == flow_tuple{local_ip, peer_ip, 4321, 1234});
}

TEST_CASE("payload written after the headers: finalize_udp_cksum equals the eager checksum") {
  const size_t len = GENERATE(0, 1, 33, 1472);
  bytes eager = udp_frame(len, true);
  bytes late(udp_headers_len + len, 0xee);
  REQUIRE(build_udp(late.data(), late.size(), peer_mac, local_mac, peer_ip, local_ip, 40000, 5000,
                    len, false, 0x1234) == udp_headers_len);
  CHECK(get16(&late[40]) == 0);
  // Header build left the payload area alone.
  CHECK(std::all_of(late.begin() + 42, late.end(), [](uint8_t b) { return b == 0xee; }));
  auto p = payload_pattern(len);
  if (len) std::memcpy(&late[42], p.data(), len);
  REQUIRE(finalize_udp_cksum(late.data(), late.size()));
  CHECK(late == eager);
  CHECK(parse(late).kind == frame_kind::udp);
}

TEST_CASE("set_udp_pseudo_cksum stores the uncomplemented pseudo-header sum") {
  bytes f = udp_frame(77, false);
  REQUIRE(set_udp_pseudo_cksum(f.data(), f.size()));
  CHECK(get16(&f[40]) == ref_fold(ref_pseudo(f.data(), 85)));
  // The NIC would then add the segment sum; emulate it and check it verifies.
  const uint16_t partial = get16(&f[40]);
  put16(&f[40], 0);
  uint16_t full = static_cast<uint16_t>(~ref_fold(ref_sum(&f[34], 85, partial)));
  put16(&f[40], full);
  CHECK(parse(f).kind == frame_kind::udp);
}

TEST_CASE("a UDP checksum that computes to zero is sent as 0xffff") {
  // Search for a payload whose checksum computes to 0 by varying two bytes.
  bytes f(udp_headers_len + 2);
  bool found = false;
  for (uint32_t v = 0; v < 0x10000 && !found; ++v) {
    put16(&f[42], static_cast<uint16_t>(v));
    REQUIRE(build_udp(f.data(), f.size(), peer_mac, local_mac, peer_ip, local_ip, 1, 2, 2, false) ==
            udp_headers_len);
    put16(&f[40], 0);
    if (ref_fold(ref_sum(&f[34], 10, ref_pseudo(f.data(), 10))) == 0xffff) {
      found = true;
      REQUIRE(finalize_udp_cksum(f.data(), f.size()));
      CHECK(get16(&f[40]) == 0xffff);
      CHECK(parse(f).kind == frame_kind::udp);
    }
  }
  CHECK(found);
}

TEST_CASE("frames at odd alignment parse and build") {
  bytes f = udp_frame(64);
  bytes storage(f.size() + 1);
  std::memcpy(&storage[1], f.data(), f.size());
  auto r = parse_frame(&storage[1], f.size(), local_ip, local_mac);
  CHECK(r.kind == frame_kind::udp);
  bytes out(200);
  REQUIRE(build_udp(&out[1], 199, local_mac, peer_mac, local_ip, peer_ip, 1, 2, 64, true) == 42);
  REQUIRE(build_arp_request(&out[1], 199, local_mac, local_ip, peer_ip) == arp_frame_len);
  auto req = echo_request(31);
  bytes unaligned_req(req.size() + 1);
  std::memcpy(&unaligned_req[1], req.data(), req.size());
  CHECK(build_icmp_echo_reply(&out[1], 199, &unaligned_req[1], req.size(), local_mac) ==
        req.size());
}

TEST_CASE("Ethernet padding after a short datagram is ignored") {
  bytes f = udp_frame(4);
  f.resize(min_frame_len, 0);
  auto r = parse(f);
  REQUIRE(r.kind == frame_kind::udp);
  CHECK(r.payload_len == 4);
}

TEST_CASE("UDP length shorter than the IP payload is honoured") {
  bytes f = udp_frame(20);
  put16(&f[38], 8 + 12);  // UDP says 12 bytes of payload, IP carries 20
  fix_udp_cksum(f);
  auto r = parse(f);
  REQUIRE(r.kind == frame_kind::udp);
  CHECK(r.payload_len == 12);
}

TEST_CASE("ARP request, reply and gratuitous ARP round-trip") {
  SECTION("request for us") {
    bytes f = arp_request_from_peer();
    CHECK(std::all_of(f.begin(), f.begin() + 6, [](uint8_t b) { return b == 0xff; }));
    CHECK(get16(&f[12]) == 0x0806);
    CHECK(get16(&f[14]) == 1);
    CHECK(get16(&f[16]) == 0x0800);
    CHECK(f[18] == 6);
    CHECK(f[19] == 4);
    CHECK(get16(&f[20]) == 1);
    CHECK(std::all_of(f.begin() + 32, f.begin() + 38, [](uint8_t b) { return b == 0; }));
    CHECK(std::all_of(f.begin() + 42, f.end(), [](uint8_t b) { return b == 0; }));  // padding
    auto r = parse(f);
    REQUIRE(r.kind == frame_kind::arp_request);
    CHECK(r.src_mac == peer_mac);
    CHECK(r.arp_sender_ip == peer_ip);
    CHECK(r.arp_sender_mac == peer_mac);
    CHECK(r.arp_target_ip == local_ip);
  }
  SECTION("reply to a request") {
    auto req = parse(arp_request_from_peer());
    bytes f(arp_frame_len);
    // We answer the peer; then parse it from the peer's side.
    REQUIRE(build_arp_reply(f.data(), f.size(), local_mac, local_ip, req.arp_sender_mac,
                            req.arp_sender_ip) == arp_frame_len);
    CHECK(std::memcmp(&f[0], peer_mac.b.data(), 6) == 0);
    CHECK(get16(&f[20]) == 2);
    auto r = parse_frame(f.data(), f.size(), peer_ip, peer_mac);
    REQUIRE(r.kind == frame_kind::arp_reply);
    CHECK(r.arp_sender_ip == local_ip);
    CHECK(r.arp_sender_mac == local_mac);
    CHECK(r.arp_target_ip == peer_ip);
  }
  SECTION("gratuitous ARP is not for us but carries the sender") {
    bytes f(arp_frame_len);
    REQUIRE(build_gratuitous_arp(f.data(), f.size(), peer_mac, peer_ip) == arp_frame_len);
    auto r = parse(f);
    CHECK(r.kind == frame_kind::drop);
    CHECK(r.reason == drop_reason::arp_not_for_us);
    CHECK(r.arp_sender_ip == peer_ip);
    CHECK(r.arp_sender_mac == peer_mac);
    CHECK(r.arp_target_ip == peer_ip);
    CHECK(get16(&f[20]) == 1);
  }
  SECTION("ARP without padding is accepted") {
    bytes f = arp_request_from_peer();
    f.resize(42);
    CHECK(parse(f).kind == frame_kind::arp_request);
  }
}

TEST_CASE("ICMP echo request is recognised and answered") {
  const size_t data_len = GENERATE(0, 1, 56, 1000);
  bytes req = echo_request(data_len, 0xbeef, 0x0102);
  auto r = parse(req);
  REQUIRE(r.kind == frame_kind::icmp_echo_request);
  CHECK(r.src_ip == peer_ip);
  CHECK(r.dst_ip == local_ip);
  CHECK(r.src_mac == peer_mac);
  CHECK(r.icmp_id == 0xbeef);
  CHECK(r.icmp_seq == 0x0102);
  CHECK(r.payload_offset == 42);
  CHECK(r.payload_len == data_len);

  auto check_reply = [&](const uint8_t* rep, size_t n) {
    REQUIRE(n == req.size());
    CHECK(std::memcmp(&rep[0], peer_mac.b.data(), 6) == 0);
    CHECK(std::memcmp(&rep[6], local_mac.b.data(), 6) == 0);
    CHECK(get16(&rep[12]) == 0x0800);
    CHECK(rep[14] == 0x45);
    CHECK(get16(&rep[16]) == 28 + data_len);
    CHECK(rep[22] == 64);
    CHECK(rep[23] == 1);
    CHECK(ref_cksum(&rep[14], 20) == 0);
    CHECK(get16(&rep[26]) == 0x0a00);
    CHECK(get16(&rep[28]) == 0x0001);  // from local
    CHECK(get16(&rep[30]) == 0x0a00);
    CHECK(get16(&rep[32]) == 0x0002);  // to peer
    CHECK(rep[34] == 0);               // echo reply
    CHECK(rep[35] == 0);
    CHECK(ref_cksum(&rep[34], 8 + data_len) == 0);
    CHECK(inet_cksum(&rep[34], 8 + data_len) == 0);
    CHECK(get16(&rep[38]) == 0xbeef);
    CHECK(get16(&rep[40]) == 0x0102);
    auto d = payload_pattern(data_len, 3);
    CHECK(std::equal(d.begin(), d.end(), rep + 42));
    // From the peer's side it is a valid ICMP message that is not a request.
    auto pr = parse_frame(rep, n, peer_ip, peer_mac);
    CHECK(pr.reason == drop_reason::icmp_not_echo);
  };

  SECTION("into a separate buffer") {
    bytes rep(req.size() + 10);
    size_t n = build_icmp_echo_reply(rep.data(), rep.size(), req.data(), req.size(), local_mac);
    check_reply(rep.data(), n);
  }
  SECTION("in place") {
    bytes copy = req;
    size_t n = build_icmp_echo_reply(copy.data(), copy.size(), copy.data(), copy.size(), local_mac);
    check_reply(copy.data(), n);
  }
  SECTION("request with Ethernet padding: padding is not echoed") {
    bytes padded = req;
    padded.resize(std::max<size_t>(padded.size(), min_frame_len) + 3, 0xaa);
    REQUIRE(parse(padded).kind == frame_kind::icmp_echo_request);
    bytes rep(padded.size());
    size_t n =
        build_icmp_echo_reply(rep.data(), rep.size(), padded.data(), padded.size(), local_mac);
    check_reply(rep.data(), n);
  }
  SECTION("capacity too small writes nothing") {
    bytes rep(req.size() - 1, 0x5a);
    CHECK(build_icmp_echo_reply(rep.data(), rep.size(), req.data(), req.size(), local_mac) == 0);
    CHECK(std::all_of(rep.begin(), rep.end(), [](uint8_t b) { return b == 0x5a; }));
  }
}

TEST_CASE("build_icmp_echo_reply refuses frames that are not echo requests") {
  bytes req = echo_request(8);
  bytes out(200);
  bytes f = req;
  f[34] = 0;  // already a reply
  CHECK(build_icmp_echo_reply(out.data(), out.size(), f.data(), f.size(), local_mac) == 0);
  f = req;
  f[14] = 0x46;
  CHECK(build_icmp_echo_reply(out.data(), out.size(), f.data(), f.size(), local_mac) == 0);
  f = req;
  put16(&f[16], static_cast<uint16_t>(f.size()));  // total length beyond the frame
  CHECK(build_icmp_echo_reply(out.data(), out.size(), f.data(), f.size(), local_mac) == 0);
  CHECK(build_icmp_echo_reply(out.data(), out.size(), req.data(), 41, local_mac) == 0);
  CHECK(build_icmp_echo_reply(out.data(), out.size(), nullptr, 0, local_mac) == 0);
  bytes u = udp_frame(8);
  CHECK(build_icmp_echo_reply(out.data(), out.size(), u.data(), u.size(), local_mac) == 0);
}

TEST_CASE("builders refuse short buffers and write nothing") {
  bytes buf(100, 0x5a);
  auto untouched = [&] {
    return std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0x5a; });
  };
  CHECK(build_udp(buf.data(), 41, local_mac, peer_mac, local_ip, peer_ip, 1, 2, 0, true) == 0);
  CHECK(build_udp(buf.data(), 50, local_mac, peer_mac, local_ip, peer_ip, 1, 2, 9, true) == 0);
  CHECK(build_udp(buf.data(), 100, local_mac, peer_mac, local_ip, peer_ip, 1, 2,
                  max_udp_payload + 1, false) == 0);
  CHECK(build_udp(nullptr, 100, local_mac, peer_mac, local_ip, peer_ip, 1, 2, 0, false) == 0);
  CHECK(build_arp_request(buf.data(), arp_frame_len - 1, local_mac, local_ip, peer_ip) == 0);
  CHECK(build_arp_reply(buf.data(), arp_frame_len - 1, local_mac, local_ip, peer_mac, peer_ip) ==
        0);
  CHECK(build_gratuitous_arp(buf.data(), arp_frame_len - 1, local_mac, local_ip) == 0);
  CHECK(untouched());
  CHECK(build_udp(buf.data(), 50, local_mac, peer_mac, local_ip, peer_ip, 1, 2, 8, false) == 42);
  CHECK(!finalize_udp_cksum(buf.data(), 49));  // frame says 50 bytes
  CHECK(finalize_udp_cksum(buf.data(), 50));
  CHECK(!set_udp_pseudo_cksum(buf.data(), 41));
  bytes arp = arp_request_from_peer();
  CHECK(!finalize_udp_cksum(arp.data(), arp.size()));
}

TEST_CASE("every drop reason is produced by a crafted frame") {
  std::set<drop_reason> seen;
  auto expect = [&](const bytes& f, drop_reason why, rx_cksum_flags off = {}) {
    auto r = parse_exact(f.data(), f.size(), off);
    INFO("expected " << to_string(why) << ", got " << to_string(r.reason));
    CHECK(r.kind == frame_kind::drop);
    CHECK(r.reason == why);
    seen.insert(r.reason);
  };
  const bytes udp = udp_frame(32);
  const bytes arp = arp_request_from_peer();
  const bytes icmp = echo_request(16);
  bytes f;

  expect(bytes(13, 0), drop_reason::truncated_ethernet);
  expect(bytes{}, drop_reason::truncated_ethernet);
  CHECK(parse_frame(nullptr, 100, local_ip, local_mac).reason == drop_reason::truncated_ethernet);

  f = udp;
  std::memcpy(&f[0], other_mac.b.data(), 6);
  expect(f, drop_reason::wrong_dst_mac);
  // Zero local MAC disables the check.
  CHECK(parse_frame(f.data(), f.size(), local_ip, mac_addr{}).kind == frame_kind::udp);
  // Broadcast is fine at the Ethernet level (the IP check still applies).
  f = udp;
  std::fill(f.begin(), f.begin() + 6, 0xff);
  CHECK(parse(f).kind == frame_kind::udp);

  f = udp;
  put16(&f[12], 0x86dd);  // IPv6
  expect(f, drop_reason::not_ipv4);
  put16(&f[12], 0x8100);  // VLAN tag
  expect(f, drop_reason::not_ipv4);
  put16(&f[12], 0x0000);
  expect(f, drop_reason::not_ipv4);

  f = arp;
  f.resize(41);
  expect(f, drop_reason::truncated_arp);
  for (int field = 0; field < 5; ++field) {
    f = arp;
    switch (field) {
      case 0:
        put16(&f[14], 6);
        break;  // htype IEEE 802
      case 1:
        put16(&f[16], 0x86dd);
        break;  // ptype
      case 2:
        f[18] = 8;
        break;  // hlen
      case 3:
        f[19] = 16;
        break;  // plen
      case 4:
        put16(&f[20], 3);
        break;  // RARP request
    }
    expect(f, drop_reason::bad_arp);
  }
  f = arp_request_from_peer(other_ip);
  expect(f, drop_reason::arp_not_for_us);

  f = udp;
  f.resize(33);
  expect(f, drop_reason::truncated_ip);

  f = udp;
  f[14] = 0x65;
  expect(f, drop_reason::bad_ip_version);
  f[14] = 0x45 & 0x0f;
  expect(f, drop_reason::bad_ip_version);

  f = udp;
  f[14] = 0x46;
  expect(f, drop_reason::ip_options);
  f[14] = 0x4f;
  expect(f, drop_reason::ip_options);

  f = udp;
  f[14] = 0x44;
  expect(f, drop_reason::bad_ip_length);
  f = udp;
  put16(&f[16], static_cast<uint16_t>(f.size() - 14 + 1));
  fix_ip_cksum(f);
  expect(f, drop_reason::bad_ip_length);
  f = udp;
  put16(&f[16], 19);
  fix_ip_cksum(f);
  expect(f, drop_reason::bad_ip_length);

  f = udp;
  f[25] ^= 0x01;
  expect(f, drop_reason::bad_ip_checksum);
  // ... unless the NIC said the IP checksum was good.
  CHECK(parse(f, {true, false}).kind == frame_kind::udp);
  f = udp;
  f[30] ^= 0x80;  // dst address corrupted
  expect(f, drop_reason::bad_ip_checksum);

  f = udp;
  put16(&f[20], 0x2000);  // MF
  fix_ip_cksum(f);
  expect(f, drop_reason::ip_fragment);
  put16(&f[20], 0x0001);  // offset 8
  fix_ip_cksum(f);
  expect(f, drop_reason::ip_fragment);
  put16(&f[20], 0x4000 | 0x00b9);  // DF with an offset is still a fragment
  fix_ip_cksum(f);
  expect(f, drop_reason::ip_fragment);
  put16(&f[20], 0x0000);  // no DF: fine
  fix_ip_cksum(f);
  CHECK(parse(f).kind == frame_kind::udp);

  f = udp;
  put16(&f[32], 0x0003);  // 10.0.0.3
  fix_ip_cksum(f);
  fix_udp_cksum(f);
  expect(f, drop_reason::wrong_dst_ip);
  put16(&f[30], 0xffff);  // IP broadcast is not accepted
  put16(&f[32], 0xffff);
  fix_ip_cksum(f);
  fix_udp_cksum(f);
  expect(f, drop_reason::wrong_dst_ip);

  f = udp;
  f[23] = 6;  // TCP
  fix_ip_cksum(f);
  expect(f, drop_reason::unsupported_l4);
  f[23] = 58;  // ICMPv6 inside IPv4
  fix_ip_cksum(f);
  expect(f, drop_reason::unsupported_l4);

  f = udp;
  put16(&f[16], 20 + 7);
  fix_ip_cksum(f);
  expect(f, drop_reason::truncated_udp);

  f = udp;
  put16(&f[38], 7);
  fix_udp_cksum(f);
  expect(f, drop_reason::bad_udp_length);
  f = udp;
  put16(&f[38], static_cast<uint16_t>(8 + 32 + 1));
  expect(f, drop_reason::bad_udp_length);

  f = udp;
  f[50] ^= 0x10;
  expect(f, drop_reason::bad_udp_checksum);
  CHECK(parse(f, {false, true}).kind == frame_kind::udp);  // NIC validated L4
  f = udp;
  f[40] ^= 0xff;
  expect(f, drop_reason::bad_udp_checksum);
  f = udp;
  put16(&f[36], 5001);  // port changed, checksum not
  expect(f, drop_reason::bad_udp_checksum);
  // A zero checksum means "none": corrupted payload is accepted.
  f = udp_frame(32, false);
  f[50] ^= 0x10;
  CHECK(parse(f).kind == frame_kind::udp);

  f = icmp;
  put16(&f[16], 20 + 7);
  fix_ip_cksum(f);
  expect(f, drop_reason::truncated_icmp);

  f = icmp;
  f[45] ^= 0x01;
  expect(f, drop_reason::bad_icmp_checksum);
  // ICMP is verified in software even if the NIC flags L4 good.
  expect(f, drop_reason::bad_icmp_checksum, {true, true});

  f = icmp;
  f[34] = 13;  // timestamp request
  fix_icmp_cksum(f);
  expect(f, drop_reason::icmp_not_echo);
  f = icmp;
  f[35] = 1;  // echo with a non-zero code
  fix_icmp_cksum(f);
  expect(f, drop_reason::icmp_not_echo);

  for (size_t i = 1; i < drop_reason_count; ++i)
    CHECK(seen.count(static_cast<drop_reason>(i)) == 1);
  CHECK(seen.size() == drop_reason_count - 1);
}

TEST_CASE("a frame truncated at any length is dropped, never misread") {
  SECTION("UDP") {
    const bytes f = udp_frame(GENERATE(0, 1, 64, 333));
    for (size_t n = 0; n <= f.size(); ++n) {
      auto r = parse_exact(f.data(), n);
      if (n == f.size()) {
        CHECK(r.kind == frame_kind::udp);
      } else {
        INFO("length " << n);
        CHECK(r.kind == frame_kind::drop);
        CHECK(r.reason != drop_reason::none);
      }
    }
  }
  SECTION("ICMP") {
    const bytes f = echo_request(40);
    for (size_t n = 0; n <= f.size(); ++n) {
      auto r = parse_exact(f.data(), n);
      CHECK((r.kind == frame_kind::icmp_echo_request) == (n == f.size()));
    }
  }
  SECTION("ARP: the 42 bytes of ARP are needed, the padding is not") {
    const bytes f = arp_request_from_peer();
    for (size_t n = 0; n <= f.size(); ++n) {
      auto r = parse_exact(f.data(), n);
      CHECK((r.kind == frame_kind::arp_request) == (n >= 42));
    }
  }
}

TEST_CASE("100000 random and mutated frames never crash and keep the invariants") {
  std::mt19937_64 rng(12345);
  bytes arp_reply(arp_frame_len);
  REQUIRE(build_arp_reply(arp_reply.data(), arp_reply.size(), peer_mac, peer_ip, local_mac,
                          local_ip) == arp_frame_len);
  const std::vector<bytes> seeds = {
      udp_frame(0), udp_frame(7),    udp_frame(200, false), arp_request_from_peer(),
      arp_reply,    echo_request(0), echo_request(64)};
  size_t kinds[5] = {};
  bytes reply(70000);
  for (int iter = 0; iter < 100000; ++iter) {
    bytes f;
    const unsigned mode = rng() % 4;
    if (mode == 0) {
      f.resize(rng() % 128);
      for (auto& b : f) b = static_cast<uint8_t>(rng());
    } else {
      f = seeds[rng() % seeds.size()];
      const unsigned flips = 1 + rng() % 4;
      for (unsigned i = 0; i < flips && !f.empty(); ++i) {
        const size_t at = rng() % f.size();
        if (rng() % 2)
          f[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
        else
          f[at] = static_cast<uint8_t>(rng());
      }
      if (mode == 2) f.resize(rng() % (f.size() + 16), static_cast<uint8_t>(rng()));
      // Often repair the IP checksum so mutations reach the deeper layers.
      if (mode == 3 && f.size() >= 34) fix_ip_cksum(f);
    }
    const rx_cksum_flags off{rng() % 8 == 0, rng() % 8 == 0};
    const auto r = parse_exact(f.data(), f.size(), off);
    ++kinds[static_cast<size_t>(r.kind)];
    REQUIRE((r.kind == frame_kind::drop) == (r.reason != drop_reason::none));
    REQUIRE(static_cast<size_t>(r.reason) < drop_reason_count);
    if (r.kind == frame_kind::udp || r.kind == frame_kind::icmp_echo_request) {
      REQUIRE(r.dst_ip == local_ip);
      REQUIRE(size_t(r.payload_offset) + r.payload_len <= f.size());
    }
    if (r.kind == frame_kind::arp_request || r.kind == frame_kind::arp_reply) {
      REQUIRE(r.arp_target_ip == local_ip);
      REQUIRE(f.size() >= 42);
    }
    // The echo builder must be just as robust on arbitrary input.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[f.size() + 1]);
    if (!f.empty()) std::memcpy(exact.get(), f.data(), f.size());
    const size_t cap = rng() % 2 ? reply.size() : rng() % 128;
    const size_t n = build_icmp_echo_reply(reply.data(), cap, exact.get(), f.size(), local_mac);
    REQUIRE(n <= cap);
    REQUIRE(n <= f.size());
    if (r.kind == frame_kind::icmp_echo_request && cap >= f.size()) {
      REQUIRE(n > 0);
      REQUIRE(inet_cksum(&reply[14], 20) == 0);
      REQUIRE(inet_cksum(&reply[34], n - 34) == 0);
    }
  }
  // The mutations reached every classification.
  for (size_t k = 0; k < 5; ++k) {
    INFO("kind " << to_string(static_cast<frame_kind>(k)));
    CHECK(kinds[k] > 0);
  }
}

TEST_CASE("drop_counters count, sum and print") {
  drop_counters a, b;
  CHECK(a.total() == 0);
  CHECK(a.str() == "none");
  a.add(drop_reason::bad_ip_checksum);
  a.add(drop_reason::bad_ip_checksum);
  a.add(drop_reason::wrong_dst_ip, 17);
  CHECK(a.count(parse(bytes(3))));
  CHECK(!a.count(parse(udp_frame(1))));
  CHECK(a[drop_reason::bad_ip_checksum] == 2);
  CHECK(a[drop_reason::truncated_ethernet] == 1);
  CHECK(a.total() == 20);
  CHECK(a.str() == "truncated_ethernet=1 bad_ip_checksum=2 wrong_dst_ip=17");
  b.add(drop_reason::not_ipv4, 5);
  b += a;
  CHECK(b.total() == 25);
  CHECK(b[drop_reason::not_ipv4] == 5);
  CHECK(b[drop_reason::wrong_dst_ip] == 17);
}

TEST_CASE("every reason and kind has a distinct name") {
  std::set<std::string> names;
  for (size_t i = 0; i < drop_reason_count; ++i) {
    std::string s = to_string(static_cast<drop_reason>(i));
    CHECK(s != "unknown");
    names.insert(s);
  }
  CHECK(names.size() == drop_reason_count);
  CHECK(std::string(to_string(drop_reason::bad_udp_checksum)) == "bad_udp_checksum");
  CHECK(std::string(to_string(frame_kind::icmp_echo_request)) == "icmp_echo_request");
}
