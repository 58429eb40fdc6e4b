// Tests of net/arp_cache: learning, expiry, eviction, lock-free reads racing a
// writer, and the resolver's retry timing and failure.
#include <catch2/catch.hpp>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "machnet/net/arp_cache.hh"
#include "machnet/runtime/rcu.hh"

using namespace machnet::net;
using action = arp_resolver::action;

namespace {

// Registers the thread as an RCU reader for its lifetime; on the way out waits
// for deferred frees so leak checks see none.
struct rcu_thread {
  rcu_thread() { machnet::rcu::register_thread(); }
  ~rcu_thread() {
    machnet::rcu::unregister_thread();
    machnet::rcu::barrier();
  }
};

ipv4_addr ip(uint32_t last) { return ipv4_addr{0x0a000000u | last}; }
mac_addr mac(uint8_t last, uint8_t ver = 0) { return mac_addr{{0x02, 0, 0, 0, ver, last}}; }

constexpr uint64_t sec = 1'000'000;

}  // namespace

TEST_CASE("arp_cache learns, looks up, forgets") {
  rcu_thread rcu;
  arp_cache c;
  CHECK(c.size() == 0);
  CHECK(!c.lookup(ip(1), 0));
  CHECK(c.learn(ip(1), mac(1), 10));
  CHECK(c.learn(ip(3), mac(3), 10));
  CHECK(c.learn(ip(2), mac(2), 10));
  CHECK(c.size() == 3);
  CHECK(c.lookup(ip(1), 10) == mac(1));
  CHECK(c.lookup(ip(2), 11) == mac(2));
  CHECK(c.lookup(ip(3), 12) == mac(3));
  CHECK(!c.lookup(ip(4), 12));
  auto all = c.entries();
  REQUIRE(all.size() == 3);
  CHECK(all[0].ip == ip(1));  // sorted
  CHECK(all[1].ip == ip(2));
  CHECK(all[2].ip == ip(3));
  CHECK(all[1] == arp_entry{ip(2), mac(2), 10, false});

  SECTION("a new MAC replaces the old one at once") {
    CHECK(c.learn(ip(2), mac(9), 12));
    CHECK(c.lookup(ip(2), 12) == mac(9));
    CHECK(c.size() == 3);
  }
  SECTION("forget") {
    CHECK(c.forget(ip(2)));
    CHECK(!c.forget(ip(2)));
    CHECK(!c.lookup(ip(2), 12));
    CHECK(c.size() == 2);
  }
  SECTION("invalid neighbours are rejected") {
    CHECK(!c.learn(ipv4_addr{0}, mac(1), 1));
    CHECK(!c.learn(ipv4_addr{0xffffffff}, mac(1), 1));
    CHECK(!c.learn(ipv4_addr{0xe0000001}, mac(1), 1));  // 224.0.0.1
    CHECK(!c.learn(ip(5), mac_addr{}, 1));
    CHECK(!c.learn(ip(5), mac_addr::broadcast(), 1));
    CHECK(!c.learn(ip(5), mac_addr{{0x01, 0x00, 0x5e, 0, 0, 1}}, 1));  // multicast
    CHECK(!c.set_static(ip(5), mac_addr{}));
    CHECK(c.size() == 3);
  }
}

TEST_CASE("arp_cache entries expire after max_age") {
  rcu_thread rcu;
  arp_cache c(arp_cache::config{.max_age_us = 10 * sec, .max_entries = 16, .refresh_min_us = sec});
  REQUIRE(c.learn(ip(1), mac(1), 100 * sec));
  REQUIRE(c.learn(ip(2), mac(2), 105 * sec));
  REQUIRE(c.set_static(ip(3), mac(3)));
  CHECK(c.lookup(ip(1), 110 * sec - 1) == mac(1));
  CHECK(!c.lookup(ip(1), 110 * sec));
  CHECK(c.find(ip(1)).has_value());  // still there, just too old to use
  CHECK(c.find(ip(1))->updated_us == 100 * sec);
  CHECK(c.lookup(ip(2), 110 * sec) == mac(2));
  CHECK(c.lookup(ip(3), 1000 * sec) == mac(3));  // static never expires
  CHECK(c.lookup(ip(1), 50 * sec) == mac(1));    // clock behind the entry: fresh

  CHECK(c.expire(109 * sec) == 0);
  CHECK(c.size() == 3);
  CHECK(c.expire(110 * sec) == 1);
  CHECK(c.size() == 2);
  CHECK(!c.find(ip(1)));

  SECTION("learning again refreshes") {
    CHECK(!c.learn(ip(2), mac(2), 105 * sec + sec / 2));  // within refresh_min_us: no copy
    CHECK(c.find(ip(2))->updated_us == 105 * sec);
    CHECK(c.learn(ip(2), mac(2), 112 * sec));
    CHECK(c.lookup(ip(2), 121 * sec) == mac(2));
    CHECK(c.expire(121 * sec) == 0);
    CHECK(c.expire(122 * sec) == 1);
    CHECK(c.size() == 1);
  }
  SECTION("static entries are not changed by learning") {
    CHECK(!c.learn(ip(3), mac(7), 200 * sec));
    CHECK(c.lookup(ip(3), 200 * sec) == mac(3));
    CHECK(c.set_static(ip(3), mac(7)));
    CHECK(c.lookup(ip(3), 200 * sec) == mac(7));
    CHECK(c.find(ip(3))->is_static);
  }
}

