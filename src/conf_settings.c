/* conf_settings: process settings. Defaults, then the keys present in a
 * libconfig file (-C); main applies the command line after this. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libconfig.h>

#include "strata/conf.h"

#define SETTINGS_FIELD(base, off, type) ((type *)(void *)((char *)(base) + (off)))

struct settings_ctx {
    const char *path;     /* file name for messages */
    char       *err;      /* caller's buffer */
    size_t      errlen;
};

/* One accepted key; min and max bound integer keys. */
struct settings_key {
    const char *name;
    int       (*set)(struct settings_ctx *ctx, const struct settings_key *key,
                     const config_setting_t *setting, struct settings *s);
    size_t      offset;
    long long   min;
    long long   max;
};

__attribute__((format(printf, 3, 4)))
static int settings_error(struct settings_ctx *ctx, int line, const char *fmt, ...)
{
    if (ctx->err == NULL || ctx->errlen == 0) {
        return -1;
    }
    int n = snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->path, line);
    if (n >= 0 && (size_t)n < ctx->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int settings_line(const config_setting_t *setting)
{
    return (int)config_setting_source_line(setting);
}

/* The integer value of `setting` within [key->min, key->max]. */
static int settings_int(struct settings_ctx *ctx, const struct settings_key *key,
                        const config_setting_t *setting, long long *out)
{
    int type = config_setting_type(setting);
    if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
        return settings_error(ctx, settings_line(setting),
                              "setting '%s' must be an integer", key->name);
    }
    long long v = config_setting_get_int64(setting);
    if (v < key->min || v > key->max) {
        return settings_error(ctx, settings_line(setting),
                              "setting '%s' is out of range %lld..%lld: %lld",
                              key->name, key->min, key->max, v);
    }
    *out = v;
    return 0;
}

static int settings_set_u32(struct settings_ctx *ctx, const struct settings_key *key,
                            const config_setting_t *setting, struct settings *s)
{
    long long v = 0;
    if (settings_int(ctx, key, setting, &v) != 0) {
        return -1;
    }
    *SETTINGS_FIELD(s, key->offset, uint32_t) = (uint32_t)v;
    return 0;
}

static int settings_set_int(struct settings_ctx *ctx, const struct settings_key *key,
                            const config_setting_t *setting, struct settings *s)
{
    long long v = 0;
    if (settings_int(ctx, key, setting, &v) != 0) {
        return -1;
    }
    *SETTINGS_FIELD(s, key->offset, int) = (int)v;
    return 0;
}

static int settings_set_u16(struct settings_ctx *ctx, const struct settings_key *key,
                            const config_setting_t *setting, struct settings *s)
{
    long long v = 0;
    if (settings_int(ctx, key, setting, &v) != 0) {
        return -1;
    }
    *SETTINGS_FIELD(s, key->offset, uint16_t) = (uint16_t)v;
    return 0;
}

static int settings_set_size(struct settings_ctx *ctx, const struct settings_key *key,
                             const config_setting_t *setting, struct settings *s)
{
    long long v = 0;
    if (settings_int(ctx, key, setting, &v) != 0) {
        return -1;
    }
    *SETTINGS_FIELD(s, key->offset, size_t) = (size_t)v;
    return 0;
}

static int settings_set_bool(struct settings_ctx *ctx, const struct settings_key *key,
                             const config_setting_t *setting, struct settings *s)
{
    if (config_setting_type(setting) != CONFIG_TYPE_BOOL) {
        return settings_error(ctx, settings_line(setting),
                              "setting '%s' must be true or false", key->name);
    }
    *SETTINGS_FIELD(s, key->offset, bool) = config_setting_get_bool(setting) != 0;
    return 0;
}

/* fence_replies: false or "off", "request", true or "batch". */
static int settings_set_fence(struct settings_ctx *ctx, const struct settings_key *key,
                              const config_setting_t *setting, struct settings *s)
{
    static const char *const names[] = { "off", "request", "batch" };
    int *field = SETTINGS_FIELD(s, key->offset, int);
    if (config_setting_type(setting) == CONFIG_TYPE_BOOL) {
        *field = config_setting_get_bool(setting) ? SETTINGS_FENCE_BATCH : SETTINGS_FENCE_OFF;
        return 0;
    }
    const char *v = config_setting_get_string(setting);
    for (int i = 0; v != NULL && i < 3; i++) {
        if (strcmp(v, names[i]) == 0) {
            *field = i;
            return 0;
        }
    }
    return settings_error(ctx, settings_line(setting),
                          "setting '%s' must be true, false, \"off\", \"request\" "
                          "or \"batch\"", key->name);
}

