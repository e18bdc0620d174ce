/* zk_node: the parts of the configuration center that need no ZooKeeper
 * client: zk:// URLs, ACLs and credentials, the node size limit, the
 * registration path and its JSON (see zk.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata/conf.h"
#include "strata/zk.h"
#include "zk_int.h"

int zk_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

bool zk_url_is(const char *s)
{
    return s != NULL && strncmp(s, ZK_URL_SCHEME, strlen(ZK_URL_SCHEME)) == 0;
}

static bool zk_port_ok(const char *s, size_t len)
{
    unsigned long port = 0;
    if (len == 0 || len > 5) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        port = port * 10 + (unsigned long)(s[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

/* One "HOST:PORT" (HOST may be "[v6]") of s[0..len). */
static const char *zk_host_check(const char *s, size_t len)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    }
    if (colon == NULL) {
        return "has a server without a port (HOST:PORT)";
    }
    if (colon == s) {
        return "has a server with an empty host";
    }
    if (!zk_port_ok(colon + 1, len - (size_t)(colon + 1 - s))) {
        return "has a server with an invalid port (1..65535)";
    }
    return NULL;
}

static const char *zk_hosts_check(const char *s, size_t len)
{
    if (len == 0) {
        return "names no server";
    }
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != ',') {
            continue;
        }
        const char *why = zk_host_check(s + start, i - start);
        if (why != NULL) {
            return why;
        }
        start = i + 1;
    }
    return NULL;
}

/* ZooKeeper's rules for a path, plus: not the root. */
static const char *zk_path_check(const char *p)
{
    size_t len = strlen(p);
    if (len <= 1) {
        return "names no node (zk://HOST:PORT/PATH)";
    }
    if (p[len - 1] == '/') {
        return "has a path ending in '/'";
    }
    if (strstr(p, "//") != NULL) {
        return "has an empty path element ('//')";
    }
    if (strstr(p, "/./") != NULL || strstr(p, "/../") != NULL ||
        strcmp(p + len - 2, "/.") == 0 || (len >= 3 && strcmp(p + len - 3, "/..") == 0)) {
        return "has a relative path element ('.' or '..')";
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
            return "has a control character in its path";
        }
    }
    if (strcmp(p, "/zookeeper") == 0 || strncmp(p, "/zookeeper/", 11) == 0) {
        return "names a node under /zookeeper, which ZooKeeper reserves";
    }
    return NULL;
}

int zk_url_parse(const char *s, struct zk_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!zk_url_is(s)) {
        return zk_error(err, errlen, "'%s' is not a zk:// URL", s != NULL ? s : "");
    }
    const char *hosts = s + strlen(ZK_URL_SCHEME);
    const char *path = strchr(hosts, '/');
    size_t hlen = path != NULL ? (size_t)(path - hosts) : strlen(hosts);
    const char *why = zk_hosts_check(hosts, hlen);
    if (why == NULL) {
        why = path != NULL ? zk_path_check(path) : "names no node (zk://HOST:PORT/PATH)";
    }
    if (why != NULL) {
        return zk_error(err, errlen, "ZooKeeper URL '%s' %s", s, why);
    }
    out->hosts = strndup(hosts, hlen);
    out->path = strdup(path);
    if (out->hosts == NULL || out->path == NULL) {
        zk_url_deinit(out);
        return zk_error(err, errlen, "out of memory");
    }
    return 0;
}

void zk_url_deinit(struct zk_url *url)
{
    free(url->hosts);
    free(url->path);
    url->hosts = url->path = NULL;
}

void zk_node_deinit(struct zk_node *node)
{
    free(node->text);
    node->text = NULL;
    node->len = 0;
}

int zk_node_check(const struct zk_node *node, char *err, size_t errlen)
{
    if (node->len <= ZK_MAX_DATA) {
        return 0;
    }
    return zk_error(err, errlen, "version %d of the node has %zu bytes; a pool file in "
                    "ZooKeeper holds at most %d: refused", (int)node->version, node->len,
                    ZK_MAX_DATA);
}

/* ---- ACLs ---------------------------------------------------------------- */

static const char zk_perm_letters[] = "cdrwa";
static const int  zk_perm_bits[] = { ZK_PERM_CREATE, ZK_PERM_DELETE, ZK_PERM_READ,
                                     ZK_PERM_WRITE, ZK_PERM_ADMIN };

/* The bits of "cdrwa"-style s[0..len), or -1 with *bad the letter. */
static int zk_perms_parse(const char *s, size_t len, char *bad)
{
    int perms = 0;
    for (size_t i = 0; i < len; i++) {
        const char *at = strchr(zk_perm_letters, s[i]);
        if (at == NULL || s[i] == '\0') {
            *bad = s[i];
            return -1;
        }
        perms |= zk_perm_bits[at - zk_perm_letters];
    }
    return perms;
}

