// Tests of machnet_init and machnet_attach before and without machnetd: the
// first test case must run first in its process (ctest runs each alone).
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "machnet.h"
#include "session.hh"

using namespace machnet::test;

TEST_CASE("before machnet_init attach is ENOTCONN, and init needs machnetd") {
  errno = 0;
  CHECK(machnet_attach() == nullptr);
  CHECK(errno == ENOTCONN);

  std::string missing = "/tmp/machnet-shim-test-missing-" + std::to_string(::getpid()) + ".sock";
  ::setenv("MACHNET_CONTROL_SOCKET", missing.c_str(), 1);
  errno = 0;
  CHECK(machnet_init() == -1);
  CHECK(errno == ENOENT);
  ::setenv("MACHNET_CONTROL_SOCKET", (std::string(200, 'x')).c_str(), 1);
  errno = 0;
  CHECK(machnet_init() == -1);
  CHECK(errno == ENAMETOOLONG);
  errno = 0;
  CHECK(machnet_attach() == nullptr);
  CHECK(errno == ENOTCONN);

  loopback_sidecar sidecar;
  REQUIRE(machnet_init() == 0);
  void* ch = machnet_attach();
  REQUIRE(ch != nullptr);
  CHECK(machnet_detach(ch) == 0);
}

TEST_CASE("machnet_init gives up on a machnetd that never answers") {
  std::string path = "/tmp/machnet-shim-test-silent-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 4) == 0);  // never accepts, never answers
  ::setenv("MACHNET_CONTROL_SOCKET", path.c_str(), 1);
  auto t = std::chrono::steady_clock::now();
  errno = 0;
  CHECK(machnet_init() == -1);
  CHECK(errno == ETIMEDOUT);
  double waited = ms_since(t);
  CHECK(waited >= 4900);
  CHECK(waited < 7000);
  ::close(fd);
  ::unlink(path.c_str());
}
