// Tests of EAL start-up: our arguments, and that starting the EAL leaves the
// calling thread's CPU affinity alone (shards pin themselves).
#include <catch2/catch.hpp>

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>

#include "machnet/net/eal.hh"

using namespace machnet::net;

TEST_CASE("eal arguments: no hugepages, no PCI unless asked, extra args last") {
  eal_config c;
  auto a = eal_arguments(c);
  REQUIRE(std::find(a.begin(), a.end(), "--no-huge") != a.end());
  REQUIRE(std::find(a.begin(), a.end(), "--no-pci") != a.end());
  REQUIRE(std::find(a.begin(), a.end(), "--no-shconf") != a.end());
  c.pci_allow = {"0000:00:08.0"};
  c.extra_args = {"--log-level=lib.eal:debug"};
  a = eal_arguments(c);
  REQUIRE(std::find(a.begin(), a.end(), "--no-pci") == a.end());
  REQUIRE(a.back() == "--log-level=lib.eal:debug");
  REQUIRE(is_pci_address("0000:00:08.0"));
  REQUIRE(is_pci_address("00:08.0"));
  REQUIRE_FALSE(is_pci_address("net_memif0,role=server"));
}

TEST_CASE("starting the EAL keeps the calling thread's CPU affinity") {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int cpu = ncpu > 1 ? 1 : 0;  // not lcore 0's CPU when there is a choice
  cpu_set_t want;
  CPU_ZERO(&want);
  CPU_SET(cpu, &want);
  REQUIRE(pthread_setaffinity_np(pthread_self(), sizeof want, &want) == 0);
  eal_start({});
  REQUIRE(eal_running());
  cpu_set_t got;
  REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof got, &got) == 0);
  REQUIRE(CPU_EQUAL(&got, &want));
}
