// log: the sink — one line per message on stderr, written with a single write().
#include "machnet/runtime/log.hh"

#include <unistd.h>

#include <atomic>
#include <stdexcept>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/reactor.hh"

namespace machnet::log {

namespace {
std::atomic<level> g_level{level::info};
constexpr const char* names[] = {"trace", "debug", "info", "warn", "error", "off"};
}  // namespace

level parse_level(std::string_view s) {
  for (int i = 0; i < 6; ++i)
    if (s == names[i]) return static_cast<level>(i);
  throw std::invalid_argument(
      fmt::format("unknown log level '{}' (expected trace|debug|info|warn|error|off)", s));
}

void set_level(level l) noexcept { g_level.store(l, std::memory_order_relaxed); }
level get_level() noexcept { return g_level.load(std::memory_order_relaxed); }

void write(level l, std::string_view msg) noexcept {
  try {
    auto* r = reactor::local_or_null();
    uint64_t us = now_us();
    std::string line =
        r ? fmt::format("{}.{:06} [{}] shard {}: {}\n", us / 1'000'000, us % 1'000'000,
                        names[int(l)], r->shard_id(), msg)
          : fmt::format("{}.{:06} [{}] {}\n", us / 1'000'000, us % 1'000'000, names[int(l)], msg);
    ssize_t rc = ::write(STDERR_FILENO, line.data(), line.size());
    (void)rc;
  } catch (...) {
  }
}

}  // namespace machnet::log
