// control: framing of machnetd's control records and SCM_RIGHTS fd passing.
#include "machnet/net/shm/control.hh"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace machnet::shm {

int send_ctl(int sock, const ctl_msg& m, const int* fds, unsigned nfds) {
  if (nfds > 4) return EINVAL;
  iovec iov{const_cast<ctl_msg*>(&m), sizeof m};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)]{};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n == ssize_t(sizeof m)) return 0;
    if (n >= 0) return EPROTO;
    if (errno == EINTR) continue;
    return errno == EPIPE ? ECONNRESET : errno;
  }
}

int recv_ctl(int sock, ctl_msg& m, std::vector<int>& fds) {
  iovec iov{&m, sizeof m};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 8)]{};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.push_back(fd);
      }
    }
  }
  if (n == 0) return ECONNRESET;
  bool bad = std::size_t(n) != sizeof m || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
             m.magic != control_magic || m.version != control_version;
  if (bad) {
    for (int fd : fds) ::close(fd);
    fds.clear();
    return EPROTO;
  }
  m.text[sizeof m.text - 1] = 0;
  return 0;
}

std::string control_socket_path() {
  const char* e = std::getenv(control_socket_env);
  return e && *e ? std::string(e) : std::string(default_control_socket);
}

void set_text(ctl_msg& m, const std::string& s) noexcept {
  std::size_t n = std::min(s.size(), sizeof m.text - 1);
  std::memcpy(m.text, s.data(), n);
  m.text[n] = 0;
}

}  // namespace machnet::shm
