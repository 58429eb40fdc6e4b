// loopback_sidecar: machnetd's side of libmachnet for its tests — the real
// control protocol on a temporary Unix socket and the real engine side of
// every channel (shm::channel_engine), driven by one thread like a shard's
// poller (reclaim, TX, control queue, flush, sleep on the doorbells). Every
// message sent is echoed back on its flow; listen / connect / close are
// answered at once (a few ports give errors or late answers, see below).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "machnet/net/shm/channel_engine.hh"
#include "machnet/net/shm/control.hh"

namespace machnet::test {

class loopback_sidecar {
 public:
  static constexpr uint32_t host_ip = 0x0a000001;  // 10.0.0.1
  // Ports with special answers.
  static constexpr uint16_t port_in_use = 7;   // listen: EADDRINUSE
  static constexpr uint16_t port_refused = 1;  // connect: ECONNREFUSED
  static constexpr uint16_t port_timeout = 2;  // connect: ETIMEDOUT
  static constexpr uint16_t port_late = 3;     // connect: answered after 300 ms
  static constexpr uint16_t port_silent = 4;   // connect: answered after late_answer_ms

  /// Listens on a fresh socket path and points MACHNET_CONTROL_SOCKET at it.
  explicit loopback_sidecar(shm::channel_params params = {}) : _params(params) {
    static std::atomic<int> counter{0};
    _path = "/tmp/machnet-shim-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter++) + ".sock";
    ::unlink(_path.c_str());
    _listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, _path.c_str(), sizeof a.sun_path - 1);
    if (_listen_fd < 0 || ::bind(_listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(_listen_fd, 16) != 0)
      throw std::runtime_error("loopback_sidecar: cannot listen on " + _path);
    _wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ::setenv(shm::control_socket_env, _path.c_str(), 1);
    _thread = std::thread([this] { run(); });
  }
  loopback_sidecar(const loopback_sidecar&) = delete;
  loopback_sidecar& operator=(const loopback_sidecar&) = delete;
  ~loopback_sidecar() { kill(); }

  const std::string& path() const { return _path; }

  /// machnetd dies: the loop stops, every connection and channel is closed.
  void kill() {
    if (!_thread.joinable()) return;
    _stop = true;
    ring(_wake_fd);
    _thread.join();
    _channels.clear();
    for (int fd : _conns) ::close(fd);
    _conns.clear();
    ::close(_listen_fd);
    ::close(_wake_fd);
    ::unlink(_path.c_str());
  }

  /// Stops (true) or resumes serving the channels' rings: nothing reclaimed,
  /// sent or answered meanwhile.
  void pause(bool p) {
    _paused = p;
    ring(_wake_fd);
  }
  /// Echo sent messages back (default) or swallow them.
  void echo(bool e) { _echo = e; }
  /// When a connect to port_silent is answered.
  std::atomic<int> late_answer_ms{300};

  /// Runs f on the sidecar's thread (where the engines live) and returns its result.
  template <typename F>
  auto call(F f) -> decltype(f()) {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    {
      std::lock_guard lock(_mu);
      _tasks.push_back([task] { (*task)(); });
    }
    ring(_wake_fd);
    return fut.get();
  }
  /// Queues a message for the app on channel `id` as if it came from the network.
  void inject(uint32_t id, const shm::flow_info& f, std::vector<uint8_t> bytes) {
    call([this, id, f, b = std::move(bytes)]() mutable {
      if (auto it = _channels.find(id); it != _channels.end())
        it->second->held.push_back({f, std::move(b)});
    });
  }
  /// machnetd shuts a channel down (sets `closed`, wakes the app).
  void shut(uint32_t id) {
    call([this, id] {
      if (auto it = _channels.find(id); it != _channels.end()) it->second->engine.shut();
    });
  }
  /// The ids of the live channels.
  std::vector<uint32_t> channel_ids() {
    return call([this] {
      std::vector<uint32_t> v;
      for (auto& [id, c] : _channels) v.push_back(id);
      return v;
    });
  }
  /// Buffers the app holds on channel `id` (all in its free ring when idle).
  uint32_t app_buffers(uint32_t id) {
    return call([this, id] { return _channels.at(id)->engine.app_buffers(); });
  }
  /// Descriptors refused and bad returns over all channels (0 = the app obeyed).
  uint64_t refusals() {
    return call([this] {
      uint64_t n = _dead_refusals;
      for (auto& [id, c] : _channels) n += c->engine.refusals();
      return n;
    });
  }
  /// Control requests seen, in order.
  std::vector<shm::ctrl_req> requests() {
    return call([this] { return _requests; });
  }
  /// Doorbell writes the app made while the loop slept (it woke on them).
  uint64_t engine_wakeups() const { return _wakeups; }

