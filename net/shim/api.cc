// api: the exported machnet_* C functions — argument checks, errno, and the
// translation between the C types and the channel's.
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <new>
#include <utility>

#include "app_channel.hh"
#include "control_link.hh"
#include "machnet.h"

using machnet::shim::app_channel;
namespace shm = machnet::shm;
namespace shim = machnet::shim;

static_assert(MACHNET_MSG_MAX_LEN == shm::max_message);

namespace {

int fail(int e) noexcept {
  errno = e;
  return -1;
}

shm::flow_info to_flow(const MachnetFlow_t& f) noexcept {
  return {f.src_ip, f.dst_ip, f.src_port, f.dst_port};
}

MachnetFlow_t to_c(const shm::flow_info& f) noexcept {
  return {f.src_ip, f.dst_ip, f.src_port, f.dst_port};
}

// Dotted-quad IPv4 to host byte order; false for anything else.
bool parse_ip(const char* s, uint32_t* ip) noexcept {
  in_addr a;
  if (!s || ::inet_pton(AF_INET, s, &a) != 1) return false;
  *ip = ntohl(a.s_addr);
  return true;
}

// Sum of the iovec lengths; EINVAL for a NULL array or base, saturates past
// the largest message (the caller then reports EMSGSIZE or a mismatch).
int iov_bytes(const MachnetIovec_t* iov, std::size_t n, std::size_t* bytes) noexcept {
  if (n > 0 && !iov) return EINVAL;
  std::size_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (iov[i].len > 0 && !iov[i].base) return EINVAL;
    sum += iov[i].len < std::size_t(shm::max_message) + 1 ? iov[i].len : shm::max_message + 1;
    if (sum > shm::max_message) sum = std::size_t(shm::max_message) + 1;
  }
  *bytes = sum;
  return 0;
}

int send_one(app_channel* c, const MachnetMsgHdr_t* m) noexcept {
  if (!m) return EINVAL;
  std::size_t bytes;
  if (int e = iov_bytes(m->msg_iov, m->msg_iovlen, &bytes)) return e;
  if (m->msg_size > shm::max_message) return EMSGSIZE;
  if (bytes != m->msg_size || bytes == 0) return EINVAL;
  return c->send(to_flow(m->flow_info), m->msg_iov, m->msg_iovlen, bytes);
}

// Timeout in ms (-1 forever) to a deadline; false for other negative values.
bool to_deadline(int timeout_ms, int64_t* deadline) noexcept {
  if (timeout_ms < -1) return false;
  *deadline =
      timeout_ms == -1 ? shim::no_deadline : shim::now_ns() + int64_t(timeout_ms) * 1'000'000;
  return true;
}

ssize_t recv_impl(const void* channel, void* buf, size_t len, MachnetFlow_t* flow, int64_t deadline,
                  bool wait) noexcept {
  app_channel* c = app_channel::from(channel);
  if (!c || (!buf && len > 0)) return fail(EINVAL);
  MachnetIovec_t iov{buf, len};
  bool got = false;
  uint32_t n = 0;
  shm::flow_info f;
  int e = wait ? c->recv_wait(&iov, 1, len, deadline, &got, &n, &f)
               : c->recv(&iov, 1, len, &got, &n, &f);
  if (e) return fail(e);
  if (!got) return 0;
  if (flow) *flow = to_c(f);
  return ssize_t(n);
}

int recvmsg_impl(const void* channel, MachnetMsgHdr_t* m, int64_t deadline, bool wait) noexcept {
  app_channel* c = app_channel::from(channel);
  if (!c || !m) return fail(EINVAL);
  std::size_t cap = 0;
  if (m->msg_iovlen > 0 && !m->msg_iov) return fail(EINVAL);
  for (std::size_t i = 0; i < m->msg_iovlen; ++i) {
    if (m->msg_iov[i].len > 0 && !m->msg_iov[i].base) return fail(EINVAL);
    cap += m->msg_iov[i].len;
    if (cap < m->msg_iov[i].len) cap = std::numeric_limits<std::size_t>::max();
  }
  bool got = false;
  uint32_t n = 0;
  shm::flow_info f;
  int e = wait ? c->recv_wait(m->msg_iov, m->msg_iovlen, cap, deadline, &got, &n, &f)
               : c->recv(m->msg_iov, m->msg_iovlen, cap, &got, &n, &f);
  if (e) return fail(e);
  if (!got) return 0;
  m->msg_size = n;
  m->flow_info = to_c(f);
  m->flags = 0;
  return 1;
}

}  // namespace

