// control_link: the process's one connection to machnetd's control socket —
// hello, attach and detach requests, and the generations that let every
// channel of a connection learn at once that machnetd went away.
#pragma once

#include <cstdint>

#include "machnet/net/shm/channel.hh"

namespace machnet::shim {

/// What an attach request hands to a new channel (the caller owns the fds).
struct attach_grant {
  shm::channel_map map;
  int engine_bell = -1;  ///< eventfd the app writes to wake the shard
  int app_bell = -1;     ///< eventfd machnetd writes to wake the app
  int watch_fd = -1;     ///< a dup of the control socket, polled for a hang-up
  uint64_t generation = 0;
  uint32_t channel_id = 0;
};

/// Connects (or reconnects after a hang-up) and says hello. 0 or an errno value.
int link_init() noexcept;
/// Asks machnetd for a channel. 0 or an errno value.
int link_attach(attach_grant& out) noexcept;
/// Tells machnetd a channel is done (best effort; nothing if the link is gone).
void link_detach(uint32_t channel_id, uint64_t generation) noexcept;

/// Records a live channel (or forgets it). Channels an app never detaches
/// stay reachable from here until exit, as the reference API has no detach.
void link_track(const void* channel, bool live) noexcept;

/// True once the connection of `generation` is known to be gone.
bool link_dead(uint64_t generation) noexcept;
/// Records that the connection of `generation` is gone (all its channels fail).
void link_mark_dead(uint64_t generation) noexcept;
/// Whether a control socket (or a dup of it) saw the peer hang up; never waits.
bool hung_up(int fd) noexcept;

}  // namespace machnet::shim
