// Tests of libmachnet's life cycle: machnet_init twice, detach, concurrent
// attaches, machnetd's death (ESHUTDOWN, then machnet_init reconnects), fork,
// and the reference C program run against a sidecar.
#include <catch2/catch.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "machnet.h"
#include "session.hh"

extern char** environ;

using namespace machnet::test;
using namespace std::chrono_literals;

namespace {
// machnetd's death is noticed within a few milliseconds (docs/api.md), not at
// once: calls `op` until it fails, which must be with ESHUTDOWN and within
// 2 s. Until then it may only report "nothing" (0). Returns the calls made.
template <typename Op>
int until_shutdown(Op op) {
  auto t = std::chrono::steady_clock::now();
  for (int calls = 1;; ++calls) {
    errno = 0;
    const auto r = op();
    if (r == -1) {
      CHECK(errno == ESHUTDOWN);
      return calls;
    }
    REQUIRE(r == 0);
    REQUIRE(ms_since(t) < 2000);
    std::this_thread::sleep_for(100us);
  }
}
}  // namespace

TEST_CASE("machnet_init again while connected keeps the connection") {
  session s;
  REQUIRE(machnet_init() == 0);
  REQUIRE(machnet_init() == 0);
  // Still the same connection: the first channel and a new one both work.
  void* ch2 = machnet_attach();
  REQUIRE(ch2 != nullptr);
  CHECK(s.sidecar.channel_ids().size() == 2);
  REQUIRE(machnet_send(s.ch, s.flow, "a", 1) == 0);
  char buf[4];
  CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, 5000) == 1);
  CHECK(machnet_detach(ch2) == 0);
}

TEST_CASE("detach gives the channel back to machnetd") {
  session s;
  void* a = machnet_attach();
  void* b = machnet_attach();
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(a != b);
  CHECK(s.sidecar.channel_ids().size() == 3);
  CHECK(machnet_detach(a) == 0);
  CHECK(s.sidecar.channel_ids().size() == 2);
  CHECK(machnet_detach(b) == 0);
  CHECK(s.sidecar.channel_ids() == std::vector<uint32_t>{s.id});
}

TEST_CASE("threads attach concurrently and each uses its own channel") {
  loopback_sidecar sidecar;
  REQUIRE(machnet_init() == 0);
  constexpr int threads = 4;
  std::vector<int> ok(threads, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      void* ch = machnet_attach();
      if (!ch) return;
      MachnetFlow_t f{};
      if (machnet_connect(ch, "10.0.0.1", "10.0.0.2", uint16_t(7000 + t), &f) != 0) return;
      std::vector<uint8_t> in(70'000);
      int good = 0;
      for (int i = 0; i < 50; ++i) {
        auto out = payload(1000 * i + 1, uint32_t(t * 100 + i));
        if (machnet_send(ch, f, out.data(), out.size()) != 0) break;
        ssize_t n = machnet_recv_wait(ch, in.data(), in.size(), nullptr, 5000);
        if (n == ssize_t(out.size()) && std::memcmp(in.data(), out.data(), out.size()) == 0) ++good;
      }
      ok[t] = good;
      machnet_detach(ch);
    });
  }
  for (auto& th : ts) th.join();
  for (int t = 0; t < threads; ++t) CHECK(ok[t] == 50);
  CHECK(sidecar.refusals() == 0);
}

