// channel_engine: machnetd's side of a shared-memory channel — buffer
// ownership, descriptor validation, copies in and out, control queue, doorbells.
#include "machnet/net/shm/channel_engine.hh"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace machnet::shm {

const char* to_string(tx_refusal r) noexcept {
  switch (r) {
    case tx_refusal::none: return "none";
    case tx_refusal::bad_index: return "buffer index outside the pool";
    case tx_refusal::not_owned: return "buffer not held by the app";
    case tx_refusal::bad_length: return "bad buffer or message length";
    case tx_refusal::too_large: return "message larger than 8 MiB";
    case tx_refusal::bad_chain: return "chain does not match its header";
  }
  return "?";
}

channel_engine::channel_engine(const channel_params& p, const char* name)
    : _map(channel_map::create(p, name)) {
  _engine_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  _app_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (_engine_fd < 0 || _app_fd < 0) {
    int e = errno;
    if (_engine_fd >= 0) ::close(_engine_fd);
    if (_app_fd >= 0) ::close(_app_fd);
    throw std::system_error(e, std::generic_category(), "channel eventfd");
  }
  const uint32_t n = p.buf_count;
  _app_owned.assign(n, 0);
  _free.reserve(n);
  for (uint32_t i = n; i-- > 0;) _free.push_back(i);  // LIFO: low indices first
  _chain.reserve(p.bufs_for(max_message) + 1);
  _spans.reserve(p.bufs_for(max_message) + 1);
  _free_ring = {_map.free_ring(), n};
  _rx_ring = {_map.rx_ring(), n};
  _ret_ring = {_map.ret_ring(), n};
  _tx_ring = {_map.tx_ring(), n};
  _ctrl_sq = {_map.ctrl_sq(), p.ctrl_slots};
  _ctrl_cq = {_map.ctrl_cq(), p.ctrl_slots};
  _free_target = n / 2;
  reclaim();  // fills the free ring
}

channel_engine::~channel_engine() {
  ::close(_engine_fd);
  ::close(_app_fd);
}

void channel_engine::give_back(uint32_t i) noexcept {
  if (i < _app_owned.size() && _app_owned[i]) {
    _app_owned[i] = 0;
    _free.push_back(i);
  } else {
    stats().bad_returns.fetch_add(1, std::memory_order_relaxed);
    ++_refusals;
  }
}

bool channel_engine::reclaim() {
  bool freed = false;
  uint32_t i;
  while (_ret_ring.pop(i)) {
    give_back(i);
    freed = true;
  }
  if (freed) _ret_ring.publish();
  // Top the app's free ring up to its target. The ring's fill as the app sees
  // it is unknown (a hostile app may lie): room() bounds what we push.
  const uint32_t slots = _map.ring_slots();
  uint32_t in_ring = slots - _free_ring.room();
  bool pushed = false;
  while (in_ring < _free_target && !_free.empty()) {
    uint32_t b = _free.back();
    if (!_free_ring.push(b)) break;
    _free.pop_back();
    _app_owned[b] = 1;
    ++in_ring;
    pushed = true;
  }
  if (pushed) {
    _free_ring.publish();
    _produced = true;  // a sender short of buffers may sleep: flush() wakes it
  }
  return freed;
}

void channel_engine::refuse(tx_refusal r) noexcept {
  _last_refusal = r;
  ++_refusals;
  stats().tx_rejected.fetch_add(1, std::memory_order_relaxed);
}

