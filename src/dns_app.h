/* dns_app: server host names followed by the main thread (dns_refresh_
 * interval): re-resolved in the background, and a new configuration
 * generation through reload_apply when one resolves elsewhere. Internal
 * like app.h. */
#ifndef STRATA_DNS_APP_H
#define STRATA_DNS_APP_H

struct app;
struct conf;

/* With settings.dns_refresh_interval_ms > 0: pins every server host name
 * of app->conf to its address now (blocking lookups, as start-up
 * resolves anyway), then re-resolves them every interval on a thread of
 * its own (app->base must exist). Does nothing when the interval is 0.
 * Returns 0, or -1 after logging (and printing) why. */
int dns_app_start(struct app *app);

/* Pins the server host names of `conf`, a configuration about to be
 * applied, to the addresses in use for the same names (a name new to
 * the process is resolved now). Harmless when not following. */
void dns_app_fill(struct app *app, struct conf *conf);

/* Stops the resolver thread and frees app->dns; harmless without one.
 * Waits for a lookup in progress (DNS_LOOKUP_MS at most). */
void dns_app_stop(struct app *app);

#endif
