// rss: hash models over DPDK's rte_thash, reply-aware source-port choice, and
// the start-up comparison of the device's RSS hash with the model.
#include "machnet/net/rss.hh"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <netinet/in.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_thash.h>
#include <rte_udp.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>

namespace machnet::net {

namespace {

/// The ENA fixed-key hardware keeps 16 bits and repeats them in the high half.
constexpr uint32_t replicate_low16(uint32_t h) noexcept { return (h & 0xffffu) | (h << 16); }

/// ENA fixed-key finish: the hash started at 0xffffffff instead of 0. Toeplitz
/// only XORs key windows into the running value, so that is the complement.
constexpr uint32_t ena_finish(uint32_t raw) noexcept { return replicate_low16(~raw); }

std::string hex_key(const rss_key& k) {
  std::string s;
  s.reserve(k.size() * 2);
  for (uint8_t b : k) s += fmt::format("{:02x}", b);
  return s;
}

std::string endpoint(ipv4_addr ip, uint16_t port) { return fmt::format("{}:{}", ip.str(), port); }

rss_key byte_swapped_words(const rss_key& k) {
  rss_key r = k;
  for (std::size_t i = 0; i < r.size(); i += 4) std::reverse(r.begin() + i, r.begin() + i + 4);
  return r;
}

rss_key reversed_bytes(const rss_key& k) {
  rss_key r = k;
  std::reverse(r.begin(), r.end());
  return r;
}

}  // namespace

const char* to_string(rss_model m) noexcept {
  switch (m) {
    case rss_model::toeplitz:
      return "toeplitz";
    case rss_model::ena_fixed:
      return "ena_fixed";
  }
  return "?";
}

const char* to_string(rss_fields f) noexcept {
  switch (f) {
    case rss_fields::ipv4_udp:
      return "4-tuple (IPv4 addresses + UDP ports)";
    case rss_fields::ipv4_only:
      return "2-tuple (IPv4 addresses only)";
  }
  return "?";
}

const char* to_string(port_error e) noexcept {
  switch (e) {
    case port_error::exhausted:
      return "no free local port in the range maps the reply to this shard's queue";
    case port_error::ip_pair_maps_elsewhere:
      return "device hashes IP addresses only and this IP pair maps to another queue; "
             "no local port can change that";
    case port_error::queue_not_in_reta:
      return "no RETA entry points at this shard's queue";
  }
  return "?";
}

const char* to_string(rss_verdict v) noexcept {
  switch (v) {
    case rss_verdict::match:
      return "match";
    case rss_verdict::mismatch:
      return "mismatch";
    case rss_verdict::no_hash:
      return "no_hash";
    case rss_verdict::inconclusive:
      return "inconclusive";
  }
  return "?";
}

std::vector<uint16_t> make_reta(uint16_t nb_queues, std::size_t reta_size) {
  if (nb_queues == 0) throw std::invalid_argument("make_reta: nb_queues must be at least 1");
  if (reta_size == 0 || !std::has_single_bit(reta_size))
    throw std::invalid_argument(
        fmt::format("make_reta: RETA size {} is not a power of two", reta_size));
  std::vector<uint16_t> reta(reta_size);
  for (std::size_t i = 0; i < reta_size; ++i) reta[i] = static_cast<uint16_t>(i % nb_queues);
  return reta;
}

// ---------------------------------------------------------------------------
// rss_config

rss_config::rss_config(rss_model model, const rss_key& key, std::vector<uint16_t> reta,
                       rss_fields fields)
    : _model(model), _fields(fields), _key(key), _reta(std::move(reta)), _reta_mask(0),
      _one_queue(false) {
  if (_reta.empty() || !std::has_single_bit(_reta.size()))
    throw std::invalid_argument(
        fmt::format("rss_config: RETA size {} is not a power of two", _reta.size()));
  _reta_mask = static_cast<uint32_t>(_reta.size() - 1);
  _one_queue = std::all_of(_reta.begin(), _reta.end(), [&](uint16_t q) { return q == _reta[0]; });
  // rte_convert_rss_key reads the key as 32-bit words: give it aligned ones.
  std::array<uint32_t, 10> words;
  std::memcpy(words.data(), _key.data(), _key.size());
  rte_convert_rss_key(words.data(), _be_key.data(), static_cast<int>(_key.size()));
}

uint32_t rss_config::raw_toeplitz(uint32_t w0, uint32_t w1, uint32_t w2) const noexcept {
  // rte_softrss_be wants each 4-byte chunk of the input as a CPU-order word
  // whose most significant byte is the first on the wire — which is exactly
  // what host-order addresses and (first_port << 16 | second_port) are.
  uint32_t in[3] = {w0, w1, w2};
  const uint32_t len = _fields == rss_fields::ipv4_udp ? static_cast<uint32_t>(RTE_THASH_V4_L4_LEN)
                                                       : static_cast<uint32_t>(RTE_THASH_V4_L3_LEN);
  return rte_softrss_be(in, len, reinterpret_cast<const uint8_t*>(_be_key.data()));
}

uint32_t rss_config::hash(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port,
                          uint16_t dst_port) const noexcept {
  if (_model == rss_model::toeplitz)
    return raw_toeplitz(src_ip.v, dst_ip.v, (uint32_t(src_port) << 16) | dst_port);
  const auto [ip_lo, ip_hi] = std::minmax(src_ip.v, dst_ip.v);
  const auto [port_lo, port_hi] = std::minmax(src_port, dst_port);
  return ena_finish(raw_toeplitz(ip_lo, ip_hi, (uint32_t(port_lo) << 16) | port_hi));
}

bool rss_config::reta_contains(uint16_t q) const noexcept {
  return std::find(_reta.begin(), _reta.end(), q) != _reta.end();
}

std::string rss_config::describe() const {
  return fmt::format("{}, {}, key {}, RETA {} entries", to_string(_model), to_string(_fields),
                     hex_key(_key), _reta.size());
}

// ---------------------------------------------------------------------------
// source_port_allocator

source_port_allocator::source_port_allocator(const rss_config& cfg, uint16_t queue,
                                             uint16_t port_min, uint16_t port_max)
    : _cfg(cfg),
      _queue(queue),
      _queue_in_reta(cfg.reta_contains(queue)),
      _port_min(port_min),
      _port_max(port_max) {
  if (port_min > port_max)
    throw std::invalid_argument(
        fmt::format("source_port_allocator: empty port range {}..{}", port_min, port_max));
  if (!_cfg.ports_hashed()) return;
  // Toeplitz with initial value 0 is linear over GF(2): the hash of a tuple is
  // the XOR of the hashes of its parts. Tabulate what each byte of a port
  // contributes in either port slot, so a candidate costs four loads.
  for (uint32_t b = 0; b < 256; ++b) {
    _first_hi[b] = _cfg.raw_toeplitz(0, 0, (b << 8) << 16);
    _first_lo[b] = _cfg.raw_toeplitz(0, 0, b << 16);
    _second_hi[b] = _cfg.raw_toeplitz(0, 0, b << 8);
    _second_lo[b] = _cfg.raw_toeplitz(0, 0, b);
  }
}

uint32_t source_port_allocator::reply_hash(const search_state& s,
                                           uint16_t local_port) const noexcept {
  const uint32_t hi = local_port >> 8, lo = local_port & 0xffu;
  if (_cfg.model() == rss_model::toeplitz)  // reply: remote_port first, local_port second
    return s.base_high ^ _second_hi[hi] ^ _second_lo[lo];
  // ena_fixed: the smaller port goes first.
  if (local_port <= s.remote_port) return ena_finish(s.base_low ^ _first_hi[hi] ^ _first_lo[lo]);
  return ena_finish(s.base_high ^ _second_hi[hi] ^ _second_lo[lo]);
}

port_pick source_port_allocator::allocate(ipv4_addr local_ip, ipv4_addr remote_ip,
                                          uint16_t remote_port) {
  const uint32_t range = uint32_t(_port_max) - _port_min + 1;
  flow_tuple key{local_ip, remote_ip, 0, remote_port};
  auto take = [&](uint32_t offset) -> bool {
    key.local_port = static_cast<uint16_t>(_port_min + offset);
    if (!_held.insert(key).second) return false;
    _cursor = offset + 1 == range ? 0 : offset + 1;
    return true;
  };

  if (!_queue_in_reta) return {0, port_error::queue_not_in_reta};

  if (!_cfg.ports_hashed()) {
    // The reply's queue depends on the IP pair alone.
    if (_cfg.queue_of(remote_ip, local_ip, remote_port, 0) != _queue)
      return {0, port_error::ip_pair_maps_elsewhere};
    for (uint32_t i = 0, off = _cursor; i < range; ++i, off = off + 1 == range ? 0 : off + 1)
      if (take(off)) return {key.local_port, std::nullopt};
    return {0, port_error::exhausted};
  }

  // Reply tuple: src = remote_ip:remote_port, dst = local_ip:local_port.
  search_state s{};
  s.remote_port = remote_port;
  if (_cfg.model() == rss_model::toeplitz) {
    s.base_high = _cfg.raw_toeplitz(remote_ip.v, local_ip.v, uint32_t(remote_port) << 16);
  } else {
    const auto [ip_lo, ip_hi] = std::minmax(remote_ip.v, local_ip.v);
    s.base_low = _cfg.raw_toeplitz(ip_lo, ip_hi, remote_port);
    s.base_high = _cfg.raw_toeplitz(ip_lo, ip_hi, uint32_t(remote_port) << 16);
  }
  for (uint32_t i = 0, off = _cursor; i < range; ++i, off = off + 1 == range ? 0 : off + 1) {
    const auto port = static_cast<uint16_t>(_port_min + off);
    if (_cfg.queue_of_hash(reply_hash(s, port)) != _queue) continue;
    if (take(off)) return {port, std::nullopt};
  }
  return {0, port_error::exhausted};
}

bool source_port_allocator::release(ipv4_addr local_ip, ipv4_addr remote_ip, uint16_t remote_port,
                                    uint16_t local_port) {
  return _held.erase(flow_tuple{local_ip, remote_ip, local_port, remote_port}) == 1;
}

bool source_port_allocator::held(ipv4_addr local_ip, ipv4_addr remote_ip, uint16_t remote_port,
                                 uint16_t local_port) const {
  return _held.contains(flow_tuple{local_ip, remote_ip, local_port, remote_port});
}

// ---------------------------------------------------------------------------
// rss_verifier

rss_verdict rss_verifier::observe(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port,
                                  uint16_t dst_port, uint32_t device_hash, bool has_hash) {
  if (!has_hash) {
    ++_without_hash;
    return rss_verdict::no_hash;
  }
  const uint32_t expected = _cfg.hash(src_ip, dst_ip, src_port, dst_port);
  if (expected == device_hash) {
    ++_matches;
    return rss_verdict::match;
  }
  if (_mismatches++ == 0)
    _first_mismatch = explain_mismatch(src_ip, dst_ip, src_port, dst_port, expected, device_hash);
  return rss_verdict::mismatch;
}

rss_verdict rss_verifier::observe(const rte_mbuf* m) {
  auto skip = [this] {
    ++_skipped;
    return rss_verdict::inconclusive;
  };
  if (m == nullptr) return skip();
  const auto* p = rte_pktmbuf_mtod(m, const uint8_t*);
  const std::size_t len = m->data_len;

  std::size_t off = sizeof(rte_ether_hdr);
  if (len < off) return skip();
  rte_ether_hdr eth;
  std::memcpy(&eth, p, sizeof eth);
  uint16_t ether_type = rte_be_to_cpu_16(eth.ether_type);
  if (ether_type == RTE_ETHER_TYPE_VLAN) {
    if (len < off + sizeof(rte_vlan_hdr)) return skip();
    rte_vlan_hdr vlan;
    std::memcpy(&vlan, p + off, sizeof vlan);
    ether_type = rte_be_to_cpu_16(vlan.eth_proto);
    off += sizeof vlan;
  }
  if (ether_type != RTE_ETHER_TYPE_IPV4 || len < off + sizeof(rte_ipv4_hdr)) return skip();
  rte_ipv4_hdr ip;
  std::memcpy(&ip, p + off, sizeof ip);
  const std::size_t ihl = std::size_t(ip.version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4;
  const uint16_t frag = rte_be_to_cpu_16(ip.fragment_offset);
  if ((ip.version_ihl >> 4) != 4 || ihl < sizeof ip || ip.next_proto_id != IPPROTO_UDP ||
      (frag & (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) != 0)
    return skip();  // a fragment carries no ports: the device hashes it differently
  off += ihl;
  if (len < off + sizeof(rte_udp_hdr)) return skip();
  rte_udp_hdr udp;
  std::memcpy(&udp, p + off, sizeof udp);

  return observe(ipv4_addr{rte_be_to_cpu_32(ip.src_addr)}, ipv4_addr{rte_be_to_cpu_32(ip.dst_addr)},
                 rte_be_to_cpu_16(udp.src_port), rte_be_to_cpu_16(udp.dst_port), m->hash.rss,
                 (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) != 0);
}

rss_verdict rss_verifier::verdict() const noexcept {
  if (_mismatches > 0) return rss_verdict::mismatch;
  if (_matches > 0 && _without_hash > 0) return rss_verdict::mismatch;
  if (_matches > 0) return rss_verdict::match;
  if (_without_hash > 0) return rss_verdict::no_hash;
  return rss_verdict::inconclusive;
}

std::string rss_verifier::message() const {
  const std::size_t seen = _matches + _mismatches + _without_hash;
  switch (verdict()) {
    case rss_verdict::match:
      return fmt::format("RSS model verified on {} packets: device hash equals {}", _matches,
                         _cfg.describe());
    case rss_verdict::mismatch:
      if (_mismatches > 0)
        return fmt::format("{} ({} of {} packets differ)", _first_mismatch, _mismatches, seen);
      return fmt::format(
          "device reported an RSS hash on only {} of {} packets "
          "(RTE_MBUF_F_RX_RSS_HASH missing on the rest): queue placement can't be predicted",
          _matches, seen);
    case rss_verdict::no_hash:
      return fmt::format(
          "device reports no RSS hash (RTE_MBUF_F_RX_RSS_HASH unset on all {} packets): "
          "use emulated RSS",
          _without_hash);
    case rss_verdict::inconclusive:
      return fmt::format("no usable probe packet observed ({} skipped: not Eth/IPv4/UDP)",
                         _skipped);
  }
  return "?";
}

std::string rss_verifier::explain_mismatch(ipv4_addr src_ip, ipv4_addr dst_ip, uint16_t src_port,
                                           uint16_t dst_port, uint32_t expected,
                                           uint32_t got) const {
  std::vector<std::string> hints;

  // Alternative models: every mix of key variant x algorithm x fields that
  // differs from ours; each that reproduces the device's hash becomes a hint.
  struct key_variant {
    rss_key key;
    const char* what;  // nullptr for our own key
  };
  std::vector<key_variant> keys{
      {_cfg.key(), nullptr},
      {byte_swapped_words(_cfg.key()), "byte-swapped key (each 4-byte word)"},
      {reversed_bytes(_cfg.key()), "key in reverse byte order"}};
  if (_cfg.key() != ena_fixed_rss_key) keys.push_back({ena_fixed_rss_key, "the ENA fixed key"});
  for (const auto& k : keys) {
    if (k.what != nullptr && k.key == _cfg.key()) continue;
    for (rss_model model : {rss_model::toeplitz, rss_model::ena_fixed}) {
      for (rss_fields fields : {rss_fields::ipv4_udp, rss_fields::ipv4_only}) {
        if (k.what == nullptr && model == _cfg.model() && fields == _cfg.fields()) continue;
        rss_config alt(model, k.key, _cfg.reta(), fields);
        if (alt.hash(src_ip, dst_ip, src_port, dst_port) != got) continue;
        std::vector<std::string> parts;
        if (model != _cfg.model())
          parts.emplace_back(model == rss_model::ena_fixed
                                 ? "the ENA fixed-key variant (rss_model::ena_fixed)"
                                 : "standard Toeplitz (rss_model::toeplitz)");
        if (k.what != nullptr) parts.emplace_back(k.what);
        if (fields != _cfg.fields())
          parts.emplace_back(fields == rss_fields::ipv4_only
                                 ? "device hashes IPs only (ask for UDP ports in rss_hf)"
                                 : "device hashes UDP ports too");
        hints.push_back(fmt::format("{}?", fmt::join(parts, " + ")));
      }
    }
  }

  // Our model, fed the tuple wrongly.
  if (_cfg.hash(ipv4_addr{rte_bswap32(src_ip.v)}, ipv4_addr{rte_bswap32(dst_ip.v)},
                rte_bswap16(src_port), rte_bswap16(dst_port)) == got)
    hints.emplace_back("tuple in the wrong byte order (host vs network)?");
  if (_cfg.hash(dst_ip, src_ip, dst_port, src_port) == got)
    hints.emplace_back("source and destination swapped?");

  if (hints.empty()) {
    if ((got & 0xffffu) == (expected & 0xffffu))
      hints.emplace_back("only the low 16 bits agree: device keeps 16 bits?");
    else if ((got & _cfg.reta_mask()) == (expected & _cfg.reta_mask()))
      hints.emplace_back("the low bits the RETA uses agree, the rest don't");
    else
      hints.emplace_back(
          "no known variant matches: read the key back (rte_eth_dev_rss_hash_conf_get)");
  }

  return fmt::format(
      "RSS hash mismatch for {} -> {}: model ({}, {}) expects {:#010x}, device reported {:#010x}; "
      "hint: {}",
      endpoint(src_ip, src_port), endpoint(dst_ip, dst_port), to_string(_cfg.model()),
      to_string(_cfg.fields()), expected, got, fmt::join(hints, "; "));
}

}  // namespace machnet::net
