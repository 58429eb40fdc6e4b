// Tests of libmachnet's argument checks: every bad input is refused with -1
// and the right errno, and none of them loses a pending message.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "machnet.h"
#include "session.hh"

using namespace machnet::test;

// The call fails with -1 and sets errno to err.
#define CHECK_FAILS(expr, err) \
  do {                         \
    errno = 0;                 \
    CHECK((expr) == -1);       \
    CHECK(errno == (err));     \
  } while (0)

TEST_CASE("a NULL or unknown channel is EINVAL") {
  session s;
  uint8_t buf[64]{};
  MachnetFlow_t f{};
  MachnetIovec_t iov{buf, sizeof buf};
  MachnetMsgHdr_t m{};
  m.msg_size = sizeof buf;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(64) uint8_t not_a_channel[256]{};
  for (void* ch : {static_cast<void*>(nullptr), static_cast<void*>(not_a_channel)}) {
    CHECK_FAILS(machnet_listen(ch, "10.0.0.1", 80), EINVAL);
    CHECK_FAILS(machnet_connect(ch, "10.0.0.1", "10.0.0.2", 80, &f), EINVAL);
    CHECK_FAILS(machnet_send(ch, f, buf, 1), EINVAL);
    CHECK_FAILS(machnet_sendmsg(ch, &m), EINVAL);
    CHECK_FAILS(machnet_sendmmsg(ch, &m, 1), EINVAL);
    CHECK_FAILS(machnet_recv(ch, buf, sizeof buf, &f), EINVAL);
    CHECK_FAILS(machnet_recvmsg(ch, &m), EINVAL);
    CHECK_FAILS(machnet_recv_wait(ch, buf, sizeof buf, &f, 10), EINVAL);
    CHECK_FAILS(machnet_recvmsg_wait(ch, &m, 10), EINVAL);
    CHECK_FAILS(machnet_close(ch, f), EINVAL);
    CHECK_FAILS(machnet_detach(ch), EINVAL);
  }
}

TEST_CASE("bad addresses and ports are EINVAL") {
  session s;
  MachnetFlow_t f{};
  for (const char* bad : {"", "10.0.0", "10.0.0.256", "abc", "10.0.0.1 ", "::1", "1.2.3.4.5"}) {
    INFO("address '" << bad << "'");
    CHECK_FAILS(machnet_listen(s.ch, bad, 80), EINVAL);
    CHECK_FAILS(machnet_connect(s.ch, bad, "10.0.0.2", 80, &f), EINVAL);
    CHECK_FAILS(machnet_connect(s.ch, "10.0.0.1", bad, 80, &f), EINVAL);
  }
  CHECK_FAILS(machnet_listen(s.ch, nullptr, 80), EINVAL);
  CHECK_FAILS(machnet_listen(s.ch, "10.0.0.1", 0), EINVAL);
  CHECK_FAILS(machnet_connect(s.ch, nullptr, "10.0.0.2", 80, &f), EINVAL);
  CHECK_FAILS(machnet_connect(s.ch, "10.0.0.1", nullptr, 80, &f), EINVAL);
  CHECK_FAILS(machnet_connect(s.ch, "10.0.0.1", "10.0.0.2", 0, &f), EINVAL);
  CHECK_FAILS(machnet_connect(s.ch, "10.0.0.1", "0.0.0.0", 80, &f), EINVAL);
  CHECK_FAILS(machnet_connect(s.ch, "10.0.0.1", "10.0.0.2", 80, nullptr), EINVAL);
  // None of them reached machnetd.
  CHECK(s.sidecar.requests().size() == 1);  // the session's connect
}

TEST_CASE("bad messages are refused and lose nothing") {
  session s;
  // A message waiting for the app all along.
  auto pending = payload(2000, 1);
  REQUIRE(machnet_send(s.ch, s.flow, pending.data(), pending.size()) == 0);

  std::vector<uint8_t> big(MACHNET_MSG_MAX_LEN + 1);
  CHECK_FAILS(machnet_send(s.ch, s.flow, big.data(), big.size()), EMSGSIZE);
  CHECK_FAILS(machnet_send(s.ch, s.flow, big.data(), 0), EINVAL);
  CHECK_FAILS(machnet_send(s.ch, s.flow, nullptr, 10), EINVAL);

  MachnetIovec_t iov[2] = {{big.data(), 100}, {big.data() + 100, 50}};
  MachnetMsgHdr_t m{};
  m.flow_info = s.flow;
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  m.msg_size = 149;  // not the sum
  CHECK_FAILS(machnet_sendmsg(s.ch, &m), EINVAL);
  m.msg_size = 151;
  CHECK_FAILS(machnet_sendmsg(s.ch, &m), EINVAL);
  m.msg_size = 0;
  m.msg_iovlen = 0;
  CHECK_FAILS(machnet_sendmsg(s.ch, &m), EINVAL);  // empty
  m.msg_iovlen = 2;
  m.msg_iov = nullptr;
  m.msg_size = 150;
  CHECK_FAILS(machnet_sendmsg(s.ch, &m), EINVAL);
  MachnetIovec_t null_base[1] = {{nullptr, 10}};
  m.msg_iov = null_base;
  m.msg_iovlen = 1;
  m.msg_size = 10;
  CHECK_FAILS(machnet_sendmsg(s.ch, &m), EINVAL);
  MachnetIovec_t huge[2] = {{big.data(), MACHNET_MSG_MAX_LEN}, {big.data(), 1}};
  m.msg_iov = huge;
  m.msg_iovlen = 2;
  m.msg_size = MACHNET_MSG_MAX_LEN + 1;
  CHECK_FAILS(machnet_sendmsg(s.ch, &m), EMSGSIZE);
  CHECK_FAILS(machnet_sendmsg(s.ch, nullptr), EINVAL);
  CHECK_FAILS(machnet_sendmmsg(s.ch, &m, -1), EINVAL);
  CHECK_FAILS(machnet_sendmmsg(s.ch, nullptr, 1), EINVAL);
  CHECK(machnet_sendmmsg(s.ch, nullptr, 0) == 0);
  errno = 0;
  CHECK(machnet_sendmmsg(s.ch, &m, 1) == 0);  // the first one is bad: none sent
  CHECK(errno == EMSGSIZE);

  uint8_t buf[16];
  CHECK_FAILS(machnet_recv(s.ch, nullptr, 10, nullptr), EINVAL);
  CHECK_FAILS(machnet_recvmsg(s.ch, nullptr), EINVAL);
  CHECK_FAILS(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, -2), EINVAL);
  MachnetMsgHdr_t r{};
  r.msg_iovlen = 1;  // and no msg_iov
  CHECK_FAILS(machnet_recvmsg(s.ch, &r), EINVAL);
  CHECK_FAILS(machnet_recvmsg_wait(s.ch, &r, -5), EINVAL);

  // The waiting message is still there, and nothing else came.
  std::vector<uint8_t> in(4096);
  REQUIRE(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 5000) == 2000);
  CHECK(std::equal(pending.begin(), pending.end(), in.begin()));
  CHECK(machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 50) == 0);
  s.check_clean();
}
