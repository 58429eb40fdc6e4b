// options: flag definitions and checks (bad values exit with status 2).
#include "options.hh"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "machnet/runtime/app.hh"

namespace po = boost::program_options;

namespace msg_gen {

const char* to_string(run_mode m) noexcept {
  switch (m) {
    case run_mode::runtime: return "runtime";
    case run_mode::sidecar: return "sidecar";
    case run_mode::udp: return "udp";
    case run_mode::udp_busy: return "udp-busy";
  }
  return "?";
}

const char* to_string(poll_policy p) noexcept {
  switch (p) {
    case poll_policy::busy: return "busy";
    case poll_policy::adaptive: return "adaptive";
    case poll_policy::sleep: return "sleep";
  }
  return "?";
}

double options::warmup_s() const noexcept {
  return std::min(std::max(0.2, duration_s * 0.1), duration_s * 0.5);
}

void add_options(po::options_description_easy_init add) {
  add("mode", po::value<std::string>()->default_value("sidecar"),
      "runtime (the stack in this process, DPDK) | sidecar (machnetd via libmachnet) | "
      "udp (kernel UDP, blocking) | udp-busy (kernel UDP, busy polling)")
     ("local_ip", po::value<std::string>(), "this host's IPv4 address (required)")
     ("remote_ip", po::value<std::string>(), "the server's address: client mode (without it: server)")
     ("local_port", po::value<int64_t>()->default_value(888), "server: port to listen on")
     ("remote_port", po::value<int64_t>()->default_value(888), "client: the server's port")
     ("msg_size", po::value<int64_t>()->default_value(64), "bytes per message, request and reply (1..8 MiB)")
     ("msg_window", po::value<int64_t>()->default_value(8),
      "messages in flight per flow (1 = ping-pong; the reference's default is 8)")
     ("flows", po::value<int64_t>()->default_value(1), "client: flows (connections) to the server")
     ("duration", po::value<double>()->default_value(10),
      "client: seconds to run; server: stop after this many seconds if given (else on SIGINT/SIGTERM)")
     ("json", po::value<bool>()->default_value(false)->implicit_value(true),
      "print one JSON object with the results on stdout (human text goes to stderr)")
     ("verify", po::value<bool>()->default_value(false)->implicit_value(true),
      "client: fill messages with a per-sequence pattern and check every reply (msg_size >= 16)")
     ("poll", po::value<std::string>()->default_value("adaptive"),
      "sidecar mode: busy (spin on machnet_recv) | adaptive (spin ~50 us, then sleep in "
      "machnet_recv_wait) | sleep (always machnet_recv_wait)")
     ("device", po::value<std::string>(), "runtime mode: DPDK device (vdev string or PCI address)")
     ("mac", po::value<std::string>(), "runtime mode: set this MAC on the device")
     ("arp", po::value<std::vector<std::string>>()->composing(),
      "runtime mode: static ARP entry IP=MAC (repeatable)");
}

po::options_description all_options() {
  po::options_description desc("msg_gen options");
  add_options(desc.add_options());
  po::options_description rt("Runtime-mode app options");
  machnet::add_runtime_options(rt);
  po::options_description all;
  all.add(desc).add(rt);
  all.add_options()("help,h", "show this help");
  return all;
}

namespace {

int64_t in_range(const po::variables_map& vm, const char* name, int64_t lo, int64_t hi) {
  int64_t v = vm[name].as<int64_t>();
  if (v < lo || v > hi)
    throw std::invalid_argument(std::string("--") + name + ": " + std::to_string(v) + " is not in " +
                                std::to_string(lo) + ".." + std::to_string(hi));
  return v;
}

std::string ipv4(const po::variables_map& vm, const char* name) {
  if (!vm.count(name)) return {};
  const std::string s = vm[name].as<std::string>();
  in_addr a;
  if (::inet_pton(AF_INET, s.c_str(), &a) != 1)
    throw std::invalid_argument(std::string("--") + name + ": '" + s + "' is not an IPv4 address");
  return s;
}

bool given(const po::variables_map& vm, const char* name) {
  return vm.count(name) && !vm[name].defaulted();
}

}  // namespace

options make_options(const po::variables_map& vm) {
  options o;
  const std::string mode = vm["mode"].as<std::string>();
  if (mode == "runtime") o.mode = run_mode::runtime;
  else if (mode == "sidecar") o.mode = run_mode::sidecar;
  else if (mode == "udp") o.mode = run_mode::udp;
  else if (mode == "udp-busy" || mode == "udp_busy") o.mode = run_mode::udp_busy;
  else throw std::invalid_argument("--mode: '" + mode + "' is not runtime, sidecar, udp or udp-busy");

  o.local_ip = ipv4(vm, "local_ip");
  if (o.local_ip.empty()) throw std::invalid_argument("--local_ip is required");
  o.remote_ip = ipv4(vm, "remote_ip");
  if (o.remote_ip == "0.0.0.0") throw std::invalid_argument("--remote_ip: 0.0.0.0 is not a host");
  if (o.mode == run_mode::runtime && o.local_ip == "0.0.0.0")
    throw std::invalid_argument("--local_ip: runtime mode needs this host's own address");
  o.local_port = uint16_t(in_range(vm, "local_port", 1, 65535));
  o.remote_port = uint16_t(in_range(vm, "remote_port", 1, 65535));
  o.msg_size = uint32_t(in_range(vm, "msg_size", 1, int64_t(max_msg_size)));
  o.window = uint32_t(in_range(vm, "msg_window", 1, 1 << 20));
  o.flows = uint32_t(in_range(vm, "flows", 1, 1024));
  o.duration_s = vm["duration"].as<double>();
  if (!std::isfinite(o.duration_s) || o.duration_s <= 0 || o.duration_s > 1e7)
    throw std::invalid_argument("--duration: must be a positive number of seconds");
  o.duration_given = given(vm, "duration");
  o.json = vm["json"].as<bool>();
  o.verify = vm["verify"].as<bool>();
  if (o.verify && o.msg_size < 16)
    throw std::invalid_argument("--verify needs --msg_size >= 16 (the header takes 16 bytes)");

  const std::string poll = vm["poll"].as<std::string>();
  if (poll == "busy") o.poll = poll_policy::busy;
  else if (poll == "adaptive") o.poll = poll_policy::adaptive;
  else if (poll == "sleep") o.poll = poll_policy::sleep;
  else throw std::invalid_argument("--poll: '" + poll + "' is not busy, adaptive or sleep");
  if (given(vm, "poll") && o.mode != run_mode::sidecar)
    throw std::invalid_argument("--poll applies to --mode=sidecar (runtime mode: --poll-mode; "
                                "udp modes: udp is blocking, udp-busy spins)");

  const bool udp = o.mode == run_mode::udp || o.mode == run_mode::udp_busy;
  if (udp && o.msg_size > max_udp_payload)
    throw std::invalid_argument("--msg_size: " + std::to_string(o.msg_size) +
                                " B does not fit one UDP datagram (at most 65507 B in udp modes)");
  if (udp && o.msg_size < 16)
    throw std::invalid_argument("--msg_size: udp modes need at least 16 B (datagrams can be lost or "
                                "reordered: replies are matched by the 16-byte header)");

  if (o.mode == run_mode::runtime) {
    if (!vm.count("device")) throw std::invalid_argument("--device is required in runtime mode");
    o.device = vm["device"].as<std::string>();
    if (vm.count("mac")) o.mac = vm["mac"].as<std::string>();
    if (vm.count("arp")) o.arp = vm["arp"].as<std::vector<std::string>>();
  } else {
    for (const char* f : {"device", "mac", "arp", "smp", "cpuset", "poll-mode", "idle-poll-us",
                          "task-quota-us", "shard-opt", "log-level"})
      if (given(vm, f))
        throw std::invalid_argument(std::string("--") + f + " applies to --mode=runtime only");
  }
  return o;
}

}  // namespace msg_gen
