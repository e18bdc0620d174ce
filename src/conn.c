/* conn: sockets and their buffers (see conn.h for the picture). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "strata/conn.h"

/* Reads per readable event: a 1 MB value is taken in one turn, and a
 * flood on one socket cannot starve the others. */
#define CONN_READS_PER_EVENT 16

struct conn {
    TAILQ_ENTRY(conn)      link;          /* in loop->pending */
    struct conn_loop      *loop;
    const struct conn_ops *ops;
    void                  *arg;
    int                    fd;
    struct event          *rev;           /* EV_READ | EV_PERSIST */
    struct event          *wev;           /* EV_WRITE | EV_PERSIST */
    struct evbuffer       *in;
    struct evbuffer       *out;
    size_t                 read_max;      /* stop reading at this much input */
    bool                   want_read;     /* the owner's wish */
    bool                   read_armed;    /* rev is added */
    bool                   write_armed;   /* wev is added */
    bool                   pending;       /* in loop->pending */
    bool                   connecting;    /* wev waits for the connect */
    bool                   eof;           /* the peer closed its side */
    bool                   flush_late;    /* in loop->pending_late */
    int64_t               *acct;          /* bytes of in and out, or NULL */
    uint64_t               written;       /* bytes the kernel has taken */
};

void conn_loop_init(struct conn_loop *l, struct event_base *base, size_t read_extent)
{
    l->base = base;
    TAILQ_INIT(&l->pending);
    TAILQ_INIT(&l->pending_late);
    l->read_extent = read_extent > CONN_READ_EXTENT_MIN ? read_extent : CONN_READ_EXTENT_MIN;
    l->stopping = false;
}

static void conn_flush_list(struct conn_list *list);

/* One turn: wait for ready events and run their callbacks, write what
 * the ordinary conns hold; if late conns (backends) have output, poll once
 * more without blocking, so that requests which arrived meanwhile share
 * their write, then write everything. That poll is one pass
 * (EVLOOP_ONCE): EVLOOP_NONBLOCK alone loops for as long as some socket
 * is ready every time, and a backend streaming a large reply held every
 * other backend's output back until its reply ended. */
int conn_loop_run(struct conn_loop *l)
{
    while (!l->stopping) {
        if (event_base_loop(l->base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) < 0)
            return -1;
        l->now_ns = 0;   /* conn_loop_now_ns: read again when needed */
        conn_flush_list(&l->pending);
        if (!TAILQ_EMPTY(&l->pending_late) &&
            event_base_loop(l->base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0)
            return -1;
        conn_loop_flush(l);
    }
    return 0;
}

void conn_loop_stop(struct conn_loop *l)
{
    l->stopping = true;
}

/* ---- interest ---------------------------------------------------------- */

/* Arms or disarms read interest to match what is wanted; an epoll_ctl
 * happens only on a change. */
static void conn_update_read(struct conn *c)
{
    bool arm = c->want_read && !c->eof && !c->connecting &&
               evbuffer_get_length(c->in) < c->read_max;
    if (arm == c->read_armed)
        return;
    if (arm)
        event_add(c->rev, NULL);
    else
        event_del(c->rev);
    c->read_armed = arm;
}

static void conn_arm_write(struct conn *c, bool arm)
{
    if (arm == c->write_armed)
        return;
    if (arm)
        event_add(c->wev, NULL);
    else
        event_del(c->wev);
    c->write_armed = arm;
}

void conn_want_read(struct conn *c, bool on)
{
    c->want_read = on;
    conn_update_read(c);
}

/* ---- reading ----------------------------------------------------------- */

/* One readv into reserved space. Returns bytes read, 0 at EOF, -1 with
 * errno. *full says the space was filled (the kernel may have more). */
static ssize_t conn_read_once(struct conn *c, bool *full)
{
    struct evbuffer_iovec v[2];
    /* libevent rounds a chain's size plus its header up to a power of
     * two: ask for a little less than the extent, so a 64 KB extent is
     * one 64 KB allocation and not a 128 KB one. */
    size_t want = c->loop->read_extent - CONN_CHAIN_HEADER;
    int nv = evbuffer_reserve_space(c->in, (ev_ssize_t)want, v, 2);
    if (nv <= 0) {
        errno = ENOMEM;
        return -1;
    }
    size_t space = 0;
    for (int i = 0; i < nv; i++)
        space += v[i].iov_len;
    ssize_t n;
    do
        n = readv(c->fd, (struct iovec *)v, nv);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        evbuffer_commit_space(c->in, v, 0);
        return n;
    }
    size_t left = (size_t)n;
    int used = 0;
    for (; used < nv && left > 0; used++) {
        if (v[used].iov_len > left)
            v[used].iov_len = left;
        left -= v[used].iov_len;
    }
    evbuffer_commit_space(c->in, v, used);
    *full = (size_t)n == space;
    return n;
}

