// signals: SIGINT/SIGTERM end a sidecar or udp run in order (the summary is
// still printed); a second signal exits at once.
#pragma once

namespace msg_gen {

void install_stop_handlers();
bool stop_requested() noexcept;

}  // namespace msg_gen
