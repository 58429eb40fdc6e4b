/* reference_api: a C99 program written only against the reference Machnet API
 * (init, attach, listen, connect, send, recv, sendmsg, recvmsg, sendmmsg) —
 * proof that such an app compiles and links unchanged with libmachnet, and a
 * runnable hello round trip:
 *   reference_api server <local_ip> <remote_ip> <port>   answers one hello
 *   reference_api client <local_ip> <remote_ip> <port>   sends hello, waits for the answers
 * The server answers a hello with "world" (sendmsg) and "hello" (sendmmsg)
 * and waits for the client's goodbye. Exits 0 on success.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime */

#include <machnet.h>

#include <errno.h>
#include <string.h>
#include <time.h>

static const char hello[] = "hello";
static const char world[] = "world";
#define PAYLOAD_BYTES 6 /* both strings with their NUL */

static void pause_briefly(void) {
  struct timespec ts;
  ts.tv_sec = 0;
  ts.tv_nsec = 100000; /* 100 us */
  nanosleep(&ts, NULL);
}

static long elapsed_ms(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long)(now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

static int fail(const char *what) {
  fprintf(stderr, "reference_api: %s failed: %s\n", what, strerror(errno));
  return 1;
}

/* Waits (polling, as reference apps do) for one message: recvmsg into two
 * iovecs. 1 received, 0 none within timeout_ms, -1 error. */
static int poll_recvmsg(void *channel, char *buf, size_t len, MachnetFlow_t *flow,
                        long timeout_ms) {
  struct timespec start;
  MachnetIovec_t iov[2];
  MachnetMsgHdr_t msg;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int r;
    iov[0].base = buf;
    iov[0].len = 2;
    iov[1].base = buf + 2;
    iov[1].len = len - 2;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    r = machnet_recvmsg(channel, &msg);
    if (r != 0) {
      if (r == 1) *flow = msg.flow_info;
      return r;
    }
    if (elapsed_ms(&start) > timeout_ms) return 0;
    pause_briefly();
  }
}

static void linger_ms(long ms) {
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (elapsed_ms(&start) < ms) pause_briefly();
}

static int run_server(void *channel, const char *local_ip, uint16_t port) {
  char buf[64];
  MachnetFlow_t flow, from;
  MachnetMsgHdr_t msg;
  MachnetIovec_t iov[2];
  int r;
  if (machnet_listen(channel, local_ip, port) != 0) return fail("machnet_listen");
  r = poll_recvmsg(channel, buf, sizeof buf, &flow, 60000);
  if (r < 0) return fail("machnet_recvmsg");
  if (r == 0) {
    fprintf(stderr, "reference_api: no hello within 60 s\n");
    return 1;
  }
  if (memcmp(buf, hello, PAYLOAD_BYTES) != 0) {
    fprintf(stderr, "reference_api: unexpected message\n");
    return 1;
  }
  /* Answer "world" with sendmsg (on the flow the hello came on), then "hello"
   * again with sendmmsg. */
  iov[0].base = (void *)world;
  iov[0].len = PAYLOAD_BYTES;
  iov[1].base = (void *)hello;
  iov[1].len = PAYLOAD_BYTES;
  memset(&msg, 0, sizeof msg);
  msg.msg_size = PAYLOAD_BYTES;
  msg.flow_info = flow;
  msg.msg_iov = &iov[0];
  msg.msg_iovlen = 1;
  if (machnet_sendmsg(channel, &msg) != 0) return fail("machnet_sendmsg");
  msg.msg_iov = &iov[1];
  if (machnet_sendmmsg(channel, &msg, 1) != 1) return fail("machnet_sendmmsg");
  printf("server: answered %u.%u.%u.%u:%u\n", (unsigned)(flow.dst_ip >> 24),
         (unsigned)(flow.dst_ip >> 16) & 255u, (unsigned)(flow.dst_ip >> 8) & 255u,
         (unsigned)flow.dst_ip & 255u, (unsigned)flow.dst_port);
  /* Stay until the client says it got both (exiting resets our flows). */
  r = poll_recvmsg(channel, buf, sizeof buf, &from, 5000);
  if (r < 0) return fail("machnet_recvmsg");
  if (r == 0) printf("server: no goodbye within 5 s\n");
  return 0;
}

static int run_client(void *channel, const char *local_ip, const char *remote_ip, uint16_t port) {
  char buf[64];
  MachnetFlow_t flow, from;
  struct timespec start;
  ssize_t n;
  int r;
  if (machnet_connect(channel, local_ip, remote_ip, port, &flow) != 0)
    return fail("machnet_connect");
  if (machnet_send(channel, flow, hello, PAYLOAD_BYTES) != 0) return fail("machnet_send");
  /* The first answer through machnet_recv (polling, as reference apps do). */
  clock_gettime(CLOCK_MONOTONIC, &start);
  while ((n = machnet_recv(channel, buf, sizeof buf, &from)) == 0) {
    if (elapsed_ms(&start) > 10000) {
      fprintf(stderr, "reference_api: no answer within 10 s\n");
      return 1;
    }
    pause_briefly();
  }
  if (n < 0) return fail("machnet_recv");
  if (n != PAYLOAD_BYTES || memcmp(buf, world, PAYLOAD_BYTES) != 0) {
    fprintf(stderr, "reference_api: unexpected answer\n");
    return 1;
  }
  /* The second through machnet_recvmsg. */
  r = poll_recvmsg(channel, buf, sizeof buf, &from, 10000);
  if (r < 0) return fail("machnet_recvmsg");
  if (r == 0 || memcmp(buf, hello, PAYLOAD_BYTES) != 0) {
    fprintf(stderr, "reference_api: second answer missing\n");
    return 1;
  }
  if (machnet_send(channel, flow, world, PAYLOAD_BYTES) != 0) return fail("machnet_send");
  linger_ms(200); /* lets the goodbye leave before exit resets the flow */
  printf("client: hello round trip with %s:%u done\n", remote_ip, (unsigned)port);
  return 0;
}

int main(int argc, char **argv) {
  void *channel;
  long port;
  if (argc != 5 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0)) {
    fprintf(stderr, "usage: %s server|client <local_ip> <remote_ip> <port>\n", argv[0]);
    return 2;
  }
  port = strtol(argv[4], NULL, 10);
  if (port <= 0 || port > 65535) {
    fprintf(stderr, "reference_api: bad port %s\n", argv[4]);
    return 2;
  }
  if (machnet_init() != 0) return fail("machnet_init");
  channel = machnet_attach();
  if (channel == NULL) return fail("machnet_attach");
  if (strcmp(argv[1], "server") == 0) return run_server(channel, argv[2], (uint16_t)port);
  return run_client(channel, argv[2], argv[3], (uint16_t)port);
}
