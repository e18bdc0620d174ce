/* zk: the ZooKeeper client side of the configuration center (zk.h):
 * one-shot read and publish for start-up, -t and --publish, and the
 * watched source that runs on the main thread's event_base.
 *
 * Threads: libzookeeper_mt runs an io thread and a completion thread per
 * session. Watchers and completions never call back into Strata: they
 * put what happened into the source's slot (a bit set plus the latest
 * node text, under `mu`) and wake the main thread with event_active().
 * The main thread takes the slot, logs transitions once, issues the next
 * request and hands the text to the caller. Only the registration chain
 * (create parent, create node, check owner, set) runs from completions,
 * reading the JSON under `mu`; a failed authentication is logged from
 * its completion. zookeeper_init/zookeeper_close are called
 * on the main thread only. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strata/zk.h"
#include "zk_int.h"

#ifdef HAVE_ZOOKEEPER

#include <event2/event.h>
#define THREADED 1   /* libzookeeper_mt: declares the synchronous calls too */
#include <zookeeper/zookeeper.h>

#include "strata/log.h"

/* A new session after an expiry: first after ZK_BACKOFF_MIN_MS, doubling
 * up to ZK_BACKOFF_MAX_MS while no session gets connected. */
#define ZK_BACKOFF_MIN_MS   500
#define ZK_BACKOFF_MAX_MS   30000
/* A registration node owned by a dead session is deleted and created
 * again at most this many times per attempt. */
#define ZK_REG_TRIES        3

bool zk_supported(void)
{
    return true;
}

/* ZooKeeper's own log lines: retries and internals, below notice. */
static void zk_log_line(const char *message)
{
    log_info("zookeeper: %s", message);
}

static void zk_client_setup(void)
{
    zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
}

static int64_t zk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- access: credentials and ACLs ---------------------------------------- */

/* A zk_acl as the client library takes it; points into the zk_acl. */
struct zk_aclv {
    struct ACL_vector v;
    struct ACL        a[ZK_ACL_MAX];
};

static void zk_aclv_init(struct zk_aclv *out, const struct zk_acl *acl)
{
    for (uint32_t i = 0; i < acl->n; i++) {
        out->a[i].perms = acl->entries[i].perms;
        out->a[i].id.scheme = acl->entries[i].scheme;
        out->a[i].id.id = acl->entries[i].id;
    }
    out->v.count = (int32_t)acl->n;
    out->v.data = out->a;
}

static void zk_auth_done(int rc, const void *data)
{
    const char *hosts = data;
    if (rc != ZOK)
        log_error("zookeeper: authentication to %s failed: %s", hosts, zerror(rc));
}

/* Queues the digest credentials on a new handle: the client sends them
 * at the head of every connection's queue, before any request. */
static void zk_auth_add(zhandle_t *zh, const struct zk_access *access, const char *hosts)
{
    if (access == NULL || access->auth == NULL)
        return;
    int rc = zoo_add_auth(zh, "digest", access->auth, (int)strlen(access->auth),
                          zk_auth_done, hosts);
    if (rc != ZOK)
        log_error("zookeeper: cannot add credentials for %s: %s", hosts, zerror(rc));
}

/* What anyone may do to `path` by its ACL (ZK_PERM_*), -1 when the ACL
 * cannot be read. Blocks: one-shot sessions only. */
static int zk_world_perms_of(zhandle_t *zh, const char *path)
{
    struct ACL_vector v;
    struct Stat st;
    if (zoo_get_acl(zh, path, &v, &st) != ZOK)
        return -1;
    struct zk_acl acl = { .n = 0 };
    for (int32_t i = 0; i < v.count && acl.n < ZK_ACL_MAX; i++, acl.n++) {
        acl.entries[acl.n].scheme = v.data[i].id.scheme;
        acl.entries[acl.n].id = v.data[i].id.id;
        acl.entries[acl.n].perms = v.data[i].perms;
    }
    int perms = zk_acl_world_perms(&acl);
    deallocate_ACL_vector(&v);
    return perms;
}

/* ---- one-shot session: wait for the connection and one answer ---------- */

struct zk_wait {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             state;     /* last session state seen */
    bool            done;      /* the awaited completion ran */
    int             rc;
    struct zk_node  node;
};

