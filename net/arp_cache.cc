// arp_cache: the copy-on-write neighbour table and the ARP retry bookkeeping.
#include "machnet/net/arp_cache.hh"

#include <algorithm>
#include <memory>

namespace machnet::net {

namespace {
bool ip_less(const arp_entry& e, ipv4_addr ip) noexcept { return e.ip < ip; }
}  // namespace

// --- arp_cache ---------------------------------------------------------------

arp_cache::arp_cache(config cfg) : _cfg(cfg), _table(std::make_unique<table>()) {}

const arp_entry* arp_cache::table::find(ipv4_addr ip) const noexcept {
  auto it = std::lower_bound(entries.begin(), entries.end(), ip, ip_less);
  return it != entries.end() && it->ip == ip ? &*it : nullptr;
}

bool arp_cache::expired(const arp_entry& e, uint64_t now_us) const noexcept {
  return !e.is_static && now_us > e.updated_us && now_us - e.updated_us >= _cfg.max_age_us;
}

bool arp_cache::valid_neighbour(ipv4_addr ip, mac_addr mac) noexcept {
  const bool bad_ip = ip.v == 0 || ip.v == 0xffffffffu || (ip.v >> 28) == 0xe;  // 224.0.0.0/4
  const bool bad_mac = mac.is_zero() || (mac.b[0] & 0x01) != 0;  // group bit: multi/broadcast
  return !bad_ip && !bad_mac;
}

std::optional<mac_addr> arp_cache::lookup(ipv4_addr ip, uint64_t now_us) const noexcept {
  const table* t = _table.read();
  const arp_entry* e = t ? t->find(ip) : nullptr;
  if (e == nullptr || expired(*e, now_us)) return std::nullopt;
  return e->mac;
}

std::optional<arp_entry> arp_cache::find(ipv4_addr ip) const noexcept {
  const table* t = _table.read();
  const arp_entry* e = t ? t->find(ip) : nullptr;
  if (e == nullptr) return std::nullopt;
  return *e;
}

bool arp_cache::upsert_locked(const arp_entry& e) {
  const table* cur = _table.read();
  auto next = cur ? std::make_unique<table>(*cur) : std::make_unique<table>();
  auto& v = next->entries;
  auto it = std::lower_bound(v.begin(), v.end(), e.ip, ip_less);
  if (it != v.end() && it->ip == e.ip) {
    *it = e;
  } else {
    if (v.size() >= _cfg.max_entries) {
      // Evict the learned entry heard from longest ago.
      auto victim = v.end();
      for (auto j = v.begin(); j != v.end(); ++j)
        if (!j->is_static && (victim == v.end() || j->updated_us < victim->updated_us)) victim = j;
      if (victim == v.end()) return false;
      v.erase(victim);
      it = std::lower_bound(v.begin(), v.end(), e.ip, ip_less);
    }
    v.insert(it, e);
  }
  _table.publish(std::move(next));
  return true;
}

bool arp_cache::learn(ipv4_addr ip, mac_addr mac, uint64_t now_us) {
  if (!valid_neighbour(ip, mac)) return false;
  std::lock_guard lock(_write_mutex);
  if (const table* t = _table.read()) {
    if (const arp_entry* e = t->find(ip)) {
      if (e->is_static) return false;
      if (e->mac == mac && now_us < e->updated_us + _cfg.refresh_min_us) return false;
    }
  }
  return upsert_locked(arp_entry{ip, mac, now_us, false});
}

bool arp_cache::set_static(ipv4_addr ip, mac_addr mac) {
  if (!valid_neighbour(ip, mac)) return false;
  std::lock_guard lock(_write_mutex);
  return upsert_locked(arp_entry{ip, mac, 0, true});
}

bool arp_cache::forget(ipv4_addr ip) {
  std::lock_guard lock(_write_mutex);
  const table* t = _table.read();
  if (t == nullptr || t->find(ip) == nullptr) return false;
  _table.update([ip](table& n) {
    auto it = std::lower_bound(n.entries.begin(), n.entries.end(), ip, ip_less);
    n.entries.erase(it);
  });
  return true;
}

size_t arp_cache::expire(uint64_t now_us) {
  std::lock_guard lock(_write_mutex);
  const table* t = _table.read();
  if (t == nullptr) return 0;
  const auto n =
      static_cast<size_t>(std::count_if(t->entries.begin(), t->entries.end(),
                                        [&](const arp_entry& e) { return expired(e, now_us); }));
  if (n == 0) return 0;
  _table.update([&](table& next) {
    std::erase_if(next.entries, [&](const arp_entry& e) { return expired(e, now_us); });
  });
  return n;
}

std::vector<arp_entry> arp_cache::entries() const {
  std::lock_guard lock(_write_mutex);
  const table* t = _table.read();
  return t ? t->entries : std::vector<arp_entry>{};
}

size_t arp_cache::size() const {
  std::lock_guard lock(_write_mutex);
  const table* t = _table.read();
  return t ? t->entries.size() : 0;
}

// --- arp_resolver --------------------------------------------------------------

arp_resolver::pending* arp_resolver::find(ipv4_addr ip) noexcept {
  for (auto& p : _pending)
    if (p.ip == ip) return &p;
  return nullptr;
}

void arp_resolver::purge(uint64_t now_us) noexcept {
  std::erase_if(_pending, [&](const pending& p) { return p.failed && now_us >= deadline(p); });
}

arp_resolver::action arp_resolver::request(ipv4_addr ip, uint64_t now_us) {
  if (_cfg.max_requests == 0) return action::failed;
  pending* p = find(ip);
  if (p != nullptr && p->failed && now_us >= deadline(*p)) {
    // Failure remembered long enough: start a fresh round.
    *p = pending{ip, now_us, 1, false};
    return action::send_request;
  }
  if (p == nullptr) {
    if (_pending.size() >= _cfg.max_pending) purge(now_us);
    if (_pending.size() >= _cfg.max_pending) return action::failed;
    _pending.push_back(pending{ip, now_us, 1, false});
    return action::send_request;
  }
  if (p->failed) return action::failed;
  if (now_us < deadline(*p)) return action::wait;
  p->last_us = now_us;
  if (p->sent < _cfg.max_requests) {
    ++p->sent;
    return action::send_request;
  }
  p->failed = true;
  return action::failed;
}

void arp_resolver::resolved(ipv4_addr ip) noexcept {
  std::erase_if(_pending, [ip](const pending& p) { return p.ip == ip; });
}

bool arp_resolver::in_progress(ipv4_addr ip) const noexcept {
  return std::any_of(_pending.begin(), _pending.end(),
                     [ip](const pending& p) { return p.ip == ip && !p.failed; });
}

std::optional<uint64_t> arp_resolver::next_deadline_us() const noexcept {
  std::optional<uint64_t> d;
  for (const auto& p : _pending) {
    const uint64_t t = deadline(p);
    if (!d || t < *d) d = t;
  }
  return d;
}

}  // namespace machnet::net
