/* client: one client connection: read and frame requests, hand them to the
 * policy, and write replies back in request order.
 *
 *   socket ─► input ─► mc_req_read ─► msg ─► queue (request order) ─► policy
 *   policy ─► client_msg_done ─► done msgs at the head of the queue ─► output
 *
 * Reading pauses while too many requests are in flight or too many reply
 * bytes wait to be written, so a client that never reads cannot grow our
 * memory without bound. */
#ifndef STRATA_CLIENT_H
#define STRATA_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/util.h>

struct worker_pool;
struct worker;

/* Takes ownership of an accepted socket. */
void client_accept(struct worker_pool *wp, evutil_socket_t fd);
/* Stops reading every client of the worker: requests already framed
 * are answered and written, then each client closes (drain on stop). */
void client_stop_reading_all(struct worker *w);
/* True while a drained client waits for its peer to close. */
bool client_lingering(struct worker *w);
/* Closes every client of the worker (shutdown). */
void client_close_all(struct worker *w);
/* Requests taken from the worker's clients and not yet answered. */
uint32_t client_requests_in_flight(struct worker *w);
/* True while some client still has reply bytes not yet written. */
bool client_output_pending(struct worker *w);

#endif