/* A non-empty string, replacing the previous value. */
static int settings_set_string(struct settings_ctx *ctx, const struct settings_key *key,
                               const config_setting_t *setting, struct settings *s)
{
    const char *v = config_setting_get_string(setting);
    if (config_setting_type(setting) != CONFIG_TYPE_STRING || v == NULL) {
        return settings_error(ctx, settings_line(setting),
                              "setting '%s' must be a string", key->name);
    }
    if (v[0] == '\0') {
        return settings_error(ctx, settings_line(setting),
                              "setting '%s' must not be empty", key->name);
    }
    char *copy = strdup(v);
    if (copy == NULL) {
        return settings_error(ctx, settings_line(setting), "out of memory");
    }
    char **field = SETTINGS_FIELD(s, key->offset, char *);
    free(*field);
    *field = copy;
    return 0;
}

#define FIELD(f) offsetof(struct settings, f)

static const struct settings_key settings_keys[] = {
    { "workers",            settings_set_u32,    FIELD(workers),            0,    1024 },
    { "pool_file",          settings_set_string, FIELD(conf_file),          0,    0 },
    { "daemonize",          settings_set_bool,   FIELD(daemonize),          0,    0 },
    { "log_level",          settings_set_int,    FIELD(log_level),          0,    11 },
    { "log_file",           settings_set_string, FIELD(log_file),           0,    0 },
    { "pid_file",           settings_set_string, FIELD(pid_file),           0,    0 },
    { "user",               settings_set_string, FIELD(user),               0,    0 },
    { "stats_addr",         settings_set_string, FIELD(stats_addr),         0,    0 },
    { "stats_port",         settings_set_u16,    FIELD(stats_port),         1,    65535 },
    { "stats_interval",     settings_set_int,    FIELD(stats_interval_ms),  1,    INT_MAX },
    /* nutcracker's -m bounds: 512 B .. 16 MiB */
    { "mbuf_size",          settings_set_size,   FIELD(mbuf_size),          512,  16777216 },
    { "max_value_size",     settings_set_u32,    FIELD(max_value_size),     1,    1073741824 },
    /* a request line must at least hold a command and one 250-byte key */
    { "max_line_size",      settings_set_size,   FIELD(max_line_size),      1024, 1073741824 },
    { "client_max_pending", settings_set_size,   FIELD(client_max_pending), 1024, 1LL << 40 },
    { "async_queue_limit",  settings_set_u32,    FIELD(async_queue_limit),  1,    100000000 },
    { "max_reply_size",     settings_set_size,   FIELD(max_reply_size),     1024, 1LL << 40 },
    /* evbuffer counts a request or reply in int: at most 2 GB - 1 */
    { "redis_max_value_size",   settings_set_u32,  FIELD(redis_max_value_size),   1,    INT_MAX },
    { "redis_max_request_size", settings_set_size, FIELD(redis_max_request_size), 1024, INT_MAX },
    { "redis_max_reply_size",   settings_set_size, FIELD(redis_max_reply_size),   1024, INT_MAX },
    { "max_memory",         settings_set_size,   FIELD(max_memory),         1048576, 1LL << 50 },
    { "client_request_timeout", settings_set_int, FIELD(client_request_timeout_ms), 0, INT_MAX },
    { "max_clients",        settings_set_u32,    FIELD(max_clients),        1,    100000000 },
    { "reload_max_server_loss", settings_set_u32, FIELD(reload_max_server_loss), 0, 100 },
    { "share_listen_ports", settings_set_bool,   FIELD(share_listen_ports), 0,    0 },
    { "backend_stats_interval", settings_set_int, FIELD(backend_stats_interval_ms), 0, 3600000 },
    /* -c zk://...: the last good pool file, the session, the registration */
    { "zk_cache_file",      settings_set_string, FIELD(zk_cache_file),      0,    0 },
    { "zk_session_timeout", settings_set_int,    FIELD(zk_session_timeout_ms), 1000, 600000 },
    { "zk_register",        settings_set_bool,   FIELD(zk_register),        0,    0 },
    { "zk_auth_file",       settings_set_string, FIELD(zk_auth_file),       0,    0 },
    { "zk_acl",             settings_set_string, FIELD(zk_acl),             0,    0 },
    { "unix_socket_dir",    settings_set_string, FIELD(unix_socket_dir),    0,    0 },
    { "fence_replies",      settings_set_fence,  FIELD(fence_replies),      0,    0 },
    { "redis_fence_replies", settings_set_bool,  FIELD(redis_fence_replies), 0,   0 },
    { "metrics_listen",     settings_set_string, FIELD(metrics_listen),     0,    0 },
    { "dns_refresh_interval", settings_set_int,  FIELD(dns_refresh_interval_ms), 0, 86400000 },
};