void zk_perms_text(int perms, char *buf)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof(zk_perm_bits) / sizeof(zk_perm_bits[0]); i++) {
        if (perms & zk_perm_bits[i]) {
            buf[n++] = zk_perm_letters[i];
        }
    }
    buf[n] = '\0';
}

bool zk_perms_writable(int perms)
{
    return (perms & (ZK_PERM_WRITE | ZK_PERM_CREATE | ZK_PERM_DELETE | ZK_PERM_ADMIN)) != 0;
}

/* Why the id does not suit the scheme, or NULL. */
static const char *zk_acl_id_check(const char *scheme, const char *id)
{
    if (strcmp(scheme, "world") == 0) {
        return strcmp(id, "anyone") == 0 ? NULL : "the world scheme's only id is 'anyone'";
    }
    if (strcmp(scheme, "auth") == 0) {
        return NULL;   /* the creator's identities; the id is ignored */
    }
    if (id[0] == '\0') {
        return "has an empty id";
    }
    if (strcmp(scheme, "digest") == 0) {
        return strchr(id, ':') != NULL ? NULL
               : "a digest id is USER:BASE64(SHA1(USER:PASSWORD)), as zkCli's addauth makes it";
    }
    if (strcmp(scheme, "ip") == 0 || strcmp(scheme, "sasl") == 0 ||
        strcmp(scheme, "x509") == 0) {
        return NULL;
    }
    return "has an unknown scheme (world, auth, digest, ip, sasl, x509)";
}

/* One "scheme:id:perms" of s[0..len) into *e. */
static int zk_acl_entry_parse(const char *s, size_t len, struct zk_acl_entry *e,
                              char *err, size_t errlen)
{
    const char *first = memchr(s, ':', len), *last = NULL;
    for (size_t i = len; i > 0 && last == NULL; i--) {
        last = s[i - 1] == ':' ? s + i - 1 : NULL;
    }
    if (first == NULL || first == last || first == s) {
        return zk_error(err, errlen, "ACL entry '%.*s' is not SCHEME:ID:PERMS", (int)len, s);
    }
    char bad = 0;
    int perms = zk_perms_parse(last + 1, len - (size_t)(last + 1 - s), &bad);
    if (perms <= 0) {
        return zk_error(err, errlen, "ACL entry '%.*s' %s", (int)len, s, perms == 0
                        ? "gives no permission (letters of cdrwa)"
                        : "has a permission that is not one of c, d, r, w, a");
    }
    e->scheme = strndup(s, (size_t)(first - s));
    e->id = strndup(first + 1, (size_t)(last - first - 1));
    e->perms = perms;
    if (e->scheme == NULL || e->id == NULL) {
        return zk_error(err, errlen, "out of memory");
    }
    const char *why = zk_acl_id_check(e->scheme, e->id);
    if (why != NULL) {
        return zk_error(err, errlen, "ACL entry '%.*s' %s", (int)len, s, why);
    }
    return 0;
}

int zk_acl_parse(const char *text, struct zk_acl *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    size_t len = strlen(text), start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != ',') {
            continue;
        }
        if (out->n == ZK_ACL_MAX) {
            zk_acl_deinit(out);
            return zk_error(err, errlen, "an ACL has at most %d entries", ZK_ACL_MAX);
        }
        if (zk_acl_entry_parse(text + start, i - start, &out->entries[out->n++],
                               err, errlen) != 0) {
            zk_acl_deinit(out);
            return -1;
        }
        start = i + 1;
    }
    return 0;
}

void zk_acl_deinit(struct zk_acl *acl)
{
    for (uint32_t i = 0; i < acl->n; i++) {
        free(acl->entries[i].scheme);
        free(acl->entries[i].id);
    }
    memset(acl, 0, sizeof(*acl));
}

int zk_acl_world_perms(const struct zk_acl *acl)
{
    int perms = 0;
    for (uint32_t i = 0; i < acl->n; i++) {
        const struct zk_acl_entry *e = &acl->entries[i];
        size_t idlen = strlen(e->id);
        bool any_ip = strcmp(e->scheme, "ip") == 0 && idlen >= 2 &&
                      strcmp(e->id + idlen - 2, "/0") == 0;
        if (strcmp(e->scheme, "world") == 0 || any_ip) {
            perms |= e->perms;
        }
    }
    return perms;
}

/* ---- credentials --------------------------------------------------------- */

