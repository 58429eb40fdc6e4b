// thread: the fiber driver — a detached coroutine on the shard that switches
// into the fiber and, each time the fiber blocks, awaits what it is blocked on.
#include "machnet/runtime/thread.hh"

#include <boost/context/protected_fixedsize_stack.hpp>

namespace machnet {

namespace internal {

namespace {
thread_local fiber_context* tls_fiber = nullptr;
}

fiber_context* current_fiber() noexcept { return tls_fiber; }

void fiber_context::switch_in() {
  fiber_context* prev = tls_fiber;
  tls_fiber = this;
  fiber = std::move(fiber).resume();
  tls_fiber = prev;
}

void fiber_context::switch_out() { caller = std::move(caller).resume(); }

namespace {
// Owns the context: if the shard shuts down while the fiber is blocked, this
// frame is destroyed, the context with it, and the fiber's stack is unwound.
task<void> drive(std::shared_ptr<fiber_context> ctx) {
  for (;;) {
    ctx->switch_in();
    if (ctx->done) break;
    auto p = std::move(ctx->pending);
    co_await std::move(p);  // a bridge: never throws, the result stays with the fiber
  }
  if (ctx->joiner) reactor::local().schedule(std::exchange(ctx->joiner, {}));
}
}  // namespace

}  // namespace internal

thread::thread(std::function<void()> fn, std::size_t stack_size)
    : _ctx(std::make_shared<internal::fiber_context>()) {
  auto* ctx = _ctx.get();
  ctx->fiber = boost::context::fiber(
      std::allocator_arg, boost::context::protected_fixedsize_stack(stack_size),
      [ctx, fn = std::move(fn)](boost::context::fiber&& caller) mutable {
        ctx->caller = std::move(caller);
        try {
          fn();
        } catch (const boost::context::detail::forced_unwind&) {
          throw;  // the context is being destroyed: let Boost unwind the stack
        } catch (...) {
          ctx->error = std::current_exception();
        }
        ctx->done = true;
        return std::move(ctx->caller);
      });
  reactor::local().spawn(internal::drive(_ctx));
}

task<void> thread::join() {
  if (!_ctx) throw std::logic_error("machnet::thread: join on an empty or joined thread");
  auto ctx = std::move(_ctx);
  if (!ctx->done) {
    struct awaiter {
      internal::fiber_context* c;
      bool await_ready() const noexcept { return c->done; }
      void await_suspend(std::coroutine_handle<> h) noexcept { c->joiner = h; }
      void await_resume() const noexcept {}
    };
    co_await awaiter{ctx.get()};
  }
  if (ctx->error) std::rethrow_exception(ctx->error);
}

void thread_yield() { await(yield{}); }

}  // namespace machnet
