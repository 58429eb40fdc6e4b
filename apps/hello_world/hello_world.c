/* hello_world: the smallest Machnet app, in plain C against machnet.h — the
 * server echoes what it receives, the client sends a few greetings and prints
 * the replies with their round-trip times. Runs against a machnetd sidecar. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <machnet.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void ip_str(uint32_t ip, char *out, size_t n) {
  snprintf(out, n, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

static void usage(void) {
  fprintf(stderr,
          "usage: hello_world --local_ip IP [--remote_ip IP] [--port N] [--count N] [--timeout_ms N]\n"
          "  without --remote_ip: server on IP:port, echoes (--count messages, 0 = forever)\n"
          "  with --remote_ip: client, sends --count greetings and waits for each reply\n");
}

int main(int argc, char **argv) {
  const char *local_ip = NULL, *remote_ip = NULL;
  int port = 888, count = -1, timeout_ms = 5000;
  static const struct option opts[] = {
      {"local_ip", required_argument, 0, 'l'}, {"remote_ip", required_argument, 0, 'r'},
      {"port", required_argument, 0, 'p'},     {"count", required_argument, 0, 'c'},
      {"timeout_ms", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'l': local_ip = optarg; break;
      case 'r': remote_ip = optarg; break;
      case 'p': port = atoi(optarg); break;
      case 'c': count = atoi(optarg); break;
      case 't': timeout_ms = atoi(optarg); break;
      case 'h': usage(); return 0;
      default: usage(); return 2;
    }
  }
  if (!local_ip || port <= 0 || port > 65535) {
    usage();
    return 2;
  }
  if (count < 0) count = remote_ip ? 3 : 0;

  if (machnet_init() != 0) {
    fprintf(stderr, "hello_world: machnet_init: %s (is machnetd running?)\n", strerror(errno));
    return 1;
  }
  void *ch = machnet_attach();
  if (!ch) {
    fprintf(stderr, "hello_world: machnet_attach: %s\n", strerror(errno));
    return 1;
  }
  char buf[2048];
  char a[16], b[16];
  if (!remote_ip) {
    if (machnet_listen(ch, local_ip, (uint16_t)port) != 0) {
      fprintf(stderr, "hello_world: listen %s:%d: %s\n", local_ip, port, strerror(errno));
      return 1;
    }
    printf("server: listening on %s:%d\n", local_ip, port);
    fflush(stdout);
    for (int n = 0; count == 0 || n < count;) {
      MachnetFlow_t flow;
      ssize_t got = machnet_recv_wait(ch, buf, sizeof buf - 1, &flow, 1000);
      if (got < 0) {
        fprintf(stderr, "hello_world: recv: %s\n", strerror(errno));
        return 1;
      }
      if (got == 0) continue;
      buf[got] = 0;
      ip_str(flow.dst_ip, a, sizeof a);
      printf("server: got \"%s\" from %s:%u\n", buf, a, flow.dst_port);
      fflush(stdout);
      char reply[2100];
      int len = snprintf(reply, sizeof reply, "hello back: %s", buf);
      if (machnet_send(ch, flow, reply, (size_t)len) != 0) {
        fprintf(stderr, "hello_world: send: %s\n", strerror(errno));
        return 1;
      }
      ++n;
    }
    return 0;
  }
  MachnetFlow_t flow;
  if (machnet_connect(ch, local_ip, remote_ip, (uint16_t)port, &flow) != 0) {
    fprintf(stderr, "hello_world: connect %s -> %s:%d: %s\n", local_ip, remote_ip, port, strerror(errno));
    return 1;
  }
  ip_str(flow.src_ip, a, sizeof a);
  ip_str(flow.dst_ip, b, sizeof b);
  printf("client: connected %s:%u -> %s:%u\n", a, flow.src_port, b, flow.dst_port);
  for (int i = 0; i < count; ++i) {
    char msg[64];
    int len = snprintf(msg, sizeof msg, "Hello World #%d", i + 1);
    double t0 = now_us();
    if (machnet_send(ch, flow, msg, (size_t)len) != 0) {
      fprintf(stderr, "hello_world: send: %s\n", strerror(errno));
      return 1;
    }
    MachnetFlow_t from;
    ssize_t got = machnet_recv_wait(ch, buf, sizeof buf - 1, &from, timeout_ms);
    if (got <= 0) {
      fprintf(stderr, "hello_world: no reply to #%d: %s\n", i + 1, got == 0 ? "timed out" : strerror(errno));
      return 1;
    }
    buf[got] = 0;
    printf("client: reply \"%s\" (%.1f us)\n", buf, now_us() - t0);
  }
  machnet_detach(ch);
  return 0;
}