static void zk_wait_init(struct zk_wait *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void zk_wait_deinit(struct zk_wait *w)
{
    zk_node_deinit(&w->node);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static void zk_wait_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)path;
    struct zk_wait *w = ctx;
    if (type != ZOO_SESSION_EVENT) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->state = state;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits until pred(w) or the deadline (monotonic ms); w->mu held. */
static bool zk_wait_until(struct zk_wait *w, bool (*pred)(const struct zk_wait *),
                          int64_t deadline)
{
    while (!pred(w)) {
        int64_t left = deadline - zk_mono_ms();
        if (left <= 0) {
            return false;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left % 1000) * 1000000;
        ts.tv_sec += (time_t)(left / 1000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    return true;
}

static bool zk_wait_connected(const struct zk_wait *w)
{
    return w->state == ZOO_CONNECTED_STATE || w->state == ZOO_EXPIRED_SESSION_STATE ||
           w->state == ZOO_AUTH_FAILED_STATE;
}

static bool zk_wait_done(const struct zk_wait *w)
{
    return w->done;
}

/* Opens a session and waits until it is connected. Returns the handle or
 * NULL with err. */
static zhandle_t *zk_wait_open(const struct zk_url *url, const struct zk_access *access,
                               struct zk_wait *w, int64_t deadline, int timeout_ms,
                               char *err, size_t errlen)
{
    zk_client_setup();
    zhandle_t *zh = zookeeper_init2(url->hosts, zk_wait_watcher, timeout_ms, NULL, w, 0,
                                    zk_log_line);
    if (zh == NULL) {
        zk_error(err, errlen, "cannot start a ZooKeeper client for %s: %s", url->hosts,
                 strerror(errno));
        return NULL;
    }
    zk_auth_add(zh, access, url->hosts);
    pthread_mutex_lock(&w->mu);
    bool ok = zk_wait_until(w, zk_wait_connected, deadline) &&
              w->state == ZOO_CONNECTED_STATE;
    pthread_mutex_unlock(&w->mu);
    if (!ok) {
        zk_error(err, errlen, "cannot reach ZooKeeper at %s within %d ms", url->hosts,
                 timeout_ms);
        zookeeper_close(zh);
        return NULL;
    }
    return zh;
}

static void zk_wait_data_done(int rc, const char *value, int value_len,
                              const struct Stat *stat, const void *data)
{
    struct zk_wait *w = (struct zk_wait *)(uintptr_t)data;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    if (rc == ZOK) {
        size_t len = value != NULL && value_len > 0 ? (size_t)value_len : 0;
        w->node.text = malloc(len + 1);
        if (w->node.text == NULL) {
            w->rc = ZSYSTEMERROR;
        } else {
            if (len > 0) {
                memcpy(w->node.text, value, len);
            }
            w->node.text[len] = '\0';
            w->node.len = len;
            w->node.version = stat->version;
        }
    }
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Reads url->path on an open session into w->node. Returns a ZooKeeper
 * code (ZOK, ZNONODE, ZOPERATIONTIMEOUT when the deadline passed). */
static int zk_wait_get(zhandle_t *zh, const struct zk_url *url, struct zk_wait *w,
                       int64_t deadline)
{
    pthread_mutex_lock(&w->mu);
    w->done = false;
    zk_node_deinit(&w->node);
    pthread_mutex_unlock(&w->mu);
    int rc = zoo_aget(zh, url->path, 0, zk_wait_data_done, w);
    if (rc != ZOK) {
        return rc;
    }
    pthread_mutex_lock(&w->mu);
    rc = zk_wait_until(w, zk_wait_done, deadline) ? w->rc : ZOPERATIONTIMEOUT;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Why a request was refused, for ZNOAUTH: the usual cause. */
static const char *zk_why(int rc)
{
    return rc == ZNOAUTH ? "not authorized (the node's ACL does not let this identity in; "
                           "zk_auth_file)" : zerror(rc);
}

int zk_read(const struct zk_url *url, const struct zk_access *access, int timeout_ms,
            struct zk_node *out, char *err, size_t errlen)
{
    struct zk_wait w;
    int64_t deadline = zk_mono_ms() + timeout_ms;
    memset(out, 0, sizeof(*out));
    zk_wait_init(&w);
    zhandle_t *zh = zk_wait_open(url, access, &w, deadline, timeout_ms, err, errlen);
    int rc = zh != NULL ? zk_wait_get(zh, url, &w, deadline) : ZCONNECTIONLOSS;
    if (rc == ZOK)
        w.node.world_perms = zk_world_perms_of(zh, url->path);
    if (zh != NULL) {
        zookeeper_close(zh);   /* joins its threads: w is ours again */
    }
    int ret = -1;
    if (zh == NULL) {
        /* err written by zk_wait_open */
    } else if (rc == ZNONODE) {
        zk_error(err, errlen, "node %s does not exist on ZooKeeper at %s", url->path,
                 url->hosts);
    } else if (rc != ZOK) {
        zk_error(err, errlen, "cannot read node %s from ZooKeeper at %s: %s", url->path,
                 url->hosts, zk_why(rc));
    } else {
        *out = w.node;
        memset(&w.node, 0, sizeof(w.node));
        ret = 0;
    }
    zk_wait_deinit(&w);
    return ret;
}

/* ---- publish ------------------------------------------------------------ */

/* Creates every missing ancestor of `path` (persistent, empty, `acl`). */
static int zk_create_parents(zhandle_t *zh, const char *path, const struct ACL_vector *acl)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *slash = strchr(buf + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        int rc = zoo_create(zh, buf, NULL, -1, acl, ZOO_PERSISTENT, NULL, 0);
        *slash = '/';
        if (rc != ZOK && rc != ZNODEEXISTS) {
            return rc;
        }
    }
    return ZOK;
}

/* The node does not exist: create it (and its parents). */
static int zk_publish_create(zhandle_t *zh, const struct zk_url *url,
                             const struct zk_acl *acl, const char *text, size_t len,
                             int32_t expect, int32_t *new_version, char *err, size_t errlen)
{
    struct zk_aclv v;
    zk_aclv_init(&v, acl);
    if (expect != ZK_ANY_VERSION) {
        return zk_error(err, errlen, "node %s does not exist, so it is not at version %d: "
                        "refusing to publish", url->path, (int)expect);
    }
    int rc = zk_create_parents(zh, url->path, &v.v);
    if (rc == ZOK) {
        rc = zoo_create(zh, url->path, text, (int)len, &v.v, ZOO_PERSISTENT, NULL, 0);
    }
    if (rc == ZNODEEXISTS) {
        return zk_error(err, errlen, "node %s was created by someone else while publishing: "
                        "refusing to overwrite it; read it and publish again", url->path);
    }
    if (rc != ZOK) {
        return zk_error(err, errlen, "cannot create node %s: %s", url->path, zk_why(rc));
    }
    *new_version = 0;
    return 0;
}

static int zk_publish_set(zhandle_t *zh, const struct zk_url *url, const char *text,
                          size_t len, int32_t expect, int32_t current, int32_t *new_version,
                          char *err, size_t errlen)
{
    if (expect != ZK_ANY_VERSION && expect != current) {
        return zk_error(err, errlen, "node %s is at version %d, not %d: it changed since it "
                        "was read; refusing to publish", url->path, (int)current, (int)expect);
    }
    struct Stat stat;
    int rc = zoo_set2(zh, url->path, text, (int)len, current, &stat);
    if (rc == ZBADVERSION) {
        return zk_error(err, errlen, "node %s changed while publishing (it is no longer at "
                        "version %d): refusing to overwrite it", url->path, (int)current);
    }
    if (rc == ZNONODE) {
        return zk_error(err, errlen, "node %s was deleted while publishing: refusing to "
                        "publish", url->path);
    }
    if (rc != ZOK) {
        return zk_error(err, errlen, "cannot write node %s: %s", url->path, zk_why(rc));
    }
    *new_version = stat.version;
    return 0;
}

int zk_publish(const struct zk_url *url, const struct zk_access *access, const char *text,
               size_t len, int32_t expect, int timeout_ms, struct zk_node *out,
               char *err, size_t errlen)
{
    struct zk_wait w;
    int64_t deadline = zk_mono_ms() + timeout_ms;
    if (len > ZK_MAX_DATA) {
        return zk_error(err, errlen, "the pool file has %zu bytes; a ZooKeeper node holds at "
                        "most %d", len, ZK_MAX_DATA);
    }
    zk_wait_init(&w);
    int ret = -1;
    memset(out, 0, sizeof(*out));
    zhandle_t *zh = zk_wait_open(url, access, &w, deadline, timeout_ms, err, errlen);
    if (zh == NULL) {
        goto out;
    }
    int rc = zk_wait_get(zh, url, &w, deadline);
    if (rc == ZNONODE) {
        ret = zk_publish_create(zh, url, access->acl, text, len, expect, &out->version,
                                err, errlen);
    } else if (rc == ZOK) {
        int32_t current = w.node.version;
        ret = zk_publish_set(zh, url, text, len, expect, current, &out->version, err, errlen);
    } else {
        zk_error(err, errlen, "cannot read node %s: %s", url->path, zk_why(rc));
    }
    if (ret == 0)
        out->world_perms = zk_world_perms_of(zh, url->path);
    zookeeper_close(zh);
out:
    zk_wait_deinit(&w);
    return ret;
}

/* ---- the watched source -------------------------------------------------- */

/* What the ZooKeeper threads report; bits of zk_source.pending. */
enum {
    ZK_EV_CONNECTED  = 1 << 0,   /* session (re)connected */
    ZK_EV_CONNECTING = 1 << 1,   /* connection lost, the client retries */
    ZK_EV_EXPIRED    = 1 << 2,   /* session expired (or auth failed): start another */
    ZK_EV_CHANGED    = 1 << 3,   /* the node changed, was created or deleted */
    ZK_EV_DATA       = 1 << 4,   /* a read succeeded: slot `data` */
    ZK_EV_READ_ERR   = 1 << 5,   /* a read failed: `read_rc` */
    ZK_EV_REG        = 1 << 6,   /* the registration chain ended: `reg_rc` */
};

/* Transitions the main thread logs once each. */
enum zk_state {
    ZK_STATE_STARTING,
    ZK_STATE_CONNECTED,
    ZK_STATE_DISCONNECTED,
    ZK_STATE_EXPIRED,
};

struct zk_source {
    struct event_base *base;
    struct zk_url      url;
    const struct zk_access *access;      /* the caller's: credentials, ACL */
    struct zk_aclv     aclv;             /* access->acl for the client library */
    int                timeout_ms;       /* session timeout asked for */
    zk_node_fn         fn;
    void              *arg;
    struct event      *wake;             /* activated from ZooKeeper threads */
    struct event      *retry;            /* timer: next session after expiry */
    int                backoff_ms;
    /* main thread only */
    enum zk_state      state;
    bool               node_missing;     /* logged; cleared by a good read */
    int                reg_logged_rc;    /* last registration outcome logged */
    /* shared with the ZooKeeper threads, under mu */
    pthread_mutex_t    mu;
    zhandle_t         *zh;               /* NULL between sessions */
    bool               closing;          /* no new requests from completions */
    unsigned           pending;          /* ZK_EV_* */
    struct zk_node     data;             /* the latest text read */
    int                read_rc;
    int                reg_rc;
    char              *reg_path;         /* NULL: not registering */
    char              *reg_json;
    int                reg_tries;
};

static void zk_source_post(struct zk_source *src, unsigned ev)
{
    pthread_mutex_lock(&src->mu);
    src->pending |= ev;
    pthread_mutex_unlock(&src->mu);
    event_active(src->wake, EV_READ, 0);
}

static void zk_session_watcher(zhandle_t *zh, int type, int state, const char *path,
                               void *ctx)
{
    (void)zh; (void)path;
    struct zk_source *src = ctx;
    if (type != ZOO_SESSION_EVENT) {
        return;
    }
    if (state == ZOO_CONNECTED_STATE) {
        zk_source_post(src, ZK_EV_CONNECTED);
    } else if (state == ZOO_CONNECTING_STATE) {
        zk_source_post(src, ZK_EV_CONNECTING);
    } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
        zk_source_post(src, ZK_EV_EXPIRED);
    }
}

/* The node's watch (zoo_awget, zoo_awexists): a change means read again.
 * Session events also reach it; the session watcher handles those. */
static void zk_node_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)state; (void)path;
    if (type == ZOO_CHANGED_EVENT || type == ZOO_CREATED_EVENT || type == ZOO_DELETED_EVENT) {
        zk_source_post(ctx, ZK_EV_CHANGED);
    }
}

static void zk_source_data_done(int rc, const char *value, int value_len,
                                const struct Stat *stat, const void *data)
{
    struct zk_source *src = (struct zk_source *)(uintptr_t)data;
    char *text = NULL;
    size_t len = value != NULL && value_len > 0 ? (size_t)value_len : 0;
    if (rc == ZOK && (text = malloc(len + 1)) == NULL) {
        rc = ZSYSTEMERROR;
    }
    pthread_mutex_lock(&src->mu);
    if (rc == ZOK) {
        if (len > 0) {
            memcpy(text, value, len);
        }
        text[len] = '\0';
        zk_node_deinit(&src->data);   /* an older text nobody took yet */
        src->data = (struct zk_node){ .text = text, .len = len, .version = stat->version };
        src->pending |= ZK_EV_DATA;
    } else {
        src->read_rc = rc;
        src->pending |= ZK_EV_READ_ERR;
    }
    pthread_mutex_unlock(&src->mu);
    event_active(src->wake, EV_READ, 0);
}

/* zoo_awexists after a missing node: ZOK means it appeared meanwhile. */
static void zk_source_exists_done(int rc, const struct Stat *stat, const void *data)
{
    (void)stat;
    struct zk_source *src = (struct zk_source *)(uintptr_t)data;
    if (rc == ZOK) {
        zk_source_post(src, ZK_EV_CHANGED);
    }
}

/* ---- registration chain (completion thread) ---- */

static void zk_reg_node_done(int rc, const char *name, const void *data);

static void zk_reg_end(struct zk_source *src, int rc)
{
    pthread_mutex_lock(&src->mu);
    src->reg_rc = rc;
    src->pending |= ZK_EV_REG;
    pthread_mutex_unlock(&src->mu);
    event_active(src->wake, EV_READ, 0);
}

/* Issues one registration request under mu, unless closing. */
enum zk_reg_op { ZK_REG_PARENT, ZK_REG_CREATE, ZK_REG_OWNER, ZK_REG_SET, ZK_REG_DELETE };

static void zk_reg_set_done(int rc, const struct Stat *stat, const void *data);
static void zk_reg_owner_done(int rc, const struct Stat *stat, const void *data);
static void zk_reg_deleted(int rc, const void *data);
static void zk_reg_parent_done(int rc, const char *name, const void *data);

static void zk_reg_issue(struct zk_source *src, enum zk_reg_op op, int version)
{
    char parent[1024];
    int rc = ZOK;
    pthread_mutex_lock(&src->mu);
    zhandle_t *zh = src->zh;
    if (src->closing || zh == NULL || src->reg_path == NULL) {
        pthread_mutex_unlock(&src->mu);
        return;
    }
    const char *path = src->reg_path, *json = src->reg_json;
    int jlen = (int)strlen(json);
    switch (op) {
    case ZK_REG_PARENT:
        snprintf(parent, sizeof(parent), "%s/" ZK_PROXIES, src->url.path);
        rc = zoo_acreate(zh, parent, NULL, -1, &src->aclv.v, ZOO_PERSISTENT,
                         zk_reg_parent_done, src);
        break;
    case ZK_REG_CREATE:
        rc = zoo_acreate(zh, path, json, jlen, &src->aclv.v, ZOO_EPHEMERAL,
                         zk_reg_node_done, src);
        break;
    case ZK_REG_OWNER:
        rc = zoo_aexists(zh, path, 0, zk_reg_owner_done, src);
        break;
    case ZK_REG_SET:
        rc = zoo_aset(zh, path, json, jlen, -1, zk_reg_set_done, src);
        break;
    case ZK_REG_DELETE:
        rc = zoo_adelete(zh, path, version, zk_reg_deleted, src);
        break;
    }
    pthread_mutex_unlock(&src->mu);
    if (rc != ZOK) {
        zk_reg_end(src, rc);
    }
}

static void zk_reg_parent_done(int rc, const char *name, const void *data)
{
    (void)name;
    struct zk_source *src = (struct zk_source *)(uintptr_t)data;
    if (rc == ZOK || rc == ZNODEEXISTS) {
        zk_reg_issue(src, ZK_REG_CREATE, 0);
    } else {
        zk_reg_end(src, rc);
    }
}

static void zk_reg_node_done(int rc, const char *name, const void *data)
{
    (void)name;
    struct zk_source *src = (struct zk_source *)(uintptr_t)data;
    if (rc == ZNODEEXISTS) {
        zk_reg_issue(src, ZK_REG_OWNER, 0);   /* ours (reconnected) or a dead one's */
    } else {
        zk_reg_end(src, rc);
    }
}

/* The node exists: ours gets the new JSON; one left by a session that
 * has not expired yet (a restarted proxy) is replaced, or it would
 * vanish under us when that session ends. */
static void zk_reg_owner_done(int rc, const struct Stat *stat, const void *data)
{
    struct zk_source *src = (struct zk_source *)(uintptr_t)data;
    if (rc == ZNONODE) {
        rc = ZNODEEXISTS;   /* gone meanwhile: create again, below */
    }
    if (rc != ZOK && rc != ZNODEEXISTS) {
        zk_reg_end(src, rc);
        return;
    }
    pthread_mutex_lock(&src->mu);
    bool ours = rc == ZOK && src->zh != NULL &&
                stat->ephemeralOwner == zoo_client_id(src->zh)->client_id;
    bool again = src->reg_tries++ < ZK_REG_TRIES;
    pthread_mutex_unlock(&src->mu);
    if (ours) {
        zk_reg_issue(src, ZK_REG_SET, 0);
    } else if (!again) {
        zk_reg_end(src, ZNODEEXISTS);
    } else if (rc == ZOK) {
        zk_reg_issue(src, ZK_REG_DELETE, stat->version);
    } else {
        zk_reg_issue(src, ZK_REG_CREATE, 0);
    }
}

static void zk_reg_deleted(int rc, const void *data)
{
    struct zk_source *src = (struct zk_source *)(uintptr_t)data;
    if (rc == ZOK || rc == ZNONODE || rc == ZBADVERSION) {
        zk_reg_issue(src, ZK_REG_CREATE, 0);
    } else {
        zk_reg_end(src, rc);
    }
}

static void zk_reg_set_done(int rc, const struct Stat *stat, const void *data)
{
    (void)stat;
    zk_reg_end((struct zk_source *)(uintptr_t)data, rc);
}

/* ---- main thread ---- */

/* Starts the registration chain (main thread). */
static void zk_source_reg_start(struct zk_source *src)
{
    pthread_mutex_lock(&src->mu);
    bool go = src->reg_path != NULL && src->zh != NULL;
    src->reg_tries = 0;
    pthread_mutex_unlock(&src->mu);
    if (go) {
        zk_reg_issue(src, ZK_REG_PARENT, 0);
    }
}

static void zk_source_read(struct zk_source *src)
{
    if (src->zh == NULL) {
        return;
    }
    int rc = zoo_awget(src->zh, src->url.path, zk_node_watcher, src,
                       zk_source_data_done, src);
    if (rc != ZOK) {
        log_debug("zookeeper: cannot ask for node %s: %s", src->url.path, zerror(rc));
    }
}

static void zk_source_retry_later(struct zk_source *src)
{
    struct timeval tv = { src->backoff_ms / 1000, (src->backoff_ms % 1000) * 1000 };
    evtimer_add(src->retry, &tv);
    src->backoff_ms = src->backoff_ms * 2 > ZK_BACKOFF_MAX_MS ? ZK_BACKOFF_MAX_MS
                                                               : src->backoff_ms * 2;
}

/* A new session (zookeeper_init never waits for the server). */
static void zk_source_open(struct zk_source *src)
{
    zhandle_t *zh = zookeeper_init2(src->url.hosts, zk_session_watcher, src->timeout_ms,
                                    NULL, src, 0, zk_log_line);
    if (zh == NULL) {
        log_debug("zookeeper: cannot start a client for %s: %s", src->url.hosts,
                  strerror(errno));
        zk_source_retry_later(src);
        return;
    }
    zk_auth_add(zh, src->access, src->url.hosts);
    pthread_mutex_lock(&src->mu);
    src->zh = zh;
    pthread_mutex_unlock(&src->mu);
}

static void zk_source_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    zk_source_open(arg);
}

