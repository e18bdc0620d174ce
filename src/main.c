/* main: flags, settings, daemonize, pid file, signals, stats port, and the
 * workers. The main thread never touches the request path. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "strata/client.h"
#include "strata/conf.h"
#include "strata/crash.h"
#include "strata/listener.h"
#include "strata/log.h"
#include "strata/notify.h"
#include "strata/privs.h"
#include "strata/reload.h"
#include "strata/stats.h"
#include "strata/unixsock.h"
#include "strata/util.h"
#include "strata/worker.h"
#include "strata/zk.h"
#include "app.h"
#include "zk_app.h"
#include "sentinel_app.h"

#define MBUF_MIN 512
#define MBUF_MAX (16 * 1024 * 1024)
/* A unix socket listener whose pool file gives no mode: owner only. */
#define UNIX_SOCKET_DEFAULT_PERM 0700

/* What the command line said, applied over the -C settings file. */
struct cli {
    bool        help, version, test_conf, describe_stats, daemonize;
    const char *settings_file;
    const char *conf_file, *log_file, *pid_file, *stats_addr, *user;
    long        log_level, stats_port, stats_interval, mbuf_size, workers;
    const char *publish_file;     /* --publish FILE */
    const char *zk_auth_file;     /* --zk-auth-file FILE */
    const char *zk_acl;           /* --zk-acl ACL */
    long        publish_version;  /* --publish-version N; -1: any */
    bool        as_nutcracker;    /* runs as "nutcracker": its default -c first */
};


static const struct option long_options[] = {
    { "help",           no_argument,       NULL, 'h' },
    { "version",        no_argument,       NULL, 'V' },
    { "test-conf",      no_argument,       NULL, 't' },
    { "daemonize",      no_argument,       NULL, 'd' },
    { "describe-stats", no_argument,       NULL, 'D' },
    { "verbose",        required_argument, NULL, 'v' },
    { "verbosity",      required_argument, NULL, 'v' },
    { "output",         required_argument, NULL, 'o' },
    { "conf-file",      required_argument, NULL, 'c' },
    { "stats-port",     required_argument, NULL, 's' },
    { "stats-addr",     required_argument, NULL, 'a' },
    { "stats-interval", required_argument, NULL, 'i' },
    { "pid-file",       required_argument, NULL, 'p' },
    { "mbuf-size",      required_argument, NULL, 'm' },
    { "workers",        required_argument, NULL, 'W' },
    { "settings",       required_argument, NULL, 'C' },
    { "user",           required_argument, NULL, 'u' },
    { "publish",        required_argument, NULL, 'P' },
    { "publish-version", required_argument, NULL, 'Q' },
    { "zk-auth-file",   required_argument, NULL, 'K' },
    { "zk-acl",         required_argument, NULL, 'L' },
    { NULL, 0, NULL, 0 },
};

