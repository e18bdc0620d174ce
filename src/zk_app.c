/* zk_app: the configuration center as the main thread runs it (see
 * zk_app.h; paths, node contents and the cache file are described in
 * docs/operations.md, "Configuration center (ZooKeeper)").
 *
 *   start:   node ─► conf_yaml_load_text ─► app->conf ─► cache file
 *            (node away or invalid) ─► cache file ─► app->conf
 *   running: node changed ─► conf_yaml_load_text ─┬─► reload_rejected
 *                                                 └─► reload_apply ─► cache file, registration
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata/conf.h"
#include "strata/log.h"
#include "strata/reload.h"
#include "strata/unixsock.h"
#include "strata/zk.h"
#include "app.h"
#include "zk_app.h"

/* What whoever may write the pool node can do. */
#define ZK_APP_NODE_HARM "change what every proxy runs (its servers, its listeners)"

/* How long start-up waits for the node when a usable cache file exists
 * (without one it waits zk_session_timeout): the cache is served at once
 * and the node applied when ZooKeeper answers. */
#define ZK_APP_CACHED_WAIT_MS 500

/* The cache file's first line, a YAML comment: which node it copies. */
#define ZK_CACHE_HEADER "# strata: cache of "

/* Credentials and the ACL of the nodes Strata creates, from the settings. */
struct zk_app_access {
    char             *auth;              /* "user:password", or NULL */
    struct zk_acl     acl;
    struct zk_access  access;            /* points at the two above */
};

struct zk_app {
    struct zk_url     url;
    struct zk_app_access za;
    char              cache[PATH_MAX];   /* the cache file */
    char             *text;              /* the running pool file's text */
    size_t            len;
    struct zk_source *src;
    char              reg_path[1024];
    char              note[1200];        /* how start-up went, logged once running */
    bool              note_warn;
    char              cache_note[1200];  /* a cache write that failed at start */
    char              acl_note[600];     /* the node is world-writable: WARN once running */
};

/* Messages into a caller's buffer (long paths are cut, never overrun). */
__attribute__((format(printf, 3, 4)))
static void zk_app_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- access and validation ----------------------------------------------- */

static bool zk_app_acl_names_creator(const struct zk_acl *acl)
{
    for (uint32_t i = 0; i < acl->n; i++)
        if (strcmp(acl->entries[i].scheme, "auth") == 0)
            return true;
    return false;
}

/* The credentials file and the ACL of the settings (zk_auth_file,
 * zk_acl; without zk_acl: ZK_ACL_CREATOR with credentials, else
 * ZK_ACL_OPEN). Returns 0, or -1 with err. */
static int zk_app_access_init(struct zk_app_access *za, const struct settings *s,
                              char *err, size_t errlen)
{
    char why[512];
    memset(za, 0, sizeof(*za));
    if (s->zk_auth_file != NULL && zk_auth_load(s->zk_auth_file, &za->auth, err, errlen) != 0)
        return -1;
    const char *acl = s->zk_acl != NULL ? s->zk_acl
                      : za->auth != NULL ? ZK_ACL_CREATOR : ZK_ACL_OPEN;
    if (zk_acl_parse(acl, &za->acl, why, sizeof(why)) != 0) {
        zk_app_error(err, errlen, "setting zk_acl '%s': %s", acl, why);
        free(za->auth);
        za->auth = NULL;
        return -1;
    }
    if (za->auth == NULL && zk_app_acl_names_creator(&za->acl)) {
        zk_app_error(err, errlen, "setting zk_acl '%s' names the creator (auth:) but no "
                     "credentials are given (zk_auth_file)", acl);
        zk_acl_deinit(&za->acl);
        return -1;
    }
    za->access = (struct zk_access){ .auth = za->auth, .acl = &za->acl };
    return 0;
}

static void zk_app_access_deinit(struct zk_app_access *za)
{
    if (za->auth != NULL)
        memset(za->auth, 0, strlen(za->auth));
    free(za->auth);
    zk_acl_deinit(&za->acl);
    memset(za, 0, sizeof(*za));
}

/* A sentence for a node anyone may change (world_perms writable) and
 * what they could do with it, or an empty buf. */