 private:
  struct held_msg {
    shm::flow_info flow;
    std::vector<uint8_t> bytes;
  };
  struct late_answer {
    std::chrono::steady_clock::time_point due;
    shm::ctrl_resp resp;
  };
  struct channel {
    channel(const shm::channel_params& p, int c) : engine(p, "shim-test"), conn(c) {}
    shm::channel_engine engine;
    int conn;
    std::deque<held_msg> held;
    std::vector<late_answer> late;
  };

  static void ring(int fd) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(fd, &one, sizeof one);
  }

  void run() {
    int idle = 0;
    while (!_stop) {
      bool work = run_tasks();
      work |= accept_apps();
      work |= serve_control();
      if (!_paused)
        for (auto& [id, c] : _channels) work |= serve(*c);
      if (work) {
        idle = 0;
        continue;
      }
      if (++idle < 64) {
        std::this_thread::yield();
        continue;
      }
      sleep();
      idle = 0;
    }
  }

  bool run_tasks() {
    std::deque<std::function<void()>> t;
    {
      std::lock_guard lock(_mu);
      t.swap(_tasks);
    }
    for (auto& f : t) f();
    return !t.empty();
  }

  bool accept_apps() {
    bool any = false;
    for (;;) {
      int fd = ::accept4(_listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return any;
      _conns.push_back(fd);
      any = true;
    }
  }

  bool serve_control() {
    bool any = false;
    for (std::size_t k = 0; k < _conns.size();) {
      int fd = _conns[k];
      shm::ctl_msg m;
      std::vector<int> fds;
      int e = shm::recv_ctl(fd, m, fds);
      for (int f : fds) ::close(f);
      if (e == EAGAIN) {
        ++k;
        continue;
      }
      any = true;
      if (e != 0) {  // the app is gone: its channels end
        for (auto it = _channels.begin(); it != _channels.end();) {
          if (it->second->conn == fd) {
            _dead_refusals += it->second->engine.refusals();
            it = _channels.erase(it);
          } else {
            ++it;
          }
        }
        ::close(fd);
        _conns.erase(_conns.begin() + long(k));
        continue;
      }
      answer(fd, m);
      ++k;
    }
    return any;
  }

  void answer(int fd, const shm::ctl_msg& m) {
    shm::ctl_msg r = m;
    r.status = 0;
    switch (m.type) {
      case shm::ctl_type::hello:
        r.local_ip = host_ip;
        r.shards = 1;
        r.pid = uint32_t(::getpid());
        shm::send_ctl(fd, r);
        return;
      case shm::ctl_type::attach: {
        shm::channel_params p = m.params.buf_count ? m.params : _params;
        uint32_t id = ++_next_channel;
        auto c = std::make_unique<channel>(p, fd);
        r.channel_id = id;
        r.params = p;
        r.region_size = c->engine.map().size();
        int fds[3] = {c->engine.region_fd(), c->engine.engine_doorbell(), c->engine.app_doorbell()};
        _channels.emplace(id, std::move(c));
        shm::send_ctl(fd, r, fds, 3);
        return;
      }
      case shm::ctl_type::detach:
        if (auto it = _channels.find(m.channel_id); it != _channels.end()) {
          _dead_refusals += it->second->engine.refusals();
          _channels.erase(it);
        } else {
          r.status = ENOENT;
        }
        shm::send_ctl(fd, r);
        return;
      default:
        r.status = EINVAL;
        shm::send_ctl(fd, r);
    }
  }

  bool serve(channel& c) {
    bool work = c.engine.reclaim();
    while (!c.held.empty() && c.engine.deliver(c.held.front().flow, c.held.front().bytes)) {
      c.held.pop_front();
      work = true;
    }
    while (c.engine.pop_tx([&](const shm::flow_info& f, std::size_t len,
                               std::span<const std::span<const uint8_t>> spans) {
      if (!_echo) return true;
      std::vector<uint8_t> b;
      b.reserve(len);
      for (auto s : spans) b.insert(b.end(), s.begin(), s.end());
      if (!c.held.empty() || !c.engine.deliver(f, b)) c.held.push_back({f, std::move(b)});
      return true;
    }))
      work = true;
    shm::ctrl_req q;
    while (c.engine.pop_ctrl(q)) {
      work = true;
      _requests.push_back(q);
      control(c, q);
    }
    auto now = std::chrono::steady_clock::now();
    for (auto it = c.late.begin(); it != c.late.end();) {
      if (it->due <= now) {
        c.engine.complete(it->resp);
        it = c.late.erase(it);
        work = true;
      } else {
        ++it;
      }
    }
    c.engine.flush();
    return work;
  }

  void control(channel& c, const shm::ctrl_req& q) {
    shm::ctrl_resp r{};
    r.id = q.id;
    switch (q.op) {
      case shm::ctrl_op::listen:
        if (q.local_ip != 0 && q.local_ip != host_ip)
          r.status = EADDRNOTAVAIL;
        else if (q.local_port == port_in_use)
          r.status = EADDRINUSE;
        break;
      case shm::ctrl_op::connect:
        if (q.remote_port == port_refused) {
          r.status = ECONNREFUSED;
        } else if (q.remote_port == port_timeout) {
          r.status = ETIMEDOUT;
        } else {
          r.flow = {q.local_ip ? q.local_ip : host_ip, q.remote_ip, uint16_t(40000 + _next_port++),
                    q.remote_port};
          if (q.remote_port == port_late || q.remote_port == port_silent) {
            int ms = q.remote_port == port_late ? 300 : late_answer_ms.load();
            c.late.push_back({std::chrono::steady_clock::now() + std::chrono::milliseconds(ms), r});
            return;
          }
        }
        break;
      case shm::ctrl_op::close:
        break;
      default:
        r.status = EINVAL;
    }
    c.engine.complete(r);
  }

  void sleep() {
    // Like a shard going idle: announce it on every channel, then wait on the
    // engine doorbells (and the control sockets, and our own wake-up).
    bool can_sleep = true;
    int timeout_ms = 100;
    for (auto& [id, c] : _channels) {
      if (!c->late.empty()) timeout_ms = 1;
      if (!c->held.empty()) timeout_ms = std::min(timeout_ms, 5);
      if (!_paused && !c->engine.enter_sleep()) can_sleep = false;
    }
    if (can_sleep) {
      std::vector<pollfd> fds{{_wake_fd, POLLIN, 0}, {_listen_fd, POLLIN, 0}};
      for (int fd : _conns) fds.push_back({fd, POLLIN, 0});
      std::size_t bells = fds.size();
      for (auto& [id, c] : _channels) fds.push_back({c->engine.engine_doorbell(), POLLIN, 0});
      ::poll(fds.data(), fds.size(), timeout_ms);
      for (std::size_t i = bells; i < fds.size(); ++i)
        if (fds[i].revents & POLLIN) ++_wakeups;
      uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(_wake_fd, &v, sizeof v);
    }
    for (auto& [id, c] : _channels) c->engine.leave_sleep();
  }

  shm::channel_params _params;
  std::string _path;
  int _listen_fd = -1;
  int _wake_fd = -1;
  std::thread _thread;
  std::atomic<bool> _stop{false};
  std::atomic<bool> _paused{false};
  std::atomic<bool> _echo{true};
  std::atomic<uint64_t> _wakeups{0};
  std::mutex _mu;
  std::deque<std::function<void()>> _tasks;
  // Owned by the sidecar's thread:
  std::vector<int> _conns;
  std::map<uint32_t, std::unique_ptr<channel>> _channels;
  std::vector<shm::ctrl_req> _requests;
  uint32_t _next_channel = 0;
  uint32_t _next_port = 0;
  uint64_t _dead_refusals = 0;
};

}  // namespace machnet::test