static void usage(FILE *out)
{
    static const char *const conf_files[] = SETTINGS_DEFAULT_CONF_FILES;
    fprintf(out,
        "Usage: strata [-?hVdDt] [-v verbosity level] [-o output file]\n"
        "              [-c conf file] [-s stats port] [-a stats addr]\n"
        "              [-i stats interval] [-p pid file] [-m mbuf size]\n"
        "              [--workers N] [-C settings file] [-u user]\n\n"
        "Options:\n"
        "  -h, --help             : this help\n"
        "  -V, --version          : show version and exit\n"
        "  -t, --test-conf        : test configuration for syntax errors and exit\n"
        "  -d, --daemonize        : run as a daemon\n"
        "  -D, --describe-stats   : print stats description and exit\n"
        "  -v, --verbose=N        : set logging level (default: %d, min: 0, max: %d)\n"
        "  -o, --output=S         : set logging file (default: stderr)\n"
        "  -c, --conf-file=S      : set configuration file (default: the first of\n"
        "                           %s, %s, %s that exists;\n"
        "                           run as nutcracker, the second first)\n"
        "  -s, --stats-port=N     : set stats monitoring port (default: %d)\n"
        "  -a, --stats-addr=S     : set stats monitoring ip (default: %s)\n"
        "  -i, --stats-interval=N : accepted as nutcracker's (default: %d msec); stats are\n"
        "                           summed when the stats port is read, not every N msec\n"
        "  -p, --pid-file=S       : set pid file (default: off)\n"
        "  -m, --mbuf-size=N      : set size of read chunks in bytes, at least 64 KB are used (default: %d bytes)\n"
        "      --workers=N        : worker threads (default: online cores)\n"
        "  -C, --settings=S       : daemon settings file, libconfig syntax (default: none)\n"
        "  -u, --user=S           : run as this user once every listener is bound\n"
        "                           (default: the user that starts strata)\n"
        "      --publish=S        : validate pool file S as -t does and write it to the\n"
        "                           ZooKeeper node of -c zk://HOST:PORT/PATH, then exit\n"
        "      --publish-version=N: publish only if the node is still at version N\n"
        "      --zk-auth-file=S   : ZooKeeper digest credentials: file S holds USER:PASSWORD\n"
        "      --zk-acl=S         : ACL of the nodes strata creates in ZooKeeper, e.g.\n"
        "                           auth::cdrwa,world:anyone:r (default: see strata(8))\n",
        SETTINGS_DEFAULT_LOG_LEVEL, LOG_LEVEL_MAX, conf_files[0], conf_files[1], conf_files[2],
        SETTINGS_DEFAULT_STATS_PORT, SETTINGS_DEFAULT_STATS_ADDR,
        SETTINGS_DEFAULT_STATS_INTERVAL, SETTINGS_DEFAULT_MBUF_SIZE);
}

