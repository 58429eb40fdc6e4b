// msg_gen smoke: the benchmark client and server run end to end in both
// execution models — sidecar (two machnetd over memif) and runtime (two
// msg_gen processes with the stack inside, over memif) — with payload
// verification, and report a sane JSON summary.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "harness.hh"

using namespace machnet;
using namespace machnet::test;

namespace {

/// Runs a command, returns its stdout (and the exit status).
std::string run_capture(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  return out;
}

/// The integer after "key": in a flat JSON object (0 if absent).
double json_number(const std::string& j, const std::string& key) {
  auto at = j.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  return std::strtod(j.c_str() + at + key.size() + 3, nullptr);
}

pid_t spawn(const std::vector<std::string>& args, const std::string& env, const std::string& log) {
  std::vector<std::string> a = args;
  std::vector<char*> av;
  for (auto& s : a) av.push_back(s.data());
  av.push_back(nullptr);
  std::vector<std::string> envs;
  std::vector<char*> ev;
  for (char** e = environ; *e; ++e) ev.push_back(*e);
  std::string e2 = env;
  if (!e2.empty()) ev.push_back(e2.data());
  ev.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, av[0], &fa, nullptr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

void stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

void check_summary(const std::string& json, int status, double min_msgs) {
  INFO("client output: " << json);
  CHECK(status == 0);
  CHECK(json_number(json, "msgs") >= min_msgs);
  CHECK(json_number(json, "errors") == 0);
  CHECK(json_number(json, "p50_us") > 0);
  CHECK(json_number(json, "p50_us") <= json_number(json, "p999_us"));
}

}  // namespace

TEST_CASE("msg_gen in sidecar mode through two machnetd, verified") {
  two_hosts h;
  std::string env_b = std::string(shm::control_socket_env) + "=" + h.b.socket();
  pid_t server = spawn({MSG_GEN_PATH, "--mode=sidecar", "--local_ip", two_hosts::ip_b, "--local_port", "5000"},
                       env_b, h.dir + "/server.log");
  REQUIRE(server > 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  int status = -1;
  std::string cmd = std::string(shm::control_socket_env) + "=" + h.a.socket() + " " + MSG_GEN_PATH +
                    " --mode=sidecar --local_ip " + two_hosts::ip_a + " --remote_ip " + two_hosts::ip_b +
                    " --remote_port 5000 --msg_size 1024 --msg_window 8 --flows 2 --duration 2 --verify --json" +
                    " 2>" + h.dir + "/client.log";
  std::string out = run_capture(cmd, status);
  stop(server);
  INFO(read_file(h.dir + "/client.log") << read_file(h.dir + "/server.log"));
  check_summary(out, status, 100);
}

TEST_CASE("msg_gen in runtime mode: two processes with the stack inside, verified") {
  char tmpl[] = "/tmp/mn-mg.XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  std::string dir = tmpl;
  std::string sock = dir + "/memif.sock";
  pid_t server = spawn({MSG_GEN_PATH, "--mode=runtime", "--local_ip", "10.77.0.12", "--local_port", "5001",
                        "--device", "net_memif0,role=server,socket=" + sock + ",socket-abstract=no", "--mac",
                        "02:4d:4e:00:00:12", "--arp", "10.77.0.11=02:4d:4e:00:00:11", "--smp", "1",
                        "--poll-mode", "adaptive"},
                       "", dir + "/server.log");
  REQUIRE(server > 0);
  for (int i = 0; i < 500 && ::access(sock.c_str(), F_OK) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int status = -1;
  std::string cmd = std::string(MSG_GEN_PATH) +
                    " --mode=runtime --local_ip 10.77.0.11 --remote_ip 10.77.0.12 --remote_port 5001"
                    " --device net_memif1,role=client,socket=" + sock + ",socket-abstract=no"
                    " --mac 02:4d:4e:00:00:11 --arp 10.77.0.12=02:4d:4e:00:00:12 --smp 1 --poll-mode adaptive"
                    " --msg_size 64 --msg_window 1 --duration 2 --verify --json 2>" + dir + "/client.log";
  std::string out = run_capture(cmd, status);
  stop(server);
  INFO(read_file(dir + "/client.log") << read_file(dir + "/server.log"));
  check_summary(out, status, 100);
  int rc = std::system(("rm -rf '" + dir + "'").c_str());
  (void)rc;
}

TEST_CASE("the README's demo runs: two sidecars, hello_world gets every reply, msg_gen reports") {
  // tools/demo without its set-up step, on this build's binaries. It caught
  // machnetd dropping the last reply of a hello_world server that exits
  // right after sending it (the channel's TX ring was not drained on close).
  std::string cmd = std::string(SOURCE_DIR) + "/tools/demo --no-build --build-dir " + BUILD_DIR + " 2>&1";
  int status = -1;
  std::string out = run_capture(cmd, status);
  INFO(out);
  CHECK(status == 0);
  std::size_t replies = 0;
  for (std::size_t at = out.find("client: reply"); at != std::string::npos; at = out.find("client: reply", at + 1))
    ++replies;
  CHECK(replies == 3);
  CHECK(out.find("errors 0") != std::string::npos);
}
