// smp: starting shards on threads, and the poller that moves cross-shard
// messages: staged per target during a turn, pushed in one batch, target woken.
#include "machnet/runtime/smp.hh"

#include <stdexcept>

#include "machnet/runtime/log.hh"

namespace machnet {

namespace {
smp* g_smp = nullptr;
}

// One per shard: flushes this shard's staged outgoing messages and processes
// every incoming ring.
class smp::queue_poller final : public pollfn {
 public:
  queue_poller(smp& s, unsigned id) : _smp(s), _id(id), _staged(s._n) {}

  void stage(unsigned to, internal::smp_message* m) { _staged[to].push_back(m); }

  bool poll() override {
    bool work = flush();
    internal::smp_message* batch[64];
    for (unsigned from = 0; from < _smp._n; ++from) {
      if (from == _id) continue;
      auto& r = _smp.ring_of(from, _id);
      std::size_t n;
      while ((n = r.pop(batch, 64)) > 0) {
        work = true;
        for (std::size_t i = 0; i < n; ++i) dispatch(batch[i]);
      }
    }
    flush();  // responses produced just now go out this turn
    return work;
  }

  bool pure_poll() override {
    for (unsigned from = 0; from < _smp._n; ++from)
      if (from != _id && _smp.ring_of(from, _id).read_available() > 0) return true;
    for (auto& s : _staged)
      if (!s.empty()) return true;
    return false;
  }

 private:
  void dispatch(internal::smp_message* m) {
    if (m->responded) m->complete_on_source();
    else m->run_on_target();
  }

  bool flush() {
    bool any = false;
    for (unsigned to = 0; to < _smp._n; ++to) {
      auto& s = _staged[to];
      if (s.empty()) continue;
      if (to == _id) {  // local call: no ring
        std::vector<internal::smp_message*> local;
        local.swap(s);
        for (auto* m : local) dispatch(m);
        any = true;
        continue;
      }
      std::size_t pushed = _smp.ring_of(_id, to).push(s.data(), s.size());
      if (pushed) {
        s.erase(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(pushed));
        _smp.shard(to).wake();
        any = true;
      }
    }
    return any;
  }

  smp& _smp;
  unsigned _id;
  std::vector<std::vector<internal::smp_message*>> _staged;
};

void internal::smp_message::respond() {
  responded = true;
  smp::instance().enqueue(to, from, this);
}

smp::smp(std::vector<reactor_config> shards) : _n(static_cast<unsigned>(shards.size())) {
  if (_n == 0) throw std::invalid_argument("smp: at least one shard is needed");
  if (g_smp) throw std::logic_error("smp: only one instance at a time");
  for (unsigned i = 0; i < _n; ++i) _reactors.push_back(std::make_unique<reactor>(i, shards[i]));
  _rings.resize(std::size_t(_n) * _n);
  for (unsigned i = 0; i < _n; ++i)
    for (unsigned j = 0; j < _n; ++j)
      if (i != j) _rings[i * _n + j] = std::make_unique<ring>();
  for (unsigned i = 0; i < _n; ++i) {
    _pollers.push_back(std::make_unique<queue_poller>(*this, i));
    _reactors[i]->register_poller(_pollers[i].get());
  }
  g_smp = this;
}

smp::~smp() {
  stop();
  for (auto& t : _threads)
    if (t.joinable()) t.join();
  // Abandon what is still suspended, shard by shard; in-flight messages in the
  // rings are dropped (their frames are being destroyed with the roots).
  for (unsigned i = 0; i < _n; ++i) _reactors[i]->unregister_poller(_pollers[i].get());
  _reactors.clear();
  g_smp = nullptr;
}

smp& smp::instance() noexcept {
  if (!g_smp) {
    log::error("machnet: no smp instance");
    std::abort();
  }
  return *g_smp;
}

smp* smp::instance_or_null() noexcept { return g_smp; }

unsigned smp::count() noexcept { return g_smp ? g_smp->_n : 1; }

void smp::enqueue(unsigned from_shard, unsigned to_shard, internal::smp_message* m) {
  // Called on `from_shard`: staged, flushed by that shard's poller this turn.
  _pollers[from_shard]->stage(to_shard, m);
}

void smp::stop(int exit_code) noexcept {
  for (auto& r : _reactors) r->stop(exit_code);
}

int smp::run(task<int> main) {
  if (_started.exchange(true)) throw std::logic_error("smp::run called twice");
  for (unsigned i = 1; i < _n; ++i) _threads.emplace_back([this, i] { _reactors[i]->run(); });
  int code = 0;
  auto wrapper = [](smp* self, task<int> m, int* out) -> task<void> {
    try {
      *out = co_await std::move(m);
    } catch (const std::exception& e) {
      log::error("main task failed: {}", e.what());
      *out = 1;
    } catch (...) {
      log::error("main task failed with a non-standard exception");
      *out = 1;
    }
    self->stop(*out);
  };
  _reactors[0]->spawn(wrapper(this, std::move(main), &code));
  int rc = _reactors[0]->run();
  stop(rc);
  for (auto& t : _threads) t.join();
  _threads.clear();
  return rc;
}

}  // namespace machnet