static void conn_on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct conn *c = arg;
    bool got = false;
    c->loop->now_ns = 0;
    for (int i = 0; i < CONN_READS_PER_EVENT; i++) {
        if (evbuffer_get_length(c->in) >= c->read_max)
            break;
        bool full = false;
        ssize_t n = conn_read_once(c, &full);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            c->ops->on_error(c, c->arg, strerror(errno));
            return;
        }
        if (n == 0) {
            c->eof = true;
            got = true;
            break;
        }
        got = true;
        if (!full)
            break;   /* the socket is drained */
    }
    conn_update_read(c);   /* EOF, or the input is at read_max */
    if (got)
        c->ops->on_input(c, c->arg);
}

/* ---- writing ----------------------------------------------------------- */

/* The rest of the output waits for write interest (the kernel refused
 * bytes, or this turn's share is written); the owner hears of the bytes
 * taken so far. */
static void conn_write_later(struct conn *c, uint64_t before)
{
    conn_arm_write(c, true);
    if (c->written != before && c->ops->on_partial_write != NULL)
        c->ops->on_partial_write(c, c->arg);
}

/* Writes what the kernel takes, CONN_WRITE_MAX_TURN bytes at most, after
 * the owner's on_flush. Returns false after on_error (the conn may be
 * gone). */
static bool conn_write_now(struct conn *c)
{
    if (c->ops->on_flush != NULL)
        c->ops->on_flush(c, c->arg);
    uint64_t before = c->written;
    while (evbuffer_get_length(c->out) > 0) {
        size_t left = CONN_WRITE_MAX_TURN - (size_t)(c->written - before);
        if (left == 0) {
            conn_write_later(c, before);
            return true;
        }
        int n = evbuffer_write_atmost(c->out, c->fd, (ev_ssize_t)left);
        if (n > 0) {
            c->written += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_write_later(c, before);
            return true;
        }
        c->ops->on_error(c, c->arg, n == 0 ? "write returned 0" : strerror(errno));
        return false;
    }
    conn_arm_write(c, false);
    c->ops->on_drained(c, c->arg);
    return true;
}

static struct conn_list *conn_pending_list(struct conn *c)
{
    return c->flush_late ? &c->loop->pending_late : &c->loop->pending;
}

static void conn_unpend(struct conn *c)
{
    if (c->pending) {
        TAILQ_REMOVE(conn_pending_list(c), c, link);
        c->pending = false;
    }
}

void conn_send(struct conn *c)
{
    if (c->pending || c->write_armed || c->connecting)
        return;   /* a write is coming anyway */
    TAILQ_INSERT_TAIL(conn_pending_list(c), c, link);
    c->pending = true;
}

static void conn_flush_list(struct conn_list *list)
{
    struct conn *c;
    while ((c = TAILQ_FIRST(list)) != NULL) {
        conn_unpend(c);
        conn_write_now(c);
    }
}

void conn_loop_flush(struct conn_loop *l)
{
    l->now_ns = 0;
    conn_flush_list(&l->pending);
    conn_flush_list(&l->pending_late);
}

void conn_set_flush_late(struct conn *c, bool late)
{
    bool was = c->pending;
    conn_unpend(c);
    c->flush_late = late;
    if (was)
        conn_send(c);
}

static void conn_finish_connect(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == EINPROGRESS || err == EINTR)
        return;
    conn_arm_write(c, false);
    if (err != 0) {
        c->ops->on_error(c, c->arg, strerror(err));
        return;
    }
    c->connecting = false;
    conn_update_read(c);
    if (evbuffer_get_length(c->out) > 0)
        conn_send(c);   /* what was sent while connecting */
    c->ops->on_connected(c, c->arg);
}

