// Tests of the engine side of a shared-memory channel, driven the way an app
// drives it (the test maps the region and uses the rings): buffer ownership
// and counts, TX and RX of every size, refusal of hostile descriptors and
// returns, a seeded fuzz of everything the app can write, the control queue
// and the doorbells.
#include <catch2/catch.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "machnet/net/shm/channel_engine.hh"

using namespace machnet::shm;

namespace Catch {
template <>
struct StringMaker<tx_refusal> {
  static std::string convert(tx_refusal r) { return to_string(r); }
};
}  // namespace Catch

namespace {

channel_params params(uint32_t count, uint32_t size, uint32_t ctrl) {
  channel_params p;
  p.buf_count = count;
  p.buf_size = size;
  p.ctrl_slots = ctrl;
  return p;
}

// 1024 x 32 KiB: the fewest 32 KiB buffers whose half holds 8 MiB (257).
const channel_params p_small = params(1024, 32768, 16);
// The smallest buffers (960 data bytes: 8 MiB is a chain of 8739).
const channel_params p_tiny_bufs = params(32768, 1024, 8);
// The fewest buffers (64 x 1 MiB: 8 MiB is 9 of them).
const channel_params p_few_bufs = params(64, 1u << 20, 4);

flow_info flow_of(uint32_t k) {
  return {0x0a000001u, 0x0a000100u + k, uint16_t(1000 + k), uint16_t(2000 + k)};
}

std::vector<uint8_t> pattern(std::size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = uint8_t(x >> 8);
  }
  return v;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

uint64_t drain(int fd) {
  uint64_t v = 0;
  if (::read(fd, &v, sizeof v) != ssize_t(sizeof v)) return 0;
  return v;
}

// What pop_tx handed to its sink.
struct sent {
  int calls = 0;
  flow_info flow{};
  std::size_t msg_len = 0;
  std::size_t spans = 0;
  std::vector<uint8_t> bytes;
  bool accept = true;

  channel_engine::tx_sink sink() {
    return [this](const flow_info& f, std::size_t len, std::span<const std::span<const uint8_t>> s) {
      ++calls;
      flow = f;
      msg_len = len;
      spans = s.size();
      bytes.clear();
      for (auto sp : s) bytes.insert(bytes.end(), sp.begin(), sp.end());
      return accept;
    };
  }
};

// A message as the app reads it from the RX ring.
struct rx_msg {
  uint32_t head = no_buffer;
  flow_info flow{};
  uint32_t msg_len = 0, nbufs = 0, flags = 0;
  std::vector<uint32_t> bufs;
  std::vector<uint8_t> bytes;
};

channel_map attach_to(const channel_engine& e) {
  int fd = ::dup(e.region_fd());
  REQUIRE(fd >= 0);
  return channel_map::attach(fd);
}

// The app's side of a channel, as libmachnet holds it.
class app_side {
 public:
  explicit app_side(const channel_engine& e)
      : map(attach_to(e)), n(map.params().buf_count), per(map.params().data_per_buf()) {
    resync();
  }

  // (Re)reads every cursor from the shared words, as on attach.
  void resync() {
    free_ring = {map.free_ring(), n};
    rx_ring = {map.rx_ring(), n};
    ret_ring = {map.ret_ring(), n};
    tx_ring = {map.tx_ring(), n};
    ctrl_sq = {map.ctrl_sq(), map.params().ctrl_slots};
    ctrl_cq = {map.ctrl_cq(), map.params().ctrl_slots};
  }

  // Pops k buffers off the free ring into `held`.
  void take(uint32_t k) {
    for (uint32_t j = 0; j < k; ++j) {
      uint32_t b = 0;
      REQUIRE(free_ring.pop(b));
      REQUIRE(b < n);
      held.push_back(b);
    }
    free_ring.publish();
  }
  void take_all() { take(free_ring.ready()); }

  // Takes `k` buffers from `held` (popping more if needed).
  std::vector<uint32_t> use(uint32_t k) {
    if (held.size() < k) take(k - uint32_t(held.size()));
    std::vector<uint32_t> c(held.end() - k, held.end());
    held.resize(held.size() - k);
    return c;
  }

  // Writes a message into a chain of buffers from `held`; returns the chain.
  std::vector<uint32_t> write(const flow_info& f, const std::vector<uint8_t>& bytes) {
    const uint32_t k = map.params().bufs_for(bytes.size());
    std::vector<uint32_t> c = use(k);
    std::size_t off = 0;
    for (uint32_t j = 0; j < k; ++j) {
      const std::size_t len = std::min<std::size_t>(per, bytes.size() - off);
      if (len) std::memcpy(map.data(c[j]), bytes.data() + off, len);
      off += len;
      buf_hdr* h = map.buffer(c[j]);
      h->len = uint32_t(len);
      h->next = j + 1 < k ? c[j + 1] : no_buffer;
    }
    head_fields(c[0], uint32_t(bytes.size()), k, f, 0);
    return c;
  }
  void head_fields(uint32_t b, uint32_t msg_len, uint32_t nbufs, const flow_info& f, uint32_t flags) {
    buf_hdr* h = map.buffer(b);
    h->msg_len = msg_len;
    h->nbufs = nbufs;
    h->flow = f;
    h->flags = flags;
  }
  void link(uint32_t b, uint32_t len, uint32_t next) {
    map.buffer(b)->len = len;
    map.buffer(b)->next = next;
  }

  void send(uint32_t head) {
    REQUIRE(tx_ring.push(head));
    tx_ring.publish();
  }

  // Pops one message off the RX ring and reads its chain.
  bool receive(rx_msg& m) {
    uint32_t head = 0;
    if (!rx_ring.pop(head)) return false;
    rx_ring.publish();
    REQUIRE(head < n);
    m = rx_msg{};
    m.head = head;
    const buf_hdr* h = map.buffer(head);
    m.flow = h->flow;
    m.msg_len = h->msg_len;
    m.nbufs = h->nbufs;
    m.flags = h->flags;
    for (uint32_t i = head; i != no_buffer; i = map.buffer(i)->next) {
      REQUIRE(i < n);
      REQUIRE(m.bufs.size() < m.nbufs);
      m.bufs.push_back(i);
      const uint32_t len = map.buffer(i)->len;
      REQUIRE(len <= per);
      m.bytes.insert(m.bytes.end(), map.data(i), map.data(i) + len);
    }
    return true;
  }

  void give_back(const std::vector<uint32_t>& bufs) {
    for (uint32_t b : bufs) REQUIRE(ret_ring.push(b));
    ret_ring.publish();
  }

  // Buffers the app knows it holds: taken, or still on the free ring.
  uint32_t holding() const { return uint32_t(held.size()) + free_ring.ready(); }

