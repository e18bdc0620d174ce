/* sentinel_app: the Redis pools that name Sentinels, as the main thread
 * runs them: where each master is at start-up, and a new configuration
 * generation through reload_apply whenever the Sentinels switch a master
 * or a pool's replicas change. Internal like app.h. */
#ifndef STRATA_SENTINEL_APP_H
#define STRATA_SENTINEL_APP_H

#include <stddef.h>

struct app;
struct conf;

/* How long start-up (or a reload that adds a Sentinel pool) keeps trying
 * the Sentinels in turn before it gives up on a pool. */
#define SENTINEL_APP_START_MS 5000

/* Asks the Sentinels of every Sentinel pool of app->conf where its
 * masters are (blocking, at most SENTINEL_APP_START_MS per pool), puts
 * the answers into app->conf and starts following each pool (one thread
 * per pool; app->base must exist). Does nothing without Sentinel pools.
 * Returns 0, or -1 after logging (and printing) why. */
int sentinel_app_start(struct app *app);

/* Fills the Sentinel pools of `conf`, a configuration about to be
 * applied, with what their followers last confirmed; a pool not followed
 * yet (new, or its Sentinel keys changed) is asked now as at start-up and
 * followed from then on. Returns 0, or -1 with err. */
int sentinel_app_fill(struct app *app, struct conf *conf, char *err, size_t errlen);

/* Stops the followers and frees app->sentinel; harmless without one. */
void sentinel_app_stop(struct app *app);

#endif