/* nutcracker's banner for -V and -D: version, then the event backend. */
static void show_version(FILE *out)
{
    const char *method = "unknown";
    struct event_base *base = event_base_new();
    if (base != NULL)
        method = event_base_get_method(base);
    fprintf(out, "This is strata-%s\nasync event backend: %s\n\n", PACKAGE_VERSION, method);
    if (base != NULL)
        event_base_free(base);
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int cli_number(int opt, const char *arg, struct cli *cli)
{
    long *dst;
    long min = 0, max;
    switch (opt) {
    case 'v': dst = &cli->log_level; max = LOG_LEVEL_MAX; break;
    case 's': dst = &cli->stats_port; min = 1; max = 65535; break;
    case 'i': dst = &cli->stats_interval; min = 1; max = 3600 * 1000; break;
    case 'm': dst = &cli->mbuf_size; min = MBUF_MIN; max = MBUF_MAX; break;
    default:  dst = &cli->workers; min = 1; max = 1024; break;
    }
    if (!parse_long(arg, min, max, dst)) {
        fprintf(stderr, "strata: option -%c requires a number from %ld to %ld\n",
                opt == 'W' ? 'W' : opt, min, max);
        return -1;
    }
    return 0;
}

static int cli_parse(int argc, char **argv, struct cli *cli)
{
    memset(cli, 0, sizeof(*cli));
    cli->log_level = cli->stats_port = cli->stats_interval = -1;
    cli->mbuf_size = cli->workers = -1;
    cli->publish_version = -1;
    const char *name = strrchr(argv[0], '/');
    cli->as_nutcracker = strcmp(name != NULL ? name + 1 : argv[0], "nutcracker") == 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "hVtdDv:o:c:s:a:i:p:m:C:u:", long_options, NULL)) != -1) {
        switch (opt) {
        case 'h': cli->help = true; break;
        case 'V': cli->version = true; break;
        case 't': cli->test_conf = true; break;
        case 'd': cli->daemonize = true; break;
        case 'D': cli->describe_stats = true; break;
        case 'o': cli->log_file = optarg; break;
        case 'c': cli->conf_file = optarg; break;
        case 'a': cli->stats_addr = optarg; break;
        case 'p': cli->pid_file = optarg; break;
        case 'C': cli->settings_file = optarg; break;
        case 'u': cli->user = optarg; break;
        case 'P': cli->publish_file = optarg; break;
        case 'K': cli->zk_auth_file = optarg; break;
        case 'L': cli->zk_acl = optarg; break;
        case 'Q':
            if (!parse_long(optarg, 0, INT32_MAX, &cli->publish_version)) {
                fprintf(stderr, "strata: option --publish-version requires a number from "
                        "0 to %ld\n", (long)INT32_MAX);
                return -1;
            }
            break;
        case 'v': case 's': case 'i': case 'm': case 'W':
            if (cli_number(opt, optarg, cli) != 0)
                return -1;
            break;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "strata: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

static void set_string(char **dst, const char *src)
{
    if (src == NULL)
        return;
    free(*dst);
    *dst = util_xstrdup(src);
}

/* The command line wins over the settings file. */
static void cli_apply(const struct cli *cli, struct settings *s)
{
    set_string(&s->conf_file, cli->conf_file);
    set_string(&s->log_file, cli->log_file);
    set_string(&s->pid_file, cli->pid_file);
    set_string(&s->stats_addr, cli->stats_addr);
    set_string(&s->user, cli->user);
    set_string(&s->zk_auth_file, cli->zk_auth_file);
    set_string(&s->zk_acl, cli->zk_acl);
    if (cli->daemonize)
        s->daemonize = true;
    if (cli->log_level >= 0)
        s->log_level = (int)cli->log_level;
    if (cli->stats_port >= 0)
        s->stats_port = (uint16_t)cli->stats_port;
    if (cli->stats_interval >= 0)
        s->stats_interval_ms = (int)cli->stats_interval;
    if (cli->mbuf_size >= 0)
        s->mbuf_size = (size_t)cli->mbuf_size;
    if (cli->workers >= 0)
        s->workers = (uint32_t)cli->workers;
    if (s->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->workers = n > 0 ? (uint32_t)n : 1;
    }
}

/* The launcher of -d: waits until the daemon says it serves (a byte on
 * the pipe) or is gone (end of file). Returns the launcher's exit status:
 * 0, or 1 with a line on stderr. */
static int daemon_wait(int fd, const char *log_file)
{
    char c;
    ssize_t n;
    do {
        n = read(fd, &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1)
        return 0;
    fprintf(stderr, "strata: the daemon did not start%s%s\n",
            log_file != NULL ? "; see " : "", log_file != NULL ? log_file : "");
    return 1;
}

/* -d: detaches, but the process that ran `strata -d` waits until the
 * daemon serves or fails (daemon_wait), so a start failure (a port in
 * use, a bad user) is its non-zero exit, not a silent 0. The daemon's
 * stdio stays on the launcher's terminal until daemon_ready, so start-up
 * errors reach it. Returns 0 in the daemon with *ready_fd set, or -1. */
static int daemonize(const char *log_file, int *ready_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(p[1]);
        _exit(daemon_wait(p[0], log_file));
    }
    close(p[0]);
    if (setsid() < 0)
        return -1;
    signal(SIGHUP, SIG_IGN);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    umask(0);
    *ready_fd = p[1];
    return 0;
}

/* The daemon serves: its launcher may exit 0, and stdio leaves the
 * launcher's terminal for /dev/null. Nothing without -d. */
static void daemon_ready(struct app *app)
{
    if (app->ready_fd < 0)
        return;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    ssize_t unused = write(app->ready_fd, "", 1);
    (void)unused;
    close(app->ready_fd);
    app->ready_fd = -1;
}

static int pid_file_write(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f);
}

/* ---- stats port: one JSON document per connection, then close ---- */

static void stats_on_written(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void stats_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what; (void)arg;
    bufferevent_free(bev);
}

static void stats_on_accept(evutil_socket_t fd, void *arg)
{
    struct app *app = arg;
    struct bufferevent *bev = bufferevent_socket_new(app->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        return;
    }
    stats_json(bufferevent_get_output(bev), app->conf, app->rt.stats,
               app->nworkers, app->rt.start_time_s);
    bufferevent_setcb(bev, NULL, stats_on_written, stats_on_event, app);
    bufferevent_enable(bev, EV_WRITE);
}

/* True for 127.0.0.0/8 and ::1. */
static bool addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

/* The stats port publishes every pool's servers and counters to whoever
 * connects: say so when it is reachable from other hosts (nutcracker's
 * default, 0.0.0.0, is kept; docs/security.md). */
static void stats_exposure_note(const struct sockaddr_storage *ss, const struct conf_addr *addr)
{
    if (addr_is_loopback(ss))
        return;
    log_notice("stats port %s:%u is reachable from other hosts and publishes the pools' "
               "server names and counters; -a 127.0.0.1 keeps it local",
               addr->host, (unsigned)addr->port);
}

static int stats_listen(struct app *app)
{
    struct conf_addr addr = { .host = app->settings.stats_addr,
                              .port = app->settings.stats_port };
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    if (util_resolve(&addr, &ss, &len, err, sizeof(err)) != 0) {
        log_error("stats: %s", err);
        return -1;
    }
    if (listener_open(&app->stats_listener, app->base, -1, (struct sockaddr *)&ss, len,
                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
                      stats_on_accept, app, "stats port", err, sizeof(err)) != 0) {
        log_error("stats: cannot listen on %s:%u: %s", addr.host, (unsigned)addr.port, err);
        return -1;
    }
    stats_exposure_note(&ss, &addr);
    return 0;
}

/* ---- signals ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct app *app = arg;
    char name[32];
    crash_signal_name((int)sig, name, sizeof(name));
    switch (sig) {
    case SIGHUP:
        log_notice("signal %d (%s): reopening the log file", (int)sig, name);
        if (log_reopen() != 0)
            log_error("cannot reopen the log file '%s': %s; still writing to the file "
                      "opened before", app->settings.log_file, strerror(errno));
        break;
    case SIGTTIN:
        log_level_up();
        log_notice("signal %d (%s): log level up", (int)sig, name);
        break;
    case SIGTTOU:
        log_level_down();
        log_notice("signal %d (%s): log level down", (int)sig, name);
        break;
    case SIGUSR1:
        log_notice("signal %d (%s): reloading the configuration", (int)sig, name);
        reload_from_file(app);
        break;
    default:
        log_notice("signal %d (%s): stopping", (int)sig, name);
        notify_stopping();
        event_base_loopbreak(app->base);
        break;
    }
}

static void signals_setup(struct app *app, struct event **evs)
{
    static const int sigs[] = { SIGHUP, SIGTTIN, SIGTTOU, SIGTERM, SIGINT, SIGUSR1 };
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(sigs); i++) {
        evs[i] = evsignal_new(app->base, sigs[i], on_signal, app);
        evsignal_add(evs[i], NULL);
    }
}

/* ---- start and stop ---- */

/* bind() with a umask that leaves the new socket file no permissions at
 * all, so that it never exists with wider ones than `perm` (daemonize
 * sets the umask to 0); chmod() then gives exactly `perm`, whatever the
 * umask. Runs before any thread exists: the umask is process-wide. */
static int unix_bind(int fd, const struct sockaddr_storage *ss, socklen_t len,
                     const char *path, mode_t perm)
{
    mode_t old = umask(0777);
    int rc = bind(fd, (const struct sockaddr *)ss, len);
    umask(old);
    if (rc != 0)
        return -1;
    return chmod(path, perm);
}

/* Listens on the pool's unix socket, replacing a stale socket (never
 * another kind of file: unixsock_clear), with the pool file's mode or
 * UNIX_SOCKET_DEFAULT_PERM. Returns the fd, or -1 with err ("pool P:
 * cannot listen on PATH: why"). */
int app_unix_listen(const struct conf_pool *pool, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char why[400];
    const char *path = pool->listen.addr.path;
    mode_t perm = pool->listen.perm != 0 ? pool->listen.perm : UNIX_SOCKET_DEFAULT_PERM;
    int fd = -1;
    if (util_resolve(&pool->listen.addr, &ss, &len, why, sizeof(why)) != 0 ||
        unixsock_clear(path, why, sizeof(why)) != 0)
        goto error;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || unix_bind(fd, &ss, len, path, perm) != 0 ||
        listen(fd, pool->backlog) != 0) {
        snprintf(why, sizeof(why), "%s", strerror(errno));
        goto error;
    }
    log_info("pool %s: listening on %s, mode %04o", pool->name, path, (unsigned)perm);
    return fd;
error:
    snprintf(err, errlen, "pool %s: cannot listen on %s: %s", pool->name, path, why);
    if (fd >= 0)
        close(fd);
    return -1;
}

