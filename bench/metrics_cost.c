/* metrics_cost: what the latency histograms add to one proxied request,
 * measured in a loop, as a request at pipeline 1 does them: the client's
 * input callback frames it and queues it on a server connection (one
 * clock read, conn_loop_now_ns), the server's input callback delivers
 * the reply and queues it to the client (one more read; two observations,
 * server and pool). With -c, the clock is read at each of the four
 * points instead (metrics_now_ns per event). Prints ns per request.
 *
 *   gcc -O2 -D_GNU_SOURCE -Iinclude bench/metrics_cost.c libstrata.a \
 *       $(pkg-config --libs libevent) -o /tmp/metrics_cost && /tmp/metrics_cost
 */
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#include "strata/conn.h"
#include "strata/metrics.h"

/* Per event: four clock reads. */
static void per_event(long n, struct metrics_hist *pool, struct metrics_hist *server)
{
    for (long i = 0; i < n; i++) {
        int64_t parsed = metrics_now_ns();           /* client_read_one */
        int64_t queued = metrics_now_ns();           /* queue_request */
        metrics_hist_observe(server, metrics_now_ns() - queued + (i & 0xfffff) * 100);
        metrics_hist_observe(pool, metrics_now_ns() - parsed + (i & 0xfffff) * 100);
    }
}

/* Per callback (what Strata does): two. */
static void per_callback(long n, struct metrics_hist *pool, struct metrics_hist *server)
{
    struct conn_loop loop = { 0 };
    for (long i = 0; i < n; i++) {
        loop.now_ns = 0;                             /* client input callback */
        int64_t parsed = conn_loop_now_ns(&loop);
        int64_t queued = conn_loop_now_ns(&loop);
        loop.now_ns = 0;                             /* server input callback */
        metrics_hist_observe(server, conn_loop_now_ns(&loop) - queued + (i & 0xfffff) * 100);
        metrics_hist_observe(pool, conn_loop_now_ns(&loop) - parsed + (i & 0xfffff) * 100);
    }
}

int main(int argc, char **argv)
{
    bool each = argc > 1 && strcmp(argv[1], "-c") == 0;
    long n = argc > 1 + each ? atol(argv[1 + each]) : 20000000;
    static struct metrics_hist pool, server;
    int64_t t0 = metrics_now_ns();
    if (each)
        per_event(n, &pool, &server);
    else
        per_callback(n, &pool, &server);
    int64_t t1 = metrics_now_ns();
    printf("%.1f ns per request (%ld requests; count %lld)\n", (double)(t1 - t0) / (double)n, n,
           (long long)metrics_hist_count(&pool));
    return 0;
}
