/*
 * mcload - a small, careful memcached load generator (text protocol).
 *
 * Threads x connections x pipeline depth: every connection keeps up to
 * `depth` requests in flight (get or set, chosen at random with --get-pct, or
 * every Nth request of a thread a set with --set-every), and every reply
 * is parsed and checked:
 *   set -> exactly "STORED"
 *   get -> "END" (a miss) or "VALUE <key> 0 <size>" + the exact bytes that
 *          any set of that key writes + "END"; the key, flags, size and every
 *          byte of the value are compared, so a reply meant for another
 *          request (crossed or reordered replies) is caught.
 *   get k1 .. kN (--mget N, N distinct keys) -> a VALUE block, checked as
 *          above, for each key found, in request order, then "END"; a key
 *          without a VALUE is a miss, a VALUE for a key not asked for (or out
 *          of order, or twice) is an error.
 * Anything else is an error.  A reply that cannot be framed (desync) or a
 * request older than --timeout-ms closes the connection (its requests are
 * counted) and the connection is re-opened.
 *
 * Phases: prefill (sets for every key of the key space, pipelined up to 32
 * deep, 1024 per thread and about 1 MB per connection, never less than
 * --pipeline; bounded by --prefill-max), warm-up (--warmup seconds, not
 * counted), measurement (--duration seconds; or, with --requests N, exactly
 * N requests after the warm-up's requests have finished, optionally started
 * by SIGUSR1 so that a tracer can be attached in between: --wait-signal).
 * Each thread runs its own epoll loop whose waits are bounded by the
 * deadline, so the run ends on time whatever the server does.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -pthread -o mcload mcload.c
 *
 * Output: a human-readable summary on stdout and a final machine-readable
 * line starting with "RESULT ".  --watch-pid PID adds the CPU that process
 * used during the measurement (% of one core and CPU seconds, from
 * /proc/PID/stat).  Exit status: 0 ok, 1 usage or setup error, 3 the run
 * completed but saw errors, timeouts, connection failures, failed prefill
 * sets, or (--requests) did not finish its count in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define KEY_DIGITS   10
#define MAX_PREFIX   32
#define MAX_KEY      (MAX_PREFIX + KEY_DIGITS)
#define MAX_LINE     1024            /* longest reply line we accept */
#define TICK_NS      10000000ull     /* housekeeping every 10 ms */
#define RETRY_NS     50000000ull     /* reconnect back-off */
#define MAX_SAMPLES  8               /* error samples printed per run */
#define PREFILL_DEPTH 32             /* prefill pipelines up to this deep... */
#define PREFILL_INFLIGHT 1024        /* ...with at most this many sets in flight per thread */
#define PREFILL_BYTES (1u << 20)     /* ...and at most about this many bytes per connection */

/* ---- options ------------------------------------------------------------ */

static struct {
    const char *host;
    int port;
    int threads;
    int conns;
    int depth;
    int get_pct;
    uint32_t keys;
    int vsize;
    double duration;
    double warmup;
    double prefill_max;
    int timeout_ms;
    int prefill;
    char prefix[MAX_PREFIX + 1];
    int quiet;
    int nwatch;
    int watch[8];                    /* pids whose CPU use is measured */
    int set_every;                   /* >0: every Nth request of a thread is a set */
    int mget;                        /* keys per get (1: single-key gets) */
    uint64_t requests;               /* >0: measure exactly this many requests */
    int wait_signal;                 /* with requests: wait for SIGUSR1 before measuring */
    double signal_max;               /* bound on that wait, seconds */
} opt = {
    .host = "127.0.0.1", .port = 11211, .threads = 2, .conns = 50,
    .depth = 1, .get_pct = 90, .keys = 100000, .vsize = 100,
    .duration = 5.0, .warmup = 1.0, .prefill_max = 60.0, .timeout_ms = 2000,
    .prefill = 1, .prefix = "mcl:", .quiet = 0,
    .set_every = 0, .mget = 1, .requests = 0, .wait_signal = 0, .signal_max = 120.0,
};

static struct sockaddr_in g_addr;
static size_t g_prefix_len;
static char *g_pattern;              /* vsize + 26 bytes of 'a'..'z' cycling */

/* ---- time --------------------------------------------------------------- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- latency histogram (log-linear, 64 sub-buckets per power of 2) ------ */

#define HSUB      64
#define HBUCKETS  (58 * HSUB + 2 * HSUB)

static inline unsigned hist_index(uint64_t v)
{
    if (v < 2 * HSUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = msb - 6;            /* v >> e is in [64, 128) */
    return e * HSUB + (unsigned)(v >> e);
}

static uint64_t hist_value(unsigned idx)  /* midpoint of the bucket */
{
    if (idx < 2 * HSUB)
        return idx;
    unsigned e = idx / HSUB - 1;
    uint64_t m = idx - e * HSUB;
    uint64_t lo = m << e, hi = ((m + 1) << e) - 1;
    return lo + (hi - lo) / 2;
}

/* ---- statistics --------------------------------------------------------- */

struct stats {
    uint64_t ops;          /* replies that were correct (incl. misses) */
    uint64_t gets, sets, hits, misses;
    uint64_t err_reply;    /* well-framed but wrong reply */
    uint64_t err_proto;    /* reply could not be framed: connection reset */
    uint64_t timeouts;     /* requests lost to a per-connection timeout */
    uint64_t conn_err;     /* connect failures, resets, EOFs */
    uint64_t lost;         /* in-flight requests dropped by a reset */
    uint64_t lat_sum_ns, lat_max_ns;
    uint64_t hist[HBUCKETS];
};

static pthread_mutex_t g_sample_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_samples;

static void sample(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sample(const char *fmt, ...)
{
    pthread_mutex_lock(&g_sample_lock);
    if (g_samples < MAX_SAMPLES) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "mcload: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    } else if (g_samples == MAX_SAMPLES) {
        fprintf(stderr, "mcload: (further error samples suppressed)\n");
    }
    g_samples++;
    pthread_mutex_unlock(&g_sample_lock);
}

/* printable copy of at most 60 bytes, for error samples */
static const char *show(const char *p, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < outsz && i < 60; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 32 && ch < 127 && ch != '\\')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", ch);
    }
    out[o] = '\0';
    return out;
}