  channel_map map;
  uint32_t n, per;
  ring_consumer<uint32_t> free_ring, rx_ring;
  ring_producer<uint32_t> ret_ring, tx_ring;
  ring_producer<ctrl_req> ctrl_sq;
  ring_consumer<ctrl_resp> ctrl_cq;
  std::vector<uint32_t> held;
};

// engine + app == pool, and the app holds exactly what it knows of (plus
// `extra` buffers the test has in flight).
void counts(const channel_engine& e, const app_side& a, uint32_t extra = 0) {
  REQUIRE(e.engine_buffers() + e.app_buffers() == a.n);
  REQUIRE(e.engine_buffers() <= a.n);
  REQUIRE(e.app_buffers() == a.holding() + extra);
}

// The app resyncs its cursors to the engine's published ones and forgets
// every buffer; then checks that the engine's bookkeeping is exact: every
// buffer returned is taken back once or counted as bad, and after that the
// engine holds every buffer exactly once (n deliveries use each index once).
// Leaves the channel fresh: the free ring topped up, nothing else queued.
void audit(channel_engine& e, app_side& a) {
  const uint32_t n = a.n;
  channel_map& m = a.map;
  e.flush();
  m.header().app_sleeping.store(0);
  a.held.clear();
  m.tx_ring()->head.store(m.tx_ring()->tail.load());
  m.ctrl_sq()->head.store(m.ctrl_sq()->tail.load());
  m.ret_ring()->head.store(m.ret_ring()->tail.load());
  m.rx_ring()->tail.store(m.rx_ring()->head.load());
  m.ctrl_cq()->tail.store(m.ctrl_cq()->head.load());
  // A message the sink declined earlier is still first in line: let it out
  // (the TX ring itself is empty now).
  auto take = [](const flow_info&, std::size_t, std::span<const std::span<const uint8_t>>) { return true; };
  e.pop_tx(take);
  REQUIRE_FALSE(e.pop_tx(take));
  // The free ring looks full: reclaim() does not top it up while we count.
  m.free_ring()->tail.store(m.free_ring()->head.load() - n);
  a.resync();
  const uint32_t engine0 = e.engine_buffers();
  const uint64_t bad0 = e.stats().bad_returns.load();
  std::vector<uint32_t> all(n);
  for (uint32_t i = 0; i < n; ++i) all[i] = i;
  a.give_back(all);
  REQUIRE(a.ret_ring.room() == 0);
  e.reclaim();
  REQUIRE(e.engine_buffers() == n);
  REQUIRE(e.stats().bad_returns.load() - bad0 == engine0);
  REQUIRE_FALSE(e.pending());
  for (uint32_t i = 0; i < n; ++i) REQUIRE(e.deliver(flow_of(i), {}));
  REQUIRE(e.engine_buffers() == 0);
  REQUIRE_FALSE(e.deliver(flow_of(0), {}));
  e.flush();
  std::vector<uint8_t> seen(n, 0);
  for (uint32_t i = 0; i < n; ++i) {
    rx_msg r;
    REQUIRE(a.receive(r));
    REQUIRE(seen[r.head] == 0);
    seen[r.head] = 1;
    REQUIRE(r.flow == flow_of(i));
    REQUIRE(r.msg_len == 0);
    REQUIRE(r.nbufs == 1);
    REQUIRE(r.flags == 0);
    REQUIRE(r.bufs.size() == 1);
  }
  rx_msg none;
  REQUIRE_FALSE(a.receive(none));
  m.free_ring()->tail.store(m.free_ring()->head.load());
  a.resync();
  a.give_back(all);
  e.reclaim();
  REQUIRE(e.stats().bad_returns.load() - bad0 == engine0);
  REQUIRE(e.engine_buffers() == n - n / 2);
  REQUIRE(a.free_ring.ready() == n / 2);
  counts(e, a);
}

// One well-behaved exchange each way, bytes checked exactly.
void exchange(channel_engine& e, app_side& a, uint32_t seed) {
  const uint32_t per = a.per;
  const uint64_t tx0 = e.stats().tx_messages.load();
  auto out = pattern(2 * std::size_t(per) + 5, seed);
  auto chain = a.write(flow_of(seed), out);
  a.send(chain[0]);
  counts(e, a, uint32_t(chain.size()));
  sent s;
  REQUIRE(e.pop_tx(s.sink()));
  REQUIRE(s.calls == 1);
  REQUIRE(s.flow == flow_of(seed));
  REQUIRE(s.msg_len == out.size());
  REQUIRE(s.spans == 3);
  REQUIRE(s.bytes == out);
  REQUIRE(e.stats().tx_messages.load() == tx0 + 1);
  REQUIRE_FALSE(e.pop_tx(s.sink()));
  counts(e, a);
  auto in = pattern(std::size_t(per) + 7, seed + 1);
  REQUIRE(e.deliver(flow_of(seed + 1), in));
  e.flush();
  rx_msg r;
  REQUIRE(a.receive(r));
  REQUIRE(r.bytes == in);
  REQUIRE(r.flow == flow_of(seed + 1));
  REQUIRE(r.nbufs == 2);
  counts(e, a, 2);
  a.give_back(r.bufs);
  REQUIRE(e.reclaim());
  counts(e, a);
}

}  // namespace

// --- ownership and counts -------------------------------------------------------

TEST_CASE("engine: the free ring is topped up to buf_count/2") {
  for (const channel_params& p : {p_small, p_tiny_bufs, p_few_bufs, channel_params{}}) {
    INFO("buf_count " << p.buf_count << " buf_size " << p.buf_size);
    channel_engine e(p, "test channel");
    app_side a(e);
    const uint32_t n = p.buf_count;
    REQUIRE(a.map.free_ring()->head.load() == n / 2);
    REQUIRE(a.free_ring.ready() == n / 2);
    REQUIRE(e.engine_buffers() == n / 2);
    REQUIRE(e.app_buffers() == n / 2);
    REQUIRE_FALSE(e.pending());
    counts(e, a);
    // Nothing returned, the ring is full: reclaim() changes nothing.
    REQUIRE_FALSE(e.reclaim());
    REQUIRE(a.map.free_ring()->head.load() == n / 2);
    counts(e, a);
    // The app takes 10: the engine tops the ring up again from its own.
    a.take(10);
    REQUIRE(a.free_ring.ready() == n / 2 - 10);
    counts(e, a);
    REQUIRE_FALSE(e.reclaim());  // frees nothing
    REQUIRE(a.map.free_ring()->head.load() == n / 2 + 10);
    REQUIRE(a.free_ring.ready() == n / 2);
    REQUIRE(e.engine_buffers() == n / 2 - 10);
    counts(e, a);
    // Every index the app sees is distinct.
    a.take_all();
    REQUIRE(a.held.size() == n / 2 + 10);
    std::vector<uint8_t> seen(n, 0);
    for (uint32_t b : a.held) {
      REQUIRE(b < n);
      REQUIRE(seen[b] == 0);
      seen[b] = 1;
    }
    counts(e, a);
    // Given back, they are the engine's again.
    a.give_back(a.held);
    a.held.clear();
    REQUIRE(e.pending());
    REQUIRE(e.reclaim());
    REQUIRE(e.stats().bad_returns.load() == 0);
    REQUIRE(e.engine_buffers() == n / 2);
    counts(e, a);
    audit(e, a);
  }
}

// --- TX ----------------------------------------------------------------------------

TEST_CASE("engine TX: messages of 0 B to 8 MiB reach the sink exactly") {
  for (const channel_params& p : {p_small, p_tiny_bufs, p_few_bufs}) {
    INFO("buf_count " << p.buf_count << " buf_size " << p.buf_size);
    channel_engine e(p, "test channel");
    app_side a(e);
    const uint32_t per = p.data_per_buf();
    uint64_t msgs = 0, bytes = 0;
    const std::vector<std::size_t> sizes{1, 0, 100, per, std::size_t(per) + 1, 100'000, 3 * std::size_t(per),
                                         max_message};
    uint32_t k = 0;
    for (std::size_t size : sizes) {
      INFO("message of " << size << " bytes");
      ++k;
      auto msg = pattern(size, k);
      auto chain = a.write(flow_of(k), msg);
      REQUIRE(chain.size() == p.bufs_for(size));
      counts(e, a, uint32_t(chain.size()));
      a.send(chain[0]);
      REQUIRE(e.pending());
      const uint32_t engine0 = e.engine_buffers();
      sent s;
      REQUIRE(e.pop_tx(s.sink()));
      REQUIRE(s.calls == 1);
      REQUIRE(s.flow == flow_of(k));
      REQUIRE(s.msg_len == size);
      REQUIRE(s.spans == chain.size());
      REQUIRE(s.bytes == msg);
      // The buffers are the engine's again.
      REQUIRE(e.engine_buffers() == engine0 + chain.size());
      counts(e, a);
      REQUIRE(e.stats().tx_messages.load() == ++msgs);
      REQUIRE(e.stats().tx_bytes.load() == (bytes += size));
      REQUIRE(e.stats().tx_rejected.load() == 0);
      REQUIRE(e.last_refusal() == tx_refusal::none);
      REQUIRE_FALSE(e.pop_tx(s.sink()));
      REQUIRE(s.calls == 1);
      REQUIRE_FALSE(e.pending());
      e.reclaim();
      counts(e, a);
    }
    audit(e, a);
  }
}