TEST_CASE("a full arp_cache evicts the oldest learned entry") {
  rcu_thread rcu;
  arp_cache c(arp_cache::config{.max_age_us = 100 * sec, .max_entries = 3, .refresh_min_us = 0});
  REQUIRE(c.set_static(ip(10), mac(10)));
  REQUIRE(c.learn(ip(1), mac(1), 5));
  REQUIRE(c.learn(ip(2), mac(2), 3));
  CHECK(c.learn(ip(3), mac(3), 7));  // evicts ip 2, heard from at t=3
  CHECK(c.size() == 3);
  CHECK(!c.find(ip(2)));
  CHECK(c.find(ip(1)));
  CHECK(c.find(ip(10)));
  CHECK(c.learn(ip(1), mac(1), 9));   // refresh, no eviction
  CHECK(c.learn(ip(4), mac(4), 10));  // evicts ip 3 (t=7)
  CHECK(!c.find(ip(3)));
  CHECK(c.size() == 3);

  arp_cache s(arp_cache::config{.max_age_us = sec, .max_entries = 2, .refresh_min_us = 0});
  REQUIRE(s.set_static(ip(1), mac(1)));
  REQUIRE(s.set_static(ip(2), mac(2)));
  CHECK(!s.learn(ip(3), mac(3), 1));
  CHECK(!s.set_static(ip(3), mac(3)));
  CHECK(s.set_static(ip(2), mac(9)));  // replacing needs no room
  CHECK(s.size() == 2);
}

TEST_CASE("arp_cache readers on other threads race a writer safely") {
  // Every MAC a writer publishes encodes its IP in byte 5, so a reader can
  // tell a torn or stale-freed read from a valid one; ASan catches use after free.
  arp_cache c(
      arp_cache::config{.max_age_us = UINT64_MAX / 2, .max_entries = 64, .refresh_min_us = 0});
  constexpr uint32_t n_ips = 48;
  constexpr int n_updates = 20000;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> bad{0};

  auto reader = [&](unsigned seed) {
    machnet::rcu::register_thread();
    std::mt19937 rng(seed);
    uint64_t local_hits = 0;
    while (!done.load(std::memory_order_acquire)) {
      for (int i = 0; i < 64; ++i) {
        const uint32_t k = 1 + rng() % n_ips;
        if (auto m = c.lookup(ip(k), 1)) {
          ++local_hits;
          if (m->b[5] != k || m->b[0] != 0x02) bad.fetch_add(1);
        }
        if (auto e = c.find(ip(k)))
          if (e->ip != ip(k) || e->mac.b[5] != k) bad.fetch_add(1);
      }
      machnet::rcu::quiescent_state();
    }
    hits.fetch_add(local_hits);
    machnet::rcu::unregister_thread();
  };

  std::thread r1(reader, 1), r2(reader, 2);
  std::thread writer([&] {
    machnet::rcu::register_thread();
    std::mt19937 rng(3);
    for (int i = 0; i < n_updates; ++i) {
      const uint32_t k = 1 + rng() % n_ips;
      switch (rng() % 8) {
        case 0:
          c.forget(ip(k));
          break;
        case 1:
          c.expire(1);  // nothing is old enough: a no-op
          break;
        default:
          c.learn(ip(k), mac(static_cast<uint8_t>(k), static_cast<uint8_t>(i)), 1 + i);
          break;
      }
      machnet::rcu::quiescent_state();
    }
    machnet::rcu::unregister_thread();
  });
  writer.join();
  done.store(true, std::memory_order_release);
  r1.join();
  r2.join();
  machnet::rcu::barrier();
  CHECK(bad.load() == 0);
  CHECK(hits.load() > 0);
  CHECK(c.size() <= n_ips);
}

