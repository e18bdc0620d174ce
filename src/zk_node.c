/* zk_node: the parts of the configuration center that need no ZooKeeper
 * client: zk:// URLs, the registration path and its JSON (see zk.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
