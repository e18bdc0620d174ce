/* sentinel_app: following Redis Sentinel (see sentinel_app.h and
 * docs/operations.md, "Following Redis failover").
 *
 *   follower thread (one per pool):
 *     every Sentinel ─ SUBSCRIBE +switch-master +sdown -sdown +slave ─► an event: ask now
 *                    ─ +selected-slave ─► ROLE of that replica every 20 ms
 *                                         ─► says master: switch now
 *     every sentinel_interval, or after an event:
 *       SENTINEL get-master-addr-by-name NAME, SENTINEL replicas NAME
 *       a new master ─► ROLE on it says master? ─► published state, version+1
 *     a Sentinel that fails ─► the next one (cur+1)
 *   main thread (woken by event_active):
 *     version changed ─► the running conf with the pool's servers replaced
 *                     ─► reload_apply (workers switch; unchanged servers
 *                        keep their connections, the old master's retire)
 *
 * The followers use blocking sockets with timeouts on their own thread;
 * the state they publish is behind a mutex that only the main thread
 * and the follower take. The request path never sees any of it. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "app.h"
#include "sentinel_app.h"
#include "zk_app.h"
#include "strata/log.h"
#include "strata/reload.h"
#include "strata/sentinel.h"
#include "strata/util.h"

#define SENTINEL_APP_READ_CHUNK 4096
#define SENTINEL_APP_SUB_MAX    (64 << 10)  /* buffered pub/sub bytes per Sentinel */
#define SENTINEL_APP_START_PAUSE_MS 500     /* between two rounds at start-up */
#define SENTINEL_APP_WATCH_POLL_MS 20       /* ROLE of a replica being promoted */
#define SENTINEL_APP_SUB_RETRY_MS 5000      /* at least, between two SUBSCRIBEs
                                               to a Sentinel that failed */
#define SENTINEL_APP_WATCH_MS   30000       /* a promotion watched, then trusted
                                               ahead of the Sentinels' answer */

/* A failover followed ahead of the Sentinels' answer (follower thread
 * only): get-master-addr-by-name names the new master only at
 * +switch-master, about a second after the promotion, and the old
 * master takes writes meanwhile that the new one never sees. */
struct mon_shard {
    struct sentinel_node watch;         /* replica being promoted; port 0: none */
    int64_t              watch_until;
    struct sentinel_node promoted;      /* switched to before the Sentinels
                                           said so; port 0: none */
    struct sentinel_node demoted;       /* the master it replaced */
    int64_t              promoted_until;
};

/* The pub/sub connection to one Sentinel (follower thread only). Every
 * Sentinel is subscribed to: the one that leads a failover is the only
 * one to announce the replica it promotes. */
struct mon_sub {
    int     fd;                         /* -1: not connected */
    int64_t retry_at;                   /* next connection attempt */
    char   *buf;
    size_t  len;
};

/* What a follower needs of its pool, copied: the pool's conf may go. */
struct sentinel_mon {
    struct app          *app;
    char                *pool;         /* pool name */
    char                *signature;    /* the Sentinel keys, to match a reload */
    struct conf_server  *sentinels;    /* copies of the pool's */
    uint32_t             nsentinels;
    char               **names;
    uint32_t             nnames;
    char                *auth;         /* sentinel_auth, or NULL */
    char                *redis_auth;   /* the data servers', for ROLE */
    bool                 replicas;     /* sentinel_read_replicas */
    int                  interval_ms;
    int                  timeout_ms;
    /* follower thread only */
    uint32_t             cur;          /* the Sentinel in use */
    int                  cmd_fd;
    struct mon_sub      *subs;         /* one per Sentinel */
    struct pollfd       *pfds;         /* the stop pipe, then subs */
    struct sentinel_state work;
    struct mon_shard    *ms;           /* per master name */
    /* thread and hand-over */
    pthread_t            thread;
    bool                 running;
    int                  stop_pipe[2];
    pthread_mutex_t      lock;
    struct sentinel_state published;   /* under lock */
    uint64_t             version;      /* under lock: +1 per change */
    uint64_t             applied;      /* main thread: version handed over */
};

struct sentinel_app {
    struct sentinel_mon **mons;
    uint32_t              nmons;
    struct event         *wake;        /* activated by the followers */
};

/* ---- blocking I/O with timeouts ----------------------------------------- */