/* ---- connections -------------------------------------------------------- */

enum { REQ_GET = 1, REQ_SET = 2 };
enum { C_DOWN, C_CONNECTING, C_UP };
enum { PH_PREFILL, PH_WARMUP, PH_DRAIN, PH_MEASURE };

struct req {
    uint64_t t_ns;
    uint32_t key;                    /* the (first) key */
    uint32_t stride;                 /* multi-key get: key i is (key + i * stride) % keys */
    uint8_t type;
    uint8_t prefill;
    uint8_t nkeys;                   /* keys in a get (1, or --mget) */
    uint8_t mpos;                    /* multi-key get: keys already answered or skipped */
    uint8_t mhits;                   /* multi-key get: VALUEs received so far */
    uint8_t bad;                     /* multi-key get: a wrong VALUE was seen */
};

struct thr;

struct conn {
    int fd, state, want_out;
    struct thr *t;
    struct req *q;                   /* ring of in-flight requests */
    unsigned qhead, qlen, qcap;
    unsigned pf_limit;               /* in-flight limit while prefilling */
    char *wbuf; size_t wlen, woff, wcap;
    char *rbuf; size_t rlen, rcap;
    uint64_t since_ns;               /* connect start */
    uint64_t retry_at;
};

struct thr {
    int id, ep, phase;
    pthread_t tid;
    struct conn *c;
    uint64_t rng;
    uint32_t pf_next, pf_end;        /* prefill keys still to send */
    uint64_t pf_errors;              /* prefill sets answered wrongly or lost */
    uint64_t pf_ok;                  /* prefill sets answered STORED */
    uint64_t nreq;                   /* requests generated, for --set-every */
    struct stats st;
};

static pthread_barrier_t g_bar;
static uint64_t g_t_warm, g_t_measure, g_t_end;  /* set by main between barriers */
static uint64_t g_prefill_deadline;
static uint64_t g_issued;            /* --requests: measured requests claimed so far */

static inline uint64_t rnd(struct thr *t)   /* xorshift64* */
{
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return t->rng * 2685821657736338717ull;
}

static size_t fmt_key(char *out, uint32_t k)
{
    memcpy(out, opt.prefix, g_prefix_len);
    char *d = out + g_prefix_len;
    for (int i = KEY_DIGITS - 1; i >= 0; i--) {
        d[i] = (char)('0' + k % 10);
        k /= 10;
    }
    return g_prefix_len + KEY_DIGITS;
}

/* the value every set of key k writes: the key, then a key-dependent
 * rotation of a-z, truncated to vsize */
static void fmt_value(char *out, uint32_t k, const char *key, size_t klen)
{
    size_t vs = (size_t)opt.vsize, n = klen < vs ? klen : vs;
    memcpy(out, key, n);
    if (vs > n)
        memcpy(out + n, g_pattern + k % 26, vs - n);
}

static int check_value(const char *p, uint32_t k, const char *key, size_t klen)
{
    size_t vs = (size_t)opt.vsize, n = klen < vs ? klen : vs;
    if (memcmp(p, key, n) != 0)
        return 0;
    if (vs > n && memcmp(p + n, g_pattern + k % 26, vs - n) != 0)
        return 0;
    return 1;
}

static inline uint32_t mget_key(const struct req *r, unsigned i)
{
    return (uint32_t)(((uint64_t)r->key + (uint64_t)i * r->stride) % opt.keys);
}

static void conn_reset(struct conn *c, uint64_t now, int lost_as_timeout)
{
    struct thr *t = c->t;
    if (c->fd >= 0) {
        epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    if (c->qlen) {
        uint64_t n = c->qlen;
        if (t->phase == PH_PREFILL)
            t->pf_errors += n;
        if (lost_as_timeout)
            t->st.timeouts += n;
        else
            t->st.lost += n;
    }
    c->qlen = c->qhead = 0;
    c->wlen = c->woff = c->rlen = 0;
    c->want_out = 0;
    c->state = C_DOWN;
    c->retry_at = now + RETRY_NS;
}

static void conn_fail(struct conn *c, uint64_t now, const char *what, int err)
{
    c->t->st.conn_err++;
    if (err)
        sample("thread %d: connection %s: %s", c->t->id, what, strerror(err));
    else
        sample("thread %d: connection %s", c->t->id, what);
    conn_reset(c, now, 0);
}

static void set_out(struct conn *c, int on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(c->t->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

static void conn_open(struct conn *c, uint64_t now)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->t->st.conn_err++;
        sample("socket: %s", strerror(errno));
        c->retry_at = now + RETRY_NS;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->since_ns = now;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(c->t->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        c->fd = -1;
        c->t->st.conn_err++;
        c->retry_at = now + RETRY_NS;
        return;
    }
    c->want_out = 1;
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) == 0 || errno == EINPROGRESS) {
        c->state = C_CONNECTING;
        return;
    }
    conn_fail(c, now, "connect", errno);
}

static void conn_flush(struct conn *c, uint64_t now)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(c, 1);
            return;
        }
        conn_fail(c, now, "send", n < 0 ? errno : 0);
        return;
    }
    c->woff = c->wlen = 0;
    set_out(c, 0);
}

