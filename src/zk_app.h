/* zk_app: -c zk://... as main.c runs it: start-up from the node or the
 * cache file, -t, --publish, and every new text of the node validated
 * and handed to reload, then cached and announced in the registration.
 * Main thread only; internal like app.h. */
#ifndef STRATA_ZK_APP_H
#define STRATA_ZK_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct app;
struct settings;

/* The pool configuration from app->settings.conf_file, a zk:// URL:
 * the node (waiting at most zk_session_timeout), else the cache file
 * (not with test_only, where the node itself is checked). Sets app->conf
 * and app->zk. Returns 0, or -1 with a message for the operator. */
int zk_app_load(struct app *app, bool test_only, char *err, size_t errlen);

/* Starts watching the node and registering (app->base is running or
 * about to). Does nothing without app->zk. Returns 0 or -1 (logged). */
int zk_app_start(struct app *app);

/* 1 while the session of -c zk://... is connected, 0 when it is not,
 * -1 without ZooKeeper (the metrics' strata_zookeeper_connected). */
int zk_app_connected(const struct app *app);

/* Publishes this proxy's registration again, for a generation that came
 * from another source than the node (a Sentinel switch). Does nothing
 * without app->zk or with zk_register off. */
void zk_app_republish(struct app *app);

/* Closes the session (the registration disappears) and frees app->zk;
 * harmless when there is none. */
void zk_app_stop(struct app *app);

/* strata --publish FILE -c zk://...: validates FILE as -t does and writes
 * it to the node; `expect` is --publish-version, or -1. Returns the exit
 * status; messages go to stdout and stderr. */
int zk_app_publish(const struct settings *s, const char *file, long expect);

#endif
