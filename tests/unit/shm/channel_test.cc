// Tests of the channel layout and mapping: parameter checks with their
// messages, the offsets of every part, the header written at creation, what
// attach() refuses, and the seals on the memfd.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "machnet/net/shm/channel.hh"

using namespace machnet::shm;
using Catch::Matchers::Contains;

namespace {

channel_params params(uint32_t count, uint32_t size, uint32_t ctrl = 64) {
  channel_params p;
  p.buf_count = count;
  p.buf_size = size;
  p.ctrl_slots = ctrl;
  return p;
}

// What attach() throws for this fd (empty if it succeeds). The fd stays ours
// on failure; on success the map owns a dup of it.
std::string attach_error(int fd) {
  int d = ::dup(fd);
  REQUIRE(d >= 0);
  try {
    channel_map m = channel_map::attach(d);
  } catch (const std::runtime_error& e) {
    // attach() left the fd to us.
    REQUIRE(::fcntl(d, F_GETFD) >= 0);
    ::close(d);
    return e.what();
  }
  return "";
}

int memfd_with(const std::vector<uint8_t>& bytes) {
  int fd = ::memfd_create("test garbage", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == ssize_t(bytes.size()));
  return fd;
}

}  // namespace

TEST_CASE("channel_params: the defaults and boundary values are accepted") {
  channel_params d;
  REQUIRE(d.buf_count == 2048);
  REQUIRE(d.buf_size == 16384);
  REQUIRE(d.ctrl_slots == 64);
  REQUIRE(d.check() == "");
  REQUIRE(params(1024, 32768).check() == "");
  REQUIRE(params(512, 65536).check() == "");
  REQUIRE(params(64, 1u << 20).check() == "");
  REQUIRE(params(32768, 1024).check() == "");
  REQUIRE(params(1u << 20, 1024).check() == "");
  REQUIRE(params(2048, 16384, 4).check() == "");
  REQUIRE(params(2048, 16384, 4096).check() == "");
}

TEST_CASE("channel_params: bad values are rejected with what is wrong") {
  auto why = [](const channel_params& p) { return p.check(); };
  // buf_count: a power of two in [64, 1 Mi].
  CHECK_THAT(why(params(3000, 16384)), Contains("buf_count") && Contains("power of two"));
  CHECK_THAT(why(params(0, 16384)), Contains("buf_count"));
  CHECK_THAT(why(params(32, 1u << 20)), Contains("buf_count"));
  CHECK_THAT(why(params(1u << 21, 1024)), Contains("buf_count"));
  // buf_size: a multiple of 64 in [1024, 1 MiB].
  CHECK_THAT(why(params(2048, 16384 + 32)), Contains("buf_size") && Contains("multiple of 64"));
  CHECK_THAT(why(params(2048, 960)), Contains("buf_size"));
  CHECK_THAT(why(params(2048, 0)), Contains("buf_size"));
  CHECK_THAT(why(params(2048, (1u << 20) + 64)), Contains("buf_size"));
  // ctrl_slots: a power of two in [4, 4096].
  CHECK_THAT(why(params(2048, 16384, 48)), Contains("ctrl_slots"));
  CHECK_THAT(why(params(2048, 16384, 2)), Contains("ctrl_slots"));
  CHECK_THAT(why(params(2048, 16384, 0)), Contains("ctrl_slots"));
  CHECK_THAT(why(params(2048, 16384, 8192)), Contains("ctrl_slots"));
  // Half the pool must hold an 8 MiB message: 16 KiB buffers carry 16320
  // bytes, so 8 MiB takes 515 buffers and the pool at least 1030.
  CHECK_THAT(why(params(1024, 16384)), Contains("too small") && Contains("8 MiB"));
  CHECK_THAT(why(params(512, 32768)), Contains("too small"));
  CHECK_THAT(why(params(64, 256 * 1024)), Contains("too small"));
  REQUIRE(params(64, 512 * 1024).check() == "");
  CHECK_THAT(why(params(16384, 1024)), Contains("too small"));
}