static void conn_on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct conn *c = arg;
    c->loop->now_ns = 0;
    if (c->connecting) {
        conn_finish_connect(c);
        return;
    }
    conn_unpend(c);
    conn_write_now(c);
}

/* ---- lifecycle --------------------------------------------------------- */

static struct conn *conn_new(struct conn_loop *l, int fd, size_t read_max,
                             const struct conn_ops *ops, void *arg)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = l;
    c->ops = ops;
    c->arg = arg;
    c->fd = fd;
    c->read_max = read_max;
    c->want_read = true;
    c->rev = event_new(l->base, fd, EV_READ | EV_PERSIST, conn_on_readable, c);
    c->wev = event_new(l->base, fd, EV_WRITE | EV_PERSIST, conn_on_writable, c);
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    if (c->rev == NULL || c->wev == NULL || c->in == NULL || c->out == NULL) {
        c->fd = -1;   /* the caller keeps its socket */
        conn_destroy(&c);
        return NULL;
    }
    return c;
}

struct conn *conn_create(struct conn_loop *l, int fd, size_t read_max,
                         const struct conn_ops *ops, void *arg)
{
    if (evutil_make_socket_nonblocking(fd) != 0)
        return NULL;
    struct conn *c = conn_new(l, fd, read_max, ops, arg);
    if (c != NULL)
        conn_update_read(c);
    return c;
}

struct conn *conn_connect(struct conn_loop *l, const struct sockaddr *sa,
                          socklen_t salen, size_t read_max,
                          const struct conn_ops *ops, void *arg,
                          const char **reason)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *reason = strerror(errno);
        return NULL;
    }
    if (connect(fd, sa, salen) != 0 && errno != EINPROGRESS) {
        *reason = strerror(errno);
        close(fd);
        return NULL;
    }
    struct conn *c = conn_new(l, fd, read_max, ops, arg);
    if (c == NULL) {
        *reason = "out of memory";
        close(fd);
        return NULL;
    }
    /* Even a connect that completed at once (unix sockets) reports
     * through the loop, so the owner is never called back from here. */
    c->connecting = true;
    conn_arm_write(c, true);
    return c;
}

static void conn_acct_add(int64_t *counter, int64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
}

static void conn_acct_cb(struct evbuffer *b, const struct evbuffer_cb_info *info,
                         void *arg)
{
    (void)b;
    conn_acct_add(arg, (int64_t)info->n_added - (int64_t)info->n_deleted);
}

void conn_account(struct conn *c, int64_t *counter)
{
    struct evbuffer_cb_entry *in = evbuffer_add_cb(c->in, conn_acct_cb, counter);
    struct evbuffer_cb_entry *out = evbuffer_add_cb(c->out, conn_acct_cb, counter);
    if (in == NULL || out == NULL) {   /* out of memory: left uncounted */
        if (in != NULL)
            evbuffer_remove_cb_entry(c->in, in);
        if (out != NULL)
            evbuffer_remove_cb_entry(c->out, out);
        return;
    }
    c->acct = counter;
    conn_acct_add(counter, (int64_t)(evbuffer_get_length(c->in) +
                                     evbuffer_get_length(c->out)));
}

void conn_destroy(struct conn **cp)
{
    struct conn *c = *cp;
    if (c == NULL)
        return;
    *cp = NULL;
    if (c->acct != NULL)
        conn_acct_add(c->acct, -(int64_t)(evbuffer_get_length(c->in) +
                                          evbuffer_get_length(c->out)));
    conn_unpend(c);
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    if (c->in != NULL)
        evbuffer_free(c->in);
    if (c->out != NULL)
        evbuffer_free(c->out);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

struct evbuffer *conn_input(struct conn *c) { return c->in; }
struct evbuffer *conn_output(struct conn *c) { return c->out; }
int conn_fd(const struct conn *c) { return c->fd; }
bool conn_eof(const struct conn *c) { return c->eof; }
bool conn_connected(const struct conn *c) { return !c->connecting; }
uint64_t conn_written(const struct conn *c) { return c->written; }
bool conn_write_blocked(const struct conn *c) { return c->write_armed && !c->connecting; }
bool conn_reading(const struct conn *c) { return c->read_armed; }
