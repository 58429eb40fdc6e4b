// thread: the fiber driver — a detached coroutine on the shard that switches
// into the fiber and, each time the fiber blocks, awaits what it is blocked on.
#include "machnet/runtime/thread.hh"

#include <boost/context/preallocated.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MACHNET_ASAN_FIBERS 1
#endif

namespace machnet {

namespace internal {

namespace {
thread_local fiber_context* tls_fiber = nullptr;
}

fiber_context* current_fiber() noexcept { return tls_fiber; }

// ASan must be told about every stack switch, or exceptions thrown on a
// fiber's stack look like wild writes.
void fiber_context::switch_in() {
  fiber_context* prev = tls_fiber;
  tls_fiber = this;
#if MACHNET_ASAN_FIBERS
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, stack_bottom, stack_size);
#endif
  fiber = std::move(fiber).resume();
#if MACHNET_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  tls_fiber = prev;
}

void fiber_context::switch_out() {
#if MACHNET_ASAN_FIBERS
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, caller_bottom, caller_size);
#endif
  caller = std::move(caller).resume();
#if MACHNET_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, &caller_bottom, &caller_size);
#endif
  if (cancelled) throw fiber_cancelled{};
}

fiber_context::~fiber_context() {
  // Unwind with our own exception (after an annotated switch) rather than
  // Boost's forced unwind, so every stack switch is visible to sanitizers.
  // A fiber that never started skips its function.
  cancelled = true;
  for (int tries = 0; fiber && !done && tries < 100; ++tries) switch_in();
}

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
  boost::context::protected_fixedsize_stack salloc(stack_size);
  boost::context::stack_context sc = salloc.allocate();
  ctx->stack_bottom = static_cast<char*>(sc.sp) - sc.size;
  ctx->stack_size = sc.size;
  ctx->fiber = boost::context::fiber(
      std::allocator_arg, boost::context::preallocated(sc.sp, sc.size, sc), salloc,
      [ctx, fn = std::move(fn)](boost::context::fiber&& caller) mutable {
#if MACHNET_ASAN_FIBERS
        __sanitizer_finish_switch_fiber(nullptr, &ctx->caller_bottom, &ctx->caller_size);
#endif
        ctx->caller = std::move(caller);
        try {
          if (!ctx->cancelled) fn();
        } catch (const internal::fiber_cancelled&) {
          // the shard is shutting down: the stack is unwound, nothing to report
        } catch (...) {
          ctx->error = std::current_exception();
        }
        ctx->done = true;
#if MACHNET_ASAN_FIBERS
        __sanitizer_start_switch_fiber(nullptr, ctx->caller_bottom, ctx->caller_size);
#endif
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
