// runtime_mode: msg_gen with the stack in its own shard (machnet.hh) — an
// app_template app: start_stack on shard 0, then a server that accepts and
// echoes per connection, or a client with one coroutine per flow keeping
// --msg_window messages in flight. One shard for now: every flow is on shard 0.
#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "client_core.hh"
#include "machnet/machnet.hh"
#include "machnet/runtime/app.hh"
#include "machnet/runtime/clock.hh"
#include "machnet/runtime/reactor.hh"
#include "modes.hh"
#include "report.hh"

namespace po = boost::program_options;

namespace msg_gen {

namespace {

// How often the main coroutine looks at stop requests and the clock.
constexpr uint64_t check_us = 100'000;

machnet::stack_config stack_config_of(const options& o) {
  using namespace machnet::net;
  machnet::stack_config cfg;
  cfg.port.device = o.device;
  if (!o.mac.empty()) {
    auto mac = mac_addr::parse(o.mac);
    if (!mac) throw std::invalid_argument("--mac: '" + o.mac + "' is not a MAC address");
    cfg.port.mac = *mac;
  }
  auto ip = ipv4_addr::parse(o.local_ip);
  if (!ip) throw std::invalid_argument("--local_ip: '" + o.local_ip + "' is not an IPv4 address");
  cfg.ip = *ip;
  for (const std::string& e : o.arp) {
    auto eq = e.find('=');
    auto aip = ipv4_addr::parse(e.substr(0, eq));
    auto amac = eq == std::string::npos ? std::nullopt : mac_addr::parse(e.substr(eq + 1));
    if (!aip || !amac) throw std::invalid_argument("--arp: '" + e + "' is not IP=MAC");
    cfg.static_arp.emplace_back(*aip, *amac);
  }
  return cfg;
}

// Sleeps until the next report tick, the end, or the next stop check.
machnet::sleep_for nap(uint64_t next_tick_ns, uint64_t end_ns) {
  const uint64_t now = machnet::now_ns();
  const uint64_t until = std::min(next_tick_ns, end_ns);
  const uint64_t us = until > now ? (until - now + 999) / 1000 : 1;
  return machnet::sleep_for(std::clamp<uint64_t>(us, 1, check_us));
}

struct server_state {
  explicit server_state(const options& o) : rep(o, machnet::now_ns()) {}
  server_report rep;
  bool done = false;
};

machnet::task<int> serve(const options& o) {
  machnet::listener l = co_await machnet::listen(o.local_port);
  auto st = std::make_shared<server_state>(o);
  fmt::print(st->rep.out(), "msg_gen: runtime server listening on {}:{}\n", o.local_ip, o.local_port);
  std::fflush(st->rep.out());
  machnet::this_shard().spawn([st, l = std::move(l)]() mutable -> machnet::task<void> {
    while (!st->done) {
      machnet::connection c;
      try {
        c = co_await l.accept();
      } catch (const std::exception& e) {
        if (!st->done) fmt::print(stderr, "msg_gen: accept: {}\n", e.what());
        co_return;
      }
      machnet::this_shard().spawn([st, c = std::move(c)]() mutable -> machnet::task<void> {
        try {
          while (!st->done) {
            machnet::message m = co_await c.recv();
            const std::size_t n = m.size();
            co_await c.send(std::move(m));
            st->rep.echoed(n);
          }
        } catch (const std::exception&) {
          // The client closed or reset the flow.
        }
      });
    }
  });
  while (!machnet::app_template::stop_requested() && machnet::now_ns() < st->rep.end_ns()) {
    co_await nap(st->rep.next_tick_ns(), st->rep.end_ns());
    st->rep.tick(machnet::now_ns());
  }
  st->done = true;
  co_return st->rep.finish(machnet::now_ns());
}

struct client_state {
  explicit client_state(const options& o) : rep(o, machnet::now_ns()), core(o, rep) {}
  client_report rep;
  client_core core;
  bool done = false;
  std::string fatal;
};

// One flow: a window of messages, then a new one per reply.
machnet::task<void> run_flow(std::shared_ptr<client_state> st, uint32_t f, machnet::connection c) {
  try {
    for (uint32_t s = 0; s < st->core.window() && !st->done; ++s)
      co_await c.send(machnet::message::copy_of(st->core.build(f, s)));
    while (!st->done) {
      machnet::message m = co_await c.recv();
      if (st->done) break;
      if (auto next = st->core.on_reply(f, m.bytes(), machnet::now_ns()))
        co_await c.send(machnet::message::copy_of(st->core.build(f, *next)));
    }
  } catch (const std::exception& e) {
    if (!st->done && st->fatal.empty()) st->fatal = fmt::format("flow {}: {}", f, e.what());
  }
}

machnet::task<int> client(const options& o) {
  const auto remote = machnet::net::ipv4_addr::parse(o.remote_ip);
  std::vector<machnet::connection> conns;
  for (uint32_t f = 0; f < o.flows; ++f) {
    try {
      conns.push_back(co_await machnet::connect(*remote, o.remote_port));
    } catch (const std::exception& e) {
      fmt::print(stderr, "msg_gen: connect {}:{} (flow {}): {}\n", o.remote_ip, o.remote_port, f, e.what());
      co_return 1;
    }
  }
  std::FILE* out = o.json ? stderr : stdout;
  fmt::print(out, "msg_gen: runtime client: {} flow(s) {} -> {}, {} B, window {}, {} s\n", o.flows,
             conns[0].tuple().local_ip.str() + ":" + std::to_string(conns[0].tuple().local_port),
             o.remote_ip + ":" + std::to_string(o.remote_port), o.msg_size, o.window, o.duration_s);
  std::fflush(out);
  auto st = std::make_shared<client_state>(o);
  for (uint32_t f = 0; f < o.flows; ++f) machnet::this_shard().spawn(run_flow(st, f, std::move(conns[f])));
  while (!machnet::app_template::stop_requested() && machnet::now_ns() < st->rep.end_ns() && st->fatal.empty()) {
    co_await nap(st->rep.next_tick_ns(), st->rep.end_ns());
    st->rep.tick(machnet::now_ns());
  }
  st->done = true;
  co_return st->rep.finish(machnet::now_ns(), st->fatal);
}

machnet::task<int> runtime_main(const options& o, machnet::stack_config cfg) {
  try {
    co_await machnet::start_stack(std::move(cfg));
  } catch (const std::exception& e) {
    fmt::print(stderr, "msg_gen: starting the stack on {}: {}\n", o.device, e.what());
    co_return 1;
  }
  int rc = 1;
  try {
    rc = o.server() ? co_await serve(o) : co_await client(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "msg_gen: {}\n", e.what());
  }
  co_await machnet::stop_stack();
  co_return rc;
}

}  // namespace

int run_runtime(const options& o, int argc, char** argv) {
  machnet::stack_config cfg;
  try {
    cfg = stack_config_of(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "msg_gen: {}\n(see --help)\n", e.what());
    return 2;
  }
  machnet::app_template app("msg_gen", "message generator: runtime mode (the stack in this process)");
  add_options(app.add_options());
  app.stop_in_main();
  return app.run(argc, argv, [&o, &cfg](const po::variables_map&) { return runtime_main(o, cfg); });
}

}  // namespace msg_gen
