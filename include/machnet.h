/* machnet.h: the C API of libmachnet, how an app talks to the machnetd sidecar.
 *
 * Source-compatible with the reference Machnet header: an app written against
 * it compiles unchanged (C99 or C++). Link with -lmachnet (pkg-config machnet).
 *
 * Model. machnet_init() connects the process to machnetd (its control socket,
 * $MACHNET_CONTROL_SOCKET or /run/machnet/machnetd.sock). machnet_attach()
 * creates a channel: shared memory between one app thread and one machnetd
 * shard. Flows (machnet_listen / machnet_connect) belong to the channel that
 * made them; messages of up to MACHNET_MSG_MAX_LEN bytes are sent and received
 * whole over it.
 *
 * Threads. machnet_init() and machnet_attach() are thread-safe. A channel is
 * used by one thread at a time (as in the reference: one channel per thread);
 * no call on a channel may run concurrently with another call on the same
 * channel. Different channels may be used by different threads freely.
 *
 * Errors. Every call that fails returns -1 (NULL for machnet_attach) and sets
 * errno:
 *   EINVAL      a NULL or unknown channel, a NULL pointer, a bad IPv4 string,
 *               port 0, an empty message, msg_size differing from its iovecs
 *   EMSGSIZE    a message longer than MACHNET_MSG_MAX_LEN; or, on receive, a
 *               buffer smaller than the pending message: the message stays
 *               pending and the next receive with a large enough buffer gets it
 *   ENOBUFS     no free channel buffers within ~100 ms (machnetd is not keeping
 *               up); nothing was sent, the call may be retried
 *   ESHUTDOWN   machnetd is gone or closed the channel; call machnet_init()
 *               and machnet_attach() again
 *   ENOTCONN    machnet_attach() before machnet_init()
 *   ETIMEDOUT, ECONNREFUSED, EADDRINUSE, EADDRNOTAVAIL, ...
 *               machnetd's answer to listen / connect / close
 *   EPROTO      machnetd speaks another protocol or layout version
 *
 * Addresses in MachnetFlow_t are in host byte order (10.0.0.1 is 0x0a000001);
 * src is this host, dst the peer, so a received flow can be replied on as is.
 */
#ifndef MACHNET_H_
#define MACHNET_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
/* The reference header included these; apps written against it may rely on them. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__GNUC__)
#define MACHNET_API __attribute__((visibility("default")))
#else
#define MACHNET_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The largest message, in bytes (8 MiB, as the reference). */
#define MACHNET_MSG_MAX_LEN (8 * 1024 * 1024)

/** A flow: the local and the remote end, host byte order. */
struct MachnetFlow {
  uint32_t src_ip;
  uint32_t dst_ip;
  uint16_t src_port;
  uint16_t dst_port;
};
typedef struct MachnetFlow MachnetFlow_t;

/** One piece of a scatter-gather message (like struct iovec). */
struct MachnetIovec {
  void *base;
  size_t len;
};
typedef struct MachnetIovec MachnetIovec_t;

/** A message (like struct msghdr): msg_size is the total of the iovecs. */
struct MachnetMsgHdr {
  uint32_t msg_size;
  MachnetFlow_t flow_info;
  MachnetIovec_t *msg_iov;
  size_t msg_iovlen;
  uint16_t flags; /**< ignored on send, 0 on receive */
};
typedef struct MachnetMsgHdr MachnetMsgHdr_t;

/** Connects the process to machnetd (waits up to 5 s for its answer).
 *  0, or -1 (errno: ENOENT / ECONNREFUSED machnetd not running, ETIMEDOUT,
 *  EPROTO). Calling it again while connected returns 0; after machnetd went
 *  away it reconnects (channels of the old connection stay failed). */
MACHNET_API int machnet_init(void);

/** A new channel for the calling thread, or NULL (errno: ENOTCONN before
 *  machnet_init, ESHUTDOWN machnetd gone, or machnetd's reason). */
MACHNET_API void *machnet_attach(void);

/** Accepts flows to local_ip:port on this channel ("0.0.0.0" = the host's
 *  address). 0, or -1 (EINVAL, EADDRINUSE, EADDRNOTAVAIL, ETIMEDOUT). */
MACHNET_API int machnet_listen(void *channel, const char *local_ip, uint16_t port);

/** Opens a flow to remote_ip:remote_port and fills *flow once the handshake
 *  completed (waits up to ~10 s). 0, or -1 (EINVAL, ETIMEDOUT, ECONNREFUSED). */
MACHNET_API int machnet_connect(void *channel, const char *local_ip, const char *remote_ip,
                                uint16_t remote_port, MachnetFlow_t *flow);

/** Queues one message of len (1 .. MACHNET_MSG_MAX_LEN) bytes on flow.
 *  0, or -1 (EINVAL, EMSGSIZE, ENOBUFS, ESHUTDOWN). */
MACHNET_API int machnet_send(const void *channel, MachnetFlow_t flow, const void *buf, size_t len);

/** As machnet_send, the message gathered from msghdr->msg_iov on
 *  msghdr->flow_info; msg_size must equal the sum of the iovec lengths. */
MACHNET_API int machnet_sendmsg(const void *channel, const MachnetMsgHdr_t *msghdr);

/** Sends msghdrs[0 .. vlen-1] in order, stopping at the first failure.
 *  Returns how many were sent (errno says why when fewer than vlen), or -1
 *  for a NULL channel / msghdrs or a negative vlen. */
MACHNET_API int machnet_sendmmsg(const void *channel, const MachnetMsgHdr_t *msghdrs, int vlen);

/** Copies the next received message into buf and its flow into *flow (flow
 *  may be NULL). Bytes received, 0 if none is pending, -1 on error (EMSGSIZE:
 *  len is too small, the message stays pending). Does not wait. */
MACHNET_API ssize_t machnet_recv(const void *channel, void *buf, size_t len, MachnetFlow_t *flow);

/** Scatters the next received message into msghdr->msg_iov, and sets
 *  msg_size, flow_info and flags (0). 1 received, 0 none pending, -1 on error
 *  (EMSGSIZE: the iovecs are too small, the message stays pending). */
MACHNET_API int machnet_recvmsg(const void *channel, MachnetMsgHdr_t *msghdr);

/* Additions to the reference API. */

/** As machnet_recv, but waits up to timeout_ms for a message (-1 forever,
 *  0 do not wait). The thread sleeps (no CPU) after a short spin
 *  ($MACHNET_WAIT_SPIN_US, default 30; 0 when sharing machnetd's CPU) and is
 *  woken by machnetd. 0 on timeout. */
MACHNET_API ssize_t machnet_recv_wait(const void *channel, void *buf, size_t len,
                                      MachnetFlow_t *flow, int timeout_ms);

/** As machnet_recvmsg, waiting as machnet_recv_wait. 0 on timeout. */
MACHNET_API int machnet_recvmsg_wait(const void *channel, MachnetMsgHdr_t *msghdr, int timeout_ms);

/** Closes a flow of the channel in order (messages queued before are sent).
 *  0, or -1 (EINVAL, ESHUTDOWN, ETIMEDOUT, or machnetd's reason). */
MACHNET_API int machnet_close(const void *channel, MachnetFlow_t flow);

/** Gives the channel back: machnetd resets its flows; the pointer is invalid
 *  afterwards. 0, or -1 (EINVAL). Works after machnetd went away too. */
MACHNET_API int machnet_detach(void *channel);

#ifdef __cplusplus
}
#endif

#endif /* MACHNET_H_ */