static void zk_app_world_note(char *buf, size_t len, const char *what, const char *harm,
                              int world_perms)
{
    char perms[8];
    buf[0] = '\0';
    if (world_perms < 0 || !zk_perms_writable(world_perms))
        return;
    zk_perms_text(world_perms, perms);
    zk_app_error(buf, len, "%s is writable by anyone who reaches ZooKeeper (world:%s): "
                 "they can %s; set zk_acl and zk_auth_file (docs/security.md)", what, perms,
                 harm);
}

/* Every unix-socket listen of a configuration from ZooKeeper lies in
 * unix_socket_dir (docs/security.md). Returns 0, or -1 with err naming
 * the source and line. */
static int zk_app_unix_check(const struct conf *conf, const struct settings *s,
                             const char *source, char *err, size_t errlen)
{
    char why[512];
    for (uint32_t p = 0; p < conf->npools; p++) {
        const struct conf_pool *pool = &conf->pools[p];
        if (pool->listen.addr.path != NULL &&
            unixsock_path_allowed(pool->listen.addr.path, s->unix_socket_dir, why,
                                  sizeof(why)) != 0) {
            zk_app_error(err, errlen, "%s:%d: pool %s: %s", source, pool->line, pool->name,
                         why);
            return -1;
        }
    }
    return 0;
}

/* The text of a configuration from ZooKeeper (the node or the cache
 * file), validated as -t does plus the unix-socket rule. Returns 0 with
 * *conf, or -1 with err. */
static int zk_app_validate(const struct settings *s, const char *text, size_t len,
                           const char *source, struct conf **conf, char *err, size_t errlen)
{
    if (conf_yaml_load_text(text, len, source, conf, err, errlen) != 0)
        return -1;
    if (zk_app_unix_check(*conf, s, source, err, errlen) != 0) {
        conf_destroy(conf);
        return -1;
    }
    return 0;
}

/* ---- cache file ---------------------------------------------------------- */

static int zk_app_write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsync of the directory holding `path`, so that the rename survives a
 * crash. */