/* queue requests until `depth` are in flight, then write them */
static void conn_fill(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    if (c->state != C_UP)
        return;
    if (c->woff) {                   /* compact the unsent tail */
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    unsigned limit = t->phase == PH_PREFILL ? c->pf_limit : (unsigned)opt.depth;
    while (c->qlen < limit) {
        struct req r = { .t_ns = now, .prefill = 0 };
        if (t->phase == PH_PREFILL) {
            if (t->pf_next >= t->pf_end)
                break;
            r.type = REQ_SET;
            r.key = t->pf_next++;
            r.prefill = 1;
        } else if (t->phase == PH_DRAIN) {
            break;                   /* let the in-flight requests finish */
        } else {
            if (t->phase == PH_MEASURE && opt.requests &&
                __atomic_fetch_add(&g_issued, 1, __ATOMIC_RELAXED) >= opt.requests)
                break;               /* the fixed count is used up */
            if (opt.set_every)
                r.type = t->nreq++ % (uint64_t)opt.set_every == (uint64_t)opt.set_every - 1
                         ? REQ_SET : REQ_GET;
            else
                r.type = (int)(rnd(t) % 100) < opt.get_pct ? REQ_GET : REQ_SET;
            r.key = (uint32_t)(rnd(t) % opt.keys);
            if (r.type == REQ_GET && opt.mget > 1) {
                /* distinct keys: stride * (mget - 1) < keys */
                r.nkeys = (uint8_t)opt.mget;
                r.stride = 1 + (uint32_t)(rnd(t) % ((opt.keys - 1) / (uint32_t)(opt.mget - 1)));
            }
        }
        if (!r.nkeys)
            r.nkeys = 1;
        char key[MAX_KEY];
        size_t klen = fmt_key(key, r.key);
        char *w = c->wbuf + c->wlen;
        if (r.type == REQ_GET) {
            memcpy(w, "get ", 4); w += 4;
            memcpy(w, key, klen); w += klen;
            for (unsigned i = 1; i < r.nkeys; i++) {
                *w++ = ' ';
                w += fmt_key(w, mget_key(&r, i));
            }
            memcpy(w, "\r\n", 2); w += 2;
        } else {
            memcpy(w, "set ", 4); w += 4;
            memcpy(w, key, klen); w += klen;
            w += sprintf(w, " 0 0 %d\r\n", opt.vsize);
            fmt_value(w, r.key, key, klen); w += opt.vsize;
            memcpy(w, "\r\n", 2); w += 2;
        }
        c->wlen = (size_t)(w - c->wbuf);
        c->q[(c->qhead + c->qlen) % c->qcap] = r;
        c->qlen++;
    }
    if (c->wlen)
        conn_flush(c, now);
}

/* Splits "VALUE <key> <flags> <bytes> [<cas>]" (p, llen bytes) into a
 * copy in line[MAX_LINE + 1]: *k and *fl point into it, *nbytes is the
 * byte count. -1 when a field is missing or the count is not a number or
 * would not fit half the read buffer (rcap). */
static int value_line(const char *p, size_t llen, size_t rcap, char *line,
                      char **k, char **fl, unsigned long long *nbytes)
{
    char *save = NULL, *end = NULL, *by;
    memcpy(line, p, llen);
    line[llen] = '\0';
    strtok_r(line, " ", &save);
    *k = strtok_r(NULL, " ", &save);
    *fl = strtok_r(NULL, " ", &save);
    by = strtok_r(NULL, " ", &save);
    *nbytes = by ? strtoull(by, &end, 10) : 0;
    if (!*k || !*fl || !by || end == by || *end != '\0' ||
        *nbytes > (unsigned long long)(rcap / 2))
        return -1;
    return 0;
}

static void record(struct thr *t, struct req *r, uint64_t now)
{
    if (r->prefill) {
        t->pf_ok++;
        return;
    }
    struct stats *s = &t->st;
    uint64_t lat = now > r->t_ns ? now - r->t_ns : 0;
    s->ops++;
    s->lat_sum_ns += lat;
    if (lat > s->lat_max_ns)
        s->lat_max_ns = lat;
    s->hist[hist_index(lat)]++;
}

static void reply_error(struct thr *t, struct req *r)
{
    if (r->prefill)
        t->pf_errors++;
    else
        t->st.err_reply++;
}

/*
 * Parse as many whole replies as the buffer holds.  Returns bytes consumed,
 * or -1 when the stream cannot be framed (the caller resets the connection).
 */
static long conn_parse(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    size_t pos = 0;
    char tmp[256];
    while (pos < c->rlen) {
        if (c->qlen == 0) {
            sample("thread %d: %zu unsolicited bytes: '%s'", t->id, c->rlen - pos,
                   show(c->rbuf + pos, c->rlen - pos, tmp, sizeof tmp));
            return -1;
        }
        char *p = c->rbuf + pos;
        size_t avail = c->rlen - pos;
        char *nl = memchr(p, '\n', avail < MAX_LINE ? avail : MAX_LINE);
        if (!nl) {
            if (avail >= MAX_LINE) {
                sample("thread %d: reply line longer than %d bytes: '%s'", t->id,
                       MAX_LINE, show(p, avail, tmp, sizeof tmp));
                return -1;
            }
            break;                   /* need more bytes */
        }
        if (nl == p || nl[-1] != '\r') {
            sample("thread %d: reply line not ended by CRLF: '%s'", t->id,
                   show(p, (size_t)(nl - p) + 1, tmp, sizeof tmp));
            return -1;
        }
        size_t llen = (size_t)(nl - p) - 1;     /* line without CRLF */
        size_t lend = (size_t)(nl - p) + 1;     /* line with CRLF */
        struct req *r = &c->q[c->qhead];
        int in_stats = !r->prefill;
        size_t used = lend;

        if (r->type == REQ_SET) {
            if (llen == 6 && memcmp(p, "STORED", 6) == 0) {
                if (in_stats)
                    t->st.sets++;
                record(t, r, now);
            } else {
                sample("thread %d: set: unexpected reply '%s'", t->id, show(p, llen, tmp, sizeof tmp));
                reply_error(t, r);
            }
        } else if (r->nkeys > 1) {
            /* multi-key get: VALUE blocks for the keys found, in request
             * order, then END; each block is consumed as it arrives and the
             * request stays at the head of the queue until END */
            if (llen == 3 && memcmp(p, "END", 3) == 0) {
                if (r->bad) {
                    reply_error(t, r);
                } else {
                    if (in_stats) {
                        t->st.gets++;
                        t->st.hits += r->mhits;
                        t->st.misses += (uint64_t)(r->nkeys - r->mhits);
                    }
                    record(t, r, now);
                }
            } else if (llen > 6 && memcmp(p, "VALUE ", 6) == 0) {
                char line[MAX_LINE + 1];
                char *k, *fl;
                unsigned long long nbytes;
                if (value_line(p, llen, c->rcap, line, &k, &fl, &nbytes) != 0) {
                    sample("thread %d: mget: malformed VALUE line '%s'", t->id,
                           show(p, llen, tmp, sizeof tmp));
                    return -1;
                }
                size_t need = lend + (size_t)nbytes + 2;    /* line, data, CRLF */
                if (avail < need)
                    break;           /* need more bytes */
                const char *data = p + lend;
                if (memcmp(data + nbytes, "\r\n", 2) != 0) {
                    sample("thread %d: mget: value of %llu bytes not followed by CRLF", t->id, nbytes);
                    return -1;
                }
                pos += need;         /* the request is not done: no pop */
                if (r->bad)
                    continue;
                /* the next VALUE must be for one of the keys not yet seen,
                 * in request order; keys skipped over are misses */
                char key[MAX_KEY];
                size_t klen = 0;
                unsigned j;
                for (j = r->mpos; j < r->nkeys; j++) {
                    klen = fmt_key(key, mget_key(r, j));
                    if (strlen(k) == klen && memcmp(k, key, klen) == 0)
                        break;
                }
                if (j == r->nkeys) {
                    sample("thread %d: mget of %u keys: VALUE for a key not requested, "
                           "repeated or out of order (after %u): '%s'", t->id, r->nkeys,
                           r->mpos, show(p, llen, tmp, sizeof tmp));
                    r->bad = 1;
                } else if (strcmp(fl, "0") != 0 || nbytes != (unsigned long long)opt.vsize) {
                    sample("thread %d: mget %.*s: wrong flags/size: '%s'", t->id,
                           (int)klen, key, show(p, llen, tmp, sizeof tmp));
                    r->bad = 1;
                } else if (!check_value(data, mget_key(r, j), key, klen)) {
                    sample("thread %d: mget %.*s: value bytes differ: '%s'", t->id,
                           (int)klen, key, show(data, (size_t)nbytes, tmp, sizeof tmp));
                    r->bad = 1;
                } else {
                    r->mpos = (uint8_t)(j + 1);
                    r->mhits++;
                }
                continue;
            } else {
                sample("thread %d: mget: unexpected reply '%s'", t->id, show(p, llen, tmp, sizeof tmp));
                reply_error(t, r);
            }
        } else if (llen == 3 && memcmp(p, "END", 3) == 0) {
            if (in_stats) {
                t->st.gets++;
                t->st.misses++;
            }
            record(t, r, now);
        } else if (llen > 6 && memcmp(p, "VALUE ", 6) == 0) {
            /* VALUE <key> <flags> <bytes> [<cas>] */
            char line[MAX_LINE + 1];
            char *k, *fl;
            unsigned long long nbytes;
            if (value_line(p, llen, c->rcap, line, &k, &fl, &nbytes) != 0) {
                sample("thread %d: get: malformed VALUE line '%s'", t->id,
                       show(p, llen, tmp, sizeof tmp));
                return -1;
            }
            size_t need = lend + (size_t)nbytes + 2 + 5;   /* data CRLF END CRLF */
            if (avail < need)
                break;               /* need more bytes */
            const char *data = p + lend;
            if (memcmp(data + nbytes, "\r\n", 2) != 0) {
                sample("thread %d: get: value of %llu bytes not followed by CRLF", t->id, nbytes);
                return -1;
            }
            if (memcmp(data + nbytes + 2, "END\r\n", 5) != 0) {
                sample("thread %d: get: value not followed by END: '%s'", t->id,
                       show(data + nbytes + 2, 5, tmp, sizeof tmp));
                return -1;
            }
            used = need;
            char key[MAX_KEY];
            size_t klen = fmt_key(key, r->key);
            if (strlen(k) != klen || memcmp(k, key, klen) != 0) {
                sample("thread %d: get %.*s: reply is for another key: '%s'", t->id,
                       (int)klen, key, show(p, llen, tmp, sizeof tmp));
                reply_error(t, r);
            } else if (strcmp(fl, "0") != 0 || nbytes != (unsigned long long)opt.vsize) {
                sample("thread %d: get %.*s: wrong flags/size: '%s'", t->id,
                       (int)klen, key, show(p, llen, tmp, sizeof tmp));
                reply_error(t, r);
            } else if (!check_value(data, r->key, key, klen)) {
                sample("thread %d: get %.*s: value bytes differ: '%s'", t->id,
                       (int)klen, key, show(data, (size_t)nbytes, tmp, sizeof tmp));
                reply_error(t, r);
            } else {
                if (in_stats) {
                    t->st.gets++;
                    t->st.hits++;
                }
                record(t, r, now);
            }
        } else {
            sample("thread %d: get: unexpected reply '%s'", t->id, show(p, llen, tmp, sizeof tmp));
            reply_error(t, r);
        }
        pos += used;
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    return (long)pos;
}

static void conn_read(struct conn *c, uint64_t now)
{
    if (c->rlen == c->rcap) {        /* cannot happen: a reply fits in half */
        sample("thread %d: read buffer full", c->t->id);
        c->t->st.err_proto++;
        conn_reset(c, now, 0);
        return;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_fail(c, now, "recv", errno);
        return;
    }
    if (n == 0) {
        conn_fail(c, now, c->qlen ? "closed by the server with requests in flight"
                                  : "closed by the server", 0);
        return;
    }
    c->rlen += (size_t)n;
    long used = conn_parse(c, now);
    if (used < 0) {
        c->t->st.err_proto++;
        conn_reset(c, now, 0);
        return;
    }
    if (used > 0) {
        memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
        c->rlen -= (size_t)used;
    }
    conn_fill(c, now);
}

static void conn_event(struct conn *c, uint32_t ev, uint64_t now)
{
    if (c->state == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            conn_fail(c, now, "connect", err);
            return;
        }
        c->state = C_UP;
        set_out(c, 0);
        conn_fill(c, now);
        return;
    }
    if (c->state != C_UP)
        return;
    if (ev & EPOLLIN) {
        conn_read(c, now);
        if (c->state != C_UP)
            return;
    } else if (ev & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        conn_fail(c, now, "error", err);
        return;
    }
    if ((ev & EPOLLOUT) && c->woff < c->wlen)
        conn_flush(c, now);
}

static void housekeeping(struct thr *t, uint64_t now, uint64_t limit)
{
    uint64_t tmo = (uint64_t)opt.timeout_ms * 1000000ull;
    for (int i = 0; i < opt.conns; i++) {
        struct conn *c = &t->c[i];
        if (c->state == C_DOWN) {
            if (now >= c->retry_at && now < limit)
                conn_open(c, now);
        } else if (c->state == C_CONNECTING) {
            if (now - c->since_ns > tmo) {
                t->st.conn_err++;
                sample("thread %d: connect timed out after %d ms", t->id, opt.timeout_ms);
                conn_reset(c, now, 0);
            }
        } else if (c->qlen && now - c->q[c->qhead].t_ns > tmo) {
            sample("thread %d: %u request(s) in flight, oldest waited %d ms: timeout",
                   t->id, c->qlen, opt.timeout_ms);
            conn_reset(c, now, 1);
        } else if (c->qlen == 0) {
            conn_fill(c, now);       /* e.g. after the phase changed */
        }
    }
}

/* run the loop until `limit`, or until prefill, a drain or a fixed request
 * count completes; bounded by time */
static void loop(struct thr *t, uint64_t limit)
{
    struct epoll_event evs[256];
    uint64_t next_tick = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= limit)
            return;
        if (t->phase == PH_WARMUP && now >= g_t_measure) {
            memset(&t->st, 0, sizeof t->st);     /* discard warm-up counts */
            t->phase = PH_MEASURE;
        }
        if (now >= next_tick) {
            housekeeping(t, now, limit);
            next_tick = now + TICK_NS;
        }
        if ((t->phase == PH_PREFILL && t->pf_next >= t->pf_end) || t->phase == PH_DRAIN ||
            (t->phase == PH_MEASURE && opt.requests &&
             __atomic_load_n(&g_issued, __ATOMIC_RELAXED) >= opt.requests)) {
            /* nothing more to send: done once nothing is in flight */
            int busy = 0;
            for (int i = 0; i < opt.conns && !busy; i++)
                busy = t->c[i].qlen != 0;
            if (!busy)
                return;
        }
        uint64_t wake = next_tick < limit ? next_tick : limit;
        int ms = (int)((wake - now + 999999) / 1000000);
        if (ms < 1)
            ms = 1;
        int n = epoll_wait(t->ep, evs, 256, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            sample("epoll_wait: %s", strerror(errno));
            return;
        }
        now = now_ns();
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events, now);
    }
}