/* Ends the session: its threads are joined when this returns. */
static void zk_source_close(struct zk_source *src)
{
    pthread_mutex_lock(&src->mu);
    zhandle_t *zh = src->zh;
    src->closing = true;
    pthread_mutex_unlock(&src->mu);
    if (zh != NULL) {
        zookeeper_close(zh);
    }
    pthread_mutex_lock(&src->mu);
    src->zh = NULL;
    src->closing = false;
    src->pending &= ~(unsigned)(ZK_EV_CONNECTED | ZK_EV_CONNECTING | ZK_EV_CHANGED |
                                ZK_EV_READ_ERR | ZK_EV_REG);
    pthread_mutex_unlock(&src->mu);
}

static void zk_source_on_expired(struct zk_source *src)
{
    zk_source_close(src);
    if (src->state != ZK_STATE_EXPIRED) {
        log_warn("zookeeper: session to %s expired: keeping the running configuration; "
                 "starting a new session (retrying with backoff)", src->url.hosts);
        src->state = ZK_STATE_EXPIRED;
    }
    src->reg_logged_rc = INT32_MIN;   /* log the new registration */
    zk_source_retry_later(src);
}

static void zk_source_on_connected(struct zk_source *src)
{
    if (src->state != ZK_STATE_CONNECTED) {
        log_notice("zookeeper: connected to %s (session 0x%llx), watching %s",
                   src->url.hosts, (unsigned long long)zoo_client_id(src->zh)->client_id,
                   src->url.path);
        src->state = ZK_STATE_CONNECTED;
    }
    src->backoff_ms = ZK_BACKOFF_MIN_MS;
    zk_source_read(src);
    zk_source_reg_start(src);
}

