// sidecar: machnetd's start-up, shutdown and control plane — the Unix socket
// where apps register (hello), get channels (attach, memfd + eventfds over
// SCM_RIGHTS), give them back (detach) and read counters (stats). An app's
// hang-up ends all its channels.
#include "machnet/net/sidecar.hh"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <unordered_map>

#include "machnet/net/sidecar_shard.hh"
#include "machnet/net/shm/control.hh"
#include "machnet/runtime/app.hh"
#include "machnet/runtime/clock.hh"
#include "machnet/runtime/log.hh"
#include "machnet/runtime/reactor.hh"
#include "machnet/runtime/smp.hh"
#include "machnet/runtime/task.hh"

namespace machnet::net {

// The control plane; lives on shard 0.
class sidecar::control final : public pollfn {
 public:
  control(const sidecar_config& cfg, sidecar_shards& all) : _cfg(cfg), _all(all) {
    _load.assign(all.shard.size(), 0);
    namespace fs = std::filesystem;
    fs::path path(cfg.control_socket);
    if (path.empty()) throw std::invalid_argument("control socket path is empty");
    if (cfg.control_socket.size() >= sizeof(sockaddr_un::sun_path))
      throw std::invalid_argument("control socket path too long: " + cfg.control_socket);
    if (path.has_parent_path()) fs::create_directories(path.parent_path());
    _listen = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (_listen < 0) throw std::system_error(errno, std::generic_category(), "control socket");
    // A socket file left by a dead machnetd is replaced; a live one is not.
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, cfg.control_socket.c_str(), sizeof a.sun_path - 1);
    int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      ::close(probe);
      ::close(_listen);
      throw std::runtime_error("another machnetd serves " + cfg.control_socket);
    }
    if (probe >= 0) ::close(probe);
    ::unlink(cfg.control_socket.c_str());
    if (::bind(_listen, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::chmod(cfg.control_socket.c_str(), cfg.socket_mode) != 0 || ::listen(_listen, 64) != 0) {
      int e = errno;
      ::close(_listen);
      throw std::system_error(e, std::generic_category(), "control socket " + cfg.control_socket);
    }
    _ep = ::epoll_create1(EPOLL_CLOEXEC);
    add(_listen);
    reactor::local().watch_fd(_ep);
    reactor::local().register_poller(this);
  }

  ~control() override {
    reactor::local().unregister_poller(this);
    reactor::local().unwatch_fd(_ep);
    for (auto& [fd, a] : _apps) ::close(fd);
    ::close(_ep);
    ::close(_listen);
    ::unlink(_cfg.control_socket.c_str());
  }

  bool poll() override {
    // epoll_wait is a syscall: look at most every 200 µs while busy (the
    // reactor's epoll set holds ours, so a sleeping shard wakes at once).
    uint64_t now = now_us();
    if (now - _last < 200 && !_woken) return false;
    _last = now;
    _woken = false;
    epoll_event ev[16];
    int n = ::epoll_wait(_ep, ev, 16, 0);
    for (int i = 0; i < n; ++i) {
      int fd = ev[i].data.fd;
      if (fd == _listen) accept_all();
      else serve(fd, ev[i].events);
    }
    return n > 0;
  }
  bool pure_poll() override { return false; }
  bool try_enter_interrupt_mode() override { return true; }
  void exit_interrupt_mode() override { _woken = true; }

  task<sidecar_stats> stats() {
    sidecar_stats s;
    for (auto& [fd, a] : _apps) s.v[shm::stat_apps] += a.registered;
    for (sidecar_shard* sh : _all.shard) {
      auto k = co_await submit_to(sh->id(), [sh] { return sh->count(); });
      s.v[shm::stat_channels] += k.channels;
      s.v[shm::stat_flows] += k.flows;
      s.v[shm::stat_engine_bufs] += k.engine_bufs;
      s.v[shm::stat_app_bufs] += k.app_bufs;
      s.v[shm::stat_bad_input] += k.bad_input;
      s.v[shm::stat_held_messages] += k.held;
      if (sh->id() == 0) s.v[shm::stat_listeners] = k.listeners;
    }
    s.v[shm::stat_bad_input] += _bad_requests;
    co_return s;
  }

  /// Shutdown: every channel closed for its app, on its shard.
  task<void> close_all() {
    for (sidecar_shard* sh : _all.shard) co_await submit_to(sh->id(), [sh] { sh->close_all(); });
  }

 private:
  struct app {
    uint64_t id = 0;
    pid_t pid = 0;
    uid_t uid = 0;
    bool registered = false;
    std::string name;
    std::vector<std::pair<unsigned, uint32_t>> channels;  // (shard, id)
  };