static int runtime_setup(struct app *app)
{
    struct runtime *rt = &app->rt;
    const struct conf *conf = app->conf;
    rt->conf = conf;
    rt->settings = &app->settings;
    rt->limits.max_line = app->settings.max_line_size;
    rt->limits.max_value = app->settings.max_value_size;
    rt->limits.read_chunk = app->settings.mbuf_size;
    rt->limits.max_reply = app->settings.max_reply_size;
    rt->limits.fence_replies = (enum mc_fence)app->settings.fence_replies;
    rt->limits.redis_fence_replies = app->settings.redis_fence_replies;
    /* Redis pools: Redis's limits for bulks, requests and replies; the
     * argument count is bounded by the line limit (each argument takes at
     * least 4 bytes of framing). */
    rt->redis_limits = (struct redis_limits){
        .max_bulk = app->settings.redis_max_value_size,
        .max_args = (uint32_t)(app->settings.max_line_size / 4),
        .max_request = app->settings.redis_max_request_size,
        .max_reply = app->settings.redis_max_reply_size,
        .max_depth = 32,
    };
    rt->limits.redis = &rt->redis_limits;
    rt->max_memory = app->settings.max_memory != 0 ? app->settings.max_memory
                                                   : util_default_max_memory();
    rt->nworkers = app->nworkers;
    rt->start_time_s = util_wall_s();
    rt->stats = util_xcalloc(app->nworkers, sizeof(*rt->stats));
    reload_setup(app);
    rt->gen = app->gen;
    rt->shared = app->gen->shared;
    for (uint32_t p = 0; p < conf->npools; p++) {
        struct pool_shared *ps = rt->shared[p];
        if (conf->pools[p].listen.addr.path == NULL)
            continue;
        char err[600];
        if ((ps->unix_fd = app_unix_listen(&conf->pools[p], err, sizeof(err))) < 0) {
            log_error("%s", err);
            return -1;
        }
        ps->unix_path = util_xstrdup(conf->pools[p].listen.addr.path);
    }
    return 0;
}

