// app: flag parsing (Boost.Program_options), per-shard overrides, signals.
#include "machnet/runtime/app.hh"

#include <signal.h>

#include <atomic>
#include <charconv>
#include <iostream>
#include <stdexcept>

#include "machnet/runtime/log.hh"
#include "machnet/runtime/smp.hh"

namespace po = boost::program_options;

namespace machnet {

namespace {

std::atomic<int> g_signal{0};
std::atomic<reactor*> g_signal_target{nullptr};

std::atomic<int> g_signal_count{0};

void on_signal(int sig) {
  g_signal.store(sig, std::memory_order_relaxed);
  g_signal_count.fetch_add(1, std::memory_order_relaxed);
  if (auto* r = g_signal_target.load(std::memory_order_acquire)) r->wake();
}

// Shard 0's poller: turns a received SIGINT/SIGTERM into an orderly stop.
// With stop_in_main, the first signal is left to main and a second one stops.
class signal_poller final : public pollfn {
 public:
  explicit signal_poller(bool in_main) : _in_main(in_main) {}
  bool poll() override {
    int n = g_signal_count.load(std::memory_order_relaxed);
    if (n == _seen) return false;
    _seen = n;
    if (_in_main && n == 1) {
      log::info("received signal {}, shutting down", g_signal.load(std::memory_order_relaxed));
      return true;
    }
    log::info("received signal {}, stopping", g_signal.load(std::memory_order_relaxed));
    smp::instance().stop(0);
    return true;
  }
  bool pure_poll() override { return g_signal_count.load(std::memory_order_relaxed) != _seen; }

 private:
  bool _in_main;
  int _seen = 0;
};

unsigned parse_uint(const std::string& s, const std::string& what) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty())
    throw std::invalid_argument(what + ": '" + s + "' is not a non-negative integer");
  return v;
}

void apply_shard_opt(const std::string& spec, runtime_config& cfg) {
  // "<shard>:<key>=<value>[,<key>=<value>...]"
  auto colon = spec.find(':');
  if (colon == std::string::npos)
    throw std::invalid_argument("--shard-opt '" + spec + "': expected SHARD:KEY=VALUE[,KEY=VALUE]");
  unsigned shard = parse_uint(spec.substr(0, colon), "--shard-opt shard");
  if (shard >= cfg.smp)
    throw std::invalid_argument("--shard-opt '" + spec + "': shard " + std::to_string(shard) +
                                " does not exist (--smp " + std::to_string(cfg.smp) + ")");
  auto& sc = cfg.shards[shard];
  std::string rest = spec.substr(colon + 1);
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    auto comma = rest.find(',', pos);
    std::string kv = rest.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto eq = kv.find('=');
    if (eq == std::string::npos)
      throw std::invalid_argument("--shard-opt '" + spec + "': '" + kv + "' is not KEY=VALUE");
    std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
    if (key == "poll-mode") sc.mode = parse_poll_mode(val);
    else if (key == "idle-poll-us") sc.idle_poll_us = parse_uint(val, "idle-poll-us");
    else if (key == "task-quota-us") sc.task_quota_us = parse_uint(val, "task-quota-us");
    else if (key == "cpu") sc.cpu = static_cast<int>(parse_uint(val, "cpu"));
    else
      throw std::invalid_argument("--shard-opt '" + spec + "': unknown key '" + key +
                                  "' (poll-mode, idle-poll-us, task-quota-us, cpu)");
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
}

}  // namespace

std::vector<int> parse_cpuset(const std::string& s) {
  std::vector<int> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    auto comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    auto dash = item.find('-');
    unsigned lo, hi;
    if (dash == std::string::npos) {
      lo = hi = parse_uint(item, "--cpuset");
    } else {
      lo = parse_uint(item.substr(0, dash), "--cpuset");
      hi = parse_uint(item.substr(dash + 1), "--cpuset");
      if (hi < lo) throw std::invalid_argument("--cpuset: range '" + item + "' is reversed");
    }
    for (unsigned c = lo; c <= hi; ++c) out.push_back(static_cast<int>(c));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (out.empty()) throw std::invalid_argument("--cpuset: empty CPU list");
  return out;
}

