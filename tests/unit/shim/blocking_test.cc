// Tests of libmachnet's blocking calls: recv_wait timing out, sleeping (no
// CPU) and waking promptly on machnetd's doorbell, a late connect answer, and
// a sleeper woken by machnetd's death or by its closing the channel.
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "machnet.h"
#include "session.hh"

using namespace machnet::test;
using namespace std::chrono_literals;

namespace {

double thread_cpu_ms() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 +
         (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

}  // namespace

TEST_CASE("recv_wait returns 0 after about the timeout") {
  session s;
  uint8_t buf[64];
  for (int timeout : {1, 20, 100}) {
    INFO("timeout " << timeout << " ms");
    auto t = std::chrono::steady_clock::now();
    CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, timeout) == 0);
    double waited = ms_since(t);
    CHECK(waited >= timeout - 0.5);
    CHECK(waited < timeout + 200);
  }
  MachnetIovec_t iov{buf, sizeof buf};
  MachnetMsgHdr_t m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  auto t = std::chrono::steady_clock::now();
  CHECK(machnet_recvmsg_wait(s.ch, &m, 50) == 0);
  CHECK(ms_since(t) >= 49.5);
}

TEST_CASE("recv_wait sleeps and wakes promptly when a message arrives") {
  session s;
  auto body = payload(3000, 5);
  for (int round = 0; round < 5; ++round) {
    INFO("round " << round);
    std::atomic<int64_t> sent_at{0};
    std::thread feeder([&] {
      std::this_thread::sleep_for(200ms);
      sent_at = std::chrono::steady_clock::now().time_since_epoch().count();
      machnet::shm::flow_info f{s.flow.src_ip, s.flow.dst_ip, s.flow.src_port, s.flow.dst_port};
      s.sidecar.inject(s.id, f, body);
    });
    std::vector<uint8_t> in(4096);
    double cpu0 = thread_cpu_ms();
    ssize_t n = machnet_recv_wait(s.ch, in.data(), in.size(), nullptr, 10'000);
    auto woke = std::chrono::steady_clock::now().time_since_epoch().count();
    double cpu = thread_cpu_ms() - cpu0;
    feeder.join();
    REQUIRE(n == ssize_t(body.size()));
    CHECK(std::memcmp(in.data(), body.data(), body.size()) == 0);
    double latency_ms = double(woke - sent_at.load()) / 1e6;
    CHECK(latency_ms < 2000);  // woken by the doorbell, not the 10 s timeout
    // It slept through the 200 ms instead of spinning.
    CHECK(cpu < 100);
  }
  // machnetd's doorbell woke it: the app set app_sleeping and machnetd saw it.
  CHECK(s.sidecar.refusals() == 0);
}

TEST_CASE("recv_wait with no timeout waits for the message") {
  session s;
  auto body = payload(100, 6);
  std::thread feeder([&] {
    std::this_thread::sleep_for(50ms);
    machnet::shm::flow_info f{s.flow.src_ip, s.flow.dst_ip, s.flow.src_port, s.flow.dst_port};
    s.sidecar.inject(s.id, f, body);
  });
  std::vector<uint8_t> in(100);
  MachnetFlow_t from{};
  ssize_t n = machnet_recv_wait(s.ch, in.data(), in.size(), &from, -1);
  feeder.join();
  REQUIRE(n == 100);
  CHECK(in == body);
  CHECK(from.dst_port == s.flow.dst_port);
}

TEST_CASE("connect sleeps until machnetd's late answer") {
  session s;
  MachnetFlow_t f{};
  auto t = std::chrono::steady_clock::now();
  double cpu0 = thread_cpu_ms();
  REQUIRE(machnet_connect(s.ch, "0.0.0.0", "10.0.0.3", loopback_sidecar::port_late, &f) == 0);
  double waited = ms_since(t);
  CHECK(thread_cpu_ms() - cpu0 < 60);
  CHECK(waited >= 290);
  CHECK(waited < 2000);
  CHECK(f.src_ip == loopback_sidecar::host_ip);
  CHECK(f.dst_ip == 0x0a000003);
  CHECK(f.dst_port == loopback_sidecar::port_late);
}

TEST_CASE("a sleeping recv_wait fails with ESHUTDOWN when machnetd dies") {
  session s;
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    s.sidecar.kill();
  });
  uint8_t buf[64];
  auto t = std::chrono::steady_clock::now();
  errno = 0;
  CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, -1) == -1);
  CHECK(errno == ESHUTDOWN);
  CHECK(ms_since(t) < 2000);
  killer.join();
  errno = 0;
  CHECK(machnet_recv(s.ch, buf, sizeof buf, nullptr) == -1);
  CHECK(errno == ESHUTDOWN);
}

TEST_CASE("a sleeping recv_wait fails with ESHUTDOWN when machnetd closes the channel") {
  session s;
  void* other = machnet_attach();
  REQUIRE(other != nullptr);
  std::thread closer([&] {
    std::this_thread::sleep_for(100ms);
    s.sidecar.shut(s.id);
  });
  uint8_t buf[64];
  auto t = std::chrono::steady_clock::now();
  errno = 0;
  CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, 10'000) == -1);
  CHECK(errno == ESHUTDOWN);
  CHECK(ms_since(t) < 2000);
  closer.join();
  errno = 0;
  CHECK(machnet_send(s.ch, s.flow, buf, 1) == -1);
  CHECK(errno == ESHUTDOWN);
  // Only that channel: the other one still works.
  MachnetFlow_t f{};
  REQUIRE(machnet_connect(other, "10.0.0.1", "10.0.0.2", 6000, &f) == 0);
  REQUIRE(machnet_send(other, f, "x", 1) == 0);
  CHECK(machnet_recv_wait(other, buf, sizeof buf, nullptr, 5000) == 1);
  CHECK(machnet_detach(other) == 0);
}