bool channel_engine::pop_tx(const tx_sink& sink) {
  uint32_t head;
  // Bounded: an app feeding garbage from another thread cannot keep us here.
  for (uint32_t tries = 0; tries < _map.ring_slots(); ++tries) {
    if (_retry != no_buffer) {
      head = _retry;
      _retry = no_buffer;
    } else {
      if (!_tx_ring.pop(head)) return false;
      _tx_ring.publish();
    }
    const channel_params& p = _map.params();
    const uint32_t per_buf = p.data_per_buf();
    const uint32_t max_bufs = p.bufs_for(max_message);
    _chain.clear();
    _spans.clear();
    tx_refusal why = tx_refusal::none;
    // Snapshot the head fields once: the app may rewrite them under us.
    uint32_t msg_len = 0, nbufs = 0, hflags = 0;
    flow_info flow{};
    if (head >= p.buf_count) {
      why = tx_refusal::bad_index;
    } else if (!_app_owned[head]) {
      why = tx_refusal::not_owned;
    } else {
      const buf_hdr* h = _map.buffer(head);
      msg_len = __atomic_load_n(&h->msg_len, __ATOMIC_RELAXED);
      nbufs = __atomic_load_n(&h->nbufs, __ATOMIC_RELAXED);
      hflags = __atomic_load_n(&h->flags, __ATOMIC_RELAXED);
      std::memcpy(&flow, &h->flow, sizeof flow);
      if (msg_len > max_message) why = tx_refusal::too_large;
      else if (hflags != 0 || nbufs == 0 || nbufs > max_bufs || nbufs != p.bufs_for(msg_len))
        why = tx_refusal::bad_chain;
    }
    uint64_t total = 0;
    uint32_t i = head;
    uint32_t rest = head;  // where a refused chain continues (for reclaiming)
    while (why == tx_refusal::none) {
      rest = i;
      if (i >= p.buf_count) { why = tx_refusal::bad_index; break; }
      if (!_app_owned[i]) { why = tx_refusal::not_owned; break; }
      if (_chain.size() == nbufs) { why = tx_refusal::bad_chain; break; }
      // Take it now: a buffer listed twice is then "not owned" the second time.
      _app_owned[i] = 0;
      _chain.push_back(i);
      const buf_hdr* b = _map.buffer(i);
      uint32_t len = __atomic_load_n(&b->len, __ATOMIC_RELAXED);
      uint32_t next = __atomic_load_n(&b->next, __ATOMIC_RELAXED);
      rest = next;
      if (len > per_buf) { why = tx_refusal::bad_length; break; }
      _spans.emplace_back(_map.data(i), len);
      total += len;
      if (next == no_buffer) break;
      i = next;
    }
    // A refused chain: take back the rest of it too (every buffer the app
    // owns, up to the end, a bad index or one it does not own). Each step
    // takes a buffer, so this ends within buf_count steps.
    if (why != tx_refusal::none) {
      while (rest < p.buf_count && _app_owned[rest]) {
        _app_owned[rest] = 0;
        _chain.push_back(rest);
        rest = __atomic_load_n(&_map.buffer(rest)->next, __ATOMIC_RELAXED);
      }
    }
    if (why == tx_refusal::none && (_chain.size() != nbufs || total != msg_len))
      why = total != msg_len ? tx_refusal::bad_length : tx_refusal::bad_chain;
    if (why == tx_refusal::none) {
      // The app may still scribble on the bytes while we copy: its own message.
      bool taken;
      try {
        taken = sink(flow, msg_len, std::span<const std::span<const uint8_t>>(_spans));
      } catch (...) {
        for (uint32_t b : _chain) _app_owned[b] = 1;  // still the app's, still queued
        _retry = head;
        throw;
      }
      if (!taken) {
        for (uint32_t b : _chain) _app_owned[b] = 1;  // still the app's, still queued
        _retry = head;
        return false;
      }
      stats().tx_messages.fetch_add(1, std::memory_order_relaxed);
      stats().tx_bytes.fetch_add(msg_len, std::memory_order_relaxed);
    } else {
      refuse(why);
    }
    for (uint32_t b : _chain) _free.push_back(b);  // taken back above
    if (why == tx_refusal::none) return true;
  }
  return false;
}

bool channel_engine::deliver(const flow_info& f, std::span<const uint8_t> bytes) {
  const channel_params& p = _map.params();
  if (bytes.size() > max_message) return false;
  const uint32_t need = p.bufs_for(bytes.size());
  if (_free.size() < need || _rx_ring.room() == 0) {
    stats().rx_held.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const uint32_t per_buf = p.data_per_buf();
  uint32_t head = no_buffer, prev = no_buffer;
  std::size_t off = 0;
  for (uint32_t k = 0; k < need; ++k) {
    uint32_t b = _free.back();
    _free.pop_back();
    std::size_t n = std::min<std::size_t>(per_buf, bytes.size() - off);
    if (n) std::memcpy(_map.data(b), bytes.data() + off, n);
    off += n;
    buf_hdr* h = _map.buffer(b);
    h->len = uint32_t(n);
    h->next = no_buffer;
    if (prev != no_buffer) _map.buffer(prev)->next = b;
    else head = b;
    prev = b;
    _app_owned[b] = 1;
  }
  buf_hdr* h = _map.buffer(head);
  h->msg_len = uint32_t(bytes.size());
  h->nbufs = need;
  h->flow = f;
  h->flags = 0;
  _rx_ring.push(head);
  _produced = true;
  stats().rx_messages.fetch_add(1, std::memory_order_relaxed);
  stats().rx_bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
  return true;
}

bool channel_engine::pop_ctrl(ctrl_req& r) {
  if (!_ctrl_sq.pop(r)) return false;
  _ctrl_sq.publish();
  return true;
}

void channel_engine::complete(const ctrl_resp& r) {
  // The app waits for its answers; a full CQ means it stopped reading its
  // own answers (it can only fail its own requests).
  if (_ctrl_cq.push(r)) _produced = true;
  else ++_refusals;
}

void channel_engine::flush() {
  if (!_produced) return;
  _produced = false;
  _rx_ring.publish();
  _ctrl_cq.publish();
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (_map.header().app_sleeping.load(std::memory_order_relaxed)) {
    uint64_t one = 1;
    ssize_t rc = ::write(_app_fd, &one, sizeof one);
    (void)rc;
  }
}

bool channel_engine::pending() const noexcept {
  return _tx_ring.ready() || _ctrl_sq.ready() || _ret_ring.ready();
}

bool channel_engine::enter_sleep() noexcept {
  _map.header().engine_sleeping.store(1, std::memory_order_seq_cst);
  return !pending();
}

void channel_engine::leave_sleep() noexcept {
  _map.header().engine_sleeping.store(0, std::memory_order_relaxed);
  uint64_t v;
  ssize_t rc = ::read(_engine_fd, &v, sizeof v);
  (void)rc;
}

void channel_engine::shut() noexcept {
  _map.header().closed.store(1, std::memory_order_seq_cst);
  uint64_t one = 1;
  ssize_t rc = ::write(_app_fd, &one, sizeof one);
  (void)rc;
}

}  // namespace machnet::shm
