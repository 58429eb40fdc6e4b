// Tests of the message buffer and the buffer cache behind big messages:
// storage kinds, growth that keeps the bytes, reuse of idle big buffers, the
// idle limit, adopted buffers, and the reassembly size hint of a flow.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "machnet/net/transport/buffer_cache.hh"
#include "machnet/net/transport/message.hh"
#include "sim/recorder.hh"

using namespace machnet::net;
using namespace machnet::net::transport;
namespace bc = machnet::net::transport::buffer_cache;

namespace {

std::vector<uint8_t> bytes_of(std::size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = uint8_t(i * 131 + seed + (i >> 12));
  return v;
}

uint64_t gets() {
  auto s = bc::get_stats();
  return s.hits + s.maps;
}

}  // namespace

TEST_CASE("buffer cache: classes are powers of two from 256 KiB to 8 MiB", "[message]") {
  CHECK(bc::class_of(1) == bc::min_class);
  CHECK(bc::class_of(bc::min_class) == bc::min_class);
  CHECK(bc::class_of(bc::min_class + 1) == 2 * bc::min_class);
  CHECK(bc::class_of(3 << 20) == std::size_t(4) << 20);
  CHECK(bc::class_of(max_message_size) == max_message_size);
}

TEST_CASE("message: small ones are exact heap blocks, big ones buffer-cache classes", "[message]") {
  message small(100);
  CHECK(small.size() == 100);
  CHECK(small.capacity() == 100);
  message big(bc::min_class + 10);
  CHECK(big.size() == bc::min_class + 10);
  CHECK(big.capacity() == 2 * bc::min_class);
  std::memset(big.data(), 0x5a, big.size());  // writable throughout
  message huge(max_message_size + 1);         // beyond any class: the heap (refused by send)
  CHECK(huge.size() == max_message_size + 1);
  huge.data()[max_message_size] = 1;
}

TEST_CASE("message: append across the classes keeps every byte", "[message]") {
  auto src = bytes_of(3 * bc::min_class + 777, 7);
  message m;
  for (std::size_t off = 0; off < src.size(); off += 1418)
    m.append(src.data() + off, std::min<std::size_t>(1418, src.size() - off));
  REQUIRE(m.size() == src.size());
  CHECK(m.capacity() == 4 * bc::min_class);
  CHECK(std::memcmp(m.data(), src.data(), src.size()) == 0);
}

TEST_CASE("message: reserve, then append without moving the bytes", "[message]") {
  message m;
  m.reserve(1 << 20);
  const uint8_t* p = m.data();
  auto src = bytes_of(1 << 20, 3);
  for (std::size_t off = 0; off < src.size(); off += 1418)
    m.append(src.data() + off, std::min<std::size_t>(1418, src.size() - off));
  CHECK(m.data() == p);
  CHECK(std::memcmp(m.data(), src.data(), src.size()) == 0);
}

TEST_CASE("buffer cache: a freed big buffer is reused; the idle limit unmaps", "[message]") {
  bc::set_idle_limit(std::size_t(64) << 20);
  const uint8_t* first;
  {
    message a(1 << 20);
    first = a.data();
  }
  auto before = bc::get_stats();
  {
    message b(1 << 20);
    CHECK(b.data() == first);  // the same, already populated, memory
  }
  auto after = bc::get_stats();
  CHECK(after.hits == before.hits + 1);
  CHECK(after.maps == before.maps);
  CHECK(after.idle_bytes >= std::size_t(1) << 20);
  bc::set_idle_limit(0);
  CHECK(bc::get_stats().idle_bytes == 0);
  CHECK(bc::get_stats().unmaps > after.unmaps);
  {
    message c(1 << 20);  // nothing idle: a new mapping, unmapped when freed
  }
  CHECK(bc::get_stats().idle_bytes == 0);
  bc::set_idle_limit(std::size_t(64) << 20);
}

TEST_CASE("message: appending to an adopted buffer copies it and releases it once", "[message]") {
  static int released = 0;
  released = 0;
  auto src = bytes_of(bc::min_class, 9);
  auto* foreign = new uint8_t[src.size()];
  std::memcpy(foreign, src.data(), src.size());
  message m = message::adopt(
      foreign, src.size(),
      [](void*, uint8_t* d, std::size_t) noexcept {
        delete[] d;
        ++released;
      },
      nullptr);
  CHECK(m.capacity() == 0);
  uint8_t more[3] = {1, 2, 3};
  m.append(more, 3);
  CHECK(released == 1);
  REQUIRE(m.size() == src.size() + 3);
  CHECK(std::memcmp(m.data(), src.data(), src.size()) == 0);
  CHECK(m.data()[src.size() + 2] == 3);
  m.reset();
  CHECK(released == 1);
}

TEST_CASE("a flow reassembles a big message like the previous one in reserved storage",
          "[message][flow]") {
  // Without the hint every big message grew through each class (256 KiB ...
  // 2 MiB), copying what it had at every step.
  sim::world w{1};
  auto& a = w.add_host(ipv4_addr{0x0a000001});
  auto& b = w.add_host(ipv4_addr{0x0a000002});
  w.connect(a, b, {}, {});
  sim::recorder ra{w}, rb{w};
  transport_config cfg;
  cfg.isn_seed = 1;
  auto& ea = a.start(ra, cfg);
  auto& eb = b.start(rb, cfg);
  eb.listen(5000);
  flow* f = ea.connect(flow_tuple{a.ip, b.ip, 10000, 5000});
  w.run_until(w.now_ns() + 1'000'000);
  REQUIRE(ra.connected.size() == 1);
  auto src = bytes_of(std::size_t(2) << 20, 1);
  REQUIRE(f->send(message::copy_of(src)) == send_result::ok);
  w.run_until(w.now_ns() + 200'000'000);
  REQUIRE(rb.received.size() == 1);
  CHECK(rb.received[0].second.size() == src.size());
  uint64_t g0 = gets();
  REQUIRE(f->send(message::copy_of(src)) == send_result::ok);  // one get: the copy
  w.run_until(w.now_ns() + 200'000'000);
  REQUIRE(rb.received.size() == 2);
  CHECK(gets() - g0 == 2);  // the sender's copy, and the receiver's one buffer
  CHECK(rb.received[1].second.capacity() == std::size_t(2) << 20);
  CHECK(std::memcmp(rb.received[1].second.data(), src.data(), src.size()) == 0);
}