/* A connected TCP socket to `addr` whose reads and writes time out after
 * timeout_ms, or -1 with why. */
static int io_connect(const struct conf_addr *addr, int timeout_ms, char *why, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    if (util_resolve(addr, &ss, &slen, why, len) != 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, len, "socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (struct sockaddr *)&ss, slen);
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int err = 0;
    socklen_t elen = sizeof(err);
    if (rc != 0 && errno == EINPROGRESS && poll(&pfd, 1, timeout_ms) == 1 &&
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0)
        rc = err == 0 ? 0 : (errno = err, -1);
    else if (rc != 0 && errno == EINPROGRESS)
        errno = ETIMEDOUT;
    if (rc != 0) {
        snprintf(why, len, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int io_send(int fd, uint32_t argc, const char *const *argv)
{
    size_t len;
    char *cmd = sentinel_command(argc, argv, &len);
    size_t off = 0;
    while (cmd != NULL && off < len) {
        ssize_t n = send(fd, cmd + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    free(cmd);
    return cmd != NULL && off == len ? 0 : -1;
}

/* Reads one reply into *out (blocking, within the socket's timeout). */
static int io_reply(int fd, struct sentinel_val *out)
{
    size_t len = 0, cap = SENTINEL_APP_READ_CHUNK, used;
    char *buf = malloc(cap);
    int rc = -1;
    while (buf != NULL) {
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        enum sentinel_status st = sentinel_resp_parse(buf, len, &used, out);
        if (st != SENTINEL_AGAIN) {
            rc = st == SENTINEL_OK ? 0 : -1;
            break;
        }
        char *more = len == cap && cap < SENTINEL_MAX_BULK * 2 ? realloc(buf, cap *= 2) : buf;
        if (more == NULL || len == cap)
            break;
        buf = more;
    }
    free(buf);
    return rc;
}

/* One command and its reply. */
static int io_call(int fd, uint32_t argc, const char *const *argv, struct sentinel_val *out)
{
    return io_send(fd, argc, argv) == 0 ? io_reply(fd, out) : -1;
}

/* AUTH with `pass` (none: nothing to do). 0 when accepted. */
static int io_auth(int fd, const char *pass)
{
    if (pass == NULL)
        return 0;
    const char *argv[] = { "AUTH", pass };
    struct sentinel_val v;
    if (io_call(fd, 2, argv, &v) != 0)
        return -1;
    int rc = v.type == SENTINEL_V_STATUS ? 0 : -1;
    sentinel_val_deinit(&v);
    return rc;
}

static void io_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* ---- asking the Sentinels ------------------------------------------------ */

/* A connection to Sentinel i, authenticated; -1 with why. */
static int mon_dial(struct sentinel_mon *mon, uint32_t i, char *why, size_t len)
{
    const struct conf_server *s = &mon->sentinels[i];
    int fd = io_connect(&s->addr, mon->timeout_ms, why, len);
    if (fd >= 0 && io_auth(fd, mon->auth) != 0) {
        snprintf(why, len, "AUTH refused (sentinel_auth)");
        io_close(&fd);
    }
    return fd;
}

/* Master `i` and, with replicas wanted, its replicas, from the command
 * connection. 0 or -1. */
static int mon_ask_shard(struct sentinel_mon *mon, uint32_t i, struct sentinel_shard *out)
{
    const char *master[] = { "SENTINEL", "get-master-addr-by-name", mon->names[i] };
    const char *replicas[] = { "SENTINEL", "replicas", mon->names[i] };
    struct sentinel_val v;
    memset(out, 0, sizeof(*out));
    if (io_call(mon->cmd_fd, 3, master, &v) != 0)
        return -1;
    int rc = sentinel_master_reply(&v, &out->master);
    sentinel_val_deinit(&v);
    if (rc != 0 || !mon->replicas)
        return rc;
    if (io_call(mon->cmd_fd, 3, replicas, &v) != 0)
        return -1;
    rc = sentinel_replicas_reply(&v, out);
    sentinel_val_deinit(&v);
    return rc;
}

/* Every shard into mon->work from one Sentinel, trying each in turn from
 * the one in use. 0, or -1 with the last failure in why. */
static int mon_ask(struct sentinel_mon *mon, char *why, size_t len)
{
    for (uint32_t tries = 0; tries < mon->nsentinels; tries++) {
        if (mon->cmd_fd < 0)
            mon->cmd_fd = mon_dial(mon, mon->cur, why, len);
        uint32_t i = 0;
        while (mon->cmd_fd >= 0 && i < mon->nnames &&
               mon_ask_shard(mon, i, &mon->work.shards[i]) == 0)
            i++;
        if (mon->cmd_fd >= 0 && i == mon->nnames)
            return 0;
        if (mon->cmd_fd >= 0)
            snprintf(why, len, "no usable answer for master '%s'", mon->names[i]);
        log_warn("sentinel: pool %s: Sentinel %s: %s; trying the next one", mon->pool,
                 mon->sentinels[mon->cur].text, why);
        io_close(&mon->cmd_fd);
        mon->cur = (mon->cur + 1) % mon->nsentinels;
    }
    return -1;
}

/* Whether the server at `node` says it is a master (ROLE). */
static bool mon_role_master(struct sentinel_mon *mon, const struct sentinel_node *node)
{
    char why[256];
    struct conf_addr addr = { .host = (char *)node->host, .port = node->port };
    int fd = io_connect(&addr, mon->timeout_ms, why, sizeof(why));
    const char *argv[] = { "ROLE" };
    struct sentinel_val v;
    bool master = false;
    if (fd >= 0 && io_auth(fd, mon->redis_auth) == 0 && io_call(fd, 1, argv, &v) == 0) {
        master = sentinel_role_is_master(&v);
        sentinel_val_deinit(&v);
    }
    io_close(&fd);
    return master;
}

/* ---- the follower thread ------------------------------------------------- */

static bool node_eq(const struct sentinel_node *a, const struct sentinel_node *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* Takes `node` out of a shard's replicas (it is its master now). */
static void replicas_remove(struct sentinel_shard *sh, const struct sentinel_node *node)
{
    uint32_t kept = 0;
    for (uint32_t k = 0; k < sh->nreplicas; k++)
        if (!node_eq(&sh->replicas[k], node))
            sh->replicas[kept++] = sh->replicas[k];
    sh->nreplicas = kept;
}

/* Publishes mon->work if it differs from what was published, and wakes
 * the main thread. */
static void mon_publish_work(struct sentinel_mon *mon)
{
    bool changed = false;
    for (uint32_t i = 0; i < mon->nnames; i++)
        changed |= !sentinel_shard_equal(&mon->work.shards[i], &mon->published.shards[i]);
    if (!changed)
        return;
    pthread_mutex_lock(&mon->lock);
    memcpy(mon->published.shards, mon->work.shards,
           mon->nnames * sizeof(*mon->work.shards));
    mon->version++;
    pthread_mutex_unlock(&mon->lock);
    event_active(mon->app->sentinel->wake, EV_READ, 0);
}

/* While a promotion seen ahead of the Sentinels is fresh, their answer
 * naming the old master keeps the promoted one; once they name it (or
 * the watch expires) they are followed again. */
static void mon_keep_promoted(struct sentinel_mon *mon, uint32_t i, struct sentinel_shard *w)
{
    struct mon_shard *ms = &mon->ms[i];
    if (ms->promoted.port == 0)
        return;
    if (node_eq(&w->master, &ms->promoted) || util_now_ms() > ms->promoted_until) {
        ms->promoted.port = 0;
        return;
    }
    if (node_eq(&w->master, &ms->demoted)) {
        w->master = ms->promoted;
        replicas_remove(w, &ms->promoted);
    }
}

/* mon->work (the Sentinels' answer) against what was published: a new
 * master whose ROLE does not say master keeps the old one (asked again
 * next time). Then publishes what changed. */
static void mon_publish(struct sentinel_mon *mon)
{
    for (uint32_t i = 0; i < mon->nnames; i++) {
        struct sentinel_shard *w = &mon->work.shards[i];
        const struct sentinel_shard *p = &mon->published.shards[i];
        mon_keep_promoted(mon, i, w);
        if (node_eq(&w->master, &p->master) || mon_role_master(mon, &w->master))
            continue;
        log_warn("sentinel: pool %s: master '%s' said to be at %s:%u, whose ROLE is not "
                 "master yet; asking again", mon->pool, mon->names[i], w->master.host,
                 (unsigned)w->master.port);
        w->master = p->master;
    }
    mon_publish_work(mon);
}

/* Shard i's watched replica says master: switched to now, ahead of the
 * Sentinels (their next answers naming the old master are overruled
 * until they name this one, for SENTINEL_APP_WATCH_MS at most). */
static void mon_promote(struct sentinel_mon *mon, uint32_t i)
{
    struct mon_shard *ms = &mon->ms[i];
    memcpy(mon->work.shards, mon->published.shards, mon->nnames * sizeof(*mon->work.shards));
    struct sentinel_shard *w = &mon->work.shards[i];
    ms->demoted = w->master;
    ms->promoted = ms->watch;
    ms->promoted_until = util_now_ms() + SENTINEL_APP_WATCH_MS;
    w->master = ms->watch;
    replicas_remove(w, &ms->watch);
    ms->watch.port = 0;
    log_notice("sentinel: pool %s: replica %s:%u of master '%s' says ROLE master: switching "
               "to it ahead of +switch-master", mon->pool, w->master.host,
               (unsigned)w->master.port, mon->names[i]);
    mon_publish_work(mon);
}

/* The replicas being promoted: one whose ROLE says master is switched
 * to. Returns whether any is still watched. */
static bool mon_watch(struct sentinel_mon *mon)
{
    bool active = false;
    for (uint32_t i = 0; i < mon->nnames; i++) {
        struct mon_shard *ms = &mon->ms[i];
        if (ms->watch.port == 0)
            continue;
        if (util_now_ms() > ms->watch_until ||
            node_eq(&ms->watch, &mon->published.shards[i].master))
            ms->watch.port = 0;
        else if (mon_role_master(mon, &ms->watch))
            mon_promote(mon, i);
        else
            active = true;
    }
    return active;
}

/* +selected-slave or +promoted-slave of one of the pool's masters: that
 * replica's ROLE is watched from now on. */
static void mon_watch_event(struct sentinel_mon *mon, const char *channel, const char *payload)
{
    struct sentinel_node node;
    char name[256];
    if ((strcmp(channel, "+selected-slave") != 0 && strcmp(channel, "+promoted-slave") != 0) ||
        sentinel_instance_event(payload, &node, name, sizeof(name)) != 0)
        return;
    for (uint32_t i = 0; i < mon->nnames; i++) {
        if (strcmp(mon->names[i], name) != 0)
            continue;
        mon->ms[i].watch = node;
        mon->ms[i].watch_until = util_now_ms() + SENTINEL_APP_WATCH_MS;
    }
}

/* Subscribes on Sentinel i when it is time to try; a failure is tried
 * again after sentinel_interval, at least SENTINEL_APP_SUB_RETRY_MS (a
 * Sentinel that does not answer costs sentinel_timeout per try). */
static void mon_subscribe(struct sentinel_mon *mon, uint32_t i)
{
    struct mon_sub *sub = &mon->subs[i];
    char why[256];
    const char *argv[] = { "SUBSCRIBE", "+switch-master", "+sdown", "-sdown", "+slave",
                           "+selected-slave", "+promoted-slave" };
    if (sub->fd >= 0 || util_now_ms() < sub->retry_at)
        return;
    sub->fd = mon_dial(mon, i, why, sizeof(why));
    sub->len = 0;
    if (sub->fd >= 0 && io_send(sub->fd, 7, argv) == 0)
        return;
    if (sub->fd >= 0)
        snprintf(why, sizeof(why), "SUBSCRIBE failed");
    log_info("sentinel: pool %s: no events from Sentinel %s: %s", mon->pool,
             mon->sentinels[i].text, why);
    io_close(&sub->fd);
    sub->retry_at = util_now_ms() + (mon->interval_ms > SENTINEL_APP_SUB_RETRY_MS
                                     ? mon->interval_ms : SENTINEL_APP_SUB_RETRY_MS);
}

/* Handles the whole messages in sub->buf: true when an event came. */
static bool mon_sub_parse(struct sentinel_mon *mon, struct mon_sub *sub)
{
    size_t used;
    struct sentinel_val v;
    enum sentinel_status st;
    bool event = false;
    while ((st = sentinel_resp_parse(sub->buf, sub->len, &used, &v)) == SENTINEL_OK) {
        char channel[64];
        if (sentinel_event(&v, channel, sizeof(channel))) {
            log_info("sentinel: pool %s: %s %s", mon->pool, channel, v.elems[2].str);
            mon_watch_event(mon, channel, v.elems[2].str);
            event = true;
        }
        sentinel_val_deinit(&v);
        memmove(sub->buf, sub->buf + used, sub->len - used);
        sub->len -= used;
    }
    if (st == SENTINEL_ERROR || sub->len == SENTINEL_APP_SUB_MAX)
        io_close(&sub->fd);
    return event;
}

/* Reads what a pub/sub connection has: true when an event came or the
 * Sentinel went away (the Sentinels are asked at once). */
static bool mon_sub_read(struct sentinel_mon *mon, struct mon_sub *sub)
{
    ssize_t n = recv(sub->fd, sub->buf + sub->len, SENTINEL_APP_SUB_MAX - sub->len,
                     MSG_DONTWAIT);
    if (n > 0) {
        sub->len += (size_t)n;
        return mon_sub_parse(mon, sub);
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        io_close(&sub->fd);
        sub->retry_at = util_now_ms() + mon->interval_ms;
        return true;
    }
    return false;
}

/* Waits up to wait_ms for an event or the stop pipe: true when the
 * Sentinels should be asked now. *stop is set when asked to stop. */
static bool mon_wait(struct sentinel_mon *mon, int wait_ms, bool *stop)
{
    mon->pfds[0] = (struct pollfd){ .fd = mon->stop_pipe[0], .events = POLLIN };
    for (uint32_t i = 0; i < mon->nsentinels; i++)
        mon->pfds[i + 1] = (struct pollfd){ .fd = mon->subs[i].fd, .events = POLLIN };
    if (poll(mon->pfds, mon->nsentinels + 1, wait_ms) <= 0)
        return false;
    *stop = (mon->pfds[0].revents & (POLLIN | POLLHUP)) != 0;
    bool now = false;
    for (uint32_t i = 0; i < mon->nsentinels && !*stop; i++)
        if (mon->subs[i].fd >= 0 && mon->pfds[i + 1].revents != 0)
            now |= mon_sub_read(mon, &mon->subs[i]);
    return now;
}

static void *mon_run(void *arg)
{
    struct sentinel_mon *mon = arg;
    bool stop = false;
    int64_t next = util_now_ms() + mon->interval_ms;
    while (!stop) {
        for (uint32_t i = 0; i < mon->nsentinels; i++)
            mon_subscribe(mon, i);
        bool watching = mon_watch(mon);
        int64_t wait = next - util_now_ms();
        if (watching && wait > SENTINEL_APP_WATCH_POLL_MS)
            wait = SENTINEL_APP_WATCH_POLL_MS;
        bool now = mon_wait(mon, wait > 0 ? (int)wait : 0, &stop);
        if (stop || (!now && util_now_ms() < next))
            continue;
        char why[256];
        if (mon_ask(mon, why, sizeof(why)) == 0)
            mon_publish(mon);
        else
            log_error("sentinel: pool %s: no Sentinel answered: %s; the masters stay as "
                      "they are", mon->pool, why);
        next = util_now_ms() + mon->interval_ms;
    }
    return NULL;
}

/* ---- followers ----------------------------------------------------------- */

/* The Sentinel keys of a pool as one string: a reload that changes any of
 * them gets a new follower. */
static char *mon_signature(const struct conf_pool *pool)
{
    size_t cap = 256;
    for (uint32_t i = 0; i < pool->nsentinels; i++)
        cap += strlen(pool->sentinels[i].text) + 1;
    for (uint32_t i = 0; i < pool->nmaster_names; i++)
        cap += strlen(pool->master_names[i]) + 1;
    cap += pool->sentinel_auth != NULL ? strlen(pool->sentinel_auth) : 0;
    cap += pool->redis_auth != NULL ? strlen(pool->redis_auth) : 0;
    char *sig = util_xcalloc(1, cap);
    size_t n = (size_t)snprintf(sig, cap, "%d %d %d|%s|%s|", pool->sentinel_read_replicas,
                                pool->sentinel_interval_ms, pool->sentinel_timeout_ms,
                                pool->sentinel_auth != NULL ? pool->sentinel_auth : "",
                                pool->redis_auth != NULL ? pool->redis_auth : "");
    for (uint32_t i = 0; i < pool->nsentinels; i++)
        n += (size_t)snprintf(sig + n, cap - n, "%s,", pool->sentinels[i].text);
    for (uint32_t i = 0; i < pool->nmaster_names; i++)
        n += (size_t)snprintf(sig + n, cap - n, "%s,", pool->master_names[i]);
    return sig;
}

static char *mon_strdup(const char *s)
{
    return s != NULL ? util_xstrdup(s) : NULL;
}

static struct sentinel_mon *mon_create(struct app *app, const struct conf_pool *pool)
{
    struct sentinel_mon *mon = util_xcalloc(1, sizeof(*mon));
    mon->app = app;
    mon->pool = util_xstrdup(pool->name);
    mon->signature = mon_signature(pool);
    mon->nsentinels = pool->nsentinels;
    mon->sentinels = util_xcalloc(pool->nsentinels, sizeof(*mon->sentinels));
    for (uint32_t i = 0; i < pool->nsentinels; i++) {
        mon->sentinels[i].addr.host = util_xstrdup(pool->sentinels[i].addr.host);
        mon->sentinels[i].addr.port = pool->sentinels[i].addr.port;
        mon->sentinels[i].text = util_xstrdup(pool->sentinels[i].text);
    }
    mon->nnames = pool->nmaster_names;
    mon->names = util_xcalloc(mon->nnames, sizeof(*mon->names));
    for (uint32_t i = 0; i < mon->nnames; i++)
        mon->names[i] = util_xstrdup(pool->master_names[i]);
    mon->auth = mon_strdup(pool->sentinel_auth);
    mon->redis_auth = mon_strdup(pool->redis_auth);
    mon->replicas = pool->sentinel_read_replicas;
    mon->interval_ms = pool->sentinel_interval_ms;
    mon->timeout_ms = pool->sentinel_timeout_ms;
    mon->cmd_fd = mon->stop_pipe[0] = mon->stop_pipe[1] = -1;
    mon->subs = util_xcalloc(mon->nsentinels, sizeof(*mon->subs));
    mon->pfds = util_xcalloc(mon->nsentinels + 1, sizeof(*mon->pfds));
    for (uint32_t i = 0; i < mon->nsentinels; i++) {
        mon->subs[i].fd = -1;
        mon->subs[i].buf = util_xcalloc(1, SENTINEL_APP_SUB_MAX);
    }
    mon->work.nshards = mon->published.nshards = mon->nnames;
    mon->work.shards = util_xcalloc(mon->nnames, sizeof(*mon->work.shards));
    mon->published.shards = util_xcalloc(mon->nnames, sizeof(*mon->published.shards));
    mon->ms = util_xcalloc(mon->nnames, sizeof(*mon->ms));
    pthread_mutex_init(&mon->lock, NULL);
    return mon;
}

static void mon_destroy(struct sentinel_mon **monp)
{
    struct sentinel_mon *mon = *monp;
    if (mon == NULL)
        return;
    if (mon->running) {
        if (write(mon->stop_pipe[1], "x", 1) != 1)
            log_error("sentinel: pool %s: cannot stop the follower", mon->pool);
        pthread_join(mon->thread, NULL);
    }
    io_close(&mon->stop_pipe[0]);
    io_close(&mon->stop_pipe[1]);
    io_close(&mon->cmd_fd);
    for (uint32_t i = 0; i < mon->nsentinels; i++) {
        io_close(&mon->subs[i].fd);
        free(mon->subs[i].buf);
    }
    free(mon->subs);
    free(mon->pfds);
    for (uint32_t i = 0; i < mon->nsentinels; i++) {
        free(mon->sentinels[i].addr.host);
        free(mon->sentinels[i].text);
    }
    for (uint32_t i = 0; i < mon->nnames; i++)
        free(mon->names[i]);
    free(mon->sentinels);
    free(mon->names);
    free(mon->auth);
    free(mon->redis_auth);
    free(mon->pool);
    free(mon->signature);
    free(mon->work.shards);
    free(mon->published.shards);
    free(mon->ms);
    pthread_mutex_destroy(&mon->lock);
    free(mon);
    *monp = NULL;
}

/* The first answer, before the follower runs: the Sentinels in turn for
 * up to SENTINEL_APP_START_MS. A master whose ROLE cannot be read is
 * taken as the Sentinels say (logged). 0, or -1 with err. */
static int mon_first(struct sentinel_mon *mon, char *err, size_t errlen)
{
    char why[256] = "no Sentinel tried";
    int64_t until = util_now_ms() + SENTINEL_APP_START_MS;
    int rc;
    while ((rc = mon_ask(mon, why, sizeof(why))) != 0 && util_now_ms() < until)
        poll(NULL, 0, SENTINEL_APP_START_PAUSE_MS);
    if (rc != 0) {
        snprintf(err, errlen, "pool %s: no Sentinel answered within %d ms (last: %s)",
                 mon->pool, SENTINEL_APP_START_MS, why);
        return -1;
    }
    for (uint32_t i = 0; i < mon->nnames; i++) {
        const struct sentinel_shard *sh = &mon->work.shards[i];
        if (!mon_role_master(mon, &sh->master))
            log_warn("sentinel: pool %s: master '%s' at %s:%u does not answer ROLE as a "
                     "master; using it as the Sentinels say", mon->pool, mon->names[i],
                     sh->master.host, (unsigned)sh->master.port);
        char reads[64] = "";
        if (mon->replicas)
            snprintf(reads, sizeof(reads), ", %u replicas for reads", sh->nreplicas);
        log_notice("sentinel: pool %s: master '%s' is at %s:%u per Sentinel %s%s", mon->pool,
                   mon->names[i], sh->master.host, (unsigned)sh->master.port,
                   mon->sentinels[mon->cur].text, reads);
    }
    memcpy(mon->published.shards, mon->work.shards, mon->nnames * sizeof(*mon->work.shards));
    return 0;
}

static int mon_thread_start(struct sentinel_mon *mon, char *err, size_t errlen)
{
    if (pipe2(mon->stop_pipe, O_CLOEXEC) != 0 ||
        pthread_create(&mon->thread, NULL, mon_run, mon) != 0) {
        snprintf(err, errlen, "pool %s: cannot start the Sentinel follower: %s", mon->pool,
                 strerror(errno));
        return -1;
    }
    mon->running = true;
    return 0;
}

/* ---- the main thread ----------------------------------------------------- */

/* The follower of `pool` as configured now, or NULL. */
static struct sentinel_mon *app_mon_find(struct sentinel_app *sa, const struct conf_pool *pool)
{
    char *sig = mon_signature(pool);
    struct sentinel_mon *found = NULL;
    for (uint32_t i = 0; i < sa->nmons && found == NULL; i++)
        if (strcmp(sa->mons[i]->pool, pool->name) == 0 &&
            strcmp(sa->mons[i]->signature, sig) == 0)
            found = sa->mons[i];
    free(sig);
    return found;
}

/* A copy of what `mon` published, and its version. */
static uint64_t mon_snapshot(struct sentinel_mon *mon, struct sentinel_state *st)
{
    st->nshards = mon->nnames;
    st->shards = util_xcalloc(mon->nnames, sizeof(*st->shards));
    pthread_mutex_lock(&mon->lock);
    memcpy(st->shards, mon->published.shards, mon->nnames * sizeof(*st->shards));
    uint64_t version = mon->version;
    pthread_mutex_unlock(&mon->lock);
    return version;
}

/* A follower's new state: the running configuration with its pool
 * changed, handed to reload (which fills it again, from the same state). */
static void app_mon_apply(struct app *app, struct sentinel_mon *mon)
{
    const struct conf_pool *pool = conf_pool_find(app->conf, mon->pool);
    if (pool == NULL || app_mon_find(app->sentinel, pool) != mon)
        return;   /* the pool is gone or follows other Sentinels now */
    struct sentinel_state st;
    mon->applied = mon_snapshot(mon, &st);
    char source[512], err[1024];
    snprintf(source, sizeof(source), "sentinel (pool %s, master '%s' at %s:%u%s)", mon->pool,
             mon->names[0], st.shards[0].master.host, (unsigned)st.shards[0].master.port,
             mon->nnames > 1 ? ", ..." : "");
    struct conf *conf = sentinel_conf_switch(app->conf, mon->pool, &st);
    free(st.shards);
    if (conf == NULL) {
        log_error("sentinel: pool %s: out of memory for the new configuration", mon->pool);
        return;
    }
    log_notice("sentinel: pool %s: the Sentinels changed its servers; applying %s",
               mon->pool, source);
    if (reload_apply(app, conf, source, err, sizeof(err)) != 0)
        log_error("sentinel: %s", err);
    else
        zk_app_republish(app);   /* the registration names the generation */
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct app *app = arg;
    struct sentinel_app *sa = app->sentinel;
    for (uint32_t i = 0; i < sa->nmons; i++) {
        struct sentinel_mon *mon = sa->mons[i];
        pthread_mutex_lock(&mon->lock);
        bool changed = mon->version != mon->applied;
        pthread_mutex_unlock(&mon->lock);
        if (changed)
            app_mon_apply(app, mon);
    }
}

/* The follower of `pool`, made (asked and started) when there is none. */
static struct sentinel_mon *app_mon_get(struct app *app, const struct conf_pool *pool,
                                        char *err, size_t errlen)
{
    struct sentinel_app *sa = app->sentinel;
    struct sentinel_mon *mon = app_mon_find(sa, pool);
    if (mon != NULL)
        return mon;
    mon = mon_create(app, pool);
    if (mon_first(mon, err, errlen) != 0 || mon_thread_start(mon, err, errlen) != 0) {
        mon_destroy(&mon);
        return NULL;
    }
    sa->mons = util_xrealloc(sa->mons, sa->nmons + 1, sizeof(*sa->mons));
    sa->mons[sa->nmons++] = mon;
    return mon;
}

/* Whether `mon` follows a pool of `conf` as configured there. */
static bool mon_used_by(struct sentinel_app *sa, struct sentinel_mon *mon,
                        const struct conf *conf)
{
    const struct conf_pool *pool = conf != NULL ? conf_pool_find(conf, mon->pool) : NULL;
    return pool != NULL && pool->nsentinels > 0 && app_mon_find(sa, pool) == mon;
}

/* Stops the followers that neither the running configuration nor `next`
 * uses (their pool removed, or its Sentinel keys changed, by an earlier
 * reload). Stopping waits for a follower's exchange in progress: at most
 * a few sentinel_timeout, and only then. */
static void app_mons_prune(struct app *app, const struct conf *next)
{
    struct sentinel_app *sa = app->sentinel;
    bool *keep = util_xcalloc(sa->nmons + 1, sizeof(*keep));
    for (uint32_t i = 0; i < sa->nmons; i++)
        keep[i] = mon_used_by(sa, sa->mons[i], app->conf) || mon_used_by(sa, sa->mons[i], next);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < sa->nmons; i++) {
        if (keep[i]) {
            sa->mons[kept++] = sa->mons[i];
            continue;
        }
        log_notice("sentinel: pool %s: no longer followed with these Sentinel keys",
                   sa->mons[i]->pool);
        mon_destroy(&sa->mons[i]);
    }
    sa->nmons = kept;
    free(keep);
}

int sentinel_app_fill(struct app *app, struct conf *conf, char *err, size_t errlen)
{
    if (app->sentinel != NULL)
        app_mons_prune(app, conf);
    for (uint32_t p = 0; p < conf->npools; p++) {
        struct conf_pool *pool = &conf->pools[p];
        if (pool->nsentinels == 0)
            continue;
        if (app->sentinel == NULL) {
            snprintf(err, errlen, "pool %s: Sentinel pools are not followed here", pool->name);
            return -1;
        }
        struct sentinel_mon *mon = app_mon_get(app, pool, err, errlen);
        if (mon == NULL)
            return -1;
        struct sentinel_state st;
        mon_snapshot(mon, &st);
        int rc = sentinel_pool_fill(pool, &st);
        free(st.shards);
        if (rc != 0) {
            snprintf(err, errlen, "pool %s: out of memory", pool->name);
            return -1;
        }
    }
    return 0;
}

int sentinel_app_start(struct app *app)
{
    char err[1024];
    app->sentinel = util_xcalloc(1, sizeof(*app->sentinel));
    app->sentinel->wake = event_new(app->base, -1, 0, on_wake, app);
    if (app->sentinel->wake == NULL || sentinel_app_fill(app, app->conf, err, sizeof(err)) != 0) {
        if (app->sentinel->wake == NULL)
            snprintf(err, sizeof(err), "cannot create the Sentinel event");
        log_error("sentinel: %s", err);
        fprintf(stderr, "strata: sentinel: %s\n", err);
        return -1;
    }
    return 0;
}

void sentinel_app_stop(struct app *app)
{
    struct sentinel_app *sa = app->sentinel;
    if (sa == NULL)
        return;
    for (uint32_t i = 0; i < sa->nmons; i++)
        mon_destroy(&sa->mons[i]);
    free(sa->mons);
    if (sa->wake != NULL)
        event_free(sa->wake);
    free(sa);
    app->sentinel = NULL;
}
