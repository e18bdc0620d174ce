/* client: one client connection: read and frame requests, hand them to the
 * policy, and write replies back in request order.
 *
 *   socket ─► input ─► mc_req_read ─► msg ─► queue (request order) ─► policy
 *   policy ─► client_msg_done ─► done msgs at the head of the queue ─► output
 *
 * Reading pauses while too many requests are in flight or the client's
 * reply bytes — waiting to be written, finished behind a slower head,
 * gathered for requests in flight, and the expected reply (a running
 * average per unit: a key of a retrieval) of each request not yet
 * answered — reach client_max_pending; a framed request whose expected
 * reply does not fit waits for room. As replies arrive, msg_admit fails
 * a read that would take the client past twice client_max_pending
 * (unless it is the head), so a client that never reads holds at most
 * that plus one reply, not a reply per request in flight. */
#ifndef STRATA_CLIENT_H
#define STRATA_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/util.h>

/* Requests one client may have in flight before we stop reading it. */
#define CLIENT_MAX_INFLIGHT 128
/* A new client's first window, in units (keys of a retrieval): its
 * reply size per unit is guessed as client_max_pending /
 * (CLIENT_START_WINDOW + 1) until its first reply tells better, so that
 * this many single-key gets fit with their own bytes. */
#define CLIENT_START_WINDOW 4
/* Wrong Redis AUTH passwords one connection may send: the last is
 * answered, then the connection is closed (docs/security.md). */
#define CLIENT_AUTH_MAX_FAILURES 3

struct conf;
struct worker_pool;
struct worker;

/* The default of max_clients: the open files limit (RLIMIT_NOFILE) less
 * what the configuration needs besides clients (each worker's server
 * connections and listeners, and a reserve for logs, stats and libevent);
 * at least 1. */
uint32_t client_max_default(const struct conf *conf, uint32_t nworkers);
/* Takes ownership of an accepted socket. */
void client_accept(struct worker_pool *wp, evutil_socket_t fd);
/* Stops reading every client of the worker: requests already framed
 * are answered and written, then each client closes (drain on stop). */
void client_stop_reading_all(struct worker *w);
/* The same for the clients of one pool (a reload removed it). */
struct worker_pool;
void client_stop_reading_pool(struct worker *w, const struct worker_pool *wp);
/* Closes every client of one pool now. */
void client_close_pool(struct worker *w, const struct worker_pool *wp);
/* Closes (and counts) every client whose partial request has had no new
 * byte for client_request_timeout; run periodically (worker's sweep). */
void client_sweep(struct worker *w);
/* The period of that sweep for a timeout: a quarter of it, within
 * 10 ms .. 1 s. */
#define CLIENT_SWEEP_MS(timeout) \
    ((timeout) / 4 < 10 ? 10 : (timeout) / 4 > 1000 ? 1000 : (timeout) / 4)
/* True while a drained client waits for its peer to close. */
bool client_lingering(struct worker *w);
/* Closes every client of the worker (shutdown). */
void client_close_all(struct worker *w);
/* Requests taken from the worker's clients and not yet answered. */
uint32_t client_requests_in_flight(struct worker *w);
/* True while some client still has reply bytes not yet written. */
bool client_output_pending(struct worker *w);

#endif
