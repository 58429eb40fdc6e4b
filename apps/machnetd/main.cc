// machnetd: the Machnet sidecar — owns the vNIC, runs one engine per shard,
// and serves apps over shared-memory channels (libmachnet, machnet.h).
// Flags or a config file (`key = value` lines, same names as the flags;
// flags win). See docs/sidecar.md.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "machnet/net/shm/control.hh"
#include "machnet/net/sidecar.hh"
#include "machnet/runtime/app.hh"
#include "machnet/runtime/log.hh"

namespace po = boost::program_options;
using namespace machnet;
using namespace machnet::net;

namespace {

// `--config FILE` becomes extra `--key=value` arguments placed after the
// command line's own (the first value stored wins, so flags override it).
std::vector<std::string> with_config_file(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  std::string file;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) file = args[i + 1];
    else if (args[i].rfind("--config=", 0) == 0) file = args[i].substr(9);
  }
  if (file.empty()) return args;
  std::ifstream in(file);
  if (!in) throw std::invalid_argument("--config: cannot read " + file);
  std::string line;
  unsigned lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (auto h = line.find('#'); h != std::string::npos) line.erase(h);
    auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(" \t\r"));
      s.erase(s.find_last_not_of(" \t\r") + 1);
      return s;
    };
    line = trim(line);
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw std::invalid_argument(file + ":" + std::to_string(lineno) + ": expected 'key = value'");
    std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (key == "config") throw std::invalid_argument(file + ":" + std::to_string(lineno) + ": nested config");
    args.push_back("--" + key + "=" + value);
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  try {
    args = with_config_file(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "machnetd: %s\n", e.what());
    return 2;
  }
  std::vector<char*> av;
  for (auto& a : args) av.push_back(a.data());
  av.push_back(nullptr);

  app_template app("machnetd", "the Machnet sidecar: serves apps over shared-memory channels");
  app.add_options()
    ("config", po::value<std::string>(), "config file: 'key = value' lines with these flags' names")
    ("device", po::value<std::string>()->required(),
     "DPDK device: a vdev string (net_memif0,role=server,socket=/run/x.sock; net_af_packet0,iface=veth0) "
     "or a PCI address")
    ("ip", po::value<std::string>()->required(), "this host's IPv4 address on the device")
    ("mac", po::value<std::string>(), "set this MAC on the device (default: the device's own)")
    ("control-socket", po::value<std::string>()->default_value(shm::control_socket_path()),
     "Unix socket apps connect to (default: $MACHNET_CONTROL_SOCKET or /run/machnet/machnetd.sock)")
    ("socket-mode", po::value<std::string>()->default_value("0660"), "permissions of the control socket (octal)")
    ("buf-count", po::value<uint32_t>()->default_value(shm::channel_params{}.buf_count),
     "buffers per channel (power of two)")
    ("buf-size", po::value<uint32_t>()->default_value(shm::channel_params{}.buf_size),
     "bytes per channel buffer (multiple of 64, header included)")
    ("arp", po::value<std::vector<std::string>>()->composing(),
     "static ARP entry IP=MAC (repeatable); others are resolved with ARP")
    ("udp-checksum", po::value<std::string>()->default_value("automatic"),
     "automatic (off on a memif link: shared memory cannot damage a frame) | on | off")
    ("data-acks", po::value<std::string>()->default_value("on"),
     "on | off: offer ACKs on DATA to peers (docs/protocol.md; used only where the peer offers too)")
    ("loss", po::value<double>()->default_value(0), "inject RX loss (probability; tests)");
  app.stop_in_main();
  return app.run(int(av.size() - 1), av.data(), [&](const po::variables_map& vm) -> task<int> {
    sidecar_config cfg;
    cfg.port.device = vm["device"].as<std::string>();
    auto ip = ipv4_addr::parse(vm["ip"].as<std::string>());
    if (!ip || ip->v == 0) throw std::invalid_argument("--ip: '" + vm["ip"].as<std::string>() + "' is not an IPv4 address");
    cfg.ip = *ip;
    if (vm.count("mac")) {
      auto mac = mac_addr::parse(vm["mac"].as<std::string>());
      if (!mac) throw std::invalid_argument("--mac: '" + vm["mac"].as<std::string>() + "' is not a MAC address");
      cfg.port.mac = *mac;
    }
    cfg.control_socket = vm["control-socket"].as<std::string>();
    const std::string mode = vm["socket-mode"].as<std::string>();
    std::size_t used = 0;
    unsigned long m = 0;
    try {
      m = std::stoul(mode, &used, 8);
    } catch (...) {
      used = 0;
    }
    if (used != mode.size() || m > 0777) throw std::invalid_argument("--socket-mode: '" + mode + "' is not an octal mode");
    cfg.socket_mode = unsigned(m);
    cfg.channel.buf_count = vm["buf-count"].as<uint32_t>();
    cfg.channel.buf_size = vm["buf-size"].as<uint32_t>();
    if (std::string why = cfg.channel.check(); !why.empty())
      throw std::invalid_argument("--buf-count/--buf-size: " + why);
    if (vm.count("arp"))
      for (const std::string& e : vm["arp"].as<std::vector<std::string>>()) {
        auto eq = e.find('=');
        auto aip = ipv4_addr::parse(e.substr(0, eq));
        auto amac = eq == std::string::npos ? std::nullopt : mac_addr::parse(e.substr(eq + 1));
        if (!aip || !amac) throw std::invalid_argument("--arp: '" + e + "' is not IP=MAC");
        cfg.static_arp.emplace_back(*aip, *amac);
      }
    double loss = vm["loss"].as<double>();
    if (loss < 0 || loss >= 1) throw std::invalid_argument("--loss: must be in [0, 1)");
    cfg.port.faults.rx_drop = loss;
    try {
      cfg.udp_checksum = parse_checksum_policy(vm["udp-checksum"].as<std::string>());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--udp-checksum: ") + e.what());
    }
    const std::string data_acks = vm["data-acks"].as<std::string>();
    if (data_acks != "on" && data_acks != "off")
      throw std::invalid_argument("--data-acks: '" + data_acks + "' is not on or off");
    cfg.transport.data_acks = data_acks == "on";
    sidecar sc(cfg);
    co_await sc.run();
    co_return 0;
  });
}