static void *thread_main(void *arg)
{
    struct thr *t = arg;
    uint64_t now = now_ns();
    for (int i = 0; i < opt.conns; i++)
        conn_open(&t->c[i], now);

    /* prefill this thread's share of the key space */
    t->phase = PH_PREFILL;
    if (opt.prefill)
        loop(t, g_prefill_deadline);
    now = now_ns();
    for (int i = 0; i < opt.conns; i++)      /* unfinished prefill: start clean */
        if (t->c[i].qlen)
            conn_reset(&t->c[i], now, 1);
    /* prefill problems are reported separately, not as load errors */
    memset(&t->st, 0, sizeof t->st);

    pthread_barrier_wait(&g_bar);            /* all prefilled */
    pthread_barrier_wait(&g_bar);            /* main has set the clock */

    t->phase = PH_WARMUP;
    now = now_ns();
    for (int i = 0; i < opt.conns; i++)
        conn_fill(&t->c[i], now);
    if (!opt.requests) {
        loop(t, g_t_end);            /* warm-up, then measure (by time) */
    } else {
        /* warm-up, then let its requests finish so that nothing is in
         * flight when the fixed-count measurement starts */
        loop(t, g_t_measure);
        t->phase = PH_DRAIN;
        loop(t, g_t_measure + (uint64_t)opt.timeout_ms * 1000000ull + 1000000000ull);
        now = now_ns();
        for (int i = 0; i < opt.conns; i++)
            if (t->c[i].qlen)
                conn_reset(&t->c[i], now, 1);
        pthread_barrier_wait(&g_bar);        /* all drained */
        pthread_barrier_wait(&g_bar);        /* main: go (g_t_end is set) */
        memset(&t->st, 0, sizeof t->st);     /* discard warm-up counts */
        t->phase = PH_MEASURE;
        now = now_ns();
        for (int i = 0; i < opt.conns; i++)
            conn_fill(&t->c[i], now);
        loop(t, g_t_end);
    }

    for (int i = 0; i < opt.conns; i++)
        if (t->c[i].fd >= 0)
            close(t->c[i].fd);
    return NULL;
}

