// channel: the layout (version 1) of a shared-memory channel between machnetd
// and one app thread — header, rings, control queues, buffer pool — and the
// mapping of a channel region on either side. No DPDK: libmachnet builds it.
// The picture and the rules are in docs/channel.md.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "machnet/net/shm/ring.hh"

namespace machnet::shm {

inline constexpr uint64_t channel_magic = 0x314e414843544e4dULL;  // "MNTCHAN1" little-endian
inline constexpr uint32_t layout_version = 1;
inline constexpr uint32_t no_buffer = UINT32_MAX;
/// The largest message (as the reference: 8 MiB).
inline constexpr uint32_t max_message = 8u << 20;
/// Bytes at the start of every buffer reserved for its buf_hdr.
inline constexpr uint32_t buf_hdr_size = 64;

/// A flow as apps see it (MachnetFlow_t): src = this host, dst = the peer,
/// addresses and ports in host byte order (10.0.0.1 is 0x0a000001).
struct flow_info {
  uint32_t src_ip = 0;
  uint32_t dst_ip = 0;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  friend bool operator==(const flow_info&, const flow_info&) = default;
};
static_assert(sizeof(flow_info) == 12);

/// The header at the start of every buffer. A message is a chain of buffers
/// linked by `next`; the head buffer carries the message's length and flow.
struct buf_hdr {
  uint32_t next;     ///< next buffer of the message, or no_buffer
  uint32_t len;      ///< data bytes in this buffer (data follows the header)
  uint32_t msg_len;  ///< head only: bytes of the whole message
  uint32_t nbufs;    ///< head only: buffers in the chain
  flow_info flow;    ///< head only: TX the flow to send on; RX the flow it came on
  uint32_t flags;    ///< head only: reserved (0)
  uint8_t pad[buf_hdr_size - 32];
};
static_assert(sizeof(buf_hdr) == buf_hdr_size);

/// Control requests an app queues on ctrl_sq; the engine answers on ctrl_cq.
enum class ctrl_op : uint32_t {
  listen = 1,   ///< local_ip:local_port (local_ip 0 = the host's address)
  connect = 2,  ///< from local_ip (0 = the host's) to remote_ip:remote_port
  close = 3,    ///< flow: orderly close
};

struct ctrl_req {
  uint64_t id;  ///< echoed in the response
  ctrl_op op;
  uint32_t local_ip;
  uint32_t remote_ip;
  uint16_t local_port;
  uint16_t remote_port;
  flow_info flow;  ///< close: the flow
  uint32_t pad;
};
static_assert(sizeof(ctrl_req) == 40);

struct ctrl_resp {
  uint64_t id;
  int32_t status;  ///< 0, or a positive errno value
  flow_info flow;  ///< connect: the new flow
};
static_assert(sizeof(ctrl_resp) == 24);

/// Events the engine reports on a flow of the channel, through the RX ring:
/// an RX entry whose head buffer has `flags` != 0 is an event, not data.
enum class flow_event : uint32_t {
  none = 0,
  closed = 1,  ///< the flow ended (peer closed or reset, or it failed)
};

/// Sizes chosen when the channel is created (by machnetd, from the app's
/// request and its own limits).
struct channel_params {
  uint32_t buf_count = 2048;  ///< buffers in the pool (power of two)
  uint32_t buf_size = 16384;  ///< bytes per buffer, header included (multiple of 64)
  uint32_t ctrl_slots = 64;   ///< control queue entries (power of two)