static void zk_source_on_connecting(struct zk_source *src)
{
    if (src->state == ZK_STATE_CONNECTED) {
        log_warn("zookeeper: lost the connection to %s: keeping the running configuration; "
                 "reconnecting", src->url.hosts);
        src->state = ZK_STATE_DISCONNECTED;
    }
}

static void zk_source_on_read_error(struct zk_source *src, int rc)
{
    if (rc != ZNONODE) {
        return;   /* connection loss: read again once reconnected */
    }
    if (!src->node_missing) {
        log_warn("zookeeper: node %s does not exist: keeping the running configuration; "
                 "waiting for it", src->url.path);
        src->node_missing = true;
    }
    if (src->zh != NULL)
        zoo_awexists(src->zh, src->url.path, zk_node_watcher, src, zk_source_exists_done, src);
}

static void zk_source_on_reg(struct zk_source *src, int rc)
{
    if (rc == src->reg_logged_rc) {
        return;
    }
    src->reg_logged_rc = rc;
    if (rc == ZOK) {
        log_notice("zookeeper: registered as %s", src->reg_path);
    } else if (rc != ZCLOSING) {
        log_warn("zookeeper: cannot register as %s: %s (again at the next reconnection "
                 "or configuration change)", src->reg_path, zerror(rc));
    }
}

