// log: leveled logging with fmt, prefixed by time and shard.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace machnet::log {

enum class level { trace, debug, info, warn, error, off };

/// Parses trace|debug|info|warn|error|off; throws std::invalid_argument.
level parse_level(std::string_view s);
void set_level(level l) noexcept;
level get_level() noexcept;
inline bool enabled(level l) noexcept { return l >= get_level(); }

void write(level l, std::string_view msg) noexcept;

template <typename... A>
void trace(fmt::format_string<A...> f, A&&... a) {
  if (enabled(level::trace)) write(level::trace, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void debug(fmt::format_string<A...> f, A&&... a) {
  if (enabled(level::debug)) write(level::debug, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void info(fmt::format_string<A...> f, A&&... a) {
  if (enabled(level::info)) write(level::info, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void warn(fmt::format_string<A...> f, A&&... a) {
  if (enabled(level::warn)) write(level::warn, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void error(fmt::format_string<A...> f, A&&... a) {
  if (enabled(level::error)) write(level::error, fmt::format(f, std::forward<A>(a)...));
}

}  // namespace machnet::log
