/* app_metrics: the process's metrics_listen endpoint: the HTTP listener
 * (metrics_http) on the main thread, filled from the app's workers and
 * reload state (metrics_write). */
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "strata/backend_stats.h"
#include "strata/log.h"
#include "strata/metrics.h"
#include "strata/metrics_http.h"
#include "strata/proto_mc.h"
#include "strata/proto_redis.h"
#include "strata/reload.h"
#include "strata/util.h"
#include "app.h"
#include "zk_app.h"

/* A pool's command slot by name: memcached commands by enum mc_cmd,
 * Redis commands by their place in the command table (policy.c counts
 * them so). NULL past the end. */
static const char *app_metrics_cmd_name(const struct conf_pool *pool, uint32_t slot)
{
    size_t n;
    const struct redis_cmd *table = redis_cmd_table(&n);
    if (pool->redis)
        return slot < n ? table[slot].name : NULL;
    return slot < MC_CMD_COUNT ? mc_cmd_name((enum mc_cmd)slot) : NULL;
}

/* metrics_http's fill: one scrape of the running configuration. */
static void app_metrics_fill(struct evbuffer *out, void *arg)
{
    struct app *app = arg;
    struct metrics_process p = {
        .conf = app->conf,
        .workers = app->rt.stats,
        .nworkers = app->nworkers,
        .start_time_s = app->rt.start_time_s,
        .generation = reload_generation(app),
        .loaded_at_s = app->gen != NULL ? app->gen->loaded_at : app->rt.start_time_s,
        .reloads = __atomic_load_n(&app->rt.reloads, __ATOMIC_RELAXED),
        .reload_failures = __atomic_load_n(&app->rt.reload_failures, __ATOMIC_RELAXED),
        .dns_failures = __atomic_load_n(&app->rt.dns_failures, __ATOMIC_RELAXED),
        .zk_connected = zk_app_connected(app),
        .cmd_name = app_metrics_cmd_name,
    };
    metrics_write(out, &p);
    backend_stats_write(out, app->backend_stats);
}

int app_metrics_start(struct app *app)
{
    const char *text = app->settings.metrics_listen;
    struct conf_addr addr = { 0 };
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    if (text == NULL)
        return 0;
    if (metrics_http_addr(text, &addr.host, &addr.port) != 0) {
        snprintf(err, sizeof(err), "not HOST:PORT");
        goto error;
    }
    if (util_resolve(&addr, &ss, &len, err, sizeof(err)) != 0)
        goto error;
    app->metrics = util_xcalloc(1, sizeof(*app->metrics));
    if (metrics_http_open(app->metrics, app->base, (struct sockaddr *)&ss, len,
                          app_metrics_fill, app, err, sizeof(err)) != 0)
        goto error;
    log_notice("metrics: Prometheus exposition on http://%s/metrics", text);
    free(addr.host);
    return 0;
error:
    log_error("metrics_listen '%s': %s", text, err);
    fprintf(stderr, "strata: metrics_listen '%s': %s\n", text, err);
    free(addr.host);
    app_metrics_stop(app);
    return -1;
}

void app_metrics_stop(struct app *app)
{
    if (app->metrics == NULL)
        return;
    metrics_http_close(app->metrics);
    free(app->metrics);
    app->metrics = NULL;
}