/* Sets up every worker, binding its listeners; no thread runs yet. */
/* Every pool's TCP listen address is free of other listeners, probed
 * without SO_REUSEPORT before the workers bind with it: a second strata
 * started on the same pool file is refused ("Address already in use", as
 * nutcracker) instead of sharing its ports with the first, unless
 * share_listen_ports asks for that. 0, or -1 (logged and on stderr). */
static int listens_probe(const struct app *app)
{
    if (app->settings.share_listen_ports)
        return 0;   /* asked for: a fleet on one host, a binary hand-over */
    for (uint32_t p = 0; p < app->conf->npools; p++) {
        const struct conf_pool *pool = &app->conf->pools[p];
        struct sockaddr_storage ss;
        socklen_t len;
        char err[256];
        int rc = 0;
        if (pool->listen.addr.path != NULL)
            continue;
        if (util_resolve(&pool->listen.addr, &ss, &len, err, sizeof(err)) != 0)
            rc = -1;
        else if ((rc = listener_probe((struct sockaddr *)&ss, len, false)) != 0)
            snprintf(err, sizeof(err), "%s", strerror(rc));
        if (rc == 0)
            continue;
        log_error("pool %s: cannot listen on %s: %s", pool->name, pool->listen.text, err);
        fprintf(stderr, "strata: pool %s: cannot listen on %s: %s\n", pool->name,
                pool->listen.text, err);
        return -1;
    }
    return 0;
}