#undef FIELD

static const struct settings_key *settings_key_find(const char *name)
{
    for (size_t i = 0; i < sizeof(settings_keys) / sizeof(settings_keys[0]); i++) {
        if (strcmp(settings_keys[i].name, name) == 0) {
            return &settings_keys[i];
        }
    }
    return NULL;
}

/* Frees the string fields and leaves them NULL. */
static void settings_free_strings(struct settings *s)
{
    free(s->conf_file);
    free(s->log_file);
    free(s->pid_file);
    free(s->stats_addr);
    free(s->user);
    free(s->zk_cache_file);
    free(s->zk_auth_file);
    free(s->zk_acl);
    free(s->unix_socket_dir);
    free(s->metrics_listen);
    s->metrics_listen = NULL;
    s->conf_file = s->log_file = s->pid_file = s->stats_addr = s->user = NULL;
    s->zk_cache_file = s->zk_auth_file = s->zk_acl = s->unix_socket_dir = NULL;
}

static char *settings_strdup(const char *v, bool *ok)
{
    if (v == NULL) {
        return NULL;
    }
    char *copy = strdup(v);
    *ok = *ok && copy != NULL;
    return copy;
}

/* *dst = *src with its own copies of the strings. */
static int settings_copy(struct settings *dst, const struct settings *src)
{
    bool ok = true;
    *dst = *src;
    dst->conf_file = settings_strdup(src->conf_file, &ok);
    dst->log_file = settings_strdup(src->log_file, &ok);
    dst->pid_file = settings_strdup(src->pid_file, &ok);
    dst->stats_addr = settings_strdup(src->stats_addr, &ok);
    dst->user = settings_strdup(src->user, &ok);
    dst->zk_cache_file = settings_strdup(src->zk_cache_file, &ok);
    dst->zk_auth_file = settings_strdup(src->zk_auth_file, &ok);
    dst->zk_acl = settings_strdup(src->zk_acl, &ok);
    dst->unix_socket_dir = settings_strdup(src->unix_socket_dir, &ok);
    dst->metrics_listen = settings_strdup(src->metrics_listen, &ok);
    if (!ok) {
        settings_free_strings(dst);
        return -1;
    }
    return 0;
}

void settings_init(struct settings *s)
{
    memset(s, 0, sizeof(*s));
    s->conf_file = NULL;         /* settings_conf_file_default() picks it */
    s->workers = 0;
    s->daemonize = false;
    s->log_level = SETTINGS_DEFAULT_LOG_LEVEL;
    s->stats_addr = strdup(SETTINGS_DEFAULT_STATS_ADDR);
    s->stats_port = SETTINGS_DEFAULT_STATS_PORT;
    s->stats_interval_ms = SETTINGS_DEFAULT_STATS_INTERVAL;
    s->mbuf_size = SETTINGS_DEFAULT_MBUF_SIZE;
    s->max_value_size = SETTINGS_DEFAULT_MAX_VALUE;
    s->max_line_size = SETTINGS_DEFAULT_MAX_LINE;
    s->client_max_pending = SETTINGS_DEFAULT_CLIENT_PENDING;
    s->async_queue_limit = SETTINGS_DEFAULT_ASYNC_QUEUE;
    s->max_reply_size = SETTINGS_DEFAULT_MAX_REPLY;
    s->redis_max_value_size = SETTINGS_DEFAULT_REDIS_MAX_VALUE;
    s->redis_max_request_size = SETTINGS_DEFAULT_REDIS_MAX_REQUEST;
    s->redis_max_reply_size = SETTINGS_DEFAULT_REDIS_MAX_REPLY;
    s->max_memory = SETTINGS_DEFAULT_MAX_MEMORY;
    s->client_request_timeout_ms = SETTINGS_DEFAULT_REQUEST_TIMEOUT;
    s->reload_max_server_loss = SETTINGS_DEFAULT_RELOAD_MAX_SERVER_LOSS;
    s->backend_stats_interval_ms = SETTINGS_DEFAULT_BACKEND_STATS_INTERVAL;
    s->dns_refresh_interval_ms = SETTINGS_DEFAULT_DNS_REFRESH_INTERVAL;
    s->zk_cache_file = NULL;     /* settings_zk_cache_file() derives it */
    s->zk_session_timeout_ms = SETTINGS_DEFAULT_ZK_SESSION_TIMEOUT;
    s->zk_register = true;
    s->fence_replies = SETTINGS_DEFAULT_FENCE;
    s->redis_fence_replies = SETTINGS_DEFAULT_REDIS_FENCE;
}

