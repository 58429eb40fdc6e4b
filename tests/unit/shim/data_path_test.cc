// Tests of libmachnet's data path against the real engine side of a channel:
// round trips from 1 B to 8 MiB, scatter-gather, sendmmsg, a too small
// receive buffer, nothing pending, and running out of channel buffers.
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "machnet.h"
#include "session.hh"

using namespace machnet::test;

namespace {

bool same_flow(const MachnetFlow_t& a, const MachnetFlow_t& b) {
  return a.src_ip == b.src_ip && a.dst_ip == b.dst_ip && a.src_port == b.src_port &&
         a.dst_port == b.dst_port;
}

}  // namespace

TEST_CASE("send and recv round trip 1 B, 1 KB, 100 KB and 8 MiB messages") {
  session s;
  std::vector<uint8_t> in(MACHNET_MSG_MAX_LEN);
  uint32_t seed = 1;
  for (std::size_t n : {std::size_t(1), std::size_t(1000), std::size_t(1024), std::size_t(100'000),
                        std::size_t(16320), std::size_t(16321), std::size_t(MACHNET_MSG_MAX_LEN)}) {
    INFO("message of " << n << " bytes");
    auto out = payload(n, seed++);
    REQUIRE(machnet_send(s.ch, s.flow, out.data(), n) == 0);
    MachnetFlow_t from{};
    ssize_t got = machnet_recv_wait(s.ch, in.data(), in.size(), &from, 5000);
    REQUIRE(got == ssize_t(n));
    CHECK(std::memcmp(in.data(), out.data(), n) == 0);
    CHECK(same_flow(from, s.flow));
  }
  // Several messages in flight keep their order and bytes.
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < 20; ++i) {
    sent.push_back(payload(std::size_t(1) << (i % 18), seed++));
    REQUIRE(machnet_send(s.ch, s.flow, sent.back().data(), sent.back().size()) == 0);
  }
  for (auto& out : sent) {
    ssize_t got = machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000);
    REQUIRE(got == ssize_t(out.size()));
    CHECK(std::memcmp(in.data(), out.data(), out.size()) == 0);
  }
  s.check_clean();
}

TEST_CASE("sendmsg gathers iovecs and recvmsg scatters them") {
  session s;
  auto a = payload(10'000, 1), b = payload(30'000, 2), c = payload(3, 3);
  MachnetIovec_t iov[4] = {
      {a.data(), a.size()}, {nullptr, 0}, {b.data(), b.size()}, {c.data(), c.size()}};
  MachnetMsgHdr_t m{};
  m.msg_size = uint32_t(a.size() + b.size() + c.size());
  m.flow_info = s.flow;
  m.msg_iov = iov;
  m.msg_iovlen = 4;
  REQUIRE(machnet_sendmsg(s.ch, &m) == 0);

  std::vector<uint8_t> whole;
  for (auto* v : {&a, &b, &c}) whole.insert(whole.end(), v->begin(), v->end());
  // Receive into pieces cut differently (7 bytes, an empty one, the rest, spare room).
  std::vector<uint8_t> r1(7), r2(whole.size() - 7 + 100);
  MachnetIovec_t riov[3] = {{r1.data(), r1.size()}, {nullptr, 0}, {r2.data(), r2.size()}};
  MachnetMsgHdr_t rm{};
  rm.msg_iov = riov;
  rm.msg_iovlen = 3;
  rm.flags = 77;
  auto t = std::chrono::steady_clock::now();
  int r;
  while ((r = machnet_recvmsg(s.ch, &rm)) == 0 && ms_since(t) < 5000) {
  }
  REQUIRE(r == 1);
  CHECK(rm.msg_size == whole.size());
  CHECK(rm.flags == 0);
  CHECK(same_flow(rm.flow_info, s.flow));
  CHECK(std::memcmp(r1.data(), whole.data(), 7) == 0);
  CHECK(std::memcmp(r2.data(), whole.data() + 7, whole.size() - 7) == 0);

  // recvmsg_wait, one iovec.
  REQUIRE(machnet_sendmsg(s.ch, &m) == 0);
  std::vector<uint8_t> r3(whole.size());
  MachnetIovec_t one{r3.data(), r3.size()};
  rm.msg_iov = &one;
  rm.msg_iovlen = 1;
  REQUIRE(machnet_recvmsg_wait(s.ch, &rm, 5000) == 1);
  CHECK(r3 == whole);
  s.check_clean();
}

TEST_CASE("sendmmsg sends in order and returns the count sent") {
  session s;
  std::vector<std::vector<uint8_t>> bodies;
  std::vector<MachnetIovec_t> iovs(6);
  std::vector<MachnetMsgHdr_t> msgs(6);
  for (int i = 0; i < 6; ++i) bodies.push_back(payload(100 + 5000 * i, uint32_t(i)));
  for (int i = 0; i < 6; ++i) {
    iovs[i] = {bodies[i].data(), bodies[i].size()};
    msgs[i] = MachnetMsgHdr_t{};
    msgs[i].msg_size = uint32_t(bodies[i].size());
    msgs[i].flow_info = s.flow;
    msgs[i].msg_iov = &iovs[i];
    msgs[i].msg_iovlen = 1;
  }
  CHECK(machnet_sendmmsg(s.ch, msgs.data(), 0) == 0);
  REQUIRE(machnet_sendmmsg(s.ch, msgs.data(), 6) == 6);
  // A bad one in the middle: the ones before it go, the call says where it stopped.
  msgs[3].msg_size += 1;
  errno = 0;
  CHECK(machnet_sendmmsg(s.ch, msgs.data(), 6) == 3);
  CHECK(errno == EINVAL);

  std::vector<uint8_t> in(100'000);
  for (int k = 0; k < 9; ++k) {
    const auto& want = bodies[k < 6 ? k : k - 6];
    ssize_t got = machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000);
    REQUIRE(got == ssize_t(want.size()));
    CHECK(std::memcmp(in.data(), want.data(), want.size()) == 0);
  }
  CHECK(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 50) == 0);
  s.check_clean();
}

