// Tests of the app template's flags: defaults, per-shard overrides, cpusets,
// and clear errors for bad input.
#include <catch2/catch.hpp>

#include <csignal>
#include <thread>

#include "machnet/runtime/app.hh"
#include "machnet/runtime/smp.hh"

namespace po = boost::program_options;
using namespace machnet;

namespace {
runtime_config parse(std::vector<std::string> args) {
  po::options_description d;
  add_runtime_options(d);
  std::vector<const char*> argv{"test"};
  for (auto& a : args) argv.push_back(a.c_str());
  po::variables_map vm;
  po::store(po::parse_command_line(int(argv.size()), argv.data(), d), vm);
  po::notify(vm);
  return make_runtime_config(vm);
}

std::string error_of(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("defaults: one adaptive shard, not pinned") {
  auto c = parse({});
  REQUIRE(c.smp == 1);
  REQUIRE(c.shards.size() == 1);
  REQUIRE(c.shards[0].mode == poll_mode::adaptive);
  REQUIRE(c.shards[0].cpu == -1);
}

TEST_CASE("common flags apply to every shard; --shard-opt overrides one") {
  auto c = parse({"--smp", "3", "--poll-mode", "sleep", "--idle-poll-us", "77", "--shard-opt",
                  "1:poll-mode=busy,idle-poll-us=5", "--shard-opt", "2:task-quota-us=9,cpu=1"});
  REQUIRE(c.shards.size() == 3);
  REQUIRE(c.shards[0].mode == poll_mode::sleep);
  REQUIRE(c.shards[0].idle_poll_us == 77);
  REQUIRE(c.shards[1].mode == poll_mode::busy);
  REQUIRE(c.shards[1].idle_poll_us == 5);
  REQUIRE(c.shards[2].task_quota_us == 9);
  REQUIRE(c.shards[2].cpu == 1);
}

TEST_CASE("cpusets pin shard i to the i-th CPU") {
  REQUIRE(parse_cpuset("0-2,5,7-8") == std::vector<int>{0, 1, 2, 5, 7, 8});
  auto c = parse({"--smp", "2", "--cpuset", "1,0"});
  REQUIRE(c.shards[0].cpu == 1);
  REQUIRE(c.shards[1].cpu == 0);
}

TEST_CASE("bad flags give errors that name the problem") {
  CHECK_THAT(error_of({"--poll-mode", "turbo"}), Catch::Contains("turbo"));
  CHECK_THAT(error_of({"--smp", "2", "--shard-opt", "5:poll-mode=busy"}),
             Catch::Contains("shard 5 does not exist"));
  CHECK_THAT(error_of({"--shard-opt", "0:speed=9"}), Catch::Contains("unknown key 'speed'"));
  CHECK_THAT(error_of({"--shard-opt", "busy"}), Catch::Contains("SHARD:KEY=VALUE"));
  CHECK_THAT(error_of({"--smp", "3", "--cpuset", "0-1"}), Catch::Contains("--smp is 3"));
  CHECK_THAT(error_of({"--cpuset", "3-1"}), Catch::Contains("reversed"));
  CHECK_THAT(error_of({"--smp", "0"}), Catch::Contains("--smp"));
  CHECK_THAT(error_of({"--log-level", "loud"}), Catch::Contains("loud"));
}

TEST_CASE("app_template runs main, returns its code, and handles --help and bad flags") {
  app_template app("t", "test app");
  app.add_options()("answer", po::value<int>()->default_value(1), "the answer");
  const char* argv1[] = {"t", "--answer", "42", "--smp", "2"};
  int rc = app.run(5, const_cast<char**>(argv1), [](const po::variables_map& vm) -> task<int> {
    co_return vm["answer"].as<int>() == 42 && smp::count() == 2 ? 5 : 1;
  });
  REQUIRE(rc == 5);
  const char* argv2[] = {"t", "--help"};
  REQUIRE(app.run(2, const_cast<char**>(argv2), [](auto&) -> task<int> { co_return 1; }) == 0);
  const char* argv3[] = {"t", "--no-such-flag"};
  REQUIRE(app.run(2, const_cast<char**>(argv3), [](auto&) -> task<int> { co_return 1; }) == 2);
}

TEST_CASE("SIGTERM stops an app in order") {
  app_template app("t", "test app");
  const char* argv[] = {"t", "--smp", "2", "--poll-mode", "sleep"};
  std::thread killer([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(::getpid(), SIGTERM);
  });
  int rc = app.run(5, const_cast<char**>(argv), [](auto&) -> task<int> {
    co_await sleep(std::chrono::hours(1));  // only a signal ends this
    co_return 1;
  });
  killer.join();
  REQUIRE(rc == 0);
}