TEST_CASE("channel_params: bufs_for counts buffers of buf_size - 64 data bytes") {
  channel_params p = params(1024, 32768);
  REQUIRE(p.data_per_buf() == 32704);
  REQUIRE(p.bufs_for(0) == 1);
  REQUIRE(p.bufs_for(1) == 1);
  REQUIRE(p.bufs_for(32704) == 1);
  REQUIRE(p.bufs_for(32705) == 2);
  REQUIRE(p.bufs_for(max_message) == 257);
  REQUIRE(channel_params{}.bufs_for(max_message) == 515);
  REQUIRE(max_message == 8u * 1024 * 1024);
}

TEST_CASE("channel_layout: exact offsets of the default layout") {
  channel_layout l = channel_layout::of(channel_params{});
  // Rings of 2048 u32 slots take 128 + 8192 bytes; control rings of 64 slots
  // take 128 + 64 * 40 and 128 + 64 * 24.
  REQUIRE(l.free_ring == 4096);
  REQUIRE(l.ret_ring == 4096 + 8320);
  REQUIRE(l.tx_ring == 4096 + 2 * 8320);
  REQUIRE(l.rx_ring == 4096 + 3 * 8320);
  REQUIRE(l.ctrl_sq == 4096 + 4 * 8320);
  REQUIRE(l.ctrl_cq == 4096 + 4 * 8320 + 2688);
  REQUIRE(l.buffers == 45056);
  REQUIRE(l.size == 45056 + 2048u * 16384);
}

TEST_CASE("channel_layout: aligned, ordered, non-overlapping parts for many parameters") {
  for (uint32_t count : {64u, 128u, 1024u, 4096u, 32768u}) {
    for (uint32_t size : {1024u, 1088u, 16384u, 32768u, 1u << 20}) {
      for (uint32_t ctrl : {4u, 8u, 64u, 4096u}) {
        channel_params p = params(count, size, ctrl);
        if (!p.check().empty()) continue;
        INFO("buf_count " << count << " buf_size " << size << " ctrl_slots " << ctrl);
        channel_layout l = channel_layout::of(p);
        const std::size_t idx = ring_shared<uint32_t>::bytes(count);
        struct part {
          std::size_t off, bytes;
        };
        const std::vector<part> parts{{l.free_ring, idx},
                                      {l.ret_ring, idx},
                                      {l.tx_ring, idx},
                                      {l.rx_ring, idx},
                                      {l.ctrl_sq, ring_shared<ctrl_req>::bytes(ctrl)},
                                      {l.ctrl_cq, ring_shared<ctrl_resp>::bytes(ctrl)},
                                      {l.buffers, std::size_t(count) * size}};
        // The header page comes first.
        REQUIRE(l.free_ring >= sizeof(channel_header));
        REQUIRE(l.free_ring == 4096);
        for (std::size_t i = 0; i < parts.size(); ++i) {
          REQUIRE(parts[i].off % 64 == 0);
          if (i + 1 < parts.size()) REQUIRE(parts[i].off + parts[i].bytes <= parts[i + 1].off);
        }
        REQUIRE(l.buffers % 4096 == 0);
        // Buffers are buf_size apart: each one's header is 64-aligned.
        REQUIRE(size % 64 == 0);
        REQUIRE(l.size % 4096 == 0);
        REQUIRE(l.size >= l.buffers + std::size_t(count) * size);
        REQUIRE(l.size < l.buffers + std::size_t(count) * size + 4096);
        // No slack beyond one page between the rings and the pool.
        REQUIRE(l.buffers < l.ctrl_cq + ring_shared<ctrl_resp>::bytes(ctrl) + 4096 + 64);
      }
    }
  }
}