  uint32_t data_per_buf() const noexcept { return buf_size - buf_hdr_size; }
  /// Buffers one message of `bytes` needs (at least one).
  uint32_t bufs_for(std::size_t bytes) const noexcept {
    return bytes == 0 ? 1 : uint32_t((bytes + data_per_buf() - 1) / data_per_buf());
  }
  /// Empty when usable, else what is wrong.
  std::string check() const;
};

/// Byte offsets of each part inside the region, from the parameters.
struct channel_layout {
  std::size_t free_ring = 0;  ///< engine -> app: buffers the app may fill
  std::size_t ret_ring = 0;   ///< app -> engine: buffers the app is done with
  std::size_t tx_ring = 0;    ///< app -> engine: messages to send (head index)
  std::size_t rx_ring = 0;    ///< engine -> app: messages and events (head index)
  std::size_t ctrl_sq = 0;    ///< app -> engine: ctrl_req
  std::size_t ctrl_cq = 0;    ///< engine -> app: ctrl_resp
  std::size_t buffers = 0;    ///< the pool (page aligned)
  std::size_t size = 0;       ///< the whole region (page aligned)
  static channel_layout of(const channel_params& p) noexcept;
};

/// Counters the engine keeps in the header (read-only for the app).
struct channel_stats {
  std::atomic<uint64_t> tx_messages;   ///< messages taken from the TX ring and sent
  std::atomic<uint64_t> tx_bytes;
  std::atomic<uint64_t> rx_messages;   ///< messages put on the RX ring
  std::atomic<uint64_t> rx_bytes;
  std::atomic<uint64_t> tx_rejected;   ///< TX entries refused (bad descriptor, unknown flow)
  std::atomic<uint64_t> bad_returns;   ///< returned buffer indices the app did not own
  std::atomic<uint64_t> rx_held;       ///< times delivery waited for free buffers
  std::atomic<uint64_t> reserved;
};

/// The first page of the region.
struct channel_header {
  uint64_t magic;
  uint32_t version;
  uint32_t header_size;
  uint64_t region_size;
  channel_params params;
  channel_layout layout;
  /// The engine sets this while its shard may sleep: after producing, the app
  /// writes its doorbell eventfd (the engine's) when it reads 1.
  alignas(64) std::atomic<uint32_t> engine_sleeping;
  /// An app thread sets this before it sleeps in a blocking call: the engine
  /// then writes the app's eventfd after producing.
  alignas(64) std::atomic<uint32_t> app_sleeping;
  /// Set by machnetd when it shuts the channel down (the app's calls fail).
  alignas(64) std::atomic<uint32_t> closed;
  alignas(64) channel_stats stats;
};
static_assert(sizeof(channel_header) <= 4096);

/// A channel region mapped into this process (either side).
class channel_map {
 public:
  channel_map() = default;
  /// Creates a memfd of the layout's size, maps it and writes the header and
  /// empty rings (the engine side). Throws std::system_error / invalid_argument.
  static channel_map create(const channel_params& p, const char* name);
  /// Maps a region received from machnetd and checks its header against its
  /// size; throws std::runtime_error saying what does not match.
  static channel_map attach(int fd);
  channel_map(channel_map&& o) noexcept { steal(o); }
  channel_map& operator=(channel_map&& o) noexcept;
  channel_map(const channel_map&) = delete;
  channel_map& operator=(const channel_map&) = delete;
  ~channel_map();

  int fd() const noexcept { return _fd; }
  /// Gives up the fd (after it was passed on), keeping the mapping.
  void close_fd() noexcept;
  bool mapped() const noexcept { return _base != nullptr; }
  channel_header& header() const noexcept { return *reinterpret_cast<channel_header*>(_base); }
  const channel_params& params() const noexcept { return _params; }
  std::size_t size() const noexcept { return _size; }

  ring_shared<uint32_t>* free_ring() const noexcept { return at<ring_shared<uint32_t>>(_layout.free_ring); }
  ring_shared<uint32_t>* ret_ring() const noexcept { return at<ring_shared<uint32_t>>(_layout.ret_ring); }
  ring_shared<uint32_t>* tx_ring() const noexcept { return at<ring_shared<uint32_t>>(_layout.tx_ring); }
  ring_shared<uint32_t>* rx_ring() const noexcept { return at<ring_shared<uint32_t>>(_layout.rx_ring); }
  ring_shared<ctrl_req>* ctrl_sq() const noexcept { return at<ring_shared<ctrl_req>>(_layout.ctrl_sq); }
  ring_shared<ctrl_resp>* ctrl_cq() const noexcept { return at<ring_shared<ctrl_resp>>(_layout.ctrl_cq); }
  /// Slots of the four buffer rings (= buf_count: a ring never overflows).
  uint32_t ring_slots() const noexcept { return _params.buf_count; }

  /// Buffer `i` (caller checks i < buf_count).
  buf_hdr* buffer(uint32_t i) const noexcept {
    return reinterpret_cast<buf_hdr*>(_base + _layout.buffers + std::size_t(i) * _params.buf_size);
  }
  uint8_t* data(uint32_t i) const noexcept { return reinterpret_cast<uint8_t*>(buffer(i)) + buf_hdr_size; }

 private:
  template <typename T>
  T* at(std::size_t off) const noexcept { return reinterpret_cast<T*>(_base + off); }
  void steal(channel_map& o) noexcept;
  void reset() noexcept;

  int _fd = -1;
  uint8_t* _base = nullptr;
  std::size_t _size = 0;
  channel_params _params;
  channel_layout _layout;
};

}  // namespace machnet::shm
