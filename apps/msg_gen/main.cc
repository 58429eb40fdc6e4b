// msg_gen: Machnet's benchmark client/server — request/echo messages over
// the runtime stack, the machnetd sidecar or kernel UDP; reports RTT
// percentiles and rates per second and for the whole run (--json for tools).
// Server without --remote_ip, client with it. See --help.
#include <fmt/format.h>

#include <iostream>

#include "modes.hh"
#include "options.hh"
#include "signals.hh"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  msg_gen::options o;
  try {
    po::options_description all = msg_gen::all_options();
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, all), vm);
    if (vm.count("help")) {
      std::cout << "msg_gen: Machnet message generator (request/echo benchmark).\n"
                   "  server: msg_gen --mode=M --local_ip IP [--local_port P]\n"
                   "  client: msg_gen --mode=M --local_ip IP --remote_ip IP [--msg_size B] "
                   "[--msg_window N] [--flows N] [--duration S] [--json]\n\n"
                << all << "\n";
      return 0;
    }
    po::notify(vm);
    o = msg_gen::make_options(vm);
    if (o.mode == msg_gen::run_mode::runtime && vm["smp"].as<unsigned>() != 1)
      throw std::invalid_argument("--smp: runtime mode runs on one shard for now (--smp 1)");
  } catch (const std::exception& e) {
    fmt::print(stderr, "msg_gen: {}\n(see --help)\n", e.what());
    return 2;
  }
  switch (o.mode) {
    case msg_gen::run_mode::runtime:
      return msg_gen::run_runtime(o, argc, argv);
    case msg_gen::run_mode::sidecar:
      msg_gen::install_stop_handlers();
      return msg_gen::run_sidecar(o);
    case msg_gen::run_mode::udp:
    case msg_gen::run_mode::udp_busy:
      msg_gen::install_stop_handlers();
      return msg_gen::run_udp(o);
  }
  return 2;
}
