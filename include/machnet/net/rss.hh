// rss: the RSS hash models of cloud vNICs, source-port choice so replies land on
// the owning shard's queue, and the start-up check of the model against the device.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "machnet/net/types.hh"

struct rte_mbuf;

namespace machnet::net {

/// A 40-byte Toeplitz key, in the byte order the NIC documentation prints it.
using rss_key = std::array<uint8_t, 40>;

/// The key of Microsoft's RSS verification suite (and of most NIC datasheets).
inline constexpr rss_key microsoft_rss_key{
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

/// The mlx5 PMD's default key; Azure netvsc copies it to the VF, MANA uses it too.
inline constexpr rss_key mlx5_default_rss_key{
    0x2c, 0xc6, 0x81, 0xd1, 0x5b, 0xdb, 0xf4, 0xf7, 0xfc, 0xa2, 0x83, 0x19, 0xdb, 0x1a,
    0x3e, 0x94, 0x6b, 0x9e, 0x38, 0xd9, 0x2c, 0x9c, 0x03, 0xd1, 0xad, 0x99, 0x44, 0xa7,
    0xd9, 0x56, 0x3d, 0x59, 0x06, 0x3c, 0x25, 0xf3, 0xfc, 0x1f, 0xdc, 0x2a};

/// The key hard-wired in AWS ENA devices whose key can't be set: Microsoft's key
/// with its ten 4-byte words in reverse order. Used with rss_model::ena_fixed.
inline constexpr rss_key ena_fixed_rss_key{
    0xbe, 0xac, 0x01, 0xfa, 0x6a, 0x42, 0xb7, 0x3b, 0x80, 0x30, 0xf2, 0x0c, 0x77, 0xcb,
    0x2d, 0xa3, 0xae, 0x7b, 0x30, 0xb4, 0xd0, 0xca, 0x2b, 0xcb, 0x43, 0xa3, 0x8f, 0xb0,
    0x41, 0x67, 0x25, 0x3d, 0x25, 0x5b, 0x0e, 0xc2, 0x6d, 0x5a, 0x56, 0xda};

/// How the device turns a tuple into a hash.
enum class rss_model : uint8_t {
  /// Standard Toeplitz (Microsoft RSS spec): initial value 0, tuple in packet order.
  toeplitz,
  /// AWS ENA fixed-key hardware: initial value 0xffffffff, addresses ordered
  /// smaller-first and ports smaller-first (symmetric), low 16 bits replicated
  /// into the high half.
  ena_fixed,
};

/// Which header fields feed the hash.
enum class rss_fields : uint8_t {
  /// src_ip | dst_ip | src_port | dst_port (IPv4/UDP 4-tuple).
  ipv4_udp,
  /// src_ip | dst_ip only (Azure MANA's default): ports don't affect the queue.
  ipv4_only,
};

const char* to_string(rss_model m) noexcept;
const char* to_string(rss_fields f) noexcept;

/// A round-robin RETA of `reta_size` entries over queues 0..nb_queues-1.
/// `reta_size` must be a power of two and `nb_queues` at least 1.
std::vector<uint16_t> make_reta(uint16_t nb_queues, std::size_t reta_size);

/// The device's hash model, key, hashed fields and redirection table: enough to
/// predict, in software, the RX queue of any IPv4/UDP packet.
class rss_config {
 public:
  /// `reta` must be non-empty with a power-of-two size; throws
  /// std::invalid_argument otherwise (set-up time only).
  rss_config(rss_model model, const rss_key& key, std::vector<uint16_t> reta,
             rss_fields fields = rss_fields::ipv4_udp);

  /// The hash the device computes for a packet with these headers (host byte order).
  uint32_t hash(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port,
                uint16_t dst_port) const noexcept;
  /// The RX queue such a packet lands on: `reta[hash & (reta_size - 1)]`
  /// (no hash when every RETA entry is the same queue).
  uint16_t queue_of(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port,
                    uint16_t dst_port) const noexcept {
    if (_one_queue) return _reta[0];
    return _reta[hash(src_ip, dst_ip, src_port, dst_port) & _reta_mask];
  }
  /// The RX queue of the packets we receive on `f` (src = remote, dst = local).
  uint16_t rx_queue_of(const flow_tuple& f) const noexcept {
    return queue_of(f.remote_ip, f.local_ip, f.remote_port, f.local_port);
  }
  /// The queue a hash value selects.
  uint16_t queue_of_hash(uint32_t h) const noexcept { return _reta[h & _reta_mask]; }

  rss_model model() const noexcept { return _model; }
  rss_fields fields() const noexcept { return _fields; }
  bool ports_hashed() const noexcept { return _fields == rss_fields::ipv4_udp; }
  const rss_key& key() const noexcept { return _key; }
  const std::vector<uint16_t>& reta() const noexcept { return _reta; }
  uint32_t reta_mask() const noexcept { return _reta_mask; }
  /// Whether some RETA entry points at queue `q`.
  bool reta_contains(uint16_t q) const noexcept;
  /// "toeplitz, 4-tuple, key 6d5a56da..., RETA 128".
  std::string describe() const;

  /// Plain Toeplitz (initial value 0, no reordering) of the input words as
  /// they reach the hash: `w0` = first address, `w1` = second address,
  /// `w2` = first port << 16 | second port; `w2` is ignored for ipv4_only.
  /// The linear core every model is built from (via DPDK's rte_softrss_be).
  uint32_t raw_toeplitz(uint32_t w0, uint32_t w1, uint32_t w2) const noexcept;

 private:
  rss_model _model;
  rss_fields _fields;
  rss_key _key;
  /// The key as rte_convert_rss_key() leaves it, for rte_softrss_be().
  alignas(16) std::array<uint32_t, 10> _be_key{};
  std::vector<uint16_t> _reta;
  uint32_t _reta_mask;
  bool _one_queue;  // every RETA entry names the same queue
};

/// Why a source port could not be chosen.
enum class port_error : uint8_t {
  /// Every port in the range whose reply maps to this queue is already held.
  exhausted,
  /// The device hashes IP addresses only, and this IP pair maps to another
  /// queue: no local port can change that. Use another local IP, or hand the
  /// flow to the shard that owns the queue.
  ip_pair_maps_elsewhere,
  /// No RETA entry points at this shard's queue: nothing will ever arrive here.
  queue_not_in_reta,
};

const char* to_string(port_error e) noexcept;

/// The outcome of source_port_allocator::allocate: a port, or why none.
struct port_pick {
  uint16_t port = 0;
  std::optional<port_error> error;
  explicit operator bool() const noexcept { return !error; }
};

/// Per shard: picks local (source) ports for active opens so that the peer's
/// replies (src = remote_ip:remote_port, dst = local_ip:local_port) hash to this
/// shard's RX queue, and remembers which ports are held per
/// (local_ip, remote_ip, remote_port). Not thread-safe: one per shard.
class source_port_allocator {
 public:
  static constexpr uint16_t default_port_min = 49152;
  static constexpr uint16_t default_port_max = 65535;

  /// Ports are chosen from [port_min, port_max]; requires port_min <= port_max
  /// (throws std::invalid_argument otherwise, set-up time only).
  source_port_allocator(const rss_config& cfg, uint16_t queue, uint16_t port_min = default_port_min,
                        uint16_t port_max = default_port_max);

  /// Picks and holds a free local port whose reply tuple maps to this queue.
  /// Searches from a rotating start; O(#queues) hash evaluations on average.
  port_pick allocate(ipv4_addr local_ip, ipv4_addr remote_ip, uint16_t remote_port);
  /// Gives a port back; false if it was not held.
  bool release(ipv4_addr local_ip, ipv4_addr remote_ip, uint16_t remote_port, uint16_t local_port);
  bool held(ipv4_addr local_ip, ipv4_addr remote_ip, uint16_t remote_port,
            uint16_t local_port) const;
  /// How many ports are held over all destinations.
  std::size_t held_count() const noexcept { return _held.size(); }

  uint16_t queue() const noexcept { return _queue; }
  const rss_config& config() const noexcept { return _cfg; }

 private:
  /// Per-destination part of the reply hash: raw Toeplitz of the reply tuple
  /// with the local port's bits zero, for the local port in the first
  /// (`base_low`, ENA when local < remote port) or second port slot (`base_high`).
  struct search_state {
    uint32_t base_low;
    uint32_t base_high;
    uint16_t remote_port;
  };
  /// The device's hash of the reply tuple for `local_port`: a base XOR the
  /// port's contribution from the tables, then the model's finish.
  uint32_t reply_hash(const search_state& s, uint16_t local_port) const noexcept;

  rss_config _cfg;
  uint16_t _queue;
  bool _queue_in_reta;
  uint16_t _port_min;
  uint16_t _port_max;
  uint32_t _cursor = 0;  // offset into the range where the next search starts
  /// Toeplitz contribution of a port value in the src-port (first) and
  /// dst-port (second) slot, split into high and low byte.
  std::array<uint32_t, 256> _first_hi{}, _first_lo{}, _second_hi{}, _second_lo{};
  std::unordered_set<flow_tuple, flow_tuple_hash> _held;
};

/// What the comparison of the device's RSS hash with the model concluded.
enum class rss_verdict : uint8_t {
  /// Every observation carried a hash, and all equal the model's.
  match,
  /// At least one device hash differs from the model (or the device reported
  /// a hash on some packets only): refuse to run, see the message.
  mismatch,
  /// The device reports no RSS hash: use emulated RSS.
  no_hash,
  /// Nothing usable observed yet (no packets, or none was Eth/IPv4/UDP).
  inconclusive,
};

const char* to_string(rss_verdict v) noexcept;

/// Start-up check: feed it received probe packets; it compares the device's
/// hash with `cfg`'s model and, on a mismatch, names the alternative model that
/// would have matched (IPs only, byte-swapped key, ENA fixed-key variant, ...).
class rss_verifier {
 public:
  explicit rss_verifier(const rss_config& cfg) : _cfg(cfg) {}

  /// One received packet's headers (host byte order) and what the device
  /// reported. Returns this observation's own verdict.
  rss_verdict observe(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port, uint16_t dst_port,
                      uint32_t device_hash, bool has_hash);
  /// Reads Eth[/802.1Q]/IPv4/UDP from the first segment, `m->hash.rss` and
  /// RTE_MBUF_F_RX_RSS_HASH. Other packets (and IP fragments) are skipped and
  /// return `inconclusive`.
  rss_verdict observe(const rte_mbuf* m);

  /// The verdict over everything observed so far.
  rss_verdict verdict() const noexcept;
  /// A one-line human explanation of verdict(): for a mismatch, expected vs
  /// got for the first differing packet, with hints.
  std::string message() const;

  std::size_t matches() const noexcept { return _matches; }
  std::size_t mismatches() const noexcept { return _mismatches; }
  std::size_t without_hash() const noexcept { return _without_hash; }
  std::size_t skipped() const noexcept { return _skipped; }

 private:
  std::string explain_mismatch(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port,
                               uint16_t dst_port, uint32_t expected, uint32_t got) const;

  rss_config _cfg;
  std::size_t _matches = 0;
  std::size_t _mismatches = 0;
  std::size_t _without_hash = 0;
  std::size_t _skipped = 0;
  std::string _first_mismatch;
};

}  // namespace machnet::net
