/* conn: a socket with an input and an output evbuffer, on plain libevent
 * events. It knows no protocol: the owner (a client or a backend) frames
 * bytes out of the input and appends bytes to the output.
 *
 *   kernel ──readv (large extents)──► input ──► ops->on_input
 *   owner ──► output ──► conn_send ──► loop's pending list (late: backends)
 *                                        │ end of the batch of ready events
 *                                        │ (late ones: after one more poll)
 *                                        ▼
 *                               one writev per conn ──all taken──► done
 *                                        │ kernel refused bytes
 *                                        ▼
 *                               write interest armed until the backlog is gone
 *                                        (also after CONN_WRITE_MAX_TURN
 *                                        bytes in one turn: the rest follows
 *                                        in the next turns)
 *
 * In the steady state a request costs one read and a share of one write
 * per side, and no epoll_ctl: read interest stays armed (persistent) and
 * write interest is armed only while the kernel refuses bytes. */
#ifndef STRATA_CONN_H
#define STRATA_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "strata/metrics.h"

struct event_base;
struct evbuffer;
struct conn;

/* The smallest read extent: a large value arrives in few reads. An
 * extent is one allocation; a read offers the kernel the extent less
 * room for libevent's chain header (48 bytes on 64-bit). */
#define CONN_READ_EXTENT_MIN 65536
#define CONN_CHAIN_HEADER    64
/* Bytes one conn writes per turn of the loop at most: a reply of
 * hundreds of MB to a client that reads as fast as it comes leaves over
 * several turns, and the worker serves its other conns in between. */
#define CONN_WRITE_MAX_TURN  (4u << 20)

TAILQ_HEAD(conn_list, conn);

/* One per event loop (worker): the conns whose output waits for the end
 * of the batch. */
struct conn_loop {
    struct event_base *base;
    struct conn_list   pending;      /* output to write at the end of the batch */
    struct conn_list   pending_late; /* output written after one more poll */
    size_t             read_extent;  /* bytes reserved per read */
    bool               stopping;     /* conn_loop_run returns */
    int64_t            now_ns;       /* the clock as conn_loop_now_ns read it
                                        in this I/O callback; 0: not yet */
};

/* The monotonic clock (metrics_now_ns), read at most once per I/O
 * callback of the loop's conns and per flush of the batch: what the
 * latency histograms time requests with. Everything a callback does
 * shares its time, stale at most by that callback's own duration. */
static inline int64_t conn_loop_now_ns(struct conn_loop *l)
{
    if (l->now_ns == 0)
        l->now_ns = metrics_now_ns();
    return l->now_ns;
}

/* What a conn tells its owner. Each may destroy the conn; the layer
 * touches the conn no more after calling one. */
struct conn_ops {
    /* New bytes are in the input, or the peer closed its side (conn_eof). */
    void (*on_input)(struct conn *c, void *arg);
    /* The output is empty again after a write. */
    void (*on_drained)(struct conn *c, void *arg);
    /* A write took some bytes of the output and the kernel refused the
     * rest, or CONN_WRITE_MAX_TURN were written in this turn (write
     * interest is armed now); conn_written counts them. May
     * be NULL. */
    void (*on_partial_write)(struct conn *c, void *arg);
    /* The output is about to be written (the end of a batch, or the
     * socket took bytes again): the owner's last chance to append to
     * what this write carries, e.g. a marker after a batch. May be NULL. */
    void (*on_flush)(struct conn *c, void *arg);
    /* An outgoing connect completed. */
    void (*on_connected)(struct conn *c, void *arg);
    /* The socket failed (reason is a static or errno string); the owner
     * destroys the conn. */
    void (*on_error)(struct conn *c, void *arg, const char *reason);
};

void conn_loop_init(struct conn_loop *l, struct event_base *base, size_t read_extent);
/* Runs the event loop: each batch of ready events, then one write per
 * pending conn, until conn_loop_stop. Returns 0, or -1 if libevent failed. */
int conn_loop_run(struct conn_loop *l);
/* Makes conn_loop_run return after the current batch. */
void conn_loop_stop(struct conn_loop *l);
/* Writes every pending conn's output now (one writev each). */
void conn_loop_flush(struct conn_loop *l);

/* Wraps an accepted (or otherwise connected) socket; reading starts at
 * once. `read_max` stops reading while the input holds that many bytes.
 * NULL when out of memory (the socket is not closed then). */
struct conn *conn_create(struct conn_loop *l, int fd, size_t read_max,
                         const struct conn_ops *ops, void *arg);
/* Starts a non-blocking connect; on_connected or on_error follows from
 * the loop. Bytes sent before the connect completes wait in the output.
 * NULL with *reason set when no socket could be made. */
struct conn *conn_connect(struct conn_loop *l, const struct sockaddr *sa,
                          socklen_t salen, size_t read_max,
                          const struct conn_ops *ops, void *arg,
                          const char **reason);
/* Counts the bytes of c's input and output in *counter from now on (an
 * evbuffer callback per change, no allocation), and takes them off when
 * c is destroyed. One writer, the conn's thread: relaxed stores, so other
 * threads may read the counter. */
void conn_account(struct conn *c, int64_t *counter);
/* Closes the socket and frees the conn and its buffers. Accepts NULL. */
void conn_destroy(struct conn **cp);

struct evbuffer *conn_input(struct conn *c);
struct evbuffer *conn_output(struct conn *c);
int conn_fd(const struct conn *c);
bool conn_eof(const struct conn *c);
bool conn_connected(const struct conn *c);
/* Bytes of the output the kernel has taken since the conn was made: a
 * byte appended to the output when conn_written + the output's length
 * was N has been handed to the kernel once conn_written exceeds N. */
uint64_t conn_written(const struct conn *c);
/* True while the kernel refuses bytes and write interest is armed. */
bool conn_write_blocked(const struct conn *c);
/* True while read interest is armed. */
bool conn_reading(const struct conn *c);

/* Bytes were added to the output: they are written at the end of the
 * batch. */
void conn_send(struct conn *c);
/* A late conn's output is written after one more non-blocking poll of
 * the loop (see conn_loop_run): for backends, whose writes carry the
 * requests of many clients, so that fewer, fuller writes reach a server. */
void conn_set_flush_late(struct conn *c, bool late);
/* Whether the owner wants input now (backpressure). Reading also stops
 * by itself at EOF and while the input holds read_max bytes; call this
 * again after consuming input to restart it. */
void conn_want_read(struct conn *c, bool on);

#endif
