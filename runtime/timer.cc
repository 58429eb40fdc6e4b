// timer: the hierarchical timer wheel (see timer.hh for the slot invariant).
#include "machnet/runtime/timer.hh"

#include <bit>

#include "machnet/runtime/clock.hh"
#include "machnet/runtime/reactor.hh"

namespace machnet {

namespace {
constexpr uint64_t max_span = (uint64_t(1) << (timer_wheel::levels * timer_wheel::bits_per_level)) - 1;
}

void timer::arm(uint64_t delay_us) {
  auto& w = reactor::local().timers();
  arm_at(w, now_us() + delay_us);
}

void timer::arm_at(timer_wheel& wheel, uint64_t deadline_us) {
  if (_wheel) _wheel->remove(*this);
  _deadline = deadline_us;
  wheel.insert(*this);
}

void timer::cancel() noexcept {
  if (_wheel) _wheel->remove(*this);
}

timer_wheel::timer_wheel(uint64_t now_us) : _now(now_us) {
  for (auto& s : _slots) s.prev = s.next = &s;
}

timer_wheel::~timer_wheel() {
  // Orphan whatever is still armed so the timers' destructors don't touch us.
  for (auto& s : _slots) {
    for (auto* l = s.next; l != &s;) {
      auto* t = static_cast<timer*>(l);
      l = l->next;
      t->_wheel = nullptr;
      t->prev = t->next = nullptr;
    }
  }
}

void timer_wheel::insert(timer& t) noexcept {
  uint64_t d = t._deadline;
  if (d < _now) d = _now;
  if (d - _now > max_span) d = _now + max_span;
  t._deadline = d;
  uint64_t diff = d ^ _now;
  unsigned level = diff ? (63 - std::countl_zero(diff)) / bits_per_level : 0;
  unsigned slot = (d >> (level * bits_per_level)) & (slots_per_level - 1);
  unsigned idx = level * slots_per_level + slot;
  auto& h = _slots[idx];
  t.prev = h.prev;
  t.next = &h;
  h.prev->next = &t;
  h.prev = &t;
  t._slot = static_cast<uint16_t>(idx);
  t._wheel = this;
  _occupied[level] |= uint64_t(1) << slot;
  ++_count;
  _next_hint = 0;
}

void timer_wheel::remove(timer& t) noexcept {
  t.prev->next = t.next;
  t.next->prev = t.prev;
  unsigned idx = t._slot;
  auto& h = _slots[idx];
  if (h.next == &h) _occupied[idx / slots_per_level] &= ~(uint64_t(1) << (idx % slots_per_level));
  t.prev = t.next = nullptr;
  t._wheel = nullptr;
  --_count;
}

// The next tick at which something happens: a level-0 slot expires or a
// higher-level slot cascades.
uint64_t timer_wheel::next_event() const noexcept {
  uint64_t best = UINT64_MAX;
  for (unsigned k = 0; k < levels; ++k) {
    if (!_occupied[k]) continue;
    unsigned shift = k * bits_per_level;
    unsigned cur = (_now >> shift) & (slots_per_level - 1);
    // At level k>0 the current slot is still pending only when _now sits
    // exactly on its boundary (the cascade at _now has not run yet).
    bool cur_pending = k == 0 || (_now & ((uint64_t(1) << shift) - 1)) == 0;
    unsigned from = cur_pending ? cur : cur + 1;
    if (from >= slots_per_level) continue;
    uint64_t mask = _occupied[k] & (~uint64_t(0) << from);
    if (!mask) continue;
    unsigned s = std::countr_zero(mask);
    unsigned upper_shift = shift + bits_per_level;
    uint64_t upper = upper_shift >= 64 ? 0 : (_now >> upper_shift) << upper_shift;
    uint64_t t = upper | (uint64_t(s) << shift);
    if (t < _now) t = _now;
    if (t < best) best = t;
  }
  return best;
}

uint64_t timer_wheel::next_deadline() const noexcept { return _count ? next_event() : UINT64_MAX; }

void timer_wheel::cascade(unsigned level) noexcept {
  unsigned slot = (_now >> (level * bits_per_level)) & (slots_per_level - 1);
  auto& h = _slots[level * slots_per_level + slot];
  if (h.next == &h) return;
  // Detach the list, then re-insert each timer relative to the new _now.
  internal::timer_link* l = h.next;
  h.prev->next = nullptr;
  h.prev = h.next = &h;
  _occupied[level] &= ~(uint64_t(1) << slot);
  while (l) {
    auto* t = static_cast<timer*>(l);
    l = l->next;
    --_count;
    insert(*t);
  }
}

unsigned timer_wheel::advance(uint64_t now_us) {
  if (now_us < _next_hint) {  // nothing due (the common case, every turn)
    if (now_us + 1 > _now) _now = now_us + 1;
    return 0;
  }
  unsigned fired = 0;
  while (_count) {
    uint64_t t = next_event();
    if (t > now_us) break;
    _now = t;
    // Cascade every level whose position just rolled over, highest first.
    for (unsigned k = levels - 1; k > 0; --k) {
      uint64_t low = _now & ((uint64_t(1) << (k * bits_per_level)) - 1);
      if (low == 0) cascade(k);
    }
    // Expire level 0's slot; new timers armed by callbacks land at _now + 1 or later.
    unsigned slot = _now & (slots_per_level - 1);
    auto& h = _slots[slot];
    ++_now;
    while (h.next != &h) {
      auto* tm = static_cast<timer*>(h.next);
      remove(*tm);
      ++fired;
      if (tm->_cb) tm->_cb();
    }
  }
  if (now_us + 1 > _now) _now = now_us + 1;
  _next_hint = _count ? next_event() : UINT64_MAX;
  return fired;
}

}  // namespace machnet