static void zk_source_on_data(struct zk_source *src, struct zk_node *node)
{
    if (src->node_missing) {
        log_notice("zookeeper: node %s exists again", src->url.path);
        src->node_missing = false;
        zk_source_reg_start(src);
    }
    src->fn(node, src->arg);
}

static void zk_source_on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; (void)what;
    struct zk_source *src = arg;
    struct zk_node node = { 0 };
    pthread_mutex_lock(&src->mu);
    unsigned ev = src->pending;
    int read_rc = src->read_rc, reg_rc = src->reg_rc;
    src->pending = 0;
    if (ev & ZK_EV_DATA) {
        node = src->data;
        memset(&src->data, 0, sizeof(src->data));
    }
    pthread_mutex_unlock(&src->mu);

    if (ev & ZK_EV_EXPIRED) {
        zk_source_on_expired(src);
        ev &= ZK_EV_DATA;
    }
    if (ev & ZK_EV_CONNECTING)
        zk_source_on_connecting(src);
    if (ev & ZK_EV_CONNECTED)
        zk_source_on_connected(src);
    else if (ev & ZK_EV_CHANGED)
        zk_source_read(src);
    if (ev & ZK_EV_READ_ERR)
        zk_source_on_read_error(src, read_rc);
    if (ev & ZK_EV_REG)
        zk_source_on_reg(src, reg_rc);
    if (ev & ZK_EV_DATA)
        zk_source_on_data(src, &node);
    zk_node_deinit(&node);
}

