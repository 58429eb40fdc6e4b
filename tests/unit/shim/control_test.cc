// Tests of libmachnet's control operations over the channel's control queue:
// what listen / connect / close ask machnetd (addresses in host byte order),
// machnetd's refusals as errno, and a connect answered too late.
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <thread>

#include "machnet.h"
#include "session.hh"

using namespace machnet::test;
namespace shm = machnet::shm;

TEST_CASE("listen, connect and close ask machnetd what the app said") {
  session s;  // connected 10.0.0.1 -> 10.0.0.2:5000
  CHECK(s.flow.src_ip == 0x0a000001);
  CHECK(s.flow.dst_ip == 0x0a000002);
  CHECK(s.flow.dst_port == 5000);
  CHECK(s.flow.src_port != 0);
  REQUIRE(machnet_listen(s.ch, "10.0.0.1", 888) == 0);
  REQUIRE(machnet_listen(s.ch, "0.0.0.0", 889) == 0);
  REQUIRE(machnet_close(s.ch, s.flow) == 0);
  auto reqs = s.sidecar.requests();
  REQUIRE(reqs.size() == 4);
  CHECK(reqs[0].op == shm::ctrl_op::connect);
  CHECK(reqs[0].local_ip == 0x0a000001);
  CHECK(reqs[0].remote_ip == 0x0a000002);
  CHECK(reqs[0].remote_port == 5000);
  CHECK(reqs[1].op == shm::ctrl_op::listen);
  CHECK(reqs[1].local_ip == 0x0a000001);
  CHECK(reqs[1].local_port == 888);
  CHECK(reqs[2].local_ip == 0);
  CHECK(reqs[2].local_port == 889);
  CHECK(reqs[3].op == shm::ctrl_op::close);
  CHECK(reqs[3].flow ==
        shm::flow_info{s.flow.src_ip, s.flow.dst_ip, s.flow.src_port, s.flow.dst_port});
  // Ids increase: each answer is matched to its request.
  for (std::size_t i = 1; i < reqs.size(); ++i) CHECK(reqs[i].id > reqs[i - 1].id);
}

TEST_CASE("machnetd's refusals reach the app as errno") {
  session s;
  MachnetFlow_t f{9, 9, 9, 9};
  errno = 0;
  CHECK(machnet_listen(s.ch, "10.0.0.1", loopback_sidecar::port_in_use) == -1);
  CHECK(errno == EADDRINUSE);
  errno = 0;
  CHECK(machnet_listen(s.ch, "10.9.9.9", 80) == -1);
  CHECK(errno == EADDRNOTAVAIL);
  errno = 0;
  CHECK(machnet_connect(s.ch, "10.0.0.1", "10.0.0.2", loopback_sidecar::port_refused, &f) == -1);
  CHECK(errno == ECONNREFUSED);
  errno = 0;
  CHECK(machnet_connect(s.ch, "10.0.0.1", "10.0.0.2", loopback_sidecar::port_timeout, &f) == -1);
  CHECK(errno == ETIMEDOUT);
  CHECK(f.src_ip == 9);  // untouched on failure
  // The channel still works after them.
  REQUIRE(machnet_send(s.ch, s.flow, "ok", 2) == 0);
  char buf[8];
  CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, 5000) == 2);
}

TEST_CASE("a connect answered after the budget fails with ETIMEDOUT and its flow is closed") {
  session s;
  s.sidecar.late_answer_ms = 10'600;  // the connect budget is 10 s
  MachnetFlow_t f{};
  auto t = std::chrono::steady_clock::now();
  errno = 0;
  CHECK(machnet_connect(s.ch, "10.0.0.1", "10.0.0.7", loopback_sidecar::port_silent, &f) == -1);
  CHECK(errno == ETIMEDOUT);
  double waited = ms_since(t);
  CHECK(waited >= 9990);
  // No upper bound: a loaded machine may wake us late (not a timing test).
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  // The late answer is not mistaken for the next request's...
  MachnetFlow_t g{};
  REQUIRE(machnet_connect(s.ch, "10.0.0.1", "10.0.0.8", 5001, &g) == 0);
  CHECK(g.dst_ip == 0x0a000008);
  // ...and the flow nobody knows about was closed.
  // (polled: on a loaded machine the late answer may come later still).
  bool closed = false;
  for (int i = 0; i < 500 && !closed; ++i) {
    for (auto& r : s.sidecar.requests())
      if (r.op == shm::ctrl_op::close && r.flow.dst_ip == 0x0a000007) closed = true;
    if (!closed) {
      char buf[8];
      machnet_recv(s.ch, buf, sizeof buf, nullptr);  // lets the library read late answers
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  CHECK(closed);
}
