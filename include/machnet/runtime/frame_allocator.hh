// frame_allocator: per-thread recycling of coroutine frames, so spawning and
// awaiting child tasks on the hot path does not go to malloc.
#pragma once

#include <cstddef>
#include <new>

namespace machnet::internal {

/// Size classes of 64 bytes up to 2 KiB; larger frames use operator new.
/// Each thread keeps bounded free lists; a frame freed on another thread simply
/// joins that thread's list (memory is plain heap memory).
class frame_allocator {
 public:
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t classes = 32;
  static constexpr std::size_t max_cached = 256;

  static void* allocate(std::size_t n) {
    std::size_t c = (n + sizeof(header) + granule - 1) / granule;
    if (c > classes) {
      auto* h = static_cast<header*>(::operator new(n + sizeof(header)));
      h->cls = 0;
      return h + 1;
    }
    auto& l = local().lists[c - 1];
    header* h;
    if (l.head) {
      h = l.head;
      l.head = h->next;
      --l.count;
    } else {
      h = static_cast<header*>(::operator new(c * granule));
    }
    h->cls = static_cast<unsigned>(c);
    return h + 1;
  }

  static void deallocate(void* p) noexcept {
    auto* h = static_cast<header*>(p) - 1;
    unsigned c = h->cls;
    if (c == 0) {
      ::operator delete(h);
      return;
    }
    auto& l = local().lists[c - 1];
    if (l.count >= max_cached) {
      ::operator delete(h);
      return;
    }
    h->next = l.head;
    l.head = h;
    ++l.count;
  }

 private:
  union alignas(16) header {
    header* next;
    unsigned cls;
  };
  struct list {
    header* head = nullptr;
    std::size_t count = 0;
  };
  struct state {
    list lists[classes];
    ~state() {
      for (auto& l : lists)
        while (l.head) {
          header* n = l.head->next;
          ::operator delete(l.head);
          l.head = n;
        }
    }
  };
  static state& local() {
    static thread_local state s;
    return s;
  }
};

}  // namespace machnet::internal
