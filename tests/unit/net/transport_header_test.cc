// Tests of the transport's wire header: exact byte layout, SACK bit order on
// the wire, every rejection reason, truncation, a fuzz run, sequence arithmetic.
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "machnet/net/transport/header.hh"
#include "machnet/net/transport/seq.hh"

using namespace machnet::net::transport;

namespace {
std::vector<uint8_t> encoded(const header& h, std::size_t payload = 0) {
  std::vector<uint8_t> b(header_size + payload, 0xee);
  encode(h, b.data());
  return b;
}
}  // namespace

TEST_CASE("header: 54 bytes - big-endian - at the WIRE.md offsets", "[header]") {
  header h;
  h.flags = net_flag::syn_ack;
  h.msg_flags = msg_flag::first | msg_flag::last;
  h.seqno = 0x01020304;
  h.ackno = 0xa1b2c3d4;
  h.sack.w = {0x1112131415161718ull, 0x2122232425262728ull, 0x3132333435363738ull,
              0x4142434445464748ull};
  h.sack_count = 0x0102;
  h.timestamp1 = 0xf1f2f3f4f5f6f7f8ull;
  auto b = encoded(h);
  REQUIRE(b.size() == 54);
  CHECK(b[0] == 0x4e);
  CHECK(b[1] == 0x53);
  CHECK(b[2] == 0x03);
  CHECK(b[3] == 0x05);
  CHECK(std::vector<uint8_t>(b.begin() + 4, b.begin() + 8) == std::vector<uint8_t>{1, 2, 3, 4});
  CHECK(std::vector<uint8_t>(b.begin() + 8, b.begin() + 12) ==
        std::vector<uint8_t>{0xa1, 0xb2, 0xc3, 0xd4});
  for (unsigned k = 0; k < 4; ++k)
    for (unsigned j = 0; j < 8; ++j) CHECK(b[12 + 8 * k + j] == uint8_t(0x11 + 0x10 * k + j));
  CHECK(b[44] == 0x01);
  CHECK(b[45] == 0x02);
  for (unsigned j = 0; j < 8; ++j) CHECK(b[46 + j] == uint8_t(0xf1 + j));

  header d;
  REQUIRE(decode(b, d) == decode_error::ok);
  CHECK(d.flags == h.flags);
  CHECK(d.msg_flags == h.msg_flags);
  CHECK(d.seqno == h.seqno);
  CHECK(d.ackno == h.ackno);
  CHECK(d.sack == h.sack);
  CHECK(d.sack_count == h.sack_count);
  CHECK(d.timestamp1 == h.timestamp1);
}

TEST_CASE("header: SACK bit i is word i/64 - bit i%64 - words big-endian in order",
          "[header][sack]") {
  header h;
  h.flags = net_flag::ack;
  h.sack.set(1);    // ackno + 1
  h.sack.set(64);   // word 1, bit 0
  h.sack.set(255);  // word 3, bit 63
  CHECK(h.sack.w[0] == 2);
  CHECK(h.sack.w[1] == 1);
  CHECK(h.sack.w[3] == uint64_t(1) << 63);
  auto b = encoded(h);
  // Word 0 = 2: its last (least significant) byte on the wire is 0x02.
  CHECK(b[12 + 7] == 0x02);
  for (unsigned j = 0; j < 7; ++j) CHECK(b[12 + j] == 0);
  CHECK(b[20 + 7] == 0x01);  // word 1 = 1
  CHECK(b[36] == 0x80);      // word 3's most significant byte
}

TEST_CASE("sack_bitmap: set - test - clear - count - highest", "[sack]") {
  sack_bitmap s;
  CHECK(s.empty());
  CHECK(s.highest() == -1);
  for (unsigned i : {1u, 2u, 63u, 64u, 127u, 200u, 255u}) s.set(i);
  CHECK(s.count() == 7);
  CHECK(s.highest() == 255);
  CHECK(s.test(63));
  CHECK(!s.test(62));
  s.clear(255);
  CHECK(s.highest() == 200);
  CHECK(s.count() == 6);
  for (unsigned i = 0; i < 256; ++i) {
    sack_bitmap one;
    one.set(i);
    CHECK(one.count() == 1);
    CHECK(one.highest() == int(i));
    CHECK(one.test(i));
  }
}