  void add(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    if (::epoll_ctl(_ep, EPOLL_CTL_ADD, fd, &ev) != 0)
      throw std::system_error(errno, std::generic_category(), "epoll_ctl control");
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(_listen, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      ucred cr{};
      socklen_t len = sizeof cr;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
        ::close(fd);
        continue;
      }
      app a;
      a.id = ++_next_app;
      a.pid = cr.pid;
      a.uid = cr.uid;
      _apps.emplace(fd, std::move(a));
      add(fd);
    }
  }

  void serve(int fd, uint32_t events) {
    auto it = _apps.find(fd);
    if (it == _apps.end()) return;
    for (;;) {
      shm::ctl_msg m;
      std::vector<int> fds;
      int rc = shm::recv_ctl(fd, m, fds);
      for (int x : fds) ::close(x);  // apps send none
      if (rc == EAGAIN) break;
      if (rc == EPROTO) {
        ++_bad_requests;
        log::warn("control: malformed record from pid {}: dropping the app", it->second.pid);
        return hang_up(fd);
      }
      if (rc != 0) return hang_up(fd);
      handle(fd, it->second, m);
      if (_apps.find(fd) == _apps.end()) return;
    }
    if (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) hang_up(fd);
  }

  void reply_error(int fd, shm::ctl_msg m, int status, const std::string& why) {
    m.status = status;
    shm::set_text(m, why);
    shm::send_ctl(fd, m);
  }

  void handle(int fd, app& a, shm::ctl_msg m) {
    if (m.type == shm::ctl_type::stats) {
      reactor::local().spawn(reply_stats(fd, m, a.id));
      return;
    }
    if (m.type == shm::ctl_type::hello) {
      a.registered = true;
      a.name = m.text;
      log::info("app '{}' registered (pid {}, uid {})", a.name, a.pid, a.uid);
      m.status = 0;
      m.local_ip = _all.ip.v;
      m.shards = unsigned(_all.shard.size());
      m.pid = unsigned(::getpid());
      shm::set_text(m, "machnetd");
      shm::send_ctl(fd, m);
      return;
    }
    if (!a.registered) {
      ++_bad_requests;
      return reply_error(fd, m, EPERM, "send hello first");
    }
    if (m.type == shm::ctl_type::attach) return attach(fd, a, m);
    if (m.type == shm::ctl_type::detach) {
      auto& chs = a.channels;
      for (auto c = chs.begin(); c != chs.end(); ++c) {
        if (c->second != m.channel_id) continue;
        auto [shard, id] = *c;
        chs.erase(c);
        --_load[shard];
        reactor::local().spawn(close_channel(shard, id, true));
        m.status = 0;
        shm::send_ctl(fd, m);
        return;
      }
      ++_bad_requests;
      return reply_error(fd, m, ENOENT, "no such channel of this app");
    }
    ++_bad_requests;
    reply_error(fd, m, EINVAL, "unknown request type");
  }

  void attach(int fd, app& a, shm::ctl_msg m) {
    shm::channel_params p = _cfg.channel;
    // An app may ask for other sizes within the limits check() enforces.
    if (m.params.buf_count) p.buf_count = m.params.buf_count;
    if (m.params.buf_size) p.buf_size = m.params.buf_size;
    if (m.params.ctrl_slots) p.ctrl_slots = m.params.ctrl_slots;
    if (std::string why = p.check(); !why.empty()) {
      ++_bad_requests;
      return reply_error(fd, m, EINVAL, why);
    }
    unsigned shard = 0;
    for (unsigned i = 1; i < _load.size(); ++i)
      if (_load[i] < _load[shard]) shard = i;
    ++_load[shard];
    uint32_t id = ++_next_channel;
    a.channels.emplace_back(shard, id);
    reactor::local().spawn(open_channel(fd, m, p, shard, id, a.id));
  }

  task<void> reply_stats(int fd, shm::ctl_msg m, uint64_t app_id) {
    sidecar_stats st = co_await stats();
    auto it = _apps.find(fd);
    if (it == _apps.end() || it->second.id != app_id) co_return;
    std::memcpy(m.counters, st.v, sizeof m.counters);
    m.status = 0;
    shm::send_ctl(fd, m);
  }

  task<void> close_channel(unsigned shard, uint32_t id, bool tell_app) {
    sidecar_shard* s = _all.shard[shard];
    co_await submit_to(shard, [s, id, tell_app] { s->close_channel(id, tell_app); });
  }

  task<void> open_channel(int fd, shm::ctl_msg m, shm::channel_params p, unsigned shard, uint32_t id,
                          uint64_t app_id) {
      sidecar_shard* s = _all.shard[shard];
      int fds[3] = {-1, -1, -1};
      std::string err;
      std::size_t size = 0;
      co_await submit_to(shard, [&] {
        try {
          shm::channel_engine& ch = s->open_channel(id, app_id, p);
          // Duplicates: the originals stay with the channel on its shard.
          fds[0] = ::fcntl(ch.region_fd(), F_DUPFD_CLOEXEC, 0);
          fds[1] = ::fcntl(ch.engine_doorbell(), F_DUPFD_CLOEXEC, 0);
          fds[2] = ::fcntl(ch.app_doorbell(), F_DUPFD_CLOEXEC, 0);
          size = ch.map().size();
        } catch (const std::exception& e) {
          err = e.what();
        }
      });
      auto it = _apps.find(fd);
      bool alive = it != _apps.end() && it->second.id == app_id;
      if (err.empty() && (fds[0] < 0 || fds[1] < 0 || fds[2] < 0)) err = std::strerror(errno);
      if (!err.empty() || !alive) {
        for (int x : fds)
          if (x >= 0) ::close(x);
        co_await submit_to(shard, [s, id] { s->close_channel(id, false); });
        if (alive) {
          auto& chs = it->second.channels;
          std::erase(chs, std::pair<unsigned, uint32_t>(shard, id));
          --_load[shard];
          reply_error(fd, m, ENOMEM, "cannot create channel: " + err);
        }
        co_return;
      }
      m.status = 0;
      m.channel_id = id;
      m.params = p;
      m.shard = shard;
      m.region_size = size;
      int rc = shm::send_ctl(fd, m, fds, 3);
      for (int x : fds) ::close(x);
      if (rc != 0) log::warn("control: attach reply to pid {} failed: {}", it->second.pid, std::strerror(rc));
      else log::info("app '{}' (pid {}) attached channel {} on shard {}", it->second.name, it->second.pid, id, shard);
  }

  void hang_up(int fd) {
    auto it = _apps.find(fd);
    if (it == _apps.end()) return;
    app a = std::move(it->second);
    _apps.erase(it);
    ::epoll_ctl(_ep, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    if (a.registered)
      log::info("app '{}' (pid {}) left: closing its {} channel(s)", a.name, a.pid, a.channels.size());
    for (auto [shard, id] : a.channels) {
      --_load[shard];
      reactor::local().spawn(close_channel(shard, id, false));
    }
  }

  const sidecar_config& _cfg;
  sidecar_shards& _all;
  int _listen = -1;
  int _ep = -1;
  uint64_t _last = 0;
  bool _woken = true;
  uint64_t _next_app = 0;
  uint32_t _next_channel = 0;
  uint64_t _bad_requests = 0;
  std::vector<unsigned> _load;  // channels per shard
  std::unordered_map<int, app> _apps;
};