TEST_CASE("channel_map::create writes the header and empty rings") {
  channel_params p = params(1024, 32768, 16);
  channel_map m = channel_map::create(p, "test channel");
  REQUIRE(m.mapped());
  REQUIRE(m.fd() >= 0);
  const channel_layout l = channel_layout::of(p);
  REQUIRE(m.size() == l.size);
  struct stat st {};
  REQUIRE(::fstat(m.fd(), &st) == 0);
  REQUIRE(std::size_t(st.st_size) == l.size);
  const channel_header& h = m.header();
  REQUIRE(h.magic == channel_magic);
  REQUIRE(std::memcmp(&h.magic, "MNTCHAN1", 8) == 0);
  REQUIRE(h.version == layout_version);
  REQUIRE(h.header_size == sizeof(channel_header));
  REQUIRE(h.region_size == l.size);
  REQUIRE(h.params.buf_count == 1024);
  REQUIRE(h.params.buf_size == 32768);
  REQUIRE(h.params.ctrl_slots == 16);
  REQUIRE(std::memcmp(&h.layout, &l, sizeof l) == 0);
  REQUIRE(h.engine_sleeping.load() == 0);
  REQUIRE(h.app_sleeping.load() == 0);
  REQUIRE(h.closed.load() == 0);
  REQUIRE(h.stats.tx_messages.load() == 0);
  REQUIRE(m.ring_slots() == 1024);
  for (auto* r : {m.free_ring(), m.ret_ring(), m.tx_ring(), m.rx_ring()}) {
    REQUIRE(r->head.load() == 0);
    REQUIRE(r->tail.load() == 0);
  }
  auto* base = reinterpret_cast<uint8_t*>(&m.header());
  REQUIRE(reinterpret_cast<uint8_t*>(m.free_ring()) == base + l.free_ring);
  REQUIRE(reinterpret_cast<uint8_t*>(m.ctrl_cq()) == base + l.ctrl_cq);
  REQUIRE(reinterpret_cast<uint8_t*>(m.buffer(0)) == base + l.buffers);
  REQUIRE(reinterpret_cast<uint8_t*>(m.buffer(1023)) == base + l.buffers + 1023u * 32768);
  REQUIRE(m.data(5) == reinterpret_cast<uint8_t*>(m.buffer(5)) + 64);
  // The last byte of the last buffer is inside the mapping.
  m.data(1023)[p.data_per_buf() - 1] = 0x5a;
  REQUIRE(m.data(1023)[p.data_per_buf() - 1] == 0x5a);
}

TEST_CASE("channel_map::create refuses bad parameters") {
  REQUIRE_THROWS_AS(channel_map::create(params(1000, 16384), "bad"), std::invalid_argument);
  REQUIRE_THROWS_WITH(channel_map::create(params(1024, 16384), "bad"), Contains("too small"));
}

TEST_CASE("channel_map::attach maps what create wrote, both sides share it") {
  channel_map m = channel_map::create(params(64, 1u << 20, 4), "test channel");
  channel_map a = channel_map::attach(::dup(m.fd()));
  REQUIRE(a.mapped());
  REQUIRE(a.size() == m.size());
  REQUIRE(a.params().buf_count == 64);
  REQUIRE(a.params().buf_size == (1u << 20));
  REQUIRE(a.params().ctrl_slots == 4);
  REQUIRE(a.ring_slots() == 64);
  a.data(63)[10] = 42;
  REQUIRE(m.data(63)[10] == 42);
  m.tx_ring()->head.store(7);
  REQUIRE(a.tx_ring()->head.load() == 7);
  // Moving keeps the mapping; the moved-from map is empty.
  channel_map b = std::move(a);
  REQUIRE(b.mapped());
  REQUIRE_FALSE(a.mapped());
  REQUIRE(a.fd() == -1);
  REQUIRE(b.data(63)[10] == 42);
  // close_fd keeps the mapping.
  b.close_fd();
  REQUIRE(b.fd() == -1);
  REQUIRE(b.mapped());
  REQUIRE(b.data(63)[10] == 42);
}

