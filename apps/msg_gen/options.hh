// options: msg_gen's flags (compatible with the reference msg_gen's), their
// validation, and the resulting run configuration.
#pragma once

#include <boost/program_options.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace msg_gen {

enum class run_mode { runtime, sidecar, udp, udp_busy };
enum class poll_policy { busy, adaptive, sleep };

const char* to_string(run_mode m) noexcept;
const char* to_string(poll_policy p) noexcept;

/// The largest message (as MACHNET_MSG_MAX_LEN) and the largest UDP datagram payload.
inline constexpr std::size_t max_msg_size = std::size_t(8) << 20;
inline constexpr std::size_t max_udp_payload = 65507;

struct options {
  run_mode mode = run_mode::sidecar;
  std::string local_ip;
  std::string remote_ip;  ///< empty: server
  uint16_t local_port = 888;
  uint16_t remote_port = 888;
  uint32_t msg_size = 64;
  uint32_t window = 8;
  uint32_t flows = 1;
  double duration_s = 10;
  bool duration_given = false;  ///< a server stops after --duration only if given
  bool json = false;
  bool verify = false;
  poll_policy poll = poll_policy::adaptive;
  // runtime mode: the device the app's own stack drives.
  std::string device;
  std::string mac;
  std::vector<std::string> arp;

  bool server() const noexcept { return remote_ip.empty(); }
  /// Excluded from the whole-run figures: 10 % of the duration, at least
  /// 0.2 s, but at most half of a short run.
  double warmup_s() const noexcept;
};

/// Adds msg_gen's own flags (the runtime-mode device flags included).
void add_options(boost::program_options::options_description_easy_init add);

/// Builds and checks the options from parsed flags; throws
/// std::invalid_argument naming the bad flag.
options make_options(const boost::program_options::variables_map& vm);

/// The whole help text: msg_gen's flags and the runtime mode's app flags.
boost::program_options::options_description all_options();

}  // namespace msg_gen
