// app: the app template — every runtime app gets the same flags (--smp,
// --cpuset, --poll-mode, --idle-poll-us, --task-quota-us, --shard-opt,
// --log-level, --help), adds its own, and stops in order on SIGINT/SIGTERM.
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <string>
#include <vector>

#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/task.hh"

namespace machnet {

/// The runtime part of an app's configuration, after flags are parsed.
struct runtime_config {
  unsigned smp = 1;
  std::vector<int> cpuset;             // empty: shards are not pinned
  std::vector<reactor_config> shards;  // one per shard, overrides applied
};

/// Parses a CPU list such as "0-3,6,8-9"; throws std::invalid_argument.
std::vector<int> parse_cpuset(const std::string& s);

/// Builds the runtime configuration from parsed flags; throws
/// std::invalid_argument with a message naming the bad flag.
runtime_config make_runtime_config(const boost::program_options::variables_map& vm);

/// Adds the common runtime flags to `desc`.
void add_runtime_options(boost::program_options::options_description& desc);

class app_template {
 public:
  using main_fn = std::function<task<int>(const boost::program_options::variables_map&)>;

  app_template(std::string name, std::string description);

  /// The app's own flags: app.add_options()("port", po::value<int>(), "...").
  boost::program_options::options_description_easy_init add_options() {
    return _app_opts.add_options();
  }

  /// Parses flags, starts the shards, runs `main` on shard 0 and returns its
  /// value as the process exit code (2 for bad flags, 0 after --help or an
  /// orderly stop by signal).
  int run(int argc, char** argv, main_fn main);

  const runtime_config& config() const noexcept { return _cfg; }

  /// SIGINT/SIGTERM normally stop every shard at once. After this call they
  /// only set stop_requested() (and wake shard 0): main winds down in order
  /// and returns. A second signal stops at once.
  void stop_in_main() noexcept { _stop_in_main = true; }
  /// A stop signal arrived (see stop_in_main).
  static bool stop_requested() noexcept;

 private:
  bool _stop_in_main = false;
  std::string _name;
  std::string _description;
  boost::program_options::options_description _app_opts;
  runtime_config _cfg;
};

}  // namespace machnet
