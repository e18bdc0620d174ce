/* main: the command line (twemproxy's flags and ours), the settings and
 * the pool configuration it names, -d and -p; then app_run (app.c). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "strata/conf.h"
#include "strata/daemon.h"
#include "strata/log.h"
#include "strata/privs.h"
#include "strata/stats.h"
#include "strata/util.h"
#include "strata/zk.h"
#include "app.h"
#include "zk_app.h"

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
    const char *metrics_listen;   /* --metrics-listen HOST:PORT */
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
    { "metrics-listen", required_argument, NULL, 'M' },
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
        "                           auth::cdrwa,world:anyone:r (default: see strata(8))\n"
        "      --metrics-listen=S : Prometheus metrics on http://S/metrics, S is HOST:PORT\n"
        "                           (default: off)\n",
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
        case 'M': cli->metrics_listen = optarg; break;
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
    set_string(&s->metrics_listen, cli->metrics_listen);
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

/* A reload of the -C file: the command line wins over it again. */
static void main_settings_override(struct settings *s, const void *arg)
{
    cli_apply(arg, s);
}

static int load_config(const struct cli *cli, struct app *app)
{
    char err[1024];
    app->settings_override = main_settings_override;
    app->settings_override_arg = cli;
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

int main(int argc, char **argv)
{
    struct cli cli;
    struct app app;
    app_init(&app);
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
        app_deinit(&app);
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
    if (app.settings.daemonize && daemon_start(app.settings.log_file, &app.ready_fd) != 0) {
        log_error("cannot daemonize: %s", strerror(errno));
        goto out;
    }
    if (app.settings.pid_file != NULL) {
        if (daemon_pid_file_write(app.settings.pid_file) != 0) {
            log_error("cannot write pid file '%s': %s", app.settings.pid_file, strerror(errno));
            goto out;
        }
        app.pid_written = true;
    }
    rc = app_run(&app) == 0 ? 0 : 1;
out:
    app_deinit(&app);
    log_teardown();
    libevent_global_shutdown();
    return rc;
}
