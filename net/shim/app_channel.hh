// app_channel: the app's side of one shared-memory channel — its private ring
// cursors, doorbells and liveness checks. The data path (send.cc, recv.cc)
// and the control queue (ctrl_ops.cc) are member functions defined apart.
// The protocol is docs/channel.md.
#pragma once

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <vector>

#include "control_link.hh"
#include "machnet.h"
#include "machnet/net/shm/channel.hh"
#include "machnet/net/shm/ring.hh"

namespace machnet::shim {

/// Nanoseconds on CLOCK_MONOTONIC.
inline int64_t now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// A deadline that never passes.
inline constexpr int64_t no_deadline = INT64_MAX;

class app_channel {
 public:
  /// Takes the grant's mapping; its fds become the channel's once the
  /// constructor returned (it throws only std::bad_alloc, leaving them).
  explicit app_channel(attach_grant&& g);
  app_channel(const app_channel&) = delete;
  app_channel& operator=(const app_channel&) = delete;
  ~app_channel();

  /// The channel behind an API handle, or nullptr if it is not one.
  static app_channel* from(const void* handle) noexcept;
  uint32_t id() const noexcept { return _id; }
  uint64_t generation() const noexcept { return _generation; }

  /// In a forked child: closes the inherited fds and fails every later call.
  void orphan() noexcept;

  /// 0 while machnetd serves the channel, else ESHUTDOWN (sticky). Cheap:
  /// the control socket is polled at most about once a millisecond.
  int alive() noexcept;

  // Data path (send.cc). 0 or an errno value; `bytes` is the sum of the iovecs.
  int send(const shm::flow_info& flow, const MachnetIovec_t* iov, std::size_t iovcnt,
           std::size_t bytes) noexcept;

  // Receive path (recv.cc). 0 or an errno value; *got is false when nothing
  // is pending, else *len and *flow describe the message copied in.
  int recv(const MachnetIovec_t* iov, std::size_t iovcnt, std::size_t capacity, bool* got,
           uint32_t* len, shm::flow_info* flow) noexcept;
  /// As recv, waiting until `deadline` (ns, now_ns clock) for a message.
  int recv_wait(const MachnetIovec_t* iov, std::size_t iovcnt, std::size_t capacity,
                int64_t deadline, bool* got, uint32_t* len, shm::flow_info* flow) noexcept;

  // Control queue (ctrl_ops.cc). 0 or an errno value (machnetd's status).
  int listen(uint32_t local_ip, uint16_t port) noexcept;
  int connect(uint32_t local_ip, uint32_t remote_ip, uint16_t remote_port,
              shm::flow_info* flow) noexcept;
  int close_flow(const shm::flow_info& flow) noexcept;

 private:
  /// Spins briefly, then sleeps on the app doorbell (and the control socket)
  /// until ready() or the deadline. 0 ready, ETIMEDOUT, or ESHUTDOWN.
  template <typename Ready>
  int wait(Ready&& ready, int64_t deadline) noexcept;
  /// One sleep with app_sleeping set (the caller rechecked after setting it).
  int sleep_once(int64_t deadline) noexcept;
  int shut_down() noexcept;

  /// Writes the engine doorbell if the shard sleeps (after a publish).
  void wake_engine_if_sleeping() noexcept;
  void ring_engine() noexcept;
  /// Pops `n` buffers from free_ring into _tx_bufs, waiting up to ~100 ms.
  int take_buffers(uint32_t n) noexcept;
  /// Pushes buffers on ret_ring, publishes and wakes the shard if it sleeps.
  void give_back(const uint32_t* idx, std::size_t n) noexcept;
  /// Gives back every buffer of a chain (bounded walk; bad indices skipped).
  void give_back_chain(uint32_t head) noexcept;
  /// Makes the next data message the pending one (events are dropped).
  bool peek() noexcept;
  /// Collects the pending message's buffers in _rx_bufs; false if malformed.
  bool walk_pending() noexcept;

  int control(shm::ctrl_req req, int64_t budget_ns, shm::ctrl_resp& resp) noexcept;
  void settle_stale(const shm::ctrl_resp& r) noexcept;

  uint64_t _magic;
  shm::channel_map _map;
  shm::channel_header* _hdr;
  shm::channel_params _params;
  int _engine_bell;
  int _app_bell;
  int _watch_fd;
  uint64_t _generation;
  uint32_t _id;
  bool _dead = false;
  bool _orphaned = false;  // a forked child's copy: never touch the rings
  int64_t _next_watch = 0;  // CLOCK_MONOTONIC_COARSE ns of the next hang-up poll

  shm::ring_consumer<uint32_t> _free;
  shm::ring_producer<uint32_t> _ret;
  shm::ring_producer<uint32_t> _tx;
  shm::ring_consumer<uint32_t> _rx;
  shm::ring_producer<shm::ctrl_req> _sq;
  shm::ring_consumer<shm::ctrl_resp> _cq;

  std::vector<uint32_t> _tx_bufs;      // scratch: buffers of the message being sent
  std::vector<uint32_t> _rx_bufs;      // scratch: buffers of the pending message
  uint32_t _pending = shm::no_buffer;  // head of a received message not yet taken

  uint64_t _ctrl_id = 0;
  /// Requests whose answer the app stopped waiting for (a connect that timed
  /// out here may still succeed there: its flow is then closed).
  struct abandoned {
    uint64_t id = 0;
    shm::ctrl_op op{};
  };
  std::array<abandoned, 16> _abandoned{};
  uint32_t _abandoned_next = 0;
};

/// How long a blocking call spins before it sleeps: $MACHNET_WAIT_SPIN_US
/// (default 30 µs), read once. 0 sleeps at once — right when the app shares
/// its CPU with machnetd, whose work the spin would hold up (docs/api.md).
int64_t wait_spin_ns() noexcept;

template <typename Ready>
int app_channel::wait(Ready&& ready, int64_t deadline) noexcept {
  const int64_t spin_ns = wait_spin_ns();
  int64_t t = now_ns();
  const int64_t spin_end = t + spin_ns < deadline ? t + spin_ns : deadline;
  for (;;) {
    if (ready()) return 0;
    if (int e = alive()) return e;
    if (now_ns() >= spin_end) break;
    for (int i = 0; i < 16; ++i) cpu_relax();
  }
  for (;;) {
    if (now_ns() >= deadline) return ETIMEDOUT;
    // Publish that we sleep, then look once more: the engine publishes,
    // fences and then reads app_sleeping (docs/channel.md, Sleeping).
    _hdr->app_sleeping.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ready()) {
      _hdr->app_sleeping.store(0, std::memory_order_relaxed);
      return 0;
    }
    if (int e = sleep_once(deadline)) return e;
    if (ready()) return 0;
  }
}

}  // namespace machnet::shim