TEST_CASE("arp_resolver paces requests and fails after the retry budget") {
  arp_resolver r;  // 200 ms retry, 3 requests, 1 s failure hold
  REQUIRE(r.cfg().retry_us == 200'000);
  REQUIRE(r.cfg().max_requests == 3);
  const uint64_t t0 = 5 * sec;
  CHECK(r.request(ip(1), t0) == action::send_request);
  CHECK(r.in_progress(ip(1)));
  CHECK(r.request(ip(1), t0) == action::wait);
  CHECK(r.request(ip(1), t0 + 199'999) == action::wait);
  CHECK(r.request(ip(1), t0 + 200'000) == action::send_request);  // 2nd
  CHECK(r.request(ip(1), t0 + 300'000) == action::wait);
  CHECK(r.request(ip(1), t0 + 450'000) == action::send_request);  // 3rd, retry timed from the 2nd
  CHECK(r.request(ip(1), t0 + 649'999) == action::wait);
  CHECK(r.request(ip(1), t0 + 650'000) == action::failed);
  CHECK(!r.in_progress(ip(1)));
  CHECK(r.size() == 1);
  // The failure is remembered: no new requests for failed_hold_us.
  CHECK(r.request(ip(1), t0 + 700'000) == action::failed);
  CHECK(r.request(ip(1), t0 + 1'649'999) == action::failed);
  // Then a new round starts.
  CHECK(r.request(ip(1), t0 + 1'650'000) == action::send_request);
  CHECK(r.in_progress(ip(1)));
  CHECK(r.request(ip(1), t0 + 1'650'001) == action::wait);

  SECTION("resolved() ends the round") {
    r.resolved(ip(1));
    CHECK(r.size() == 0);
    CHECK(!r.in_progress(ip(1)));
    CHECK(r.request(ip(1), t0 + 1'650'002) == action::send_request);
  }
  SECTION("addresses are independent") {
    CHECK(r.request(ip(2), t0 + 1'650'001) == action::send_request);
    CHECK(r.request(ip(2), t0 + 1'650'002) == action::wait);
    CHECK(r.size() == 2);
    r.resolved(ip(1));
    CHECK(r.in_progress(ip(2)));
    CHECK(r.size() == 1);
  }
}

TEST_CASE("arp_resolver poll() sends retries and reports failures from a timer") {
  arp_resolver r(arp_resolver::config{
      .retry_us = 100, .max_requests = 2, .failed_hold_us = 1000, .max_pending = 8});
  std::vector<ipv4_addr> sent, failed;
  auto poll = [&](uint64_t now) {
    sent.clear();
    failed.clear();
    r.poll(
        now, [&](ipv4_addr a) { sent.push_back(a); }, [&](ipv4_addr a) { failed.push_back(a); });
  };
  CHECK(!r.next_deadline_us());
  CHECK(r.request(ip(1), 1000) == action::send_request);
  CHECK(r.request(ip(2), 1050) == action::send_request);
  CHECK(r.next_deadline_us() == 1100u);
  poll(1099);
  CHECK(sent.empty());
  CHECK(failed.empty());
  poll(1100);
  CHECK(sent == std::vector<ipv4_addr>{ip(1)});
  CHECK(r.next_deadline_us() == 1150u);
  poll(1160);
  CHECK(sent == std::vector<ipv4_addr>{ip(2)});
  CHECK(r.request(ip(1), 1190) == action::wait);  // poll's retry counts
  poll(1200);
  CHECK(sent.empty());
  CHECK(failed == std::vector<ipv4_addr>{ip(1)});
  poll(1201);
  CHECK(failed.empty());  // reported once
  CHECK(r.request(ip(1), 1202) == action::failed);
  poll(1260);
  CHECK(failed == std::vector<ipv4_addr>{ip(2)});
  CHECK(r.size() == 2);
  CHECK(r.next_deadline_us() == 2200u);  // ip 1's failure hold ends
  poll(2200);
  CHECK(r.size() == 1);
  poll(2260);
  CHECK(r.size() == 0);
  CHECK(!r.next_deadline_us());
}

TEST_CASE("arp_resolver bounds its table and handles a single-try budget") {
  arp_resolver r(arp_resolver::config{
      .retry_us = 10, .max_requests = 1, .failed_hold_us = 50, .max_pending = 2});
  CHECK(r.request(ip(1), 0) == action::send_request);
  CHECK(r.request(ip(2), 0) == action::send_request);
  CHECK(r.request(ip(3), 0) == action::failed);  // table full
  CHECK(r.size() == 2);
  CHECK(r.request(ip(1), 9) == action::wait);
  CHECK(r.request(ip(1), 10) == action::failed);  // one try only
  CHECK(r.request(ip(2), 10) == action::failed);
  CHECK(r.request(ip(3), 59) == action::failed);        // failures still held
  CHECK(r.request(ip(3), 60) == action::send_request);  // held failures purged to make room
  CHECK(r.size() == 1);

  arp_resolver none(arp_resolver::config{
      .retry_us = 10, .max_requests = 0, .failed_hold_us = 50, .max_pending = 2});
  CHECK(none.request(ip(1), 0) == action::failed);
  CHECK(none.size() == 0);
}
