// runtime_perf: perf tests of the runtime's building blocks — coroutine
// resume/suspend, child-task await, fiber switch, submit_to round trip, timer
// arm+cancel, wake-up of a sleeping shard, idle CPU. Table + JSON.
#include <sys/resource.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/smp.hh"
#include "machnet/runtime/thread.hh"
#include "machnet/runtime/timer.hh"
#include "perf_harness.hh"

using namespace machnet;
using clk = std::chrono::steady_clock;

namespace {

struct resumable {
  struct promise_type {
    resumable get_return_object() {
      return {std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() { std::terminate(); }
  };
  std::coroutine_handle<promise_type> h;
};

resumable spinner(uint64_t* counter) {
  for (;;) {
    ++*counter;
    co_await std::suspend_always{};
  }
}

task<uint64_t> leaf(uint64_t v) { co_return v; }
task<uint64_t> parent(uint64_t n) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < n; ++i) sum += co_await leaf(i);
  co_return sum;
}

std::vector<reactor_config> two_shards(poll_mode m0, poll_mode m1) {
  std::vector<reactor_config> c(2);
  c[0].mode = m0;
  c[1].mode = m1;
  c[1].idle_poll_us = 0;
  if (std::thread::hardware_concurrency() >= 2) {
    c[0].cpu = 0;
    c[1].cpu = 1;
  }
  return c;
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned runs = 7;
  bool quick = false;
  std::string json_path, only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = unsigned(std::stoul(argv[++i]));
    else if (a == "--only" && i + 1 < argc) only = argv[++i];
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--quick") quick = true;
    else {
      fmt::print(stderr, "usage: {} [--runs N] [--json PATH] [--quick] [--only SUBSTRING]\n", argv[0]);
      return 2;
    }
  }
  const uint64_t scale = quick ? 10 : 1;
  perf::report rep;
  auto want = [&](const char* name) { return only.empty() || std::string(name).find(only) != std::string::npos; };

  if (want("coroutine"))
  {  // coroutine resume + suspend
    uint64_t counter = 0;
    auto c = spinner(&counter);
    rep.add(perf::measure<clk>("coroutine resume+suspend", runs, 20'000'000 / scale, 10,
                               [&](uint64_t n) {
                                 for (uint64_t i = 0; i < n; ++i) c.h.resume();
                               }));
    c.h.destroy();
  }
  if (want("child"))
  rep.add(perf::measure<clk>("co_await child task<T> (frame recycled)", runs, 5'000'000 / scale,
                             0, [&](uint64_t n) {
                               auto t = parent(n);
                               t.handle().resume();
                               (void)t.result();
                             }));
  if (want("fiber"))
  {  // fiber switch: one resume there and one back = 2 switches
    namespace ctx = boost::context;
    ctx::fiber f{[](ctx::fiber&& c) {
      for (;;) c = std::move(c).resume();
      return std::move(c);
    }};
    auto r = perf::measure<clk>("fiber switch (one way)", runs, 10'000'000 / scale, 30,
                                [&](uint64_t n) {
                                  for (uint64_t i = 0; i < n; ++i) f = std::move(f).resume();
                                });
    for (auto& s : r.samples) s /= 2;
    rep.add(std::move(r));
  }
  if (want("thread_yield"))
  {  // machnet::thread yield through the reactor (switch out, runq, switch in)
    reactor r(0, {poll_mode::busy, 0, 500, -1});
    perf::result res{"machnet::thread_yield via reactor", "ns/op", {}, 0};
    r.spawn([&]() -> task<void> {
      for (unsigned k = 0; k <= runs; ++k) {
        uint64_t n = 1'000'000 / scale;
        machnet::thread t([n] {
          for (uint64_t i = 0; i < n; ++i) machnet::thread_yield();
        });
        auto t0 = clk::now();
        co_await t.join();
        double ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now() - t0).count());
        if (k > 0) res.samples.push_back(ns / double(n));  // first run is warm-up
      }
      reactor::local().stop();
    });
    r.run();
    rep.add(std::move(res));
  }
  if (want("timer"))
  {  // timer arm + cancel, and re-arm of an armed timer
    timer_wheel w(1'000'000);
    timer t([] {});
    rep.add(perf::measure<clk>("timer arm+cancel", runs, 20'000'000 / scale, 20, [&](uint64_t n) {
      for (uint64_t i = 0; i < n; ++i) {
        t.arm_at(w, 1'000'100 + (i & 1023));
        t.cancel();
      }
    }));
    rep.add(perf::measure<clk>("timer re-arm (armed -> new deadline)", runs, 20'000'000 / scale, 0,
                               [&](uint64_t n) {
                                 for (uint64_t i = 0; i < n; ++i)
                                   t.arm_at(w, 1'000'100 + (i & 4095));
                               }));
    t.cancel();
  }
  if (want("submit_to"))
  {  // submit_to round trip between two busy shards
    perf::result res{"submit_to round trip, 2 busy shards", "ns/op", {}, 1000};
    smp s(two_shards(poll_mode::busy, poll_mode::busy));
    s.run([&]() -> task<int> {
      for (unsigned k = 0; k <= runs; ++k) {
        uint64_t n = 200'000 / scale;
        auto t0 = clk::now();
        for (uint64_t i = 0; i < n; ++i) co_await submit_to(1, [] { return 1; });
        double ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now() - t0).count());
        if (k > 0) res.samples.push_back(ns / double(n));
      }
      co_return 0;
    });
    rep.add(std::move(res));
  }
  if (want("wake"))
  {  // wake-up of a sleeping shard: time from send to the function running there
    perf::result res{"wake a sleeping shard (send -> run)", "us", {}, 50};
    smp s(two_shards(poll_mode::adaptive, poll_mode::sleep));
    s.run([&]() -> task<int> {
      unsigned samples = quick ? 50 : 300;
      for (unsigned k = 0; k < samples; ++k) {
        co_await sleep(std::chrono::microseconds(2000));  // shard 1 is asleep by now
        uint64_t t0 = now_ns();
        uint64_t t1 = co_await submit_to(1, [] { return now_ns(); });
        res.samples.push_back(double(t1 - t0) / 1000.0);
      }
      co_return 0;
    });
    rep.add(std::move(res));
  }
  if (want("idle"))
  {  // idle CPU of a 2-shard adaptive app
    perf::result res{"idle 2-shard app, adaptive: CPU", "%", {}, 2};
    std::vector<reactor_config> c(2);  // adaptive, 200 us idle poll: the defaults
    smp s(c);
    unsigned n = quick ? 2 : 5;
    s.run([&]() -> task<int> {
      for (unsigned k = 0; k < n; ++k) {
        double c0 = process_cpu_seconds();
        auto t0 = clk::now();
        co_await sleep(std::chrono::milliseconds(1000));
        double wall = std::chrono::duration<double>(clk::now() - t0).count();
        res.samples.push_back(100.0 * (process_cpu_seconds() - c0) / wall);
      }
      co_return 0;
    });
    rep.add(std::move(res));
  }

  rep.print_table();
  if (!json_path.empty() && !rep.write_json(json_path)) {
    fmt::print(stderr, "cannot write {}: {}\n", json_path, std::strerror(errno));
    return 1;
  }
  return 0;
}