int zk_auth_parse(const char *text, size_t len, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (len > 0 && text[len - 1] == '\n') {
        len--;
    }
    if (len > 0 && text[len - 1] == '\r') {
        len--;
    }
    if (len > ZK_AUTH_MAX) {
        return zk_error(err, errlen, "is longer than %d bytes", ZK_AUTH_MAX);
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            return zk_error(err, errlen, "must hold one line USER:PASSWORD (it has a control "
                            "character or more than one line)");
        }
    }
    const char *colon = memchr(text, ':', len);
    if (colon == NULL || colon == text || colon == text + len - 1) {
        return zk_error(err, errlen, "must hold one line USER:PASSWORD, both non-empty");
    }
    if ((*out = strndup(text, len)) == NULL) {
        return zk_error(err, errlen, "out of memory");
    }
    return 0;
}

int zk_auth_load(const char *path, char **out, char *err, size_t errlen)
{
    char buf[ZK_AUTH_MAX + 4], why[256];
    struct stat st;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);   /* a symlink (a mounted secret) is fine */
    if (fd < 0) {
        return zk_error(err, errlen, "cannot open the ZooKeeper credentials file '%s': %s",
                        path, strerror(errno));
    }
    ssize_t n = fstat(fd, &st) == 0 ? read(fd, buf, sizeof(buf)) : -1;
    int saved = errno;
    close(fd);
    if (n < 0) {
        return zk_error(err, errlen, "cannot read the ZooKeeper credentials file '%s': %s",
                        path, strerror(saved));
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 0077) != 0) {
        return zk_error(err, errlen, "the ZooKeeper credentials file '%s' must be a regular "
                        "file that only its owner may read (mode %04o; chmod 600 it)", path,
                        (unsigned)(st.st_mode & 07777));
    }
    if (zk_auth_parse(buf, (size_t)n, out, why, sizeof(why)) != 0) {
        return zk_error(err, errlen, "the ZooKeeper credentials file '%s' %s", path, why);
    }
    return 0;
}

int zk_reg_path(const struct zk_url *url, const char *host, uint16_t stats_port,
                char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/" ZK_PROXIES "/%s:%u", url->path, host,
                     (unsigned)stats_port);
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

/* ---- JSON ---------------------------------------------------------------- */

/* A growing string; on allocation failure `s` becomes NULL for good. */
struct zk_buf {
    char   *s;
    size_t  len, cap;
};

__attribute__((format(printf, 2, 3)))
static void zk_buf_add(struct zk_buf *b, const char *fmt, ...)
{
    va_list ap;
    for (int pass = 0; pass < 2 && b->s != NULL; pass++) {
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n) * 2;
        char *s = realloc(b->s, cap);
        if (s == NULL) {
            free(b->s);
            b->s = NULL;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

/* A JSON string literal of `s`. */
static void zk_buf_str(struct zk_buf *b, const char *s)
{
    zk_buf_add(b, "\"");
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            zk_buf_add(b, "\\%c", c);
        } else if (c < 0x20) {
            zk_buf_add(b, "\\u%04x", c);
        } else {
            zk_buf_add(b, "%c", c);
        }
    }
    zk_buf_add(b, "\"");
}

static void zk_buf_pools(struct zk_buf *b, const struct conf *conf)
{
    zk_buf_add(b, "\"pools\":[");
    for (uint32_t i = 0; conf != NULL && i < conf->npools; i++) {
        const struct conf_pool *pool = &conf->pools[i];
        zk_buf_add(b, "%s{\"name\":", i > 0 ? "," : "");
        zk_buf_str(b, pool->name);
        zk_buf_add(b, ",\"listen\":");
        zk_buf_str(b, pool->listen.text);
        zk_buf_add(b, ",\"protocol\":\"%s\"}", pool->redis ? "redis" : "memcached");
    }
    zk_buf_add(b, "]");
}

char *zk_reg_json(const struct zk_reg_info *info)
{
    struct zk_buf b = { .s = malloc(512), .cap = 512 };
    zk_buf_add(&b, "{\"host\":");
    zk_buf_str(&b, info->host);
    zk_buf_add(&b, ",\"pid\":%ld,\"version\":", info->pid);
    zk_buf_str(&b, info->version);
    zk_buf_add(&b, ",\"stats\":");
    char stats[320];
    snprintf(stats, sizeof(stats), "%s:%u", info->stats_addr != NULL ? info->stats_addr : "",
             (unsigned)info->stats_port);
    zk_buf_str(&b, stats);
    zk_buf_add(&b, ",\"generation\":%llu,\"source\":", (unsigned long long)info->generation);
    zk_buf_str(&b, info->source);
    zk_buf_add(&b, ",");
    zk_buf_pools(&b, info->conf);
    zk_buf_add(&b, "}");
    return b.s;
}