TEST_CASE("channel_map::attach refuses garbage with a clear error") {
  // Too small for a header.
  int tiny = memfd_with(std::vector<uint8_t>(100, 0));
  CHECK_THAT(attach_error(tiny), Contains("smaller than its header"));
  ::close(tiny);
  // A page-multiple of garbage.
  std::vector<uint8_t> junk(64 * 1024);
  uint32_t x = 12345;
  for (auto& b : junk) b = uint8_t((x = x * 1103515245u + 12345u) >> 24);
  int g = memfd_with(junk);
  CHECK_THAT(attach_error(g), Contains("bad magic"));
  ::close(g);
  // All zeros.
  int z = memfd_with(std::vector<uint8_t>(8192, 0));
  CHECK_THAT(attach_error(z), Contains("bad magic"));
  ::close(z);
  // An fd that is not a file at all.
  REQUIRE_THROWS_AS(channel_map::attach(-1), std::system_error);
}

TEST_CASE("channel_map::attach checks version, parameters, size and layout") {
  const channel_params p = params(1024, 32768, 16);
  SECTION("wrong version") {
    channel_map m = channel_map::create(p, "test channel");
    m.header().version = 2;
    std::string e = attach_error(m.fd());
    CHECK_THAT(e, Contains("version 2") && Contains("speaks 1"));
  }
  SECTION("bad parameters in the header") {
    channel_map m = channel_map::create(p, "test channel");
    m.header().params.buf_count = 1000;
    CHECK_THAT(attach_error(m.fd()), Contains("buf_count"));
  }
  SECTION("parameters that do not fit the region") {
    channel_map m = channel_map::create(p, "test channel");
    // Valid on their own, but twice the pool of this region.
    m.header().params.buf_count = 2048;
    CHECK_THAT(attach_error(m.fd()), Contains("size does not match"));
  }
  SECTION("a region size field that lies") {
    channel_map m = channel_map::create(p, "test channel");
    m.header().region_size += 4096;
    CHECK_THAT(attach_error(m.fd()), Contains("size does not match"));
  }
  SECTION("a layout that does not follow from the parameters") {
    channel_map m = channel_map::create(p, "test channel");
    m.header().layout.rx_ring += 64;
    CHECK_THAT(attach_error(m.fd()), Contains("layout does not match"));
  }
  SECTION("intact") {
    channel_map m = channel_map::create(p, "test channel");
    CHECK(attach_error(m.fd()) == "");
  }
}

TEST_CASE("channel memfd: sealed against shrinking, growing and new seals") {
  channel_map m = channel_map::create(params(1024, 32768, 16), "test channel");
  const int seals = ::fcntl(m.fd(), F_GET_SEALS);
  REQUIRE(seals >= 0);
  REQUIRE((seals & F_SEAL_SHRINK) != 0);
  REQUIRE((seals & F_SEAL_GROW) != 0);
  REQUIRE((seals & F_SEAL_SEAL) != 0);
  // Through the app's copy of the descriptor, as a hostile app would.
  int app_fd = ::dup(m.fd());
  REQUIRE(app_fd >= 0);
  errno = 0;
  REQUIRE(::ftruncate(app_fd, off_t(m.size() - 4096)) == -1);
  REQUIRE(errno == EPERM);
  errno = 0;
  REQUIRE(::ftruncate(app_fd, 0) == -1);
  REQUIRE(errno == EPERM);
  errno = 0;
  REQUIRE(::ftruncate(app_fd, off_t(m.size() + 4096)) == -1);
  REQUIRE(errno == EPERM);
  errno = 0;
  REQUIRE(::fcntl(app_fd, F_ADD_SEALS, F_SEAL_WRITE) == -1);
  REQUIRE(errno == EPERM);
  struct stat st {};
  REQUIRE(::fstat(app_fd, &st) == 0);
  REQUIRE(std::size_t(st.st_size) == m.size());
  // Writing stays allowed (it is how the channel works).
  REQUIRE(::pwrite(app_fd, "x", 1, 8192) == 1);
  REQUIRE(reinterpret_cast<const char*>(&m.header())[8192] == 'x');
  ::close(app_fd);
}
