// send: the TX path of a channel — take buffers from free_ring, gather the
// message into a chain, queue its head on tx_ring, wake the shard if it sleeps.
#include <algorithm>
#include <cstring>
#include <thread>

#include "app_channel.hh"

namespace machnet::shim {
namespace {

constexpr int64_t buffer_wait_ns = 100'000'000;  // then ENOBUFS
constexpr int64_t buffer_spin_ns = 50'000;       // before sleeping between looks

}  // namespace

int app_channel::take_buffers(uint32_t n) noexcept {
  _tx_bufs.clear();
  int64_t start = 0;
  for (;;) {
    uint32_t idx;
    while (_tx_bufs.size() < n && _free.pop(idx)) {
      // machnetd is trusted to hand out real buffers, but an index outside
      // the pool would make us write outside the region: drop it.
      if (idx < _params.buf_count) _tx_bufs.push_back(idx);
    }
    _free.publish();
    if (_tx_bufs.size() == n) return 0;
    int64_t t = now_ns();
    if (start == 0) {
      // Short of buffers: make sure the shard is awake to refill free_ring.
      start = t;
      ring_engine();
    } else {
      wake_engine_if_sleeping();
    }
    int e = alive();
    if (e == 0 && t - start >= buffer_wait_ns) e = ENOBUFS;
    if (e) {
      give_back(_tx_bufs.data(), _tx_bufs.size());
      _tx_bufs.clear();
      return e;
    }
    if (t - start < buffer_spin_ns) {
      for (int i = 0; i < 64; ++i) cpu_relax();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

int app_channel::send(const shm::flow_info& flow, const MachnetIovec_t* iov, std::size_t iovcnt,
                      std::size_t bytes) noexcept {
  if (int e = alive()) return e;
  const uint32_t n = _params.bufs_for(bytes);
  if (int e = take_buffers(n)) return e;

  // Gather the iovecs into the chain, buffer by buffer.
  const uint32_t per = _params.data_per_buf();
  std::size_t left = bytes, v = 0, v_off = 0;
  for (uint32_t k = 0; k < n; ++k) {
    const uint32_t i = _tx_bufs[k];
    shm::buf_hdr* h = _map.buffer(i);
    uint8_t* dst = _map.data(i);
    const uint32_t len = uint32_t(std::min<std::size_t>(left, per));
    for (uint32_t filled = 0; filled < len;) {
      while (iov[v].len == v_off && v + 1 < iovcnt) {  // skips empty iovecs
        ++v;
        v_off = 0;
      }
      std::size_t c = std::min<std::size_t>(len - filled, iov[v].len - v_off);
      std::memcpy(dst + filled, static_cast<const uint8_t*>(iov[v].base) + v_off, c);
      filled += uint32_t(c);
      v_off += c;
    }
    left -= len;
    h->next = k + 1 < n ? _tx_bufs[k + 1] : shm::no_buffer;
    h->len = len;
  }
  shm::buf_hdr* head = _map.buffer(_tx_bufs[0]);
  head->msg_len = uint32_t(bytes);
  head->nbufs = n;
  head->flow = flow;
  head->flags = 0;

  // tx_ring has a slot for every buffer, so it is full only if machnetd
  // stopped consuming: give the buffers back and report it like a full pool.
  if (!_tx.push(_tx_bufs[0])) {
    give_back(_tx_bufs.data(), _tx_bufs.size());
    _tx_bufs.clear();
    return ENOBUFS;
  }
  _tx.publish();
  _tx_bufs.clear();
  wake_engine_if_sleeping();
  return 0;
}

}  // namespace machnet::shim
