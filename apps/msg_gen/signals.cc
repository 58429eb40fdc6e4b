// signals: an async-signal-safe stop flag.
#include "signals.hh"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace msg_gen {

namespace {

std::atomic<int> g_stops{0};

void on_stop(int) {
  if (g_stops.fetch_add(1, std::memory_order_relaxed) >= 1) _exit(130);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() noexcept { return g_stops.load(std::memory_order_relaxed) != 0; }

}  // namespace msg_gen