TEST_CASE("engine TX: queued messages come out in order, one per pop_tx") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  std::vector<std::vector<uint8_t>> msgs;
  std::size_t bufs = 0;
  for (uint32_t k = 0; k < 20; ++k) {
    msgs.push_back(pattern(k * 7000, 100 + k));
    auto c = a.write(flow_of(k), msgs.back());
    bufs += c.size();
    REQUIRE(a.tx_ring.push(c[0]));
  }
  a.tx_ring.publish();
  counts(e, a, uint32_t(bufs));
  for (uint32_t k = 0; k < 20; ++k) {
    sent s;
    REQUIRE(e.pop_tx(s.sink()));
    REQUIRE(s.flow == flow_of(k));
    REQUIRE(s.bytes == msgs[k]);
  }
  sent s;
  REQUIRE_FALSE(e.pop_tx(s.sink()));
  counts(e, a);
  REQUIRE(e.stats().tx_messages.load() == 20);
}

TEST_CASE("engine TX: a chain with short buffers in the middle is sent as it is") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  const uint32_t per = p_small.data_per_buf();
  auto c = a.use(3);
  auto b0 = pattern(per, 1), b1 = pattern(5, 2), b2 = pattern(per, 3);
  std::memcpy(a.map.data(c[0]), b0.data(), per);
  std::memcpy(a.map.data(c[1]), b1.data(), 5);
  std::memcpy(a.map.data(c[2]), b2.data(), per);
  a.link(c[0], per, c[1]);
  a.link(c[1], 5, c[2]);
  a.link(c[2], per, no_buffer);
  // 2 * per + 5 bytes take 3 buffers: nbufs matches, the sum matches.
  a.head_fields(c[0], 2 * per + 5, 3, flow_of(1), 0);
  a.send(c[0]);
  sent s;
  REQUIRE(e.pop_tx(s.sink()));
  REQUIRE(s.spans == 3);
  REQUIRE(s.msg_len == 2 * per + 5);
  std::vector<uint8_t> want(b0);
  want.insert(want.end(), b1.begin(), b1.end());
  want.insert(want.end(), b2.begin(), b2.end());
  REQUIRE(s.bytes == want);
  counts(e, a);
}

TEST_CASE("engine TX: a declined message stays the app's and comes first next time") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  auto m1 = pattern(70'000, 1), m2 = pattern(10, 2);
  auto c1 = a.write(flow_of(1), m1);
  auto c2 = a.write(flow_of(2), m2);
  a.send(c1[0]);
  a.send(c2[0]);
  const uint32_t in_flight = uint32_t(c1.size() + c2.size());
  sent s;
  s.accept = false;
  REQUIRE_FALSE(e.pop_tx(s.sink()));
  REQUIRE(s.calls == 1);
  REQUIRE(s.bytes == m1);
  counts(e, a, in_flight);
  REQUIRE(e.stats().tx_messages.load() == 0);
  REQUIRE(e.stats().tx_rejected.load() == 0);
  // Declined again: still the same one.
  REQUIRE_FALSE(e.pop_tx(s.sink()));
  REQUIRE(s.calls == 2);
  REQUIRE(s.bytes == m1);
  counts(e, a, in_flight);
  s.accept = true;
  REQUIRE(e.pop_tx(s.sink()));
  REQUIRE(s.bytes == m1);
  REQUIRE(s.flow == flow_of(1));
  counts(e, a, uint32_t(c2.size()));
  REQUIRE(e.pop_tx(s.sink()));
  REQUIRE(s.bytes == m2);
  REQUIRE(s.calls == 4);
  counts(e, a);
  REQUIRE(e.stats().tx_messages.load() == 2);
  audit(e, a);
}

