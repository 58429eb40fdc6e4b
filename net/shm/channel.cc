// channel: layout arithmetic and the memfd mapping of a shared-memory channel.
#include "machnet/net/shm/channel.hh"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>

namespace machnet::shm {
namespace {

constexpr std::size_t page = 4096;
constexpr std::size_t align_up(std::size_t v, std::size_t a) { return (v + a - 1) & ~(a - 1); }
constexpr bool pow2(uint32_t v) { return v && !(v & (v - 1)); }

}  // namespace

std::string channel_params::check() const {
  if (!pow2(buf_count) || buf_count < 64 || buf_count > (1u << 20))
    return "buf_count must be a power of two in [64, 1048576]";
  if (buf_size % 64 != 0 || buf_size < 1024 || buf_size > (1u << 20))
    return "buf_size must be a multiple of 64 in [1024, 1048576]";
  if (!pow2(ctrl_slots) || ctrl_slots < 4 || ctrl_slots > 4096)
    return "ctrl_slots must be a power of two in [4, 4096]";
  // Half the pool must hold a largest message (the other half serves RX).
  if (std::size_t(bufs_for(max_message)) * 2 > buf_count)
    return "the pool is too small: half of it must hold an 8 MiB message";
  return {};
}

channel_layout channel_layout::of(const channel_params& p) noexcept {
  channel_layout l;
  std::size_t off = page;  // header page
  auto place = [&](std::size_t bytes) {
    std::size_t at = off;
    off = align_up(off + bytes, 64);
    return at;
  };
  const std::size_t idx_ring = ring_shared<uint32_t>::bytes(p.buf_count);
  l.free_ring = place(idx_ring);
  l.ret_ring = place(idx_ring);
  l.tx_ring = place(idx_ring);
  l.rx_ring = place(idx_ring);
  l.ctrl_sq = place(ring_shared<ctrl_req>::bytes(p.ctrl_slots));
  l.ctrl_cq = place(ring_shared<ctrl_resp>::bytes(p.ctrl_slots));
  l.buffers = align_up(off, page);
  l.size = align_up(l.buffers + std::size_t(p.buf_count) * p.buf_size, page);
  return l;
}

channel_map channel_map::create(const channel_params& p, const char* name) {
  if (std::string why = p.check(); !why.empty()) throw std::invalid_argument("channel: " + why);
  channel_map m;
  m._params = p;
  m._layout = channel_layout::of(p);
  m._size = m._layout.size;
  m._fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (m._fd < 0) throw std::system_error(errno, std::generic_category(), "memfd_create");
  if (::ftruncate(m._fd, off_t(m._size)) != 0)
    throw std::system_error(errno, std::generic_category(), "ftruncate channel");
  // The size is fixed from now on: the app cannot shrink it under us (SIGBUS).
  if (::fcntl(m._fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    throw std::system_error(errno, std::generic_category(), "seal channel");
  void* b = ::mmap(nullptr, m._size, PROT_READ | PROT_WRITE, MAP_SHARED, m._fd, 0);
  if (b == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap channel");
  m._base = static_cast<uint8_t*>(b);
  auto* h = new (m._base) channel_header{};
  h->magic = channel_magic;
  h->version = layout_version;
  h->header_size = sizeof(channel_header);
  h->region_size = m._size;
  h->params = p;
  h->layout = m._layout;
  // memfd pages are zero: the rings start empty (head = tail = 0).
  return m;
}

channel_map channel_map::attach(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "fstat channel");
  if (std::size_t(st.st_size) < page) throw std::runtime_error("channel: region smaller than its header");
  channel_map m;
  m._fd = fd;
  m._size = std::size_t(st.st_size);
  void* b = ::mmap(nullptr, m._size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (b == MAP_FAILED) {
    m._fd = -1;
    throw std::system_error(errno, std::generic_category(), "mmap channel");
  }
  m._base = static_cast<uint8_t*>(b);
  const channel_header& h = m.header();
  auto fail = [&](const std::string& why) {
    m._fd = -1;  // the caller still owns fd
    throw std::runtime_error("channel: " + why);
  };
  if (h.magic != channel_magic) fail("bad magic (not a machnet channel)");
  if (h.version != layout_version)
    fail("layout version " + std::to_string(h.version) + ", this library speaks " +
         std::to_string(layout_version) + " (upgrade libmachnet or machnetd)");
  if (std::string why = h.params.check(); !why.empty()) fail(why);
  channel_layout want = channel_layout::of(h.params);
  if (h.region_size != m._size || want.size != m._size) fail("region size does not match its parameters");
  if (std::memcmp(&want, &h.layout, sizeof want) != 0) fail("layout does not match its parameters");
  m._params = h.params;
  m._layout = want;
  return m;
}

channel_map& channel_map::operator=(channel_map&& o) noexcept {
  if (this != &o) {
    reset();
    steal(o);
  }
  return *this;
}

channel_map::~channel_map() { reset(); }

void channel_map::close_fd() noexcept {
  if (_fd >= 0) ::close(_fd);
  _fd = -1;
}

void channel_map::steal(channel_map& o) noexcept {
  _fd = o._fd;
  _base = o._base;
  _size = o._size;
  _params = o._params;
  _layout = o._layout;
  o._fd = -1;
  o._base = nullptr;
  o._size = 0;
}

void channel_map::reset() noexcept {
  if (_base) ::munmap(_base, _size);
  close_fd();
  _base = nullptr;
  _size = 0;
}

}  // namespace machnet::shm