void add_runtime_options(po::options_description& desc) {
  desc.add_options()
    ("smp", po::value<unsigned>()->default_value(1), "number of shards (one thread each)")
    ("cpuset", po::value<std::string>(), "CPUs to pin shards to, e.g. 0-1 (shard i on the i-th)")
    ("poll-mode", po::value<std::string>()->default_value("adaptive"),
     "busy | adaptive (poll --idle-poll-us, then sleep) | sleep")
    ("idle-poll-us", po::value<unsigned>()->default_value(200),
     "adaptive mode: idle polling time before sleeping")
    ("task-quota-us", po::value<unsigned>()->default_value(500),
     "longest run of ready tasks before pollers get a turn")
    ("shard-opt", po::value<std::vector<std::string>>()->composing(),
     "per-shard override SHARD:KEY=VALUE[,...], keys poll-mode, idle-poll-us, task-quota-us, cpu "
     "(repeatable), e.g. 1:poll-mode=busy")
    ("log-level", po::value<std::string>()->default_value("info"),
     "trace | debug | info | warn | error | off");
}

runtime_config make_runtime_config(const po::variables_map& vm) {
  runtime_config cfg;
  cfg.smp = vm["smp"].as<unsigned>();
  if (cfg.smp == 0 || cfg.smp > 256) throw std::invalid_argument("--smp must be in 1..256");
  reactor_config base;
  base.mode = parse_poll_mode(vm["poll-mode"].as<std::string>());
  base.idle_poll_us = vm["idle-poll-us"].as<unsigned>();
  base.task_quota_us = vm["task-quota-us"].as<unsigned>();
  if (base.task_quota_us == 0) throw std::invalid_argument("--task-quota-us must be positive");
  cfg.shards.assign(cfg.smp, base);
  if (vm.count("cpuset")) {
    cfg.cpuset = parse_cpuset(vm["cpuset"].as<std::string>());
    if (cfg.cpuset.size() < cfg.smp)
      throw std::invalid_argument("--cpuset names " + std::to_string(cfg.cpuset.size()) +
                                  " CPUs but --smp is " + std::to_string(cfg.smp));
    for (unsigned i = 0; i < cfg.smp; ++i) cfg.shards[i].cpu = cfg.cpuset[i];
  }
  if (vm.count("shard-opt"))
    for (const auto& s : vm["shard-opt"].as<std::vector<std::string>>()) apply_shard_opt(s, cfg);
  log::set_level(log::parse_level(vm["log-level"].as<std::string>()));
  return cfg;
}

app_template::app_template(std::string name, std::string description)
    : _name(std::move(name)), _description(std::move(description)), _app_opts("App options") {}

int app_template::run(int argc, char** argv, main_fn main) {
  po::options_description rt("Runtime options");
  add_runtime_options(rt);
  rt.add_options()("help,h", "show this help");
  po::options_description all;
  all.add(_app_opts).add(rt);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, all), vm);
    if (vm.count("help")) {
      std::cout << _name << ": " << _description << "\n\n" << all << "\n";
      return 0;
    }
    po::notify(vm);
    _cfg = make_runtime_config(vm);
  } catch (const std::exception& e) {
    std::cerr << _name << ": " << e.what() << "\n(see --help)\n";
    return 2;
  }

  smp shards(_cfg.shards);
  signal_poller sigs(_stop_in_main);
  shards.shard(0).register_poller(&sigs);
  g_signal.store(0);
  g_signal_count.store(0);
  g_signal_target.store(&shards.shard(0), std::memory_order_release);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  int rc = shards.run(main(vm));

  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  g_signal_target.store(nullptr);
  shards.shard(0).unregister_poller(&sigs);
  return rc;
}

bool app_template::stop_requested() noexcept { return g_signal_count.load(std::memory_order_relaxed) != 0; }

}  // namespace machnet