TEST_CASE("engine TX: a declined message the app takes back is refused on retry") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  auto c = a.write(flow_of(1), pattern(40'000, 1));
  a.send(c[0]);
  sent s;
  s.accept = false;
  REQUIRE_FALSE(e.pop_tx(s.sink()));
  // The app (wrongly) returns the queued buffers: the engine takes them back
  // (the free ring is full, so they stay the engine's) and the retried head
  // is no longer the app's.
  e.reclaim();
  REQUIRE(a.free_ring.ready() == 512);
  a.give_back(c);
  REQUIRE(e.reclaim());
  REQUIRE(a.free_ring.ready() == 512);
  counts(e, a);
  s.accept = true;
  REQUIRE_FALSE(e.pop_tx(s.sink()));
  REQUIRE(s.calls == 1);
  REQUIRE(e.last_refusal() == tx_refusal::not_owned);
  REQUIRE(e.stats().tx_rejected.load() == 1);
  REQUIRE(e.stats().bad_returns.load() == 0);
  counts(e, a);
  audit(e, a);
}

TEST_CASE("engine TX: rewriting the chain during the sink does not change what is taken back") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  auto c = a.write(flow_of(1), pattern(50'000, 1));
  REQUIRE(c.size() == 2);
  auto spare = a.use(3);
  a.send(c[0]);
  sent s;
  auto inner = s.sink();
  bool ok = e.pop_tx([&](const flow_info& f, std::size_t len, std::span<const std::span<const uint8_t>> parts) {
    // The app relinks the chain through its other buffers meanwhile.
    a.link(c[1], 10, spare[0]);
    a.link(spare[0], 10, spare[1]);
    a.map.buffer(c[0])->nbufs = 5;
    return inner(f, len, parts);
  });
  REQUIRE(ok);
  REQUIRE(s.bytes == pattern(50'000, 1));
  // Exactly the two buffers of the message went back; the spares are the app's.
  counts(e, a, 3);
  a.give_back(spare);
  e.reclaim();
  REQUIRE(e.stats().bad_returns.load() == 0);
  audit(e, a);
}

TEST_CASE("engine TX: a throwing sink loses no buffers") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  auto c = a.write(flow_of(1), pattern(50'000, 1));
  a.send(c[0]);
  REQUIRE_THROWS_AS(e.pop_tx([](const flow_info&, std::size_t, std::span<const std::span<const uint8_t>>) -> bool {
                      throw std::runtime_error("transport out of memory");
                    }),
                    std::runtime_error);
  // Either the message is still the app's (retried) or its buffers are the
  // engine's: the audit finds every buffer exactly once.
  audit(e, a);
}

// --- RX ----------------------------------------------------------------------------

TEST_CASE("engine RX: messages of 0 B to 8 MiB reach the app exactly") {
  for (const channel_params& p : {p_small, p_tiny_bufs, p_few_bufs}) {
    INFO("buf_count " << p.buf_count << " buf_size " << p.buf_size);
    channel_engine e(p, "test channel");
    app_side a(e);
    const uint32_t per = p.data_per_buf();
    uint64_t msgs = 0, bytes = 0;
    const std::vector<std::size_t> sizes{1, 0, per, std::size_t(per) + 1, 100'000, max_message};
    uint32_t k = 0;
    for (std::size_t size : sizes) {
      INFO("message of " << size << " bytes");
      ++k;
      auto msg = pattern(size, k);
      const uint32_t engine0 = e.engine_buffers();
      REQUIRE(e.deliver(flow_of(k), msg));
      const uint32_t nb = p.bufs_for(size);
      REQUIRE(e.engine_buffers() == engine0 - nb);
      counts(e, a, nb);
      // Not visible before flush().
      REQUIRE(a.rx_ring.ready() == 0);
      e.flush();
      REQUIRE(a.rx_ring.ready() == 1);
      rx_msg r;
      REQUIRE(a.receive(r));
      REQUIRE(r.flow == flow_of(k));
      REQUIRE(r.msg_len == size);
      REQUIRE(r.nbufs == nb);
      REQUIRE(r.flags == 0);
      REQUIRE(r.bufs.size() == nb);
      REQUIRE(r.bytes == msg);
      REQUIRE(e.stats().rx_messages.load() == ++msgs);
      REQUIRE(e.stats().rx_bytes.load() == (bytes += size));
      counts(e, a, nb);
      a.give_back(r.bufs);
      counts(e, a, nb);
      REQUIRE(e.reclaim());
      REQUIRE(e.engine_buffers() == engine0);
      REQUIRE(e.stats().bad_returns.load() == 0);
      counts(e, a);
    }
    audit(e, a);
  }
}

TEST_CASE("engine RX: too few free buffers hold the delivery until the app returns some") {
  for (const channel_params& p : {p_small, p_tiny_bufs, p_few_bufs}) {
    INFO("buf_count " << p.buf_count << " buf_size " << p.buf_size);
    channel_engine e(p, "test channel");
    app_side a(e);
    const uint32_t n = p.buf_count, need = p.bufs_for(max_message);
    const auto big = pattern(max_message, 7);
    // The engine keeps n/2 buffers: as many 8 MiB messages as fit in them.
    const uint32_t fit = (n / 2) / need;
    REQUIRE(fit >= 1);
    for (uint32_t k = 0; k < fit; ++k) REQUIRE(e.deliver(flow_of(k), big));
    const uint32_t engine0 = e.engine_buffers();
    REQUIRE(engine0 == n / 2 - fit * need);
    // One more does not fit: nothing is taken, nothing queued.
    REQUIRE_FALSE(e.deliver(flow_of(99), big));
    REQUIRE(e.stats().rx_held.load() == 1);
    REQUIRE(e.stats().rx_messages.load() == fit);
    REQUIRE(e.engine_buffers() == engine0);
    counts(e, a, fit * need);
    // Larger than 8 MiB never fits: refused, nothing taken.
    REQUIRE_FALSE(e.deliver(flow_of(98), pattern(std::size_t(max_message) + 1, 8)));
    REQUIRE(e.engine_buffers() == engine0);
    REQUIRE(e.stats().rx_messages.load() == fit);
    e.flush();
    REQUIRE(a.rx_ring.ready() == fit);
    // The app consumes one and returns its buffers: now it fits.
    rx_msg r;
    REQUIRE(a.receive(r));
    REQUIRE(r.bytes == big);
    a.give_back(r.bufs);
    REQUIRE(e.reclaim());
    REQUIRE(e.engine_buffers() == engine0 + need);
    REQUIRE(e.deliver(flow_of(99), big));
    e.flush();
    counts(e, a, fit * need);
    for (uint32_t k = 1; k <= fit; ++k) {
      REQUIRE(a.receive(r));
      REQUIRE(r.flow == flow_of(k < fit ? k : 99));
      REQUIRE(r.bytes == big);
      a.give_back(r.bufs);
    }
    REQUIRE_FALSE(a.receive(r));
    REQUIRE(e.reclaim());
    REQUIRE(e.engine_buffers() == n / 2);
    counts(e, a);
    audit(e, a);
  }
}

TEST_CASE("engine RX: an rx tail that makes the ring look full holds deliveries") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  auto* rx = a.map.rx_ring();
  REQUIRE(e.deliver(flow_of(1), pattern(10, 1)));
  e.flush();
  const uint32_t head = rx->head.load();
  REQUIRE(head == 1);
  const uint32_t engine0 = e.engine_buffers();
  for (uint32_t lie : {head - 1024, head + 1, head + 5000, head - 1025}) {
    INFO("rx tail " << lie);
    rx->tail.store(lie);
    REQUIRE_FALSE(e.deliver(flow_of(2), pattern(10, 2)));
    REQUIRE(e.engine_buffers() == engine0);
  }
  REQUIRE(e.stats().rx_held.load() == 4);
  rx->tail.store(0);
  REQUIRE(e.deliver(flow_of(2), pattern(10, 2)));
  e.flush();
  rx_msg r;
  REQUIRE(a.receive(r));
  REQUIRE(r.flow == flow_of(1));
  REQUIRE(a.receive(r));
  REQUIRE(r.flow == flow_of(2));
  REQUIRE(r.bytes == pattern(10, 2));
  audit(e, a);
}

TEST_CASE("engine RX: a free-ring tail that lies never overfills or loses count") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  auto* fr = a.map.free_ring();
  const uint32_t head = fr->head.load();
  // Tail ahead of head, or a ring behind: room 0, nothing pushed.
  for (uint32_t lie : {head + 1, head + 100000, head - 1025, head - 1024}) {
    fr->tail.store(lie);
    REQUIRE_FALSE(e.reclaim());
    REQUIRE(fr->head.load() == head);
    REQUIRE(e.engine_buffers() == 512);
  }
  // Tail = head: the ring looks empty, the engine pushes another 512 (the
  // app loses track of the first 512, they stay its own).
  fr->tail.store(head);
  e.reclaim();
  REQUIRE(fr->head.load() == head + 512);
  REQUIRE(e.engine_buffers() == 0);
  REQUIRE(e.app_buffers() == 1024);
  // And nothing left to top up with.
  fr->tail.store(head + 512);
  e.reclaim();
  REQUIRE(fr->head.load() == head + 512);
  audit(e, a);
}

// --- hostile TX descriptors ----------------------------------------------------------

namespace {

// A channel whose app took every buffer off the free ring; the engine's
// buffers are then exactly those the app never saw.
struct hostile {
  channel_engine e{p_small, "hostile channel"};
  app_side a{e};
  const uint32_t per = p_small.data_per_buf();

  hostile() {
    a.take_all();
    counts(e, a);
  }
  uint32_t engine_owned() const {
    for (uint32_t i = 0; i < a.n; ++i)
      if (std::find(a.held.begin(), a.held.end(), i) == a.held.end()) return i;
    FAIL("no engine buffer");
    return 0;
  }
  // A chain of k app buffers holding `lens`, as written by a correct app.
  std::vector<uint32_t> chain(const std::vector<uint32_t>& lens) {
    auto c = a.use(uint32_t(lens.size()));
    uint32_t sum = 0;
    for (std::size_t j = 0; j < c.size(); ++j) {
      a.link(c[j], lens[j], j + 1 < c.size() ? c[j + 1] : no_buffer);
      sum += lens[j];
    }
    a.head_fields(c[0], sum, uint32_t(c.size()), flow_of(1), 0);
    return c;
  }
  // Pushes `head`; pop_tx must refuse it for `why`, never call the sink, and
  // take back exactly the app buffers of the chain (`in_chain`), which the
  // app forgets; everything else it holds stays its own.
  void refused(uint32_t head, tx_refusal why, const std::vector<uint32_t>& in_chain) {
    const uint32_t app0 = e.app_buffers();
    const uint64_t rejected0 = e.stats().tx_rejected.load(), refusals0 = e.refusals();
    a.send(head);
    sent s;
    REQUIRE_FALSE(e.pop_tx(s.sink()));
    REQUIRE(s.calls == 0);
    REQUIRE(e.last_refusal() == why);
    REQUIRE(e.stats().tx_rejected.load() == rejected0 + 1);
    REQUIRE(e.refusals() == refusals0 + 1);
    REQUIRE(e.stats().tx_messages.load() == 0);
    REQUIRE_FALSE(e.pending());
    REQUIRE(e.engine_buffers() + e.app_buffers() == a.n);
    CHECK(e.app_buffers() == app0 - in_chain.size());
    if (e.app_buffers() != app0 - in_chain.size()) return;  // leaked: the rest would fail on it
    after();
  }
  // The app still owns all it holds: a good message goes through, and every
  // held buffer comes back without a bad return.
  void after() {
    exchange(e, a, 50);
    const uint64_t bad0 = e.stats().bad_returns.load();
    const uint32_t held = uint32_t(a.held.size());
    const uint32_t engine0 = e.engine_buffers();
    a.give_back(a.held);
    a.held.clear();
    e.reclaim();
    CHECK(e.stats().bad_returns.load() == bad0);
    CHECK(e.engine_buffers() == engine0 + held);
    // Nothing leaked: all is the engine's but the topped-up free ring.
    CHECK(e.engine_buffers() == a.n - a.n / 2);
    CHECK(e.app_buffers() == a.holding());
    audit(e, a);
  }
};

}  // namespace

TEST_CASE("engine hostile TX: head index outside the pool") {
  for (uint32_t bad : {1024u, 1025u, 0x7fffffffu, no_buffer - 1, no_buffer}) {
    INFO("head " << bad);
    hostile h;
    h.refused(bad, tx_refusal::bad_index, {});
  }
}

TEST_CASE("engine hostile TX: index outside the pool in the middle of a chain") {
  hostile h;
  auto c = h.chain({h.per, h.per, h.per});
  h.a.link(c[1], h.per, 4096);  // c[2] is cut off: still the app's
  h.a.held.push_back(c[2]);
  h.refused(c[0], tx_refusal::bad_index, {c[0], c[1]});
}

TEST_CASE("engine hostile TX: head buffer the app does not own") {
  hostile h;
  const uint32_t b = h.engine_owned();
  h.a.link(b, 10, no_buffer);
  h.a.head_fields(b, 10, 1, flow_of(1), 0);
  h.refused(b, tx_refusal::not_owned, {});
}

TEST_CASE("engine hostile TX: buffer the app does not own in the middle of a chain") {
  hostile h;
  const uint32_t b = h.engine_owned();
  auto c = h.chain({h.per, 10});
  h.a.link(c[0], h.per, b);
  h.a.link(b, 10, no_buffer);
  h.a.held.push_back(c[1]);
  h.refused(c[0], tx_refusal::not_owned, {c[0]});
}

TEST_CASE("engine hostile TX: a buffer the app already returned, in a chain") {
  hostile h;
  // The app returns a buffer, then uses it in a message. (The free ring is
  // full first, so the returned buffer stays the engine's.)
  auto c = h.chain({h.per, 10});
  h.e.reclaim();
  REQUIRE(h.a.free_ring.ready() == 512);
  h.a.give_back({c[1]});
  REQUIRE(h.e.reclaim());
  REQUIRE(h.e.engine_buffers() == 1);
  h.refused(c[0], tx_refusal::not_owned, {c[0]});
}

TEST_CASE("engine hostile TX: a cycle back to the head") {
  hostile h;
  auto c = h.chain({h.per, h.per, h.per});
  h.a.link(c[2], h.per, c[0]);
  h.refused(c[0], tx_refusal::not_owned, {c[0], c[1], c[2]});
}

TEST_CASE("engine hostile TX: a buffer that points to itself") {
  hostile h;
  auto c = h.chain({h.per, 10});
  h.a.link(c[0], h.per, c[0]);  // c[1] is cut off: still the app's
  h.a.held.push_back(c[1]);
  h.refused(c[0], tx_refusal::not_owned, {c[0]});
}

TEST_CASE("engine hostile TX: a buffer listed twice in a chain") {
  hostile h;
  auto c = h.chain({h.per, h.per, h.per, h.per});
  // c0 -> c1 -> c2 -> c1: c3 is cut off.
  h.a.link(c[2], h.per, c[1]);
  h.a.held.push_back(c[3]);
  h.refused(c[0], tx_refusal::not_owned, {c[0], c[1], c[2]});
}

TEST_CASE("engine hostile TX: len larger than a buffer holds, last buffer") {
  hostile h;
  auto c = h.chain({h.per, 10});
  h.a.link(c[1], h.per + 1, no_buffer);
  h.refused(c[0], tx_refusal::bad_length, {c[0], c[1]});
}

TEST_CASE("engine hostile TX: len larger than a buffer holds, head of a chain") {
  hostile h;
  auto c = h.chain({h.per, 10});
  h.a.link(c[0], 0xffffffffu, c[1]);
  h.refused(c[0], tx_refusal::bad_length, {c[0], c[1]});
}

TEST_CASE("engine hostile TX: len larger than a buffer holds, middle of a chain") {
  hostile h;
  auto c = h.chain({h.per, h.per, h.per});
  h.a.link(c[1], h.per + 1, c[2]);
  h.refused(c[0], tx_refusal::bad_length, {c[0], c[1], c[2]});
}

TEST_CASE("engine hostile TX: lens that do not add up to msg_len") {
  SECTION("fewer bytes") {
    hostile h;
    auto c = h.chain({h.per, 10});
    h.a.head_fields(c[0], h.per + 11, 2, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_length, {c[0], c[1]});
  }
  SECTION("more bytes") {
    hostile h;
    auto c = h.chain({100});
    h.a.head_fields(c[0], 99, 1, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_length, {c[0]});
  }
}

TEST_CASE("engine hostile TX: msg_len larger than 8 MiB") {
  for (uint32_t len : {max_message + 1, 0xffffffffu}) {
    INFO("msg_len " << len);
    hostile h;
    auto c = h.chain({100});
    h.a.head_fields(c[0], len, p_small.bufs_for(len), flow_of(1), 0);
    h.refused(c[0], tx_refusal::too_large, {c[0]});
  }
}

TEST_CASE("engine hostile TX: nbufs that does not match the chain") {
  SECTION("nbufs 0") {
    hostile h;
    auto c = h.chain({10});
    h.a.head_fields(c[0], 10, 0, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_chain, {c[0]});
  }
  SECTION("nbufs 2 for a one-buffer message") {
    hostile h;
    auto c = h.chain({10});
    h.a.head_fields(c[0], 10, 2, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_chain, {c[0]});
  }
  SECTION("nbufs 1 for a two-buffer message") {
    hostile h;
    auto c = h.chain({h.per, 10});
    h.a.head_fields(c[0], h.per + 10, 1, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_chain, {c[0], c[1]});
  }
  SECTION("huge nbufs") {
    hostile h;
    auto c = h.chain({10});
    h.a.head_fields(c[0], 10, 0xffffffffu, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_chain, {c[0]});
  }
  SECTION("a chain longer than nbufs") {
    hostile h;
    // msg_len and nbufs agree (10 bytes, 1 buffer) but an empty buffer follows.
    auto c = h.chain({10, 0});
    h.a.head_fields(c[0], 10, 1, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_chain, {c[0], c[1]});
  }
  SECTION("a chain shorter than nbufs") {
    hostile h;
    auto c = h.chain({h.per, h.per});
    h.a.head_fields(c[0], 2 * h.per, 3, flow_of(1), 0);
    h.refused(c[0], tx_refusal::bad_chain, {c[0], c[1]});
  }
}

TEST_CASE("engine hostile TX: a flagged head") {
  for (uint32_t flags : {1u, 0x80000000u}) {
    INFO("flags " << flags);
    hostile h;
    auto c = h.chain({h.per, 10});
    h.a.head_fields(c[0], h.per + 10, 2, flow_of(1), flags);
    h.refused(c[0], tx_refusal::bad_chain, {c[0], c[1]});
  }
}

TEST_CASE("engine hostile TX: a bad descriptor is skipped, the next one is sent") {
  hostile h;
  auto bad = h.chain({10});
  h.a.head_fields(bad[0], 11, 1, flow_of(1), 0);
  auto msg = pattern(40'000, 3);
  auto good = h.a.write(flow_of(3), msg);
  REQUIRE(h.a.tx_ring.push(4096));
  REQUIRE(h.a.tx_ring.push(bad[0]));
  REQUIRE(h.a.tx_ring.push(good[0]));
  h.a.tx_ring.publish();
  sent s;
  REQUIRE(h.e.pop_tx(s.sink()));
  REQUIRE(s.calls == 1);
  REQUIRE(s.bytes == msg);
  REQUIRE(s.flow == flow_of(3));
  REQUIRE(h.e.stats().tx_rejected.load() == 2);
  REQUIRE(h.e.last_refusal() == tx_refusal::bad_length);
  REQUIRE(h.e.stats().tx_messages.load() == 1);
  counts(h.e, h.a);
  REQUIRE_FALSE(h.e.pop_tx(s.sink()));
  h.after();
}

// --- bad returns -------------------------------------------------------------------

TEST_CASE("engine: returns of buffers the app does not own are counted and ignored") {
  hostile h;
  const uint32_t mine = h.a.held.back();
  const uint32_t theirs = h.engine_owned();
  const uint32_t engine0 = h.e.engine_buffers();
  h.a.held.pop_back();
  h.a.give_back({1024, theirs, mine, mine, no_buffer, 0x80000000u, theirs});
  counts(h.e, h.a, 1);
  REQUIRE(h.e.reclaim());
  REQUIRE(h.e.stats().bad_returns.load() == 6);
  REQUIRE(h.e.engine_buffers() == engine0 + 1 - 512);  // topped up the free ring
  REQUIRE(h.a.free_ring.ready() == 512);
  REQUIRE(h.e.stats().tx_rejected.load() == 0);
  counts(h.e, h.a);
  h.after();
}

// --- fuzz --------------------------------------------------------------------------

namespace {

// The words each side publishes. The engine never reads back its own: the
// fuzz scribbles them around engine calls and puts back what it saw unless
// the engine published meanwhile, so the app's view stays the engine's.
struct fuzz {
  std::mt19937_64 rng;
  channel_engine e;
  app_side a;
  const uint32_t n, per, max_bufs, ctrl_slots;
  bool stale[6] = {};     // app cursor rewritten: free, rx, cq, tx, ret, sq
  uint32_t honest[6] = {};  // what the app had published there
  uint64_t ctrl_id = 0, tx_ok = 0, rx_ok = 0, ctrl_ok = 0;
  std::vector<uint8_t> scratch;

  fuzz(uint64_t seed, const channel_params& p)
      : rng(seed),
        e(p, "fuzz channel"),
        a(e),
        n(p.buf_count),
        per(p.data_per_buf()),
        max_bufs(p.bufs_for(max_message)),
        ctrl_slots(p.ctrl_slots),
        scratch(pattern(3 * std::size_t(p.data_per_buf()), uint32_t(seed))) {}

  uint64_t r(uint64_t m) { return rng() % m; }
  uint32_t r32() { return uint32_t(rng()); }

  std::atomic<uint32_t>* app_word(int k) {
    channel_map& m = a.map;
    switch (k) {
      case 0: return &m.free_ring()->tail;
      case 1: return &m.rx_ring()->tail;
      case 2: return &m.ctrl_cq()->tail;
      case 3: return &m.tx_ring()->head;
      case 4: return &m.ret_ring()->head;
      default: return &m.ctrl_sq()->head;
    }
  }
  std::atomic<uint32_t>* engine_word(int k) {
    channel_map& m = a.map;
    switch (k) {
      case 0: return &m.free_ring()->head;
      case 1: return &m.rx_ring()->head;
      case 2: return &m.ctrl_cq()->head;
      case 3: return &m.tx_ring()->tail;
      case 4: return &m.ret_ring()->tail;
      default: return &m.ctrl_sq()->tail;
    }
  }
  // Before the app uses a ring whose cursor it lied about, it publishes its
  // own cursor again if that still makes sense against the engine's, else it
  // takes the engine's as the truth (what it had queued is lost to it).
  void fresh(int k) {
    if (!stale[k]) return;
    stale[k] = false;
    const uint32_t slots = (k == 2 || k == 5) ? ctrl_slots : n;
    const uint32_t theirs = engine_word(k)->load();
    const uint32_t gap = k < 3 ? theirs - honest[k] : honest[k] - theirs;
    if (gap <= slots) {
      app_word(k)->store(honest[k]);
      return;
    }
    channel_map& m = a.map;
    switch (k) {
      case 0:
        m.free_ring()->tail.store(m.free_ring()->head.load());
        a.free_ring = {m.free_ring(), n};
        break;
      case 1:
        m.rx_ring()->tail.store(m.rx_ring()->head.load());
        a.rx_ring = {m.rx_ring(), n};
        break;
      case 2:
        m.ctrl_cq()->tail.store(m.ctrl_cq()->head.load());
        a.ctrl_cq = {m.ctrl_cq(), ctrl_slots};
        break;
      case 3:
        m.tx_ring()->head.store(m.tx_ring()->tail.load());
        a.tx_ring = {m.tx_ring(), n};
        break;
      case 4:
        m.ret_ring()->head.store(m.ret_ring()->tail.load());
        a.ret_ring = {m.ret_ring(), n};
        break;
      default:
        m.ctrl_sq()->head.store(m.ctrl_sq()->tail.load());
        a.ctrl_sq = {m.ctrl_sq(), ctrl_slots};
        break;
    }
  }

  uint32_t some_index() {
    switch (r(8)) {
      case 0: return no_buffer;
      case 1: return n + uint32_t(r(3));
      case 2: return r32();
      case 3:
      case 4:
        if (!a.held.empty()) return a.held[r(a.held.size())];
        [[fallthrough]];
      default: return uint32_t(r(n));
    }
  }
  uint32_t some_len() {
    switch (r(6)) {
      case 0: return 0;
      case 1: return per;
      case 2: return per + 1;
      case 3: return r32();
      default: return uint32_t(r(per));
    }
  }
  uint32_t some_cursor(uint32_t near, uint32_t slots) {
    switch (r(4)) {
      case 0: return r32();
      case 1: return near + uint32_t(r(4)) - 2;
      default: return near + uint32_t(r(2 * slots + 4)) - 2 - slots;
    }
  }

  // Pops free buffers until `held` has k (false if it cannot).
  bool fill(uint32_t k) {
    fresh(0);
    uint32_t b = 0;
    while (a.held.size() < k && a.free_ring.pop(b))
      if (b < n) a.held.push_back(b);
    a.free_ring.publish();
    return a.held.size() >= k;
  }

  // A valid message from held buffers, sometimes with one field broken.
  void app_send() {
    uint32_t len;
    switch (r(10)) {
      case 0: len = uint32_t(r(3 * std::size_t(per) + 1)); break;
      case 1: len = per * uint32_t(1 + r(3)); break;
      default: len = uint32_t(r(300)); break;
    }
    const uint32_t k = a.map.params().bufs_for(len);
    if (!fill(k)) return;
    std::vector<uint32_t> c(a.held.end() - k, a.held.end());
    a.held.resize(a.held.size() - k);
    uint32_t off = 0;
    for (uint32_t j = 0; j < k; ++j) {
      const uint32_t l = std::min(per, len - off);
      if (l) std::memcpy(a.map.data(c[j]), scratch.data() + off, std::min<uint32_t>(l, 64));
      a.link(c[j], l, j + 1 < k ? c[j + 1] : no_buffer);
      off += l;
    }
    a.head_fields(c[0], len, k, flow_of(uint32_t(r(4))), 0);
    if (r(5) == 0) {
      buf_hdr* h = a.map.buffer(c[r(k)]);
      switch (r(6)) {
        case 0: h->next = some_index(); break;
        case 1: h->len = some_len(); break;
        case 2: a.map.buffer(c[0])->msg_len = r(2) ? r32() : len + uint32_t(r(3)) - 1; break;
        case 3: a.map.buffer(c[0])->nbufs = uint32_t(r(max_bufs + 3)); break;
        case 4: a.map.buffer(c[0])->flags = r32(); break;
        default: h->next = c[r(k)]; break;
      }
    }
    fresh(3);
    if (a.tx_ring.push(r(20) == 0 ? some_index() : c[0])) a.tx_ring.publish();
  }

  // Consumes RX messages and returns their buffers (walking at most nbufs).
  void app_receive() {
    fresh(1);
    fresh(4);
    uint32_t head = 0;
    for (int m = 0; m < 4 && a.rx_ring.pop(head); ++m) {
      uint32_t i = head, steps = 0;
      const uint32_t nb = head < n ? std::min(a.map.buffer(head)->nbufs, max_bufs) : 0;
      while (i < n && steps < nb) {
        if (!a.ret_ring.push(i)) break;
        i = a.map.buffer(i)->next;
        ++steps;
      }
    }
    a.rx_ring.publish();
    a.ret_ring.publish();
  }

  void app_return_held() {
    fresh(4);
    // Keeps a few for sending.
    uint32_t k = a.held.size() > 8 ? uint32_t(a.held.size() - 8) : 0;
    while (k-- > 0 && a.ret_ring.push(a.held.back())) a.held.pop_back();
    a.ret_ring.publish();
  }

  void app_ctrl() {
    fresh(5);
    fresh(2);
    ctrl_req q{};
    q.id = ++ctrl_id;
    q.op = ctrl_op(r(5));
    q.local_port = uint16_t(r32());
    if (a.ctrl_sq.push(q)) a.ctrl_sq.publish();
    ctrl_resp resp{};
    while (a.ctrl_cq.pop(resp)) {
    }
    a.ctrl_cq.publish();
  }

  void garbage() {
    channel_map& m = a.map;
    switch (r(6)) {
      case 0: {  // an app cursor
        const int k = int(r(6));
        const uint32_t slots = (k == 2 || k == 5) ? ctrl_slots : n;
        std::atomic<uint32_t>* w = app_word(k);
        if (!stale[k]) honest[k] = w->load();
        w->store(some_cursor(engine_word(k)->load(), slots));
        stale[k] = true;
        break;
      }
      case 1: {  // a slot of an index ring
        ring_shared<uint32_t>* rings[4] = {m.free_ring(), m.ret_ring(), m.tx_ring(), m.rx_ring()};
        auto* s = reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(rings[r(4)]) +
                                              ring_shared<uint32_t>::offsetof_slot());
        s[r(n)] = some_index();
        break;
      }
      case 2: {  // a slot of a control ring
        const bool sq = r(2);
        uint8_t* base = sq ? reinterpret_cast<uint8_t*>(m.ctrl_sq()) : reinterpret_cast<uint8_t*>(m.ctrl_cq());
        const std::size_t size = sq ? sizeof(ctrl_req) : sizeof(ctrl_resp);
        uint8_t* slot = base + ring_shared<ctrl_req>::offsetof_slot() + r(ctrl_slots) * size;
        for (std::size_t j = 0; j < size; ++j) slot[j] = uint8_t(r32());
        break;
      }
      case 3: {  // a whole buffer header
        buf_hdr* h = m.buffer(uint32_t(r(n)));
        auto* bytes = reinterpret_cast<uint8_t*>(h);
        for (uint32_t j = 0; j < buf_hdr_size; ++j) bytes[j] = uint8_t(r32());
        break;
      }
      case 4: {  // one field of a buffer header
        buf_hdr* h = m.buffer(some_index() % n);
        switch (r(5)) {
          case 0: h->next = some_index(); break;
          case 1: h->len = some_len(); break;
          case 2: h->msg_len = r(2) ? r32() : uint32_t(r(max_message + 2)); break;
          case 3: h->nbufs = r(2) ? r32() : uint32_t(r(max_bufs + 2)); break;
          default: h->flags = uint32_t(r(3)); break;
        }
        break;
      }
      default: {  // the sleep words
        std::atomic<uint32_t>* w[3] = {&m.header().app_sleeping, &m.header().engine_sleeping,
                                       &m.header().closed};
        w[r(3)]->store(r(3) == 0 ? r32() : uint32_t(r(2)));
        break;
      }
    }
  }

  // Every span the sink sees lies in the data of one buffer of the pool.
  bool sink(const flow_info&, std::size_t len, std::span<const std::span<const uint8_t>> parts) {
    const uint8_t* base = e.map().data(0);
    const std::size_t stride = e.map().params().buf_size;
    std::size_t total = 0;
    REQUIRE(parts.size() >= 1);
    REQUIRE(parts.size() <= max_bufs);
    for (auto sp : parts) {
      REQUIRE(sp.data() >= base);
      const std::size_t off = std::size_t(sp.data() - base);
      REQUIRE(off % stride == 0);
      REQUIRE(off / stride < n);
      REQUIRE(sp.size() <= per);
      if (!sp.empty()) {
        volatile uint8_t first = sp.front(), last = sp.back();
        (void)first;
        (void)last;
      }
      total += sp.size();
    }
    REQUIRE(total == len);
    REQUIRE(len <= max_message);
    ++tx_ok;
    return r(8) != 0;  // sometimes the flow's queue is full
  }

  void engine_op() {
    struct saved {
      std::atomic<uint32_t>* w;
      uint32_t old, junk;
    };
    std::vector<saved> lies;
    if (r(4) == 0) {
      for (int k = 0; k < 6; ++k) {
        if (r(2)) continue;
        std::atomic<uint32_t>* w = engine_word(k);
        const uint32_t old = w->load();
        // Far from anything the engine could publish during one call.
        const uint32_t junk = old ^ (0x80000000u | uint32_t(r(1u << 24)));
        w->store(junk);
        lies.push_back({w, old, junk});
      }
    }
    switch (r(9)) {
      case 0:
      case 1: e.reclaim(); break;
      case 2:
      case 3:
        for (int k = 0; k < 3; ++k)
          if (!e.pop_tx([this](const flow_info& f, std::size_t len, std::span<const std::span<const uint8_t>> p) {
                return sink(f, len, p);
              }))
            break;
        break;
      case 4: {
        std::size_t size = r(10) == 0 ? r(2 * std::size_t(per) + 10) : r(200);
        if (size > scratch.size()) size = scratch.size();
        if (e.deliver(flow_of(uint32_t(r(4))), std::span<const uint8_t>(scratch.data(), size))) ++rx_ok;
        break;
      }
      case 5: {
        ctrl_req q;
        for (int k = 0; k < 2 && e.pop_ctrl(q); ++k) {
          e.complete(ctrl_resp{q.id, int32_t(r(2)), flow_of(1)});
          ++ctrl_ok;
        }
        break;
      }
      case 6: e.flush(); break;
      case 7:
        if (e.enter_sleep()) REQUIRE_FALSE(e.pending());
        e.leave_sleep();
        break;
      default:
        (void)e.pending();
        e.complete(ctrl_resp{0, 0, {}});
        break;
    }
    for (const saved& s : lies)
      if (s.w->load() == s.junk) s.w->store(s.old);
    REQUIRE(e.engine_buffers() <= n);
    REQUIRE(e.engine_buffers() + e.app_buffers() == n);
  }

  void run(uint64_t iterations) {
    for (uint64_t it = 0; it < iterations; ++it) {
      switch (r(10)) {
        case 0:
        case 1: app_send(); break;
        case 2:
        case 3: app_receive(); break;
        case 4: app_return_held(); break;
        case 5: app_ctrl(); break;
        case 6:
        case 7: garbage(); break;
        default: break;
      }
      engine_op();
      if (a.held.size() > n) a.held.resize(n);
      if ((it + 1) % 10000 == 0) {
        INFO("audit after iteration " << it);
        audit(e, a);
        for (bool& s : stale) s = false;
        exchange(e, a, uint32_t(it));
      }
    }
    audit(e, a);
    exchange(e, a, 7);
    audit(e, a);
  }
};

std::vector<uint64_t> fuzz_seeds(std::vector<uint64_t> defaults) {
  if (const char* s = std::getenv("MACHNET_SHM_FUZZ_SEED")) return {std::strtoull(s, nullptr, 0)};
  return defaults;
}

void fuzz_with(const channel_params& p, std::vector<uint64_t> seeds) {
  for (uint64_t seed : fuzz_seeds(std::move(seeds))) {
    WARN("fuzz seed " << seed << " (set MACHNET_SHM_FUZZ_SEED to repeat one)");
    INFO("fuzz seed " << seed);
    fuzz f(seed, p);
    f.run(100'000);
    // The traffic was not all garbage.
    WARN("sink calls " << f.tx_ok << ", deliveries " << f.rx_ok << ", control answers " << f.ctrl_ok
                       << ", refused " << f.e.stats().tx_rejected.load() << ", bad returns "
                       << f.e.stats().bad_returns.load() << ", rx held " << f.e.stats().rx_held.load());
    CHECK(f.tx_ok > 1000);
    CHECK(f.rx_ok > 1000);
    CHECK(f.ctrl_ok > 100);
    CHECK(f.e.stats().tx_rejected.load() > 100);
    CHECK(f.e.stats().bad_returns.load() > 100);
  }
}

}  // namespace

TEST_CASE("engine fuzz: garbage everywhere the app writes, 128 x 256 KiB") {
  fuzz_with(params(128, 256 * 1024, 4), {1, 2});
}

TEST_CASE("engine fuzz: garbage everywhere the app writes, 64 x 1 MiB") {
  fuzz_with(p_few_bufs, {3, 0x5eed});
}

TEST_CASE("engine fuzz: garbage everywhere the app writes, 1024 x 32 KiB") {
  fuzz_with(p_small, {4});
}

// --- control queue -------------------------------------------------------------------

TEST_CASE("engine control: requests come out in order, answers appear at flush") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  ctrl_req q{};
  REQUIRE_FALSE(e.pop_ctrl(q));
  for (uint64_t id = 1; id <= 3; ++id) {
    ctrl_req r{};
    r.id = id;
    r.op = ctrl_op::connect;
    r.local_ip = 0;
    r.remote_ip = 0x0a000002u;
    r.local_port = 0;
    r.remote_port = uint16_t(7000 + id);
    r.flow = flow_of(uint32_t(id));
    REQUIRE(a.ctrl_sq.push(r));
  }
  REQUIRE_FALSE(e.pending());  // not published yet
  a.ctrl_sq.publish();
  REQUIRE(e.pending());
  for (uint64_t id = 1; id <= 3; ++id) {
    REQUIRE(e.pop_ctrl(q));
    REQUIRE(q.id == id);
    REQUIRE(q.op == ctrl_op::connect);
    REQUIRE(q.remote_ip == 0x0a000002u);
    REQUIRE(uint64_t(q.remote_port) == 7000 + id);
    REQUIRE(q.flow == flow_of(uint32_t(id)));
  }
  REQUIRE_FALSE(e.pop_ctrl(q));
  REQUIRE_FALSE(e.pending());
  REQUIRE(a.map.ctrl_sq()->tail.load() == 3);
  e.complete(ctrl_resp{2, 0, flow_of(9)});
  e.complete(ctrl_resp{1, 111, {}});
  REQUIRE(a.ctrl_cq.ready() == 0);
  e.flush();
  REQUIRE(a.ctrl_cq.ready() == 2);
  ctrl_resp r{};
  REQUIRE(a.ctrl_cq.pop(r));
  REQUIRE(r.id == 2);
  REQUIRE(r.status == 0);
  REQUIRE(r.flow == flow_of(9));
  REQUIRE(a.ctrl_cq.pop(r));
  REQUIRE(r.id == 1);
  REQUIRE(r.status == 111);
  REQUIRE_FALSE(a.ctrl_cq.pop(r));
  a.ctrl_cq.publish();
  counts(e, a);
}

TEST_CASE("engine control: answers to an app that stops reading are dropped, not overwritten") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  const uint64_t refusals0 = e.refusals();
  for (uint64_t id = 0; id < 16 + 3; ++id) e.complete(ctrl_resp{id, 0, {}});
  e.flush();
  REQUIRE(e.refusals() == refusals0 + 3);
  REQUIRE(a.ctrl_cq.ready() == 16);
  ctrl_resp r{};
  for (uint64_t id = 0; id < 16; ++id) {
    REQUIRE(a.ctrl_cq.pop(r));
    REQUIRE(r.id == id);
  }
  a.ctrl_cq.publish();
  e.complete(ctrl_resp{77, 0, {}});
  e.flush();
  REQUIRE(a.ctrl_cq.pop(r));
  REQUIRE(r.id == 77);
}

// --- doorbells and sleep ---------------------------------------------------------------

TEST_CASE("engine doorbell: flush wakes a sleeping app, not an awake one") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  const int bell = e.app_doorbell();
  REQUIRE(bell >= 0);
  REQUIRE_FALSE(readable(bell));
  // Awake: nothing rung.
  REQUIRE(e.deliver(flow_of(1), pattern(10, 1)));
  e.flush();
  REQUIRE_FALSE(readable(bell));
  REQUIRE(a.rx_ring.ready() == 1);
  // Asleep: rung at flush, not at deliver.
  a.map.header().app_sleeping.store(1);
  REQUIRE(e.deliver(flow_of(2), pattern(10, 2)));
  REQUIRE_FALSE(readable(bell));
  e.flush();
  REQUIRE(readable(bell));
  REQUIRE(drain(bell) == 1);
  REQUIRE_FALSE(readable(bell));
  // A flush with nothing new rings nothing.
  e.flush();
  REQUIRE_FALSE(readable(bell));
  // Control answers ring it too.
  e.complete(ctrl_resp{5, 0, {}});
  REQUIRE_FALSE(readable(bell));
  e.flush();
  REQUIRE(readable(bell));
  REQUIRE(drain(bell) == 1);
  // Awake again.
  a.map.header().app_sleeping.store(0);
  REQUIRE(e.deliver(flow_of(3), pattern(10, 3)));
  e.complete(ctrl_resp{6, 0, {}});
  e.flush();
  REQUIRE_FALSE(readable(bell));
  REQUIRE(a.rx_ring.ready() == 3);
  REQUIRE(a.ctrl_cq.ready() == 2);
}

TEST_CASE("engine sleep: enter_sleep refuses while work is pending") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  channel_header& h = a.map.header();
  REQUIRE(h.engine_sleeping.load() == 0);
  REQUIRE(e.enter_sleep());
  REQUIRE(h.engine_sleeping.load() == 1);
  e.leave_sleep();
  REQUIRE(h.engine_sleeping.load() == 0);
  SECTION("tx pending") {
    auto c = a.write(flow_of(1), pattern(10, 1));
    a.send(c[0]);
    REQUIRE_FALSE(e.enter_sleep());
    e.leave_sleep();
    sent s;
    REQUIRE(e.pop_tx(s.sink()));
  }
  SECTION("a control request pending") {
    ctrl_req q{};
    q.id = 1;
    REQUIRE(a.ctrl_sq.push(q));
    a.ctrl_sq.publish();
    REQUIRE_FALSE(e.enter_sleep());
    e.leave_sleep();
    REQUIRE(e.pop_ctrl(q));
  }
  SECTION("returned buffers pending") {
    a.take(1);
    a.give_back(a.held);
    a.held.clear();
    REQUIRE_FALSE(e.enter_sleep());
    e.leave_sleep();
    REQUIRE(e.reclaim());
  }
  // Nothing left: it may sleep.
  REQUIRE(e.enter_sleep());
  REQUIRE(h.engine_sleeping.load() == 1);
  e.leave_sleep();
  REQUIRE(h.engine_sleeping.load() == 0);
  counts(e, a);
}

TEST_CASE("engine sleep: leave_sleep drains the engine doorbell") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  const int bell = e.engine_doorbell();
  REQUIRE(bell >= 0);
  REQUIRE(bell != e.app_doorbell());
  REQUIRE(e.enter_sleep());
  REQUIRE(a.map.header().engine_sleeping.load() == 1);
  // The app queues and rings, as it does when it reads engine_sleeping == 1.
  auto c = a.write(flow_of(1), pattern(10, 1));
  a.send(c[0]);
  uint64_t one = 1;
  REQUIRE(::write(bell, &one, sizeof one) == ssize_t(sizeof one));
  REQUIRE(::write(bell, &one, sizeof one) == ssize_t(sizeof one));
  REQUIRE(readable(bell));
  e.leave_sleep();
  REQUIRE_FALSE(readable(bell));
  REQUIRE(a.map.header().engine_sleeping.load() == 0);
  // Draining an empty doorbell is harmless.
  e.leave_sleep();
  REQUIRE_FALSE(readable(bell));
  sent s;
  REQUIRE(e.pop_tx(s.sink()));
}

TEST_CASE("engine shut: sets closed and wakes the app") {
  channel_engine e(p_small, "test channel");
  app_side a(e);
  REQUIRE(a.map.header().closed.load() == 0);
  REQUIRE_FALSE(readable(e.app_doorbell()));
  e.shut();
  REQUIRE(a.map.header().closed.load() == 1);
  REQUIRE(readable(e.app_doorbell()));
  REQUIRE(drain(e.app_doorbell()) == 1);
}
