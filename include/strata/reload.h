/* reload: a new pool configuration for a running proxy, from the pool
 * file (SIGUSR1) or a configuration center. Validation happens before
 * (conf_yaml_load / conf_yaml_load_text); this applies a valid one: every
 * worker switches to it at a safe point, client connections stay open,
 * requests in flight finish on the topology they started on. Main thread
 * only. */
#ifndef STRATA_RELOAD_H
#define STRATA_RELOAD_H

#include <stddef.h>
#include <stdint.h>

struct app;
struct conf;

/* Makes `conf` the running configuration; `source` (a path or a zk://
 * URL) is kept for logs and stats. Takes ownership of conf in every case.
 * Returns 0, or -1 with err when it cannot be applied (the running
 * configuration stays, the failure is counted). */
int reload_apply(struct app *app, struct conf *conf, const char *source,
                 char *err, size_t errlen);

/* Counts (stats) and logs a new configuration that did not validate. */
void reload_rejected(struct app *app, const char *source, const char *why);

/* The running configuration's generation: 1 at start, +1 per reload. */
uint64_t reload_generation(const struct app *app);

#endif
