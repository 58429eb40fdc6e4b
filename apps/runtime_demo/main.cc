// runtime_demo: a tour of the runtime — shards passing a token around a ring
// with submit_to, timers, and a fiber blocking on a sleep — printing what each
// shard's loop did.
#include <fmt/format.h>

#include "machnet/runtime/app.hh"
#include "machnet/runtime/clock.hh"
#include "machnet/runtime/smp.hh"
#include "machnet/runtime/thread.hh"
#include "machnet/runtime/when_all.hh"

namespace po = boost::program_options;
using namespace machnet;

namespace {

// Passes a counter once around the ring of shards; returns the hops taken.
task<unsigned> pass_token(unsigned hops_left, unsigned value) {
  if (hops_left == 0) co_return value;
  unsigned next = (this_shard().shard_id() + 1) % smp::count();
  co_return co_await submit_to(next, [=] { return pass_token(hops_left - 1, value + 1); });
}

task<int> demo_main(const po::variables_map& vm) {
  unsigned rounds = vm["rounds"].as<unsigned>();
  unsigned n = smp::count();
  fmt::print("runtime_demo: {} shard(s), {} round(s) of the ring\n", n, rounds);

  for (unsigned r = 0; r < rounds; ++r) {
    uint64_t t0 = now_ns();
    unsigned hops = co_await pass_token(n * 1000, 0);
    uint64_t t1 = now_ns();
    fmt::print("round {}: token made {} hops in {:.1f} us ({:.0f} ns/hop)\n", r, hops,
               (t1 - t0) / 1e3, double(t1 - t0) / hops);

    // A fiber on this shard blocks on a timer while a coroutine sleeps too.
    machnet::thread fiber([] {
      uint64_t s = now_us();
      machnet::await(sleep(std::chrono::milliseconds(2)));
      fmt::print("  fiber woke after {} us\n", now_us() - s);
    });
    uint64_t s = now_us();
    co_await sleep(std::chrono::milliseconds(1));
    fmt::print("  coroutine woke after {} us\n", now_us() - s);
    co_await fiber.join();
  }

  // Ask every shard how its loop went.
  std::vector<task<std::string>> reports;
  for (unsigned i = 0; i < n; ++i)
    reports.push_back([](unsigned shard) -> task<std::string> {
      co_return co_await submit_to(shard, [] {
        auto& st = this_shard().stats();
        return fmt::format("shard {}: {} turns, {} tasks, {} sleeps, {} wake-ups",
                           this_shard().shard_id(), st.turns, st.tasks_run, st.sleeps, st.wakeups);
      });
    }(i));
  for (auto& line : co_await when_all(std::move(reports))) fmt::print("{}\n", line);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  app_template app("runtime_demo", "shards passing a token, timers and fibers");
  app.add_options()("rounds", po::value<unsigned>()->default_value(3), "rounds to run");
  return app.run(argc, argv, demo_main);
}