static int workers_init(struct app *app)
{
    app->workers = util_xcalloc(app->nworkers, sizeof(*app->workers));
    char err[512];
    for (uint32_t i = 0; i < app->nworkers; i++) {
        if (worker_init(&app->workers[i], i, &app->rt, err, sizeof(err)) != 0) {
            log_error("%s", err);
            fprintf(stderr, "strata: %s\n", err);
            return -1;
        }
        app->rt.stats[i] = &app->workers[i].stats;
        app->gen->views[i] = app->workers[i].stats.view;
    }
    return 0;
}

/* Drops to settings.user (-u) once every listener is bound, before any
 * worker thread runs; running as root without -u is allowed, as
 * nutcracker, with a warning. Returns 0 or -1 (logged and on stderr). */
static int privileges_drop(const struct app *app)
{
    const char *user = app->settings.user;
    char err[512];
    if (user == NULL) {
        if (geteuid() == 0)
            log_warn("running as root: -u USER drops privileges once the listeners are bound");
        return 0;
    }
    if (privs_drop(user, err, sizeof(err)) != 0) {
        log_error("%s", err);
        fprintf(stderr, "strata: %s\n", err);
        return -1;
    }
    log_notice("running as user '%s' (uid %ld, gid %ld)", user, (long)getuid(), (long)getgid());
    return 0;
}

static int workers_start(struct app *app)
{
    for (uint32_t i = 0; i < app->nworkers; i++) {
        if (worker_start(&app->workers[i]) != 0) {
            log_error("cannot start worker %u", i);
            return -1;
        }
    }
    return 0;
}

static void app_teardown(struct app *app)
{
    zk_app_stop(app);   /* first: the registration goes before the listeners */
    sentinel_app_stop(app);
    for (uint32_t i = 0; app->workers != NULL && i < app->nworkers; i++)
        worker_stop(&app->workers[i]);
    for (uint32_t i = 0; app->workers != NULL && i < app->nworkers; i++)
        worker_join(&app->workers[i]);
    for (uint32_t i = 0; app->workers != NULL && i < app->nworkers; i++)
        worker_deinit(&app->workers[i]);
    free(app->workers);
    reload_teardown(app);
    free(app->rt.stats);
    listener_close(&app->stats_listener);
    if (app->pid_written)
        unlink(app->settings.pid_file);
}

/* The command line, for a reload of the -C file (flags win over it). */
static const struct cli *app_cli;

int app_settings_reload(struct app *app, char *err, size_t errlen)
{
    if (app->settings_file == NULL)
        return 0;
    struct settings fresh;
    settings_init(&fresh);
    if (settings_load(&fresh, app->settings_file, err, errlen) != 0) {
        settings_deinit(&fresh);
        return -1;
    }
    cli_apply(app_cli, &fresh);
    struct settings *s = &app->settings;
    if (fresh.log_level != s->log_level)
        log_level_set(fresh.log_level);
    s->log_level = fresh.log_level;
    /* read by the workers as they go: single aligned words */
    __atomic_store_n(&s->client_max_pending, fresh.client_max_pending, __ATOMIC_RELAXED);
    __atomic_store_n(&s->client_request_timeout_ms, fresh.client_request_timeout_ms,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->async_queue_limit, fresh.async_queue_limit, __ATOMIC_RELAXED);
    __atomic_store_n(&s->max_clients, fresh.max_clients, __ATOMIC_RELAXED);
    __atomic_store_n(&s->max_memory, fresh.max_memory, __ATOMIC_RELAXED);
    s->reload_max_server_loss = fresh.reload_max_server_loss;   /* main thread only */
    __atomic_store_n(&app->rt.max_memory, fresh.max_memory != 0 ? fresh.max_memory
                                                                : util_default_max_memory(),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&app->rt.max_clients, fresh.max_clients != 0 ? fresh.max_clients
                     : client_max_default(app->conf, app->nworkers), __ATOMIC_RELAXED);
    settings_deinit(&fresh);
    log_notice("settings: %s re-read", app->settings_file);
    return 0;
}

