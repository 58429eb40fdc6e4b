// modes: the entry point of each --mode; each returns the exit status.
#pragma once

#include "options.hh"

namespace msg_gen {

/// machnetd through libmachnet's C API (machnet.h); no DPDK in this process.
int run_sidecar(const options& o);
/// The kernel UDP baseline (udp: blocking receive; udp-busy: spinning).
int run_udp(const options& o);
/// The stack in this process (machnet.hh, DPDK): an app_template app that
/// parses argv again for its runtime flags.
int run_runtime(const options& o, int argc, char** argv);

}  // namespace msg_gen
