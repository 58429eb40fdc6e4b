// session: what most libmachnet tests start from — a loopback sidecar, the
// process connected to it (machnet_init) and one attached channel with a
// connected flow; plus payload helpers.
#pragma once

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "loopback_sidecar.hh"
#include "machnet.h"

namespace machnet::test {

struct session {
  loopback_sidecar sidecar;
  shm::channel_params params;
  void* ch = nullptr;
  uint32_t id = 0;
  MachnetFlow_t flow{};

  explicit session(shm::channel_params p = {}) : sidecar(p), params(p) {
    REQUIRE(machnet_init() == 0);
    ch = machnet_attach();
    REQUIRE(ch != nullptr);
    id = sidecar.channel_ids().back();
    REQUIRE(machnet_connect(ch, "10.0.0.1", "10.0.0.2", 5000, &flow) == 0);
  }
  ~session() {
    if (ch) machnet_detach(ch);
  }
  /// Waits until the app holds exactly the buffers of its free ring (it gave
  /// every other one back) and no descriptor was refused.
  void check_clean() {
    const uint32_t want = params.buf_count / 2;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (sidecar.app_buffers(id) != want && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(sidecar.app_buffers(id) == want);
    CHECK(sidecar.refusals() == 0);
  }
};

/// Bytes that differ per message and per position.
inline std::vector<uint8_t> payload(std::size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = uint8_t(x >> 24);
  }
  return v;
}

inline double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace machnet::test
