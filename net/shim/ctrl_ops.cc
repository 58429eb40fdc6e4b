// ctrl_ops: listen, connect and close over the channel's control queue
// (ctrl_sq / ctrl_cq), one request at a time, answers matched by id.
#include <thread>

#include "app_channel.hh"

namespace machnet::shim {
namespace {

constexpr int64_t ms = 1'000'000;
constexpr int64_t listen_budget_ns = 5'000 * ms;
constexpr int64_t connect_budget_ns = 10'000 * ms;
constexpr int64_t close_budget_ns = 5'000 * ms;

}  // namespace

int app_channel::control(shm::ctrl_req req, int64_t budget_ns, shm::ctrl_resp& resp) noexcept {
  if (int e = alive()) return e;
  const int64_t deadline = now_ns() + budget_ns;
  req.id = ++_ctrl_id;
  // ctrl_sq is full only while machnetd is behind on control requests; it
  // rings no doorbell when it consumes, so look again now and then.
  while (!_sq.push(req)) {
    ring_engine();
    if (int e = alive()) return e;
    if (now_ns() >= deadline) return ETIMEDOUT;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  _sq.publish();
  wake_engine_if_sleeping();
  for (;;) {
    shm::ctrl_resp r;
    while (_cq.pop(r)) {
      _cq.publish();
      if (r.id == req.id) {
        resp = r;
        if (r.status == 0) return 0;
        return r.status > 0 && r.status < 4096 ? r.status : EPROTO;
      }
      settle_stale(r);
    }
    int e = wait([this] { return _cq.ready() > 0; }, deadline);
    if (e == ETIMEDOUT) {
      _abandoned[_abandoned_next++ % _abandoned.size()] = {req.id, req.op};
      return ETIMEDOUT;
    }
    if (e) return e;
  }
}

void app_channel::settle_stale(const shm::ctrl_resp& r) noexcept {
  for (abandoned& a : _abandoned) {
    if (a.id != r.id || a.id == 0) continue;
    const shm::ctrl_op op = a.op;
    a = {};
    // A connect we gave up on succeeded after all: nobody knows the flow, so
    // close it (and ignore that answer too).
    if (op == shm::ctrl_op::connect && r.status == 0) {
      shm::ctrl_req c{};
      c.id = ++_ctrl_id;
      c.op = shm::ctrl_op::close;
      c.flow = r.flow;
      if (_sq.push(c)) {
        _sq.publish();
        wake_engine_if_sleeping();
        _abandoned[_abandoned_next++ % _abandoned.size()] = {c.id, c.op};
      }
    }
    return;
  }
}

int app_channel::listen(uint32_t local_ip, uint16_t port) noexcept {
  shm::ctrl_req req{};
  req.op = shm::ctrl_op::listen;
  req.local_ip = local_ip;
  req.local_port = port;
  shm::ctrl_resp resp;
  return control(req, listen_budget_ns, resp);
}

int app_channel::connect(uint32_t local_ip, uint32_t remote_ip, uint16_t remote_port,
                         shm::flow_info* flow) noexcept {
  shm::ctrl_req req{};
  req.op = shm::ctrl_op::connect;
  req.local_ip = local_ip;
  req.remote_ip = remote_ip;
  req.remote_port = remote_port;
  shm::ctrl_resp resp;
  int e = control(req, connect_budget_ns, resp);
  if (e == 0) *flow = resp.flow;
  return e;
}

int app_channel::close_flow(const shm::flow_info& flow) noexcept {
  shm::ctrl_req req{};
  req.op = shm::ctrl_op::close;
  req.flow = flow;
  shm::ctrl_resp resp;
  return control(req, close_budget_ns, resp);
}

}  // namespace machnet::shim