TEST_CASE("a too small receive buffer gets EMSGSIZE and the message stays pending") {
  session s;
  auto big = payload(5000, 9), small = payload(10, 10);
  REQUIRE(machnet_send(s.ch, s.flow, big.data(), big.size()) == 0);
  REQUIRE(machnet_send(s.ch, s.flow, small.data(), small.size()) == 0);
  std::vector<uint8_t> in(big.size());
  errno = 0;
  CHECK(machnet_recv_wait(s.ch, in.data(), 100, nullptr, 5000) == -1);
  CHECK(errno == EMSGSIZE);
  errno = 0;
  CHECK(machnet_recv(s.ch, in.data(), big.size() - 1, nullptr) == -1);
  CHECK(errno == EMSGSIZE);
  CHECK(machnet_recv(s.ch, nullptr, 0, nullptr) == -1);
  MachnetIovec_t iov[2] = {{in.data(), 2000}, {in.data() + 2000, 2000}};
  MachnetMsgHdr_t m{};
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  errno = 0;
  CHECK(machnet_recvmsg(s.ch, &m) == -1);
  CHECK(errno == EMSGSIZE);
  // The retry with room for it gets the same message, then the next one.
  MachnetFlow_t from{};
  REQUIRE(machnet_recv(s.ch, in.data(), in.size(), &from) == ssize_t(big.size()));
  CHECK(in == big);
  CHECK(same_flow(from, s.flow));
  REQUIRE(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000) == ssize_t(small.size()));
  CHECK(std::memcmp(in.data(), small.data(), small.size()) == 0);
  s.check_clean();
}

TEST_CASE("recv with nothing pending returns 0") {
  session s;
  uint8_t buf[64];
  MachnetFlow_t from{1, 2, 3, 4};
  CHECK(machnet_recv(s.ch, buf, sizeof buf, &from) == 0);
  CHECK(from.src_ip == 1);  // untouched
  MachnetIovec_t iov{buf, sizeof buf};
  MachnetMsgHdr_t m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  CHECK(machnet_recvmsg(s.ch, &m) == 0);
  CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, 0) == 0);
  CHECK(machnet_recvmsg_wait(s.ch, &m, 0) == 0);
  s.check_clean();
}

TEST_CASE("ENOBUFS when machnetd does not refill, and nothing is lost") {
  session s;
  // The free ring holds half the pool (1024 buffers of 16 KiB): one 8 MiB
  // message (515 buffers) fits, the second does not while the engine is stopped.
  auto first = payload(MACHNET_MSG_MAX_LEN, 1), second = payload(MACHNET_MSG_MAX_LEN, 2);
  s.sidecar.pause(true);
  REQUIRE(machnet_send(s.ch, s.flow, first.data(), first.size()) == 0);
  auto tiny = payload(100, 3);
  REQUIRE(machnet_send(s.ch, s.flow, tiny.data(), tiny.size()) == 0);
  auto t = std::chrono::steady_clock::now();
  errno = 0;
  CHECK(machnet_send(s.ch, s.flow, second.data(), second.size()) == -1);
  CHECK(errno == ENOBUFS);
  double waited = ms_since(t);
  CHECK(waited >= 90);
  CHECK(waited < 5000);

  s.sidecar.pause(false);
  std::vector<uint8_t> in(MACHNET_MSG_MAX_LEN);
  REQUIRE(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000) == ssize_t(first.size()));
  CHECK(in == first);
  REQUIRE(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000) == ssize_t(tiny.size()));
  CHECK(std::memcmp(in.data(), tiny.data(), tiny.size()) == 0);
  // The buffers the failed send had taken went back: it works now.
  REQUIRE(machnet_send(s.ch, s.flow, second.data(), second.size()) == 0);
  REQUIRE(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000) == ssize_t(second.size()));
  CHECK(in == second);
  s.check_clean();
}

TEST_CASE("a stream of messages larger than the pool flows through") {
  // 64 MiB through a 32 MiB pool: the app's sends wait for buffers the
  // engine takes back; the echoes wait for the app to read.
  session s;
  std::vector<uint8_t> in(1 << 20);
  int sent = 0, received = 0;
  auto t = std::chrono::steady_clock::now();
  while (received < 64 && ms_since(t) < 20000) {
    if (sent < 64 && sent - received < 8) {
      auto out = payload(1 << 20, uint32_t(sent));
      if (machnet_send(s.ch, s.flow, out.data(), out.size()) == 0)
        ++sent;
      else
        REQUIRE(errno == ENOBUFS);
    }
    ssize_t n = machnet_recv(s.ch, in.data(), in.size(), nullptr);
    REQUIRE(n >= 0);
    if (n > 0) {
      REQUIRE(n == 1 << 20);
      CHECK(in == payload(1 << 20, uint32_t(received)));
      ++received;
    }
  }
  CHECK(received == 64);
  s.check_clean();
}