/* Defaults, the -C file, then the command line. */
static int load_settings(const struct cli *cli, struct settings *s)
{
    char err[1024];
    settings_init(s);
    if (cli->settings_file != NULL &&
        settings_load(s, cli->settings_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: settings file '%s' is invalid: %s\n",
                cli->settings_file, err);
        return -1;
    }
    cli_apply(cli, s);
    settings_conf_file_default(s, cli->as_nutcracker);
    return 0;
}

/* -c zk://...: the pool configuration from the ZooKeeper node (or the
 * cache file); see zk_app.c. */
static int load_config_zk(const struct cli *cli, struct app *app)
{
    char err[4096];
    if (zk_app_load(app, cli->test_conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: %s\n", err);
        return -1;
    }
    return 0;
}

/* strata --publish FILE -c zk://...: the exit status. */
static int publish_run(const struct cli *cli)
{
    struct settings s;
    int rc = 1;
    if (load_settings(cli, &s) == 0)
        rc = zk_app_publish(&s, cli->publish_file, cli->publish_version);
    settings_deinit(&s);
    return rc;
}

static int load_config(const struct cli *cli, struct app *app)
{
    char err[1024];
    app_cli = cli;
    app->settings_file = cli->settings_file;
    if (load_settings(cli, &app->settings) != 0)
        return -1;
    const char *path = app->settings.conf_file;
    if (zk_url_is(path))
        return load_config_zk(cli, app);
    if (conf_yaml_load(path, &app->conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: configuration file '%s' syntax is invalid\n%s\n",
                path, err);
        return -1;
    }
    return 0;
}

/* Read extents and values are 64 KB buffer chains that come and go with
 * every request. glibc's defaults (trim the heap once 128 KB..32 MB is
 * free at its top, a threshold that moves with use) give those pages
 * back and fault them in again with every large value; fixed thresholds
 * keep 8 MB per arena for reuse and return the rest. */
static void memory_tune(void)
{
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

/* File descriptors the configuration can use at most: every pool's
 * client_connections (0 counts as none: unlimited, reported apart), each
 * worker's server connections and listeners, and a few for the log, the
 * stats port and libevent. Sets *unlimited when a pool has no limit. */
static uint64_t fd_limit_needed(const struct app *app, bool *unlimited)
{
    uint64_t need = 16;
    *unlimited = false;
    for (uint32_t p = 0; p < app->conf->npools; p++) {
        const struct conf_pool *pool = &app->conf->pools[p];
        uint64_t conns = 0;
        for (uint32_t t = 0; t < stats_pool_tier_count(pool); t++) {
            const struct conf_tier *tier = stats_pool_tier(pool, t);
            conns += (uint64_t)tier->nservers * tier->server_connections;
        }
        need += pool->client_connections + (conns + 1) * app->nworkers;
        *unlimited |= pool->client_connections == 0;
    }
    return need;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit and logs what we got
 * against what the configured limits need: running out of descriptors
 * pauses accepting (worker.c), it must not come as a surprise. */
static void fd_limit_raise(const struct app *app)
{
    struct rlimit rl;
    bool unlimited;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    uint64_t need = fd_limit_needed(app, &unlimited);
    uint64_t have = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    const char *more = unlimited ? " plus one per client of a pool without client_connections" : "";
    if (have < need)
        log_warn("open files limit %llu is below the %llu the configuration needs%s",
                 (unsigned long long)have, (unsigned long long)need, more);
    else
        log_notice("open files limit %llu; the configuration needs %llu%s",
                   (unsigned long long)have, (unsigned long long)need, more);
}

static int serve(struct app *app)
{
    struct event *sig_evs[6] = { 0 };
    int rc = -1;
    memory_tune();
    evthread_use_pthreads();
    app->nworkers = app->settings.workers;
    app->base = event_base_new();
    if (app->base == NULL || runtime_setup(app) != 0 || stats_listen(app) != 0)
        goto out;
    signals_setup(app, sig_evs);
    crash_setup();
    fd_limit_raise(app);
    app->rt.max_clients = app->settings.max_clients != 0 ? app->settings.max_clients
                          : client_max_default(app->conf, app->nworkers);
    if (listens_probe(app) != 0 || sentinel_app_start(app) != 0 || workers_init(app) != 0 || privileges_drop(app) != 0 ||
        workers_start(app) != 0)
        goto out;
    log_notice("strata-%s started on pid %ld with %u workers, %u pools",
               PACKAGE_VERSION, (long)getpid(), app->nworkers, app->conf->npools);
    if (zk_app_start(app) != 0)
        goto out;
    daemon_ready(app);
    reload_ready(app);   /* READY=1: listeners bound, workers running */
    event_base_dispatch(app->base);
    rc = 0;
out:
    app_teardown(app);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(sig_evs); i++)
        if (sig_evs[i] != NULL)
            event_free(sig_evs[i]);
    if (app->base != NULL)
        event_base_free(app->base);
    log_notice("strata stopped");
    return rc;
}

int main(int argc, char **argv)
{
    struct cli cli;
    struct app app;
    memset(&app, 0, sizeof(app));
    app.ready_fd = -1;
    if (cli_parse(argc, argv, &cli) != 0)
        return 1;
    if (cli.help) {
        usage(stdout);
        return 0;
    }
    if (cli.version || cli.describe_stats) {
        show_version(stdout);
        if (cli.describe_stats)
            stats_describe(stdout);
        return 0;
    }
    if (cli.publish_file != NULL)
        return publish_run(&cli);
    if (load_config(&cli, &app) != 0) {
        settings_deinit(&app.settings);
        return 1;
    }
    if (cli.test_conf) {
        fprintf(stderr, "strata: configuration file '%s' syntax is ok\n",
                app.settings.conf_file);
        zk_app_stop(&app);
        conf_destroy(&app.conf);
        settings_deinit(&app.settings);
        return 0;
    }
    int rc = 1;
    char err[512];
    if (app.settings.user != NULL && privs_check(app.settings.user, err, sizeof(err)) != 0) {
        fprintf(stderr, "strata: %s\n", err);
        goto out;
    }
    if (log_setup(app.settings.log_level, app.settings.log_file) != 0) {
        fprintf(stderr, "strata: cannot open log file '%s': %s\n",
                app.settings.log_file, strerror(errno));
        goto out;
    }
    if (app.settings.daemonize && daemonize(app.settings.log_file, &app.ready_fd) != 0) {
        log_error("cannot daemonize: %s", strerror(errno));
        goto out;
    }
    if (app.settings.pid_file != NULL) {
        if (pid_file_write(app.settings.pid_file) != 0) {
            log_error("cannot write pid file '%s': %s", app.settings.pid_file, strerror(errno));
            goto out;
        }
        app.pid_written = true;
    }
    rc = serve(&app) == 0 ? 0 : 1;
out:
    zk_app_stop(&app);
    conf_destroy(&app.conf);
    settings_deinit(&app.settings);
    log_teardown();
    libevent_global_shutdown();
    return rc;
}
