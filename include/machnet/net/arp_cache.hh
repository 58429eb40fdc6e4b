// arp_cache: the IPv4 → MAC neighbour table shared by all shards (lock-free
// RCU reads, copy-on-write updates) and the per-shard resolver that paces ARP
// requests for addresses not in it yet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "machnet/net/types.hh"
#include "machnet/runtime/rcu.hh"

namespace machnet::net {

/// One neighbour: `ip` is at `mac`, learned at `updated_us`.
struct arp_entry {
  ipv4_addr ip;
  mac_addr mac;
  uint64_t updated_us = 0;  ///< time of the last learn(); unused for static entries
  bool is_static = false;   ///< configured with set_static(): never expires or changes by learning
  bool operator==(const arp_entry&) const = default;
};

/// The neighbour table. One instance is shared by every shard.
///
/// Concurrency: readers (lookup, find) take no lock — they load an immutable
/// snapshot through rcu::rcu_ptr and must run on a registered RCU thread (every
/// shard is one), which keeps reporting quiescent states. Writers (learn,
/// set_static, forget, expire) copy the snapshot, change the copy and publish
/// it; they are serialised by an internal mutex (updates are rare: ARP
/// traffic), may run on any thread, and the thread that publishes must be RCU
/// registered too, because the old snapshot is freed through call_rcu.
/// `entries()` and `size()` read under the writer mutex, so any thread may
/// call them.
///
/// Times are microseconds on the caller's clock (machnet::now_us() in the
/// engine), passed in so the table is testable without waiting.
class arp_cache {
 public:
  struct config {
    /// Learned entries older than this are treated as absent by lookup() and
    /// removed by expire(). Re-learning (any ARP from the host) refreshes.
    uint64_t max_age_us = 120'000'000;
    /// Table size bound; when full, learning a new address evicts the oldest
    /// learned entry (static entries are never evicted).
    size_t max_entries = 4096;
    /// learn() with an unchanged MAC republishes (to refresh the timestamp)
    /// only if the entry is at least this old, so chatty ARP does not make
    /// every packet copy the table.
    uint64_t refresh_min_us = 1'000'000;
  };

  arp_cache() : arp_cache(config{}) {}
  explicit arp_cache(config cfg);
  arp_cache(const arp_cache&) = delete;
  arp_cache& operator=(const arp_cache&) = delete;
  /// The last snapshot is freed immediately: no reader may still use the cache.
  ~arp_cache() = default;

  /// The MAC of `ip` if known and not older than max_age_us at `now_us`.
  /// Lock-free; the caller must be a registered RCU reader.
  std::optional<mac_addr> lookup(ipv4_addr ip, uint64_t now_us) const noexcept;
  /// The entry for `ip` whatever its age (to decide on a proactive refresh).
  /// Lock-free; the caller must be a registered RCU reader.
  std::optional<arp_entry> find(ipv4_addr ip) const noexcept;

  /// Records that `ip` is at `mac` (from an ARP request for us or a reply).
  /// Returns true if the table changed (new entry, new MAC, or timestamp
  /// refreshed — see refresh_min_us); false if unchanged or rejected: IP 0.0.0.0 / 255.255.255.255
  /// / multicast, MAC zero or group (multicast/broadcast), a static entry for `ip`, or the table
  /// full of static entries.
  bool learn(ipv4_addr ip, mac_addr mac, uint64_t now_us);
  /// Adds or replaces a permanent entry (e.g. a configured gateway). Returns
  /// false on the same invalid addresses learn() rejects, or a full table.
  bool set_static(ipv4_addr ip, mac_addr mac);
  /// Removes the entry for `ip` (learned or static); returns whether there was one.
  bool forget(ipv4_addr ip);
  /// Removes learned entries older than max_age_us at `now_us`; returns how many.
  /// Publishes only if something was removed.
  size_t expire(uint64_t now_us);

  /// A copy of every entry, sorted by IP. Any thread (takes the writer mutex).
  std::vector<arp_entry> entries() const;
  /// Number of entries, expired or not. Any thread (takes the writer mutex).
  size_t size() const;
  const config& cfg() const noexcept { return _cfg; }

  /// Whether learn()/set_static() accept the pair (see learn()).
  static bool valid_neighbour(ipv4_addr ip, mac_addr mac) noexcept;