TEST_CASE("header: rejections name their reason", "[header]") {
  header h;
  h.flags = net_flag::data;
  h.msg_flags = msg_flag::first | msg_flag::last;
  auto good = encoded(h, 10);
  header d;
  REQUIRE(decode(good, d) == decode_error::ok);

  SECTION("truncated at every length") {
    for (std::size_t n = 0; n < header_size; ++n)
      CHECK(decode(std::span<const uint8_t>(good.data(), n), d) == decode_error::truncated);
  }
  SECTION("bad magic") {
    auto b = good;
    b[1] ^= 1;
    CHECK(decode(b, d) == decode_error::bad_magic);
  }
  SECTION("net_flags outside DATA/SYN/ACK/SYN-ACK/RST") {
    for (unsigned f = 0; f < 256; ++f) {
      auto b = good;
      b[2] = uint8_t(f);
      bool valid = f == 0 || f == 1 || f == 2 || f == 3 || f == 0x80;
      auto e = decode(b, d);
      if (valid)
        CHECK(e != decode_error::bad_net_flags);
      else
        CHECK(e == decode_error::bad_net_flags);
    }
  }
  SECTION("DATA msg_flags: undefined bits, MORE with LAST") {
    auto b = good;
    b[3] = 0x10;
    CHECK(decode(b, d) == decode_error::bad_msg_flags);
    b[3] = msg_flag::more | msg_flag::last;
    CHECK(decode(b, d) == decode_error::bad_msg_flags);
    b[3] = msg_flag::first | msg_flag::more | msg_flag::chain | msg_flag::notify;
    CHECK(decode(b, d) == decode_error::ok);
  }
  SECTION("payload too big, empty DATA") {
    auto big = encoded(h, max_payload + 1);
    CHECK(decode(big, d) == decode_error::payload_too_big);
    auto max = encoded(h, max_payload);
    CHECK(decode(max, d) == decode_error::ok);
    auto empty = encoded(h, 0);
    CHECK(decode(empty, d) == decode_error::empty_data);
    header a;
    a.flags = net_flag::ack;
    CHECK(decode(encoded(a, 0), d) == decode_error::ok);
  }
  CHECK(std::string(to_string(decode_error::bad_magic)) == "bad magic");
}

TEST_CASE("header: random bytes never crash the decoder", "[header]") {
  std::mt19937_64 rng(42);
  std::vector<uint8_t> b;
  unsigned ok = 0;
  for (int i = 0; i < 100'000; ++i) {
    b.assign(rng() % 1600, 0);
    for (std::size_t j = 0; j < b.size() && j < 64; ++j) b[j] = uint8_t(rng());
    if (b.size() >= 2 && (i & 1)) b[0] = 0x4e, b[1] = 0x53;  // get past the magic
    header d;
    if (decode(b, d) == decode_error::ok) ++ok;
  }
  CHECK(ok > 0);
}

TEST_CASE("seq: comparisons wrap around 2^32", "[seq]") {
  CHECK(seq_lt(0xfffffff0u, 0x10u));
  CHECK(seq_gt(0x10u, 0xfffffff0u));
  CHECK(seq_le(5u, 5u));
  CHECK(seq_ge(5u, 5u));
  CHECK(seq_in(0xffffffffu, 0xfffffffeu, 2u));
  CHECK(seq_in(1u, 0xfffffffeu, 2u));
  CHECK(!seq_in(2u, 0xfffffffeu, 2u));
  CHECK(seq_in_closed(2u, 0xfffffffeu, 2u));
  CHECK(!seq_in(5u, 5u, 5u));
}