struct zk_source *zk_source_create(struct event_base *base, const struct zk_url *url,
                                   const struct zk_access *access, int session_timeout_ms,
                                   zk_node_fn fn, void *arg, char *err, size_t errlen)
{
    struct zk_source *src = calloc(1, sizeof(*src));
    if (src == NULL) {
        zk_error(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&src->mu, NULL);
    src->base = base;
    src->access = access;
    zk_aclv_init(&src->aclv, access->acl);
    src->timeout_ms = session_timeout_ms;
    src->fn = fn;
    src->arg = arg;
    src->backoff_ms = ZK_BACKOFF_MIN_MS;
    src->reg_logged_rc = INT32_MIN;
    src->url.hosts = strdup(url->hosts);
    src->url.path = strdup(url->path);
    src->wake = event_new(base, -1, 0, zk_source_on_wake, src);
    src->retry = evtimer_new(base, zk_source_on_retry, src);
    if (src->url.hosts == NULL || src->url.path == NULL || src->wake == NULL ||
        src->retry == NULL) {
        zk_error(err, errlen, "out of memory");
        zk_source_destroy(&src);
        return NULL;
    }
    zk_client_setup();
    zk_source_open(src);
    return src;
}

void zk_source_destroy(struct zk_source **srcp)
{
    struct zk_source *src = srcp != NULL ? *srcp : NULL;
    if (src == NULL) {
        return;
    }
    zk_source_close(src);
    if (src->wake != NULL)
        event_free(src->wake);
    if (src->retry != NULL)
        event_free(src->retry);
    zk_node_deinit(&src->data);
    zk_url_deinit(&src->url);
    free(src->reg_path);
    free(src->reg_json);
    pthread_mutex_destroy(&src->mu);
    free(src);
    *srcp = NULL;
}

void zk_source_register(struct zk_source *src, const char *path, const char *json)
{
    char *p = strdup(path), *j = strdup(json);
    if (p == NULL || j == NULL) {
        free(p);
        free(j);
        log_error("zookeeper: out of memory for the registration of %s", path);
        return;
    }
    pthread_mutex_lock(&src->mu);
    free(src->reg_path);
    free(src->reg_json);
    src->reg_path = p;
    src->reg_json = j;
    pthread_mutex_unlock(&src->mu);
    if (src->state == ZK_STATE_CONNECTED) {
        zk_source_reg_start(src);
    }
}

bool zk_source_connected(const struct zk_source *src)
{
    return src != NULL && src->state == ZK_STATE_CONNECTED;
}

#else /* !HAVE_ZOOKEEPER */

#define ZK_UNSUPPORTED "strata was built without ZooKeeper support (configure found no " \
                       "libzookeeper-mt-dev, or --without-zookeeper)"

bool zk_supported(void)
{
    return false;
}

int zk_read(const struct zk_url *url, const struct zk_access *access, int timeout_ms,
            struct zk_node *out, char *err, size_t errlen)
{
    (void)url; (void)access; (void)timeout_ms;
    memset(out, 0, sizeof(*out));
    snprintf(err, errlen, "%s", ZK_UNSUPPORTED);
    return -1;
}

int zk_publish(const struct zk_url *url, const struct zk_access *access, const char *text,
               size_t len, int32_t expect, int timeout_ms, struct zk_node *out,
               char *err, size_t errlen)
{
    (void)url; (void)access; (void)text; (void)len; (void)expect; (void)timeout_ms;
    memset(out, 0, sizeof(*out));
    snprintf(err, errlen, "%s", ZK_UNSUPPORTED);
    return -1;
}

struct zk_source *zk_source_create(struct event_base *base, const struct zk_url *url,
                                   const struct zk_access *access, int session_timeout_ms,
                                   zk_node_fn fn, void *arg, char *err, size_t errlen)
{
    (void)base; (void)url; (void)access; (void)session_timeout_ms; (void)fn; (void)arg;
    snprintf(err, errlen, "%s", ZK_UNSUPPORTED);
    return NULL;
}

void zk_source_destroy(struct zk_source **src)
{
    if (src != NULL)
        *src = NULL;
}

void zk_source_register(struct zk_source *src, const char *path, const char *json)
{
    (void)src; (void)path; (void)json;
}

bool zk_source_connected(const struct zk_source *src)
{
    (void)src;
    return false;
}

#endif