/* ---- CPU use of other processes (and of mcload) during the measurement --- */

/* utime + stime of a whole process in clock ticks, or -1 */
static long long proc_ticks(int pid)
{
    char path[64], buf[1024];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');     /* the command name may hold spaces */
    if (!p)
        return -1;
    long long ut = 0, st = 0;
    /* after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &ut, &st) != 2)
        return -1;
    return ut + st;
}

/* busy ticks of the whole machine (all cores), from /proc/stat, or -1 */
static long long machine_ticks(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    long long v[8] = { 0 };
    int n = fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld",
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4)
        return -1;
    /* user nice system idle iowait irq softirq steal: all but idle, iowait */
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

static void cpu_sample(long long *ticks)
{
    ticks[9] = machine_ticks();
    ticks[0] = proc_ticks(0);
    for (int i = 0; i < opt.nwatch; i++)
        ticks[i + 1] = proc_ticks(opt.watch[i]);
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mcload [options]\n"
        "  -s, --host=ADDR        server IPv4 address (127.0.0.1)\n"
        "  -p, --port=N           server port (11211)\n"
        "  -t, --threads=N        threads, 1..64 (2)\n"
        "  -c, --conns=N          connections per thread, 1..1000 (50)\n"
        "  -d, --pipeline=N       requests in flight per connection, 1..1024 (1)\n"
        "  -r, --get-pct=N        percent of requests that are gets, 0..100, chosen at random (90)\n"
        "  -e, --set-every=N      instead: every Nth request of a thread is a set, the others\n"
        "                         gets (11: exactly 1 set : 10 gets), 1..1000000\n"
        "  -g, --mget=N           gets ask for N distinct keys at once ('get k1 ... kN'), 1..100 (1);\n"
        "                         every VALUE is checked, in request order; missing keys are misses\n"
        "  -k, --keys=N           key space size, 1..10000000 (100000)\n"
        "  -v, --value-size=N     value bytes, 1..1048576 (100)\n"
        "  -T, --duration=SEC     measured seconds, 0.1..600 (5); with --requests the time bound\n"
        "  -N, --requests=N       measure exactly N requests (in all threads), then stop;\n"
        "                         the warm-up's requests are finished first, 1..1000000000\n"
        "  -S, --wait-signal      with --requests: after the warm-up print 'READY <pid>' and wait\n"
        "                         for SIGUSR1 (at most 120 s) before measuring\n"
        "  -w, --warmup=SEC       unmeasured seconds before, 0..60 (1)\n"
        "  -P, --prefill-max=SEC  bound on the prefill phase, 1..600 (60)\n"
        "  -o, --timeout-ms=N     per-request/connect timeout, 10..60000 (2000)\n"
        "  -n, --no-prefill       skip the prefill sets\n"
        "  -x, --key-prefix=S     key prefix, printable, no spaces (mcl:)\n"
        "  -W, --watch-pid=PID    report this process's CPU use while measuring (up to 8)\n"
        "  -q, --quiet            only the RESULT line\n");
}