TEST_CASE("machnetd's death fails calls with ESHUTDOWN, then machnet_init reconnects") {
  auto first = std::make_unique<loopback_sidecar>();
  REQUIRE(machnet_init() == 0);
  void* old = machnet_attach();
  REQUIRE(old != nullptr);
  MachnetFlow_t f{};
  REQUIRE(machnet_connect(old, "10.0.0.1", "10.0.0.2", 5000, &f) == 0);
  // No echo: a delivered echo would be received before ESHUTDOWN (tested below).
  first->echo(false);
  REQUIRE(machnet_send(old, f, "x", 1) == 0);

  first->kill();
  char buf[8];
  // Until the death is noticed a send still goes into the ring (0), as a
  // socket's send succeeds before a reset is seen; from then on all fail.
  until_shutdown([&] { return machnet_send(old, f, "y", 1); });
  errno = 0;
  CHECK(machnet_send(old, f, "y", 1) == -1);
  CHECK(errno == ESHUTDOWN);
  errno = 0;
  CHECK(machnet_recv(old, buf, sizeof buf, nullptr) == -1);
  CHECK(errno == ESHUTDOWN);
  errno = 0;
  CHECK(machnet_listen(old, "10.0.0.1", 80) == -1);
  CHECK(errno == ESHUTDOWN);
  errno = 0;
  CHECK(machnet_attach() == nullptr);
  CHECK(errno == ESHUTDOWN);
  // No machnetd at all: init says so.
  errno = 0;
  CHECK(machnet_init() == -1);
  CHECK((errno == ENOENT || errno == ECONNREFUSED));

  loopback_sidecar second;
  REQUIRE(machnet_init() == 0);
  void* ch = machnet_attach();
  REQUIRE(ch != nullptr);
  REQUIRE(machnet_connect(ch, "10.0.0.1", "10.0.0.2", 5000, &f) == 0);
  REQUIRE(machnet_send(ch, f, "hello", 5) == 0);
  CHECK(machnet_recv_wait(ch, buf, sizeof buf, nullptr, 5000) == 5);
  // The old channel stays failed; detaching it still frees it.
  errno = 0;
  CHECK(machnet_send(old, f, "y", 1) == -1);
  CHECK(errno == ESHUTDOWN);
  CHECK(machnet_detach(old) == 0);
  CHECK(machnet_detach(ch) == 0);
  CHECK(second.refusals() == 0);
}

TEST_CASE("a forked child connects anew and cannot use its parent's channels") {
  session s;
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Only async-safe-ish C API calls here, and _exit: no Catch in the child.
    char buf[8];
    errno = 0;
    if (machnet_send(s.ch, s.flow, "x", 1) != -1 || errno != ESHUTDOWN) ::_exit(1);
    if (machnet_recv(s.ch, buf, sizeof buf, nullptr) != -1 || errno != ESHUTDOWN) ::_exit(2);
    if (machnet_init() != 0) ::_exit(3);
    void* c = machnet_attach();
    MachnetFlow_t f{};
    if (!c || machnet_connect(c, "10.0.0.1", "10.0.0.2", 5000, &f) != 0) ::_exit(4);
    if (machnet_send(c, f, "y", 1) != 0) ::_exit(5);
    if (machnet_recv_wait(c, buf, sizeof buf, nullptr, 5000) != 1 || buf[0] != 'y') ::_exit(6);
    ::_exit(0);  // no detach: its connection closing ends its channel
  }
  int status = -1;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The parent's channel is untouched, and the child's is gone with it.
  REQUIRE(machnet_send(s.ch, s.flow, "z", 1) == 0);
  char buf[8];
  CHECK(machnet_recv_wait(s.ch, buf, sizeof buf, nullptr, 5000) == 1);
  CHECK(buf[0] == 'z');
  auto t = std::chrono::steady_clock::now();
  while (s.sidecar.channel_ids().size() != 1 && ms_since(t) < 5000)
    std::this_thread::sleep_for(1ms);
  CHECK(s.sidecar.channel_ids() == std::vector<uint32_t>{s.id});
  CHECK(s.sidecar.refusals() == 0);
}