sidecar::sidecar(sidecar_config cfg) : _cfg(std::move(cfg)) {}
sidecar::~sidecar() = default;

task<void> sidecar::run() {
  const unsigned n = smp::count();
  if (std::string why = _cfg.channel.check(); !why.empty())
    throw std::invalid_argument("channel parameters: " + why);
  port_config pc = _cfg.port;
  pc.queues = uint16_t(n);
  port dev(pc);
  engine_config ec;
  ec.ip = _cfg.ip;
  ec.udp_checksum = _cfg.udp_checksum;
  engine_group group(dev, n, ec);
  for (auto& [ip, mac] : _cfg.static_arp) group.arp().set_static(ip, mac);
  sidecar_shards all;
  all.ip = _cfg.ip;
  all.shard.assign(n, nullptr);
  for (unsigned i = 0; i < n; ++i)
    co_await submit_to(i, [&, i] { all.shard[i] = new sidecar_shard(all, group, i, _cfg.transport); });
  std::exception_ptr failure;
  try {
    control ctl(_cfg, all);
    log::info("machnetd: {} on {} ({}), {} shard(s), control socket {}", _cfg.ip.str(), pc.device,
              dev.mac().str(), n, _cfg.control_socket);
    _ctl = &ctl;
    while (!app_template::stop_requested() && !reactor::local().stopping())
      co_await sleep(std::chrono::milliseconds(20));
    _ctl = nullptr;
    co_await ctl.close_all();
  } catch (...) {
    _ctl = nullptr;
    failure = std::current_exception();
  }
  // Let the flows' RSTs leave before the engines go.
  co_await sleep(std::chrono::milliseconds(20));
  for (unsigned i = 0; i < n; ++i)
    co_await submit_to(i, [&, i] {
      delete all.shard[i];
      all.shard[i] = nullptr;
    });
  if (failure) std::rethrow_exception(failure);
}

task<sidecar_stats> sidecar::stats() {
  if (!_ctl) co_return sidecar_stats{};
  co_return co_await _ctl->stats();
}

}  // namespace machnet::net
