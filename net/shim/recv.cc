// recv: the RX path of a channel — take the next message head from rx_ring
// (dropping flow events), scatter its chain into the app's buffers, give the
// buffers back on ret_ring. A message that does not fit stays pending.
#include <algorithm>
#include <cstring>

#include "app_channel.hh"

namespace machnet::shim {

bool app_channel::peek() noexcept {
  while (_pending == shm::no_buffer) {
    uint32_t head;
    if (!_rx.pop(head)) return false;
    _rx.publish();
    if (head >= _params.buf_count) continue;  // not a buffer: nothing to give back
    if (_map.buffer(head)->flags != 0) {
      // A flow event (docs/channel.md): the reference API has no way to
      // report it; its buffers go back.
      give_back_chain(head);
      continue;
    }
    _pending = head;
  }
  return true;
}

bool app_channel::walk_pending() noexcept {
  // machnetd is trusted, but a broken chain must not make us read outside
  // the region or loop: every field is checked before it is used.
  _rx_bufs.clear();
  const shm::buf_hdr* head = _map.buffer(_pending);
  const uint32_t per = _params.data_per_buf();
  if (head->msg_len > shm::max_message || head->nbufs == 0 || head->nbufs > _params.buf_count)
    return false;
  uint64_t sum = 0;
  uint32_t i = _pending;
  for (uint32_t k = 0; k < head->nbufs; ++k) {
    if (i >= _params.buf_count) return false;
    const shm::buf_hdr* h = _map.buffer(i);
    if (h->len > per) return false;
    sum += h->len;
    _rx_bufs.push_back(i);
    i = h->next;
  }
  return i == shm::no_buffer && sum == head->msg_len;
}

int app_channel::recv(const MachnetIovec_t* iov, std::size_t iovcnt, std::size_t capacity,
                      bool* got, uint32_t* len, shm::flow_info* flow) noexcept {
  *got = false;
  // What machnetd delivered before it died or closed the channel is still
  // the app's: it is received first, and ESHUTDOWN comes once the ring is
  // empty. (A forked child's inherited channel is its parent's: not drained.)
  const int dead = alive();
  if (dead && _orphaned) return dead;
  if (!peek()) return dead;
  if (!walk_pending()) {
    give_back_chain(_pending);
    _pending = shm::no_buffer;
    return EPROTO;
  }
  const shm::buf_hdr* head = _map.buffer(_pending);
  if (head->msg_len > capacity) return EMSGSIZE;  // stays pending

  std::size_t v = 0, v_off = 0;
  for (uint32_t i : _rx_bufs) {
    const uint8_t* src = _map.data(i);
    const uint32_t blen = _map.buffer(i)->len;
    for (uint32_t done = 0; done < blen;) {
      while (v < iovcnt && iov[v].len == v_off) {  // skips empty and full iovecs
        ++v;
        v_off = 0;
      }
      std::size_t c = std::min<std::size_t>(blen - done, iov[v].len - v_off);
      std::memcpy(static_cast<uint8_t*>(iov[v].base) + v_off, src + done, c);
      done += uint32_t(c);
      v_off += c;
    }
  }
  *len = head->msg_len;
  *flow = head->flow;
  *got = true;
  give_back(_rx_bufs.data(), _rx_bufs.size());
  _rx_bufs.clear();
  _pending = shm::no_buffer;
  return 0;
}

int app_channel::recv_wait(const MachnetIovec_t* iov, std::size_t iovcnt, std::size_t capacity,
                           int64_t deadline, bool* got, uint32_t* len,
                           shm::flow_info* flow) noexcept {
  for (;;) {
    if (int e = recv(iov, iovcnt, capacity, got, len, flow); e || *got) return e;
    int e = wait([this] { return _pending != shm::no_buffer || _rx.ready() > 0; }, deadline);
    if (e == ETIMEDOUT) return 0;
    if (e && e != ESHUTDOWN) return e;
    // ESHUTDOWN: the next recv() drains what arrived before, then reports it.
  }
}

}  // namespace machnet::shim