TEST_CASE("the reference C program answers a hello through libmachnet") {
  char self[PATH_MAX]{};
  REQUIRE(::readlink("/proc/self/exe", self, sizeof self - 1) > 0);
  std::string exe = std::string(self);
  exe = exe.substr(0, exe.rfind('/')) + "/../../net/shim/machnet_reference_api";
  REQUIRE(::access(exe.c_str(), X_OK) == 0);

  loopback_sidecar sidecar;  // sets MACHNET_CONTROL_SOCKET for the child
  const char* argv[] = {exe.c_str(), "server", "10.0.0.1", "0.0.0.0", "5555", nullptr};
  pid_t pid;
  REQUIRE(::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, const_cast<char**>(argv), environ) ==
          0);
  // Wait for its listen, then send it a hello as if from the network.
  uint32_t id = 0;
  auto t = std::chrono::steady_clock::now();
  while (id == 0 && ms_since(t) < 10'000) {
    for (auto& r : sidecar.requests())
      if (r.op == machnet::shm::ctrl_op::listen && r.local_port == 5555)
        id = sidecar.channel_ids().back();
    std::this_thread::sleep_for(1ms);
  }
  REQUIRE(id != 0);
  const char hello[] = "hello";
  sidecar.inject(id, {0x0a000001, 0x0a000002, 5555, 40000},
                 std::vector<uint8_t>(hello, hello + sizeof hello));
  // It answers (the loopback echoes its answers back: the second is its goodbye).
  int status = -1;
  t = std::chrono::steady_clock::now();
  pid_t w = 0;
  while ((w = ::waitpid(pid, &status, WNOHANG)) == 0 && ms_since(t) < 20'000)
    std::this_thread::sleep_for(5ms);
  if (w == 0) ::kill(pid, SIGKILL), ::waitpid(pid, &status, 0);
  REQUIRE(w == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(sidecar.refusals() == 0);
}

namespace {
// Injects a message and waits until the app holds it (a 1-byte receive says
// EMSGSIZE and leaves it pending).
void deliver_and_wait(session& s, const std::vector<uint8_t>& body) {
  s.sidecar.inject(s.id, {0x0a000002, 0x0a000001, 5000, 40000}, body);
  char tiny[1];
  auto t = std::chrono::steady_clock::now();
  for (;;) {
    errno = 0;
    ssize_t n = machnet_recv(s.ch, tiny, sizeof tiny, nullptr);
    REQUIRE(n <= 0);
    if (n < 0 && errno == EMSGSIZE) return;
    REQUIRE(ms_since(t) < 5000);
    std::this_thread::sleep_for(1ms);
  }
}
}  // namespace

// Regression: a message machnetd had delivered before it died was lost to
// ESHUTDOWN (docs/api.md: nothing delivered is lost).
TEST_CASE("a message delivered before machnetd died is received, then ESHUTDOWN") {
  session s;
  const auto body = payload(300, 7);
  deliver_and_wait(s, body);
  s.sidecar.kill();
  std::vector<uint8_t> buf(1000);
  MachnetFlow_t f{};
  CHECK(machnet_recv(s.ch, buf.data(), buf.size(), &f) == ssize_t(body.size()));
  CHECK(std::equal(body.begin(), body.end(), buf.begin()));
  // The ring is empty now: "nothing" until the death is noticed, then ESHUTDOWN.
  until_shutdown([&] { return machnet_recv(s.ch, buf.data(), buf.size(), &f); });
  errno = 0;
  CHECK(machnet_recv(s.ch, buf.data(), buf.size(), &f) == -1);
  CHECK(errno == ESHUTDOWN);
  errno = 0;
  CHECK(machnet_recv_wait(s.ch, buf.data(), buf.size(), &f, 1000) == -1);
  CHECK(errno == ESHUTDOWN);
}

TEST_CASE("a message delivered before machnetd closed the channel is received by recv_wait, then ESHUTDOWN") {
  session s;
  const auto body = payload(2000, 9);
  deliver_and_wait(s, body);
  s.sidecar.shut(s.id);
  std::vector<uint8_t> buf(4000);
  CHECK(machnet_recv_wait(s.ch, buf.data(), buf.size(), nullptr, 1000) == ssize_t(body.size()));
  CHECK(std::equal(body.begin(), body.end(), buf.begin()));
  errno = 0;
  CHECK(machnet_recv_wait(s.ch, buf.data(), buf.size(), nullptr, 1000) == -1);
  CHECK(errno == ESHUTDOWN);
}
