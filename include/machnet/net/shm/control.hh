// control: machnetd's control protocol on its Unix socket (SOCK_SEQPACKET,
// one fixed-size record per message; channel fds ride on the attach reply with
// SCM_RIGHTS). One connection per app process: it registers the app, and its
// hang-up tells machnetd the app is gone. No DPDK: libmachnet speaks it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "machnet/net/shm/channel.hh"

namespace machnet::shm {

/// Where machnetd listens unless configured otherwise.
inline constexpr const char* default_control_socket = "/run/machnet/machnetd.sock";
/// Apps use this path instead when the variable is set.
inline constexpr const char* control_socket_env = "MACHNET_CONTROL_SOCKET";
inline constexpr uint32_t control_magic = 0x54434e4d;  // "MNCT"
inline constexpr uint16_t control_version = 1;

enum class ctl_type : uint16_t {
  hello = 1,   ///< app -> machnetd first: registers (text = app name)
  attach = 2,  ///< app -> machnetd: a new channel (params: 0 = machnetd's default)
  detach = 3,  ///< app -> machnetd: channel_id is done (its flows are reset)
  stats = 4,   ///< anyone -> machnetd: counters[] of the whole sidecar (stat_*)
};

/// Indices of ctl_msg::counters in a stats reply.
enum stat_index : unsigned {
  stat_apps = 0,          ///< registered apps (control connections)
  stat_channels = 1,      ///< live channels
  stat_flows = 2,         ///< flows bound to channels (all shards)
  stat_listeners = 3,     ///< listening ports (counted once, not per shard)
  stat_engine_bufs = 4,   ///< channel buffers held by machnetd (all channels)
  stat_app_bufs = 5,      ///< channel buffers handed to apps (all channels)
  stat_bad_input = 6,     ///< descriptors and requests refused as malformed
  stat_held_messages = 7, ///< received messages waiting for channel buffers
  stat_count = 8,
};

/// One control record, request or reply (the reply echoes type and id).
struct ctl_msg {
  uint32_t magic = control_magic;
  uint16_t version = control_version;
  ctl_type type = ctl_type::hello;
  uint64_t id = 0;
  int32_t status = 0;        ///< reply: 0 or a positive errno value
  uint32_t channel_id = 0;   ///< attach reply / detach request
  channel_params params{};   ///< attach: requested / granted
  uint32_t local_ip = 0;     ///< hello reply: the host's IPv4 address
  uint32_t shards = 0;       ///< hello reply: machnetd's shards
  uint32_t shard = 0;        ///< attach reply: the shard serving the channel
  uint32_t pid = 0;          ///< hello reply: machnetd's pid
  uint64_t region_size = 0;  ///< attach reply
  uint64_t counters[stat_count]{};  ///< stats reply
  char text[128]{};          ///< hello request: app name; failed reply: why
};

/// Sends one record with up to 4 fds. 0, or a positive errno value.
int send_ctl(int sock, const ctl_msg& m, const int* fds = nullptr, unsigned nfds = 0);
/// Receives one record and the fds that came with it (closed by the caller).
/// 0 ok; ECONNRESET when the peer hung up; EPROTO for a malformed record
/// (fds that came with it are closed); other errno values from recvmsg.
int recv_ctl(int sock, ctl_msg& m, std::vector<int>& fds);
/// The control socket path apps use: $MACHNET_CONTROL_SOCKET or the default.
std::string control_socket_path();
/// Copies `s` into a record's text field, truncating, NUL-terminated.
void set_text(ctl_msg& m, const std::string& s) noexcept;

}  // namespace machnet::shm