 private:
  /// Immutable once published: entries sorted by ip.v, unique.
  struct table {
    std::vector<arp_entry> entries;
    const arp_entry* find(ipv4_addr ip) const noexcept;
  };
  bool expired(const arp_entry& e, uint64_t now_us) const noexcept;
  /// Writer side: inserts or replaces `e`, evicting if full. Caller holds _write_mutex.
  bool upsert_locked(const arp_entry& e);

  config _cfg;
  mutable std::mutex _write_mutex;
  rcu::rcu_ptr<table> _table;
};

/// Per-shard bookkeeping of ARP resolutions in flight — no I/O: it only tells
/// the caller when to send an ARP request and when to give up.
///
/// Use: on a cache miss call request(ip, now); send an ARP request when it says
/// send_request, queue or hold the packet on wait, and fail the send (e.g.
/// "host unreachable") on failed. Call poll() from a timer to send retries and
/// learn of failures without new traffic. When the cache has the address
/// (reply learned on any shard: check lookup() before request()), call
/// resolved(ip). After failing, an address stays failed for failed_hold_us
/// (requests for it fail at once, no ARP flood); the next request after that
/// starts a fresh round. Not thread-safe: one per shard.
class arp_resolver {
 public:
  struct config {
    uint64_t retry_us = 200'000;          ///< wait between requests for one address
    unsigned max_requests = 3;            ///< requests sent before giving up
    uint64_t failed_hold_us = 1'000'000;  ///< how long a failure is remembered
    size_t max_pending = 256;             ///< addresses tracked at once
  };
  enum class action : uint8_t {
    send_request,  ///< send an ARP request for the address now
    wait,          ///< a request is outstanding; nothing to send
    failed,        ///< retry budget exhausted (or table full): report an error
  };

  arp_resolver() : arp_resolver(config{}) {}
  explicit arp_resolver(config cfg) : _cfg(cfg) {}

  /// What to do about `ip` now: send_request on the first call and whenever
  /// retry_us has passed since the last request with budget left; failed once
  /// max_requests requests went unanswered for retry_us each; wait otherwise.
  action request(ipv4_addr ip, uint64_t now_us);
  /// Forgets `ip` (its MAC is known now, or the caller gave up).
  void resolved(ipv4_addr ip) noexcept;

  /// Drives retries from a timer: calls send(ip) for every address whose retry
  /// is due (counting it as a request) and fail(ip) for every address that just
  /// ran out of budget; forgets failures older than failed_hold_us. The
  /// callbacks must not call this resolver.
  template <typename Send, typename Fail>
  void poll(uint64_t now_us, Send&& send, Fail&& fail);

  /// Whether `ip` is being resolved (not failed, not unknown).
  bool in_progress(ipv4_addr ip) const noexcept;
  /// Addresses tracked (resolving or remembered as failed).
  size_t size() const noexcept { return _pending.size(); }
  /// Earliest time poll() has something to do, if anything is tracked.
  std::optional<uint64_t> next_deadline_us() const noexcept;
  const config& cfg() const noexcept { return _cfg; }

 private:
  struct pending {
    ipv4_addr ip;
    uint64_t last_us = 0;  ///< last request sent, or the failure time
    unsigned sent = 0;     ///< requests sent this round
    bool failed = false;
  };
  pending* find(ipv4_addr ip) noexcept;
  uint64_t deadline(const pending& p) const noexcept {
    return p.last_us + (p.failed ? _cfg.failed_hold_us : _cfg.retry_us);
  }
  /// Drops failures whose hold time has passed.
  void purge(uint64_t now_us) noexcept;

  config _cfg;
  std::vector<pending> _pending;
};

template <typename Send, typename Fail>
void arp_resolver::poll(uint64_t now_us, Send&& send, Fail&& fail) {
  purge(now_us);
  // The callbacks must not call back into this resolver (it is mid-iteration).
  for (auto& p : _pending) {
    if (p.failed || now_us < deadline(p)) continue;
    p.last_us = now_us;
    if (p.sent < _cfg.max_requests) {
      ++p.sent;
      send(p.ip);
    } else {
      p.failed = true;
      fail(p.ip);
    }
  }
}

}  // namespace machnet::net
