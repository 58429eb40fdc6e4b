// rcu: the liburcu-qsbr calls behind machnet::rcu, kept out of headers so only
// this file sees liburcu's macros.
#define _LGPL_SOURCE
#include "machnet/runtime/rcu.hh"

#include <urcu/urcu-qsbr.h>
#include <urcu/call-rcu.h>

#include <new>

namespace machnet::rcu {

namespace {
struct deferred {
  rcu_head head;
  void (*fn)(void*);
  void* arg;
};
void run_deferred(rcu_head* h) {
  auto* d = caa_container_of(h, deferred, head);
  d->fn(d->arg);
  delete d;
}
}  // namespace

void register_thread() { urcu_qsbr_register_thread(); }
void unregister_thread() { urcu_qsbr_unregister_thread(); }
void quiescent_state() { urcu_qsbr_quiescent_state(); }
void thread_offline() { urcu_qsbr_thread_offline(); }
void thread_online() { urcu_qsbr_thread_online(); }
void synchronize() { urcu_qsbr_synchronize_rcu(); }
void defer(void (*fn)(void*), void* arg) {
  auto* d = new deferred{{}, fn, arg};
  urcu_qsbr_call_rcu(&d->head, run_deferred);
}
void barrier() { urcu_qsbr_barrier(); }

}  // namespace machnet::rcu