static void zk_app_sync_dir(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Creates the directories above `path` that are missing (0750), as a
 * state directory would be (/var/lib/strata). 0, or -1 with errno. */
static int zk_app_mkdirs(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Writes the header and `text` to the cache file atomically: a temporary
 * file beside it, fsync, rename. Returns 0 or -1 with err. */
static int zk_app_cache_write(const struct zk_app *zk, const char *source, const char *text,
                              size_t len, char *err, size_t errlen)
{
    char tmp[PATH_MAX + 32], head[1200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", zk->cache, (long)getpid());
    int hlen = snprintf(head, sizeof(head), ZK_CACHE_HEADER "%s\n", source);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 && errno == ENOENT && zk_app_mkdirs(zk->cache) == 0)
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        zk_app_error(err, errlen, "cannot write the cache file '%s': %s", tmp, strerror(errno));
        return -1;
    }
    int rc = zk_app_write_all(fd, head, (size_t)hlen);
    if (rc == 0)
        rc = zk_app_write_all(fd, text, len);
    if (rc == 0)
        rc = fsync(fd);
    if (close(fd) != 0)
        rc = -1;
    if (rc == 0)
        rc = rename(tmp, zk->cache);
    if (rc != 0) {
        zk_app_error(err, errlen, "cannot write the cache file '%s': %s", zk->cache,
                 strerror(errno));
        unlink(tmp);
        return -1;
    }
    zk_app_sync_dir(zk->cache);
    return 0;
}

/* The whole file at `path` (NUL-terminated) into *text. */
static int zk_app_read_file(const char *path, char **text, size_t *len, char *err,
                            size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (fp == NULL) {
        zk_app_error(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (cap - n < 4096) {
            char *grown = realloc(buf, cap = cap * 2 + 8192);
            if (grown == NULL)
                break;
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0)
            break;
    }
    bool ok = buf != NULL && !ferror(fp);
    fclose(fp);
    if (!ok) {
        free(buf);
        zk_app_error(err, errlen, "cannot read '%s'", path);
        return -1;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

/* Loads the cache file: it must copy this URL's node (when its header
 * says which) and validate. On success the running text is the node's
 * (the file without its header). */
static int zk_app_cache_load(struct zk_app *zk, const struct settings *s, const char *source,
                             struct conf **conf, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (zk_app_read_file(zk->cache, &text, &len, err, errlen) != 0)
        return -1;
    size_t skip = 0;
    size_t hl = strlen(ZK_CACHE_HEADER);
    if (strncmp(text, ZK_CACHE_HEADER, hl) == 0) {
        size_t line = strcspn(text, "\n");
        if (line - hl != strlen(source) || strncmp(text + hl, source, line - hl) != 0) {
            zk_app_error(err, errlen, "the cache file '%s' copies another node: %.*s", zk->cache,
                     (int)(line - hl), text + hl);
            free(text);
            return -1;
        }
        skip = text[line] == '\n' ? line + 1 : line;
    }
    if (zk_app_validate(s, text, len, zk->cache, conf, err, errlen) != 0) {
        free(text);
        return -1;
    }
    memmove(text, text + skip, len - skip + 1);
    zk->text = text;
    zk->len = len - skip;
    return 0;
}

/* ---- start --------------------------------------------------------------- */

/* The node's text, read within wait_ms and validated. Returns 0 with
 * *conf, or -1 with err. */
static int zk_app_node_load(struct app *app, struct zk_node *node, int wait_ms,
                            struct conf **conf, char *err, size_t errlen)
{
    const char *source = app->settings.conf_file;
    struct zk_app *zk = app->zk;
    if (zk_read(&zk->url, &zk->za.access, wait_ms, node, err, errlen) != 0)
        return -1;
    zk_app_world_note(zk->acl_note, sizeof(zk->acl_note), "the node", ZK_APP_NODE_HARM,
                      node->world_perms);
    char why[1024];
    if (zk_node_check(node, err, errlen) != 0) {
        zk_node_deinit(node);
        return -1;
    }
    if (zk_app_validate(&app->settings, node->text, node->len, source, conf, why,
                        sizeof(why)) != 0) {
        zk_app_error(err, errlen, "version %d of the node does not validate: %s",
                 (int)node->version, why);
        zk_node_deinit(node);
        return -1;
    }
    return 0;
}

/* Started from the node: keep its text and refresh the cache file. */
static void zk_app_started_from_node(struct app *app, struct zk_node *node, bool test_only)
{
    struct zk_app *zk = app->zk;
    const char *source = app->settings.conf_file;
    zk_app_error(zk->note, sizeof(zk->note), "zookeeper: configuration from %s, version %d",
             source, (int)node->version);
    if (test_only)
        fprintf(stderr, "strata: read %s: version %d, %zu bytes\n", source,
                (int)node->version, node->len);
    else if (zk_app_cache_write(zk, source, node->text, node->len, zk->cache_note,
                                sizeof(zk->cache_note)) != 0)
        fprintf(stderr, "strata: %s\n", zk->cache_note);
    zk->text = node->text;
    zk->len = node->len;
    node->text = NULL;
}

/* Start-up failed: the message, and app->zk freed. */
__attribute__((format(printf, 4, 5)))
static int zk_app_fail(struct app *app, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    zk_app_stop(app);
    return -1;
}

int zk_app_load(struct app *app, bool test_only, char *err, size_t errlen)
{
    const char *source = app->settings.conf_file;
    char why[1200], cwhy[1200];
    struct zk_node node = { 0 };
    if (!zk_supported())
        return zk_app_fail(app, err, errlen, "cannot use %s: %s", source,
                           "strata was built without ZooKeeper support");
    app->zk = calloc(1, sizeof(*app->zk));
    if (app->zk == NULL)
        return zk_app_fail(app, err, errlen, "out of memory");
    struct zk_app *zk = app->zk;
    if (zk_url_parse(source, &zk->url, why, sizeof(why)) != 0 ||
        zk_app_access_init(&zk->za, &app->settings, why, sizeof(why)) != 0)
        return zk_app_fail(app, err, errlen, "%s", why);
    settings_zk_cache_file(&app->settings, zk->cache, sizeof(zk->cache));
    /* With a usable cache file the node gets a short wait, not the
     * session timeout: a restart while ZooKeeper is away serves at once
     * and takes the node when it answers (zk_app_on_node). */
    struct conf *cached = NULL;
    bool have_cache = !test_only && zk_app_cache_load(zk, &app->settings, source, &cached,
                                                      cwhy, sizeof(cwhy)) == 0;
    int wait_ms = app->settings.zk_session_timeout_ms;
    if (have_cache && wait_ms > ZK_APP_CACHED_WAIT_MS)
        wait_ms = ZK_APP_CACHED_WAIT_MS;
    if (zk_app_node_load(app, &node, wait_ms, &app->conf, why, sizeof(why)) == 0) {
        conf_destroy(&cached);
        free(zk->text);
        zk->text = NULL;
        zk_app_started_from_node(app, &node, test_only);
        return 0;
    }
    if (test_only)
        return zk_app_fail(app, err, errlen, "configuration %s is invalid: %s", source, why);
    if (!have_cache) {
        char both[2600];
        zk_app_error(both, sizeof(both), "%s, and there is no usable cache file (%s)", why, cwhy);
        return zk_app_fail(app, err, errlen, "cannot start: no configuration from %s: %s",
                           source, both);
    }
    fprintf(stderr, "strata: %s; started from the cache file '%s'\n", why, zk->cache);
    app->conf = cached;
    zk->note_warn = true;
    zk_app_error(zk->note, sizeof(zk->note), "zookeeper: %s; started from the cache file '%s' "
             "(the last good configuration); the node is applied once it can be read", why,
             zk->cache);
    return 0;
}

/* ---- running ------------------------------------------------------------- */

static void zk_app_register(struct app *app)
{
    struct zk_app *zk = app->zk;
    char host[256];
    if (!app->settings.zk_register || zk->src == NULL)
        return;
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    if (zk->reg_path[0] == '\0' &&
        zk_reg_path(&zk->url, host, app->settings.stats_port, zk->reg_path,
                    sizeof(zk->reg_path)) != 0) {
        log_error("zookeeper: the registration path under %s is too long", zk->url.path);
        zk->reg_path[0] = '\0';
        return;
    }
    struct zk_reg_info info = {
        .conf = app->conf, .host = host, .pid = (long)getpid(),
        .stats_addr = app->settings.stats_addr, .stats_port = app->settings.stats_port,
        .version = PACKAGE_VERSION, .generation = reload_generation(app),
        .source = app->settings.conf_file,
    };
    char *json = zk_reg_json(&info);
    if (json == NULL) {
        log_error("zookeeper: out of memory for the registration");
        return;
    }
    zk_source_register(zk->src, zk->reg_path, json);
    free(json);
}

/* A new text of the node, on the main thread: validated, applied through
 * reload, then cached and announced. */
static void zk_app_on_node(struct zk_node *node, void *arg)
{
    struct app *app = arg;
    struct zk_app *zk = app->zk;
    const char *source = app->settings.conf_file;
    char err[1200];
    struct conf *conf;
    if (zk->text != NULL && node->len == zk->len && memcmp(node->text, zk->text, zk->len) == 0) {
        log_info("zookeeper: version %d of %s is the running configuration", (int)node->version,
                 source);
        return;
    }
    log_notice("zookeeper: version %d of %s: applying", (int)node->version, source);
    if (zk_node_check(node, err, sizeof(err)) != 0 ||
        zk_app_validate(&app->settings, node->text, node->len, source, &conf, err,
                        sizeof(err)) != 0) {
        reload_rejected(app, source, err);
        return;
    }
    if (reload_apply(app, conf, source, err, sizeof(err)) != 0) {
        log_error("zookeeper: version %d of %s not applied: %s", (int)node->version, source,
                  err);
        return;
    }
    free(zk->text);
    zk->text = node->text;
    zk->len = node->len;
    node->text = NULL;
    if (zk_app_cache_write(zk, source, zk->text, zk->len, err, sizeof(err)) != 0)
        log_warn("zookeeper: %s", err);
    zk_app_register(app);
}

/* The registration nodes get the settings' ACL: say so when anyone
 * could change or delete them. */
static void zk_app_reg_acl_note(const struct app *app)
{
    char note[600];
    if (!app->settings.zk_register)
        return;
    zk_app_world_note(note, sizeof(note), "the registration of this proxy (zk_acl)",
                      "delete it or make clients send traffic elsewhere",
                      zk_acl_world_perms(&app->zk->za.acl));
    if (note[0] != '\0')
        log_warn("zookeeper: %s", note);
}

int zk_app_start(struct app *app)
{
    struct zk_app *zk = app->zk;
    char err[512];
    if (zk == NULL)
        return 0;
    if (zk->note_warn)
        log_warn("%s", zk->note);
    else
        log_notice("%s", zk->note);
    if (zk->cache_note[0] != '\0')
        log_warn("zookeeper: %s", zk->cache_note);
    if (zk->acl_note[0] != '\0')
        log_warn("zookeeper: %s", zk->acl_note);
    zk_app_reg_acl_note(app);
    zk->src = zk_source_create(app->base, &zk->url, &zk->za.access,
                               app->settings.zk_session_timeout_ms, zk_app_on_node, app,
                               err, sizeof(err));
    if (zk->src == NULL) {
        log_error("zookeeper: %s", err);
        return -1;
    }
    zk_app_register(app);
    return 0;
}

void zk_app_republish(struct app *app)
{
    if (app->zk != NULL)
        zk_app_register(app);
}

void zk_app_stop(struct app *app)
{
    struct zk_app *zk = app->zk;
    if (zk == NULL)
        return;
    if (zk->src != NULL) {
        zk_source_destroy(&zk->src);
        log_notice("zookeeper: session closed");
    }
    zk_url_deinit(&zk->url);
    zk_app_access_deinit(&zk->za);
    free(zk->text);
    free(zk);
    app->zk = NULL;
}

/* ---- publish ------------------------------------------------------------- */

/* The file to publish, validated as the proxies will validate the node
 * (-t, plus the unix-socket rule with this -C's unix_socket_dir).
 * Returns 0 with *text, or -1 (said on stderr). */
static int zk_app_publish_text(const struct settings *s, const char *file, char **text,
                               size_t *len)
{
    struct conf *conf;
    char err[1200];
    if (conf_yaml_load(file, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: configuration file '%s' syntax is invalid\n%s\n"
                "strata: nothing published\n", file, err);
        return -1;
    }
    int rc = zk_app_unix_check(conf, s, file, err, sizeof(err));
    conf_destroy(&conf);
    if (rc != 0) {
        fprintf(stderr, "strata: %s\nstrata: nothing published\n", err);
        return -1;
    }
    if (zk_app_read_file(file, text, len, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: %s\n", err);
        return -1;
    }
    return 0;
}

/* Publishes `text`; a node left writable by anyone is said loudly. */
static int zk_app_publish_run(const struct settings *s, const struct zk_url *url,
                              const char *file, const char *text, size_t len, long expect)
{
    struct zk_app_access za;
    struct zk_node done;
    char err[1200], note[600];
    if (zk_app_access_init(&za, s, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: not published: %s\n", err);
        return 1;
    }
    int rc = 1;
    if (zk_publish(url, &za.access, text, len, (int32_t)expect, s->zk_session_timeout_ms,
                   &done, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: not published: %s\n", err);
    } else {
        printf("strata: published '%s' to %s: version %d\n", file, s->conf_file,
               (int)done.version);
        zk_app_world_note(note, sizeof(note), "the node", ZK_APP_NODE_HARM, done.world_perms);
        if (note[0] != '\0')
            fprintf(stderr, "strata: WARN: %s\n", note);
        rc = 0;
    }
    zk_app_access_deinit(&za);
    return rc;
}

int zk_app_publish(const struct settings *s, const char *file, long expect)
{
    struct zk_url url;
    char err[1200];
    char *text;
    size_t len;
    if (!zk_url_is(s->conf_file)) {
        fprintf(stderr, "strata: --publish needs -c zk://HOST:PORT/PATH: the node to publish "
                "to\n");
        return 1;
    }
    if (!zk_supported()) {
        fprintf(stderr, "strata: cannot publish to %s: strata was built without ZooKeeper "
                "support\n", s->conf_file);
        return 1;
    }
    if (zk_url_parse(s->conf_file, &url, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: %s\n", err);
        return 1;
    }
    int rc = 1;
    if (zk_app_publish_text(s, file, &text, &len) == 0) {
        rc = zk_app_publish_run(s, &url, file, text, len, expect);
        free(text);
    }
    zk_url_deinit(&url);
    return rc;
}

int zk_app_connected(const struct app *app)
{
    if (app->zk == NULL)
        return -1;
    return zk_source_connected(app->zk->src) ? 1 : 0;
}