void settings_conf_file_default(struct settings *s, bool as_nutcracker)
{
    const char *candidates[] = SETTINGS_DEFAULT_CONF_FILES;
    size_t n = sizeof(candidates) / sizeof(candidates[0]);
    if (s->conf_file != NULL)
        return;
    if (as_nutcracker) {     /* Debian's nutcracker's file first */
        const char *own = candidates[0];
        candidates[0] = candidates[1];
        candidates[1] = own;
    }
    const char *pick = candidates[0];
    for (size_t i = 0; i < n; i++) {
        if (access(candidates[i], F_OK) == 0) {
            pick = candidates[i];
            break;
        }
    }
    s->conf_file = strdup(pick);
}

void settings_zk_cache_file(const struct settings *s, char *buf, size_t len)
{
    if (s->zk_cache_file != NULL) {
        snprintf(buf, len, "%s", s->zk_cache_file);
    } else {
        snprintf(buf, len, SETTINGS_DEFAULT_ZK_CACHE_DIR "/zk-%u.yml", (unsigned)s->stats_port);
    }
}

void settings_deinit(struct settings *s)
{
    settings_free_strings(s);
}

/* Applies every top-level setting of `cfg` to `s`. */
static int settings_apply(struct settings_ctx *ctx, config_t *cfg, struct settings *s)
{
    config_setting_t *root = config_root_setting(cfg);
    for (int i = 0; i < config_setting_length(root); i++) {
        config_setting_t *setting = config_setting_get_elem(root, (unsigned)i);
        const struct settings_key *key = settings_key_find(config_setting_name(setting));
        if (key == NULL) {
            return settings_error(ctx, settings_line(setting), "unknown setting '%s'",
                                  config_setting_name(setting));
        }
        if (key->set(ctx, key, setting, s) != 0) {
            return -1;
        }
    }
    return 0;
}

static int settings_read(struct settings_ctx *ctx, config_t *cfg)
{
    FILE *fp = fopen(ctx->path, "r");
    if (fp == NULL) {
        return settings_error(ctx, 0, "cannot open the settings file: %s", strerror(errno));
    }
    int ok = config_read(cfg, fp);
    fclose(fp);
    if (!ok) {
        return settings_error(ctx, config_error_line(cfg), "%s", config_error_text(cfg));
    }
    return 0;
}

/* Works on a copy, so that on error *s is left as it was. */
int settings_load(struct settings *s, const char *path, char *err, size_t errlen)
{
    struct settings_ctx ctx = { .path = path, .err = err, .errlen = errlen };
    struct settings next;
    config_t cfg;

    config_init(&cfg);
    if (settings_read(&ctx, &cfg) != 0) {
        goto error;
    }
    if (settings_copy(&next, s) != 0) {
        settings_error(&ctx, 0, "out of memory");
        goto error;
    }
    if (settings_apply(&ctx, &cfg, &next) != 0) {
        settings_deinit(&next);
        goto error;
    }
    settings_deinit(s);
    *s = next;
    config_destroy(&cfg);
    return 0;

error:
    config_destroy(&cfg);
    return -1;
}
