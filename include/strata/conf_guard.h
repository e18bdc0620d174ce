/* conf_guard: refuses a new pool configuration that would silently drop
 * a large share of a running pool's servers, the mark of a pool file
 * read while half written (a truncated YAML file is often still valid). */
#ifndef STRATA_CONF_GUARD_H
#define STRATA_CONF_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "strata/conf.h"

/* 0 when, for every pool and tier that `running` and `next` both have
 * (matched by pool name and tier name), `next` has at most
 * max_loss_pct percent fewer servers; else -1 with the first offence in
 * why ("pool alpha: tier master would go from 2 servers to 1 (50% fewer;
 * reload_max_server_loss is 49)"). Pools and tiers that `next` adds or
 * removes whole are not judged (a change of topology, not a short file).
 * max_loss_pct 100 passes everything. */
int conf_guard_check(const struct conf *running, const struct conf *next,
                     uint32_t max_loss_pct, char *why, size_t whylen);

#endif