static int parse_num(const char *s, double lo, double hi, double *out, const char *name)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "mcload: %s must be a number in %g..%g: '%s'\n", name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

#define INTOPT(field, lo, hi, name) do {                          \
        double v_;                                                \
        if (parse_num(optarg, lo, hi, &v_, name) < 0) return 1;   \
        if (v_ != (double)(long long)v_) {                        \
            fprintf(stderr, "mcload: %s must be whole\n", name);  \
            return 1;                                             \
        }                                                         \
        opt.field = (__typeof__(opt.field))v_;                    \
    } while (0)

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "host", 1, 0, 's' }, { "port", 1, 0, 'p' }, { "threads", 1, 0, 't' },
        { "conns", 1, 0, 'c' }, { "pipeline", 1, 0, 'd' }, { "get-pct", 1, 0, 'r' },
        { "keys", 1, 0, 'k' }, { "value-size", 1, 0, 'v' }, { "duration", 1, 0, 'T' },
        { "warmup", 1, 0, 'w' }, { "prefill-max", 1, 0, 'P' }, { "timeout-ms", 1, 0, 'o' },
        { "no-prefill", 0, 0, 'n' }, { "key-prefix", 1, 0, 'x' }, { "quiet", 0, 0, 'q' }, { "watch-pid", 1, 0, 'W' },
        { "set-every", 1, 0, 'e' }, { "mget", 1, 0, 'g' }, { "requests", 1, 0, 'N' },
        { "wait-signal", 0, 0, 'S' },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "s:p:t:c:d:r:e:g:k:v:T:N:Sw:P:o:nx:qW:h", lo, NULL)) != -1) {
        switch (ch) {
        case 's': opt.host = optarg; break;
        case 'p': INTOPT(port, 1, 65535, "port"); break;
        case 't': INTOPT(threads, 1, 64, "threads"); break;
        case 'c': INTOPT(conns, 1, 1000, "conns"); break;
        case 'd': INTOPT(depth, 1, 1024, "pipeline"); break;
        case 'r': INTOPT(get_pct, 0, 100, "get-pct"); break;
        case 'e': INTOPT(set_every, 1, 1000000, "set-every"); break;
        case 'g': INTOPT(mget, 1, 100, "mget"); break;
        case 'N': INTOPT(requests, 1, 1000000000, "requests"); break;
        case 'S': opt.wait_signal = 1; break;
        case 'k': INTOPT(keys, 1, 10000000, "keys"); break;
        case 'v': INTOPT(vsize, 1, 1048576, "value-size"); break;
        case 'T': if (parse_num(optarg, 0.1, 600, &opt.duration, "duration") < 0) return 1; break;
        case 'w': if (parse_num(optarg, 0, 60, &opt.warmup, "warmup") < 0) return 1; break;
        case 'P': if (parse_num(optarg, 1, 600, &opt.prefill_max, "prefill-max") < 0) return 1; break;
        case 'o': INTOPT(timeout_ms, 10, 60000, "timeout-ms"); break;
        case 'n': opt.prefill = 0; break;
        case 'x':
            if (strlen(optarg) > MAX_PREFIX || strpbrk(optarg, " \t\r\n")) {
                fprintf(stderr, "mcload: key prefix: at most %d bytes, no white space\n", MAX_PREFIX);
                return 1;
            }
            for (const char *s = optarg; *s; s++)
                if ((unsigned char)*s < 33 || (unsigned char)*s > 126) {
                    fprintf(stderr, "mcload: key prefix must be printable\n");
                    return 1;
                }
            snprintf(opt.prefix, sizeof opt.prefix, "%s", optarg);
            break;
        case 'q': opt.quiet = 1; break;
        case 'W': {
            double v;
            if (opt.nwatch == 8) {
                fprintf(stderr, "mcload: at most 8 --watch-pid\n");
                return 1;
            }
            if (parse_num(optarg, 1, 4194304, &v, "watch-pid") < 0)
                return 1;
            opt.watch[opt.nwatch++] = (int)v;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }
    if (opt.mget > 1 && opt.keys < (uint32_t)opt.mget) {
        fprintf(stderr, "mcload: --mget %d needs at least %d keys\n", opt.mget, opt.mget);
        return 1;
    }
    if (opt.wait_signal && !opt.requests) {
        fprintf(stderr, "mcload: --wait-signal needs --requests\n");
        return 1;
    }
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "mcload: host must be an IPv4 address: '%s'\n", opt.host);
        return 1;
    }
    size_t per_req = (size_t)opt.vsize + 2 * MAX_KEY + 64;
    if (per_req < (size_t)opt.mget * (MAX_KEY + 1) + 16)
        per_req = (size_t)opt.mget * (MAX_KEY + 1) + 16;
    unsigned pf_limit = PREFILL_INFLIGHT / (unsigned)opt.conns;
    if (pf_limit > PREFILL_DEPTH)
        pf_limit = PREFILL_DEPTH;
    if (pf_limit > PREFILL_BYTES / per_req)  /* large values: fewer, not bigger buffers */
        pf_limit = (unsigned)(PREFILL_BYTES / per_req);
    if (pf_limit < 1)
        pf_limit = 1;
    if (pf_limit < (unsigned)opt.depth)
        pf_limit = (unsigned)opt.depth;
    unsigned qcap = pf_limit;        /* >= depth */
    double mem = (double)opt.threads * opt.conns * qcap * (double)per_req;
    if (mem > 1024.0 * 1024 * 1024) {
        fprintf(stderr, "mcload: threads x conns x pipeline x value size needs > 1 GiB of buffers\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    g_prefix_len = strlen(opt.prefix);
    g_pattern = malloc((size_t)opt.vsize + 26);
    if (!g_pattern)
        return 1;
    for (int i = 0; i < opt.vsize + 26; i++)
        g_pattern[i] = (char)('a' + i % 26);

    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (opt.wait_signal)             /* every thread inherits the mask; main waits */
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);

    struct thr *th = calloc((size_t)opt.threads, sizeof *th);
    if (!th)
        return 1;
    pthread_barrier_init(&g_bar, NULL, (unsigned)opt.threads + 1);
    uint64_t t0 = now_ns();
    g_prefill_deadline = t0 + (uint64_t)(opt.prefill_max * 1e9);
    for (int i = 0; i < opt.threads; i++) {
        struct thr *t = &th[i];
        t->id = i;
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        if (t->ep < 0) {
            perror("mcload: epoll_create1");
            return 1;
        }
        t->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(i + 1) * 0xbf58476d1ce4e5b9ull) ^ t0;
        if (!t->rng)
            t->rng = 1;
        t->pf_next = (uint32_t)((uint64_t)opt.keys * (uint64_t)i / (uint64_t)opt.threads);
        t->pf_end = (uint32_t)((uint64_t)opt.keys * (uint64_t)(i + 1) / (uint64_t)opt.threads);
        t->c = calloc((size_t)opt.conns, sizeof *t->c);
        if (!t->c)
            return 1;
        for (int j = 0; j < opt.conns; j++) {
            struct conn *c = &t->c[j];
            c->fd = -1;
            c->t = t;
            c->state = C_DOWN;
            c->qcap = qcap;
            c->pf_limit = pf_limit;
            c->q = calloc(qcap, sizeof *c->q);
            c->wcap = (size_t)qcap * per_req;
            c->wbuf = malloc(c->wcap);
            c->rcap = 2 * ((size_t)opt.vsize + 2 * MAX_LINE);
            if (c->rcap < 65536)
                c->rcap = 65536;
            c->rbuf = malloc(c->rcap);
            if (!c->q || !c->wbuf || !c->rbuf)
                return 1;
        }
    }
    for (int i = 0; i < opt.threads; i++)
        if (pthread_create(&th[i].tid, NULL, thread_main, &th[i]) != 0) {
            fprintf(stderr, "mcload: pthread_create failed\n");
            return 1;
        }

    pthread_barrier_wait(&g_bar);
    uint64_t t1 = now_ns();
    uint64_t pf_ok = 0, pf_err = 0;
    for (int i = 0; i < opt.threads; i++)
        pf_ok += th[i].pf_ok;
    if (opt.prefill)
        pf_err = opt.keys - pf_ok;   /* not acknowledged: wrong reply, lost, or never sent */
    if (!opt.quiet && opt.prefill)
        printf("prefill: %u keys x %d B in %.2f s, %" PRIu64 " not stored\n",
               opt.keys, opt.vsize, (double)(t1 - t0) / 1e9, pf_err);
    g_t_warm = t1;
    g_t_measure = t1 + (uint64_t)(opt.warmup * 1e9);
    g_t_end = g_t_measure + (uint64_t)(opt.duration * 1e9);
    pthread_barrier_wait(&g_bar);

    /* CPU use over the measured interval: sample at its start and end */
    long long tk0[10] = { 0 }, tk1[10] = { 0 };
    int signal_lost = 0;
    uint64_t c0;
    if (!opt.requests) {
        struct timespec ts = { .tv_sec = (time_t)(g_t_measure / 1000000000ull),
                               .tv_nsec = (long)(g_t_measure % 1000000000ull) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        c0 = now_ns();
        cpu_sample(tk0);
    } else {
        pthread_barrier_wait(&g_bar);        /* warm-up drained */
        if (opt.wait_signal) {
            printf("READY %d\n", (int)getpid());
            fflush(stdout);
            struct timespec wt = { .tv_sec = (time_t)opt.signal_max, .tv_nsec = 0 };
            while (sigtimedwait(&usr1, NULL, &wt) < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "mcload: no SIGUSR1 within %.0f s; measuring anyway\n",
                        opt.signal_max);
                signal_lost = 1;
                break;
            }
        }
        c0 = now_ns();
        g_t_measure = c0;
        g_t_end = c0 + (uint64_t)(opt.duration * 1e9);
        cpu_sample(tk0);
        pthread_barrier_wait(&g_bar);        /* go */
    }
    for (int i = 0; i < opt.threads; i++)
        pthread_join(th[i].tid, NULL);
    cpu_sample(tk1);
    double cwall = (double)(now_ns() - c0) / 1e9, hz = (double)sysconf(_SC_CLK_TCK);
    double cpus[10];                 /* CPU seconds while measuring */
    for (int i = 0; i < 10; i++)
        cpus[i] = tk0[i] < 0 || tk1[i] < 0 ? -1 : (double)(tk1[i] - tk0[i]) / hz;
    double cpu[10];
    for (int i = 0; i < 10; i++)
        cpu[i] = tk0[i] < 0 || tk1[i] < 0 || cwall <= 0 ? -1
                 : 100.0 * (double)(tk1[i] - tk0[i]) / hz / cwall;
    /* cpu[9]: every core together, so up to 100 x cores */

    struct stats s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < opt.threads; i++) {
        struct stats *x = &th[i].st;
        s.ops += x->ops; s.gets += x->gets; s.sets += x->sets;
        s.hits += x->hits; s.misses += x->misses;
        s.err_reply += x->err_reply; s.err_proto += x->err_proto;
        s.timeouts += x->timeouts; s.conn_err += x->conn_err; s.lost += x->lost;
        s.lat_sum_ns += x->lat_sum_ns;
        if (x->lat_max_ns > s.lat_max_ns)
            s.lat_max_ns = x->lat_max_ns;
        for (int b = 0; b < HBUCKETS; b++)
            s.hist[b] += x->hist[b];
    }
    double secs = opt.requests ? cwall : opt.duration;
    double pct[4] = { 0.50, 0.90, 0.99, 0.999 }, pv[4] = { 0, 0, 0, 0 };
    for (int j = 0; j < 4; j++) {
        uint64_t target = (uint64_t)(pct[j] * (double)s.ops + 0.999999), cum = 0;
        if (target == 0)
            continue;
        for (int b = 0; b < HBUCKETS; b++) {
            cum += s.hist[b];
            if (cum >= target) {
                pv[j] = (double)hist_value((unsigned)b) / 1000.0;
                break;
            }
        }
    }
    uint64_t errors = s.err_reply + s.err_proto + s.timeouts + s.conn_err;
    uint64_t incomplete = 0;         /* --requests: replies missing at the time bound */
    if (opt.requests && s.ops + errors + s.lost < opt.requests) {
        incomplete = opt.requests - (s.ops + errors + s.lost);
        fprintf(stderr, "mcload: stopped by the %.1f s time bound with %" PRIu64
                " of %" PRIu64 " requests not done\n", opt.duration, incomplete, opt.requests);
    }
    double ops_s = (double)s.ops / secs;
    double mean = s.ops ? (double)s.lat_sum_ns / (double)s.ops / 1000.0 : 0;
    if (!opt.quiet) {
        char mix[64];
        if (opt.set_every)
            snprintf(mix, sizeof mix, "1 set every %d requests", opt.set_every);
        else
            snprintf(mix, sizeof mix, "%d%% gets", opt.get_pct);
        printf("target %s:%d, %d threads x %d conns x pipeline %d, %s, %d-key gets, %u keys, %d B values\n",
               opt.host, opt.port, opt.threads, opt.conns, opt.depth, mix, opt.mget, opt.keys, opt.vsize);
        printf("measured %.2f s (after %.1f s warm-up): %" PRIu64 " ops, %.0f ops/s\n",
               secs, opt.warmup, s.ops, ops_s);
        printf("  gets %" PRIu64 " (keys: hits %" PRIu64 ", misses %" PRIu64 "), sets %" PRIu64 "\n",
               s.gets, s.hits, s.misses, s.sets);
        printf("  latency us: mean %.1f p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n",
               mean, pv[0], pv[1], pv[2], pv[3], (double)s.lat_max_ns / 1000.0);
        printf("  errors %" PRIu64 ": wrong replies %" PRIu64 ", unframeable %" PRIu64
               ", timed-out requests %" PRIu64 ", connection failures %" PRIu64
               " (requests dropped by resets %" PRIu64 ")\n",
               errors, s.err_reply, s.err_proto, s.timeouts, s.conn_err, s.lost);
        printf("  CPU while measuring (%% of one core): mcload %.0f", cpu[0]);
        for (int i = 0; i < opt.nwatch; i++)
            printf(", pid %d %.0f (%.1f us/op)", opt.watch[i], cpu[i + 1],
                   s.ops && cpus[i + 1] >= 0 ? cpus[i + 1] * 1e6 / (double)s.ops : -1.0);
        printf("; whole machine %.0f of %ld\n", cpu[9], 100 * sysconf(_SC_NPROCESSORS_ONLN));
    }
    printf("RESULT ops=%" PRIu64 " ops_per_sec=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f"
           " p999_us=%.1f max_us=%.1f mean_us=%.1f gets=%" PRIu64 " sets=%" PRIu64
           " misses=%" PRIu64 " errors=%" PRIu64 " err_reply=%" PRIu64 " err_proto=%" PRIu64
           " timeouts=%" PRIu64 " conn_err=%" PRIu64 " prefill_failed=%" PRIu64
           " incomplete=%" PRIu64 " hits=%" PRIu64 " wall_s=%.4f cpu_self=%.1f",
           s.ops, ops_s, pv[0], pv[1], pv[2], pv[3], (double)s.lat_max_ns / 1000.0, mean,
           s.gets, s.sets, s.misses, errors, s.err_reply, s.err_proto, s.timeouts,
           s.conn_err, pf_err, incomplete, s.hits, cwall, cpu[0]);
    for (int i = 0; i < opt.nwatch; i++)
        printf(" cpu_%d=%.1f cpus_%d=%.3f", opt.watch[i], cpu[i + 1], opt.watch[i], cpus[i + 1]);
    printf(" cpu_machine=%.1f\n", cpu[9]);
    fflush(stdout);

    for (int i = 0; i < opt.threads; i++) {
        for (int j = 0; j < opt.conns; j++) {
            free(th[i].c[j].q);
            free(th[i].c[j].wbuf);
            free(th[i].c[j].rbuf);
        }
        free(th[i].c);
        close(th[i].ep);
    }
    free(th);
    free(g_pattern);
    pthread_barrier_destroy(&g_bar);
    return errors || pf_err || incomplete || signal_lost ? 3 : 0;
}
