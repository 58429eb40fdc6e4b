// harness: end-to-end test fixtures — two machnetd processes joined by a
// memif link, each with its own control socket in a private temp directory,
// started and stopped by PID; plus a raw control-socket client for counters.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "machnet/net/shm/control.hh"

extern char** environ;

namespace machnet::test {

inline std::string read_file(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// One machnetd process.
class daemon {
 public:
  daemon() = default;
  daemon(const daemon&) = delete;
  daemon& operator=(const daemon&) = delete;
  ~daemon() { stop(); }

  void start(const std::vector<std::string>& args, const std::string& sock, const std::string& log) {
    _sock = sock;
    _log = log;
    _signalled = false;
    std::vector<std::string> argv{MACHNETD_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--control-socket=" + sock);
    std::vector<char*> av;
    for (auto& a : argv) av.push_back(a.data());
    av.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&_pid, argv[0].c_str(), &fa, nullptr, av.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("spawn machnetd failed");
  }
  /// Waits until the control socket answers (false after `ms` or if it died).
  bool wait_ready(int ms = 10000) {
    for (int i = 0; i < ms / 10; ++i) {
      if (!alive()) return false;
      int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::snprintf(a.sun_path, sizeof a.sun_path, "%s", _sock.c_str());
      bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(s);
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  bool alive() {
    if (_pid <= 0) return false;
    int st;
    pid_t r = ::waitpid(_pid, &st, WNOHANG);
    if (r == _pid) {
      _status = st;
      _pid = -1;
      return false;
    }
    return true;
  }
  /// Sends `sig` once, without waiting (stop() then only waits).
  void signal(int sig = SIGTERM) {
    if (_pid > 0 && !_signalled) ::kill(_pid, sig);
    _signalled = true;
  }
  /// SIGTERM (orderly) or SIGKILL; returns the wait status.
  int stop(int sig = SIGTERM) {
    if (_pid > 0) {
      if (!_signalled || sig == SIGKILL) ::kill(_pid, sig);
      int st = 0;
      for (int i = 0; i < 1000; ++i) {
        if (::waitpid(_pid, &st, WNOHANG) == _pid) {
          _pid = -1;
          _status = st;
          return st;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      ::kill(_pid, SIGKILL);
      ::waitpid(_pid, &st, 0);
      _pid = -1;
      _status = st;
    }
    return _status;
  }
  const std::string& socket() const { return _sock; }
  std::string log() const { return read_file(_log); }
  pid_t pid() const { return _pid; }

 private:
  pid_t _pid = -1;
  int _status = 0;
  bool _signalled = false;
  std::string _sock, _log;
};

/// Asks a machnetd for its counters over a fresh control connection.
inline bool query_stats(const std::string& sock, uint64_t (&out)[shm::stat_count]) {
  int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", sock.c_str());
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(s);
    return false;
  }
  shm::ctl_msg m;
  m.type = shm::ctl_type::stats;
  std::vector<int> fds;
  bool ok = shm::send_ctl(s, m) == 0 && shm::recv_ctl(s, m, fds) == 0 && m.status == 0;
  for (int fd : fds) ::close(fd);
  ::close(s);
  if (ok) std::copy(std::begin(m.counters), std::end(m.counters), out);
  return ok;
}

/// Two hosts: A (10.77.0.11) and B (10.77.0.12), one machnetd each, memif.
struct two_hosts {
  std::string dir;
  daemon a, b;
  static constexpr const char* ip_a = "10.77.0.11";
  static constexpr const char* ip_b = "10.77.0.12";

  explicit two_hosts(const std::vector<std::string>& extra = {}, const std::vector<std::string>& extra_a = {},
                     const std::vector<std::string>& extra_b = {}) {
    char tmpl[] = "/tmp/mn-e2e.XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
    dir = tmpl;
    std::string memif = dir + "/memif.sock";
    std::vector<std::string> common{"--poll-mode=adaptive"};
    common.insert(common.end(), extra.begin(), extra.end());
    auto args_a = common;
    args_a.insert(args_a.end(), {"--device=net_memif0,role=server,socket=" + memif + ",socket-abstract=no",
                                 "--ip=10.77.0.11", "--mac=02:4d:4e:00:00:11", "--arp=10.77.0.12=02:4d:4e:00:00:12"});
    args_a.insert(args_a.end(), extra_a.begin(), extra_a.end());
    auto args_b = common;
    args_b.insert(args_b.end(), extra_b.begin(), extra_b.end());
    args_b.insert(args_b.end(), {"--device=net_memif1,role=client,socket=" + memif + ",socket-abstract=no",
                                 "--ip=10.77.0.12", "--mac=02:4d:4e:00:00:12", "--arp=10.77.0.11=02:4d:4e:00:00:11"});
    a.start(args_a, dir + "/a.sock", dir + "/a.log");
    if (!a.wait_ready()) throw std::runtime_error("machnetd A did not start:\n" + a.log());
    b.start(args_b, dir + "/b.sock", dir + "/b.log");
    if (!b.wait_ready()) throw std::runtime_error("machnetd B did not start:\n" + b.log());
  }
  ~two_hosts() {
    // memif: both stop polling before either closes its port; each port
    // lingers until the other closed (docs/net.md: memif shutdown).
    b.signal();
    a.signal();
    b.stop();
    a.stop();
    if (getenv("MACHNET_E2E_KEEP")) return;
    std::string cmd = "rm -rf '" + dir + "'";
    int rc = std::system(cmd.c_str());
    (void)rc;
  }
};

}  // namespace machnet::test