extern "C" {

MACHNET_API int machnet_init(void) {
  int e = shim::link_init();
  return e ? fail(e) : 0;
}

MACHNET_API void* machnet_attach(void) {
  shim::attach_grant g;
  if (int e = shim::link_attach(g)) {
    fail(e);
    return nullptr;
  }
  try {
    auto* c = new app_channel(std::move(g));
    shim::link_track(c, true);
    return c;
  } catch (const std::bad_alloc&) {
    for (int fd : {g.engine_bell, g.app_bell, g.watch_fd})
      if (fd >= 0) ::close(fd);
    shim::link_detach(g.channel_id, g.generation);
    fail(ENOMEM);
    return nullptr;
  }
}

MACHNET_API int machnet_detach(void* channel) {
  app_channel* c = app_channel::from(channel);
  if (!c) return fail(EINVAL);
  shim::link_detach(c->id(), c->generation());
  shim::link_track(c, false);
  delete c;
  return 0;
}

MACHNET_API int machnet_listen(void* channel, const char* local_ip, uint16_t port) {
  app_channel* c = app_channel::from(channel);
  uint32_t ip;
  if (!c || !parse_ip(local_ip, &ip) || port == 0) return fail(EINVAL);
  int e = c->listen(ip, port);
  return e ? fail(e) : 0;
}

MACHNET_API int machnet_connect(void* channel, const char* local_ip, const char* remote_ip,
                                uint16_t remote_port, MachnetFlow_t* flow) {
  app_channel* c = app_channel::from(channel);
  uint32_t lip, rip;
  if (!c || !flow || !parse_ip(local_ip, &lip) || !parse_ip(remote_ip, &rip) || remote_port == 0 ||
      rip == 0)
    return fail(EINVAL);
  shm::flow_info f;
  int e = c->connect(lip, rip, remote_port, &f);
  if (e) return fail(e);
  *flow = to_c(f);
  return 0;
}

MACHNET_API int machnet_close(const void* channel, MachnetFlow_t flow) {
  app_channel* c = app_channel::from(channel);
  if (!c) return fail(EINVAL);
  int e = c->close_flow(to_flow(flow));
  return e ? fail(e) : 0;
}

MACHNET_API int machnet_send(const void* channel, MachnetFlow_t flow, const void* buf, size_t len) {
  app_channel* c = app_channel::from(channel);
  if (!c || !buf || len == 0) return fail(EINVAL);
  if (len > shm::max_message) return fail(EMSGSIZE);
  MachnetIovec_t iov{const_cast<void*>(buf), len};
  int e = c->send(to_flow(flow), &iov, 1, len);
  return e ? fail(e) : 0;
}

MACHNET_API int machnet_sendmsg(const void* channel, const MachnetMsgHdr_t* msghdr) {
  app_channel* c = app_channel::from(channel);
  if (!c) return fail(EINVAL);
  int e = send_one(c, msghdr);
  return e ? fail(e) : 0;
}

MACHNET_API int machnet_sendmmsg(const void* channel, const MachnetMsgHdr_t* msghdrs, int vlen) {
  app_channel* c = app_channel::from(channel);
  if (!c || vlen < 0 || (!msghdrs && vlen > 0)) return fail(EINVAL);
  for (int i = 0; i < vlen; ++i) {
    if (int e = send_one(c, &msghdrs[i])) {
      errno = e;
      return i;
    }
  }
  return vlen;
}

MACHNET_API ssize_t machnet_recv(const void* channel, void* buf, size_t len, MachnetFlow_t* flow) {
  return recv_impl(channel, buf, len, flow, 0, false);
}

MACHNET_API ssize_t machnet_recv_wait(const void* channel, void* buf, size_t len,
                                      MachnetFlow_t* flow, int timeout_ms) {
  int64_t deadline;
  if (!to_deadline(timeout_ms, &deadline)) return fail(EINVAL);
  return recv_impl(channel, buf, len, flow, deadline, timeout_ms != 0);
}

MACHNET_API int machnet_recvmsg(const void* channel, MachnetMsgHdr_t* msghdr) {
  return recvmsg_impl(channel, msghdr, 0, false);
}

MACHNET_API int machnet_recvmsg_wait(const void* channel, MachnetMsgHdr_t* msghdr, int timeout_ms) {
  int64_t deadline;
  if (!to_deadline(timeout_ms, &deadline)) return fail(EINVAL);
  return recvmsg_impl(channel, msghdr, deadline, timeout_ms != 0);
}

}  // extern "C"
