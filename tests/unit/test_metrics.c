/* test_metrics: the histogram (bucket bounds, merge across workers), the
 * text exposition (escaping; every sample parsed back and checked
 * against the counters written) and the HTTP request parser. The
 * exposition is read by a small parser of the text format here, never
 * compared as strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/metrics.h"
#include "strata/metrics_http.h"
#include "strata/stats.h"

/* ---- a parser of the text format (the subset metrics_write uses) ---- */

#define TP_MAX_LABELS 4

struct tp_sample {
    char   name[128];
    char   keys[TP_MAX_LABELS][16];
    char   values[TP_MAX_LABELS][128];
    int    nlabels;
    double value;
};

/* Reads a quoted label value at *p (after the opening quote), undoing
 * the escapes; moves *p past the closing quote. */
static void tp_label_value(const char **p, char *out, size_t len)
{
    size_t n = 0;
    const char *s = *p;
    for (; *s != '"'; s++) {
        assert_true(*s != '\0' && *s != '\n');
        char ch = *s;
        if (ch == '\\') {
            s++;
            assert_true(*s == '\\' || *s == '"' || *s == 'n');
            ch = *s == 'n' ? '\n' : *s;
        }
        assert_true(n + 1 < len);
        out[n++] = ch;
    }
    out[n] = '\0';
    *p = s + 1;
}

static void tp_labels(const char **p, struct tp_sample *smp)
{
    const char *s = *p + 1;   /* after '{' */
    while (*s != '}') {
        assert_true(smp->nlabels < TP_MAX_LABELS);
        const char *eq = strchr(s, '=');
        assert_non_null(eq);
        assert_true(eq[1] == '"');
        snprintf(smp->keys[smp->nlabels], sizeof(smp->keys[0]), "%.*s", (int)(eq - s), s);
        s = eq + 2;
        tp_label_value(&s, smp->values[smp->nlabels], sizeof(smp->values[0]));
        smp->nlabels++;
        if (*s == ',')
            s++;
    }
    *p = s + 1;
}

/* Parses one sample line. */
static void tp_sample_line(const char *line, struct tp_sample *smp)
{
    memset(smp, 0, sizeof(*smp));
    size_t n = strcspn(line, "{ ");
    assert_true(n > 0 && n < sizeof(smp->name));
    memcpy(smp->name, line, n);
    const char *p = line + n;
    if (*p == '{')
        tp_labels(&p, smp);
    assert_true(*p == ' ');
    char *end;
    smp->value = strtod(p + 1, &end);
    assert_true(*end == '\0');
}

static const char *tp_label(const struct tp_sample *smp, const char *key)
{
    for (int i = 0; i < smp->nlabels; i++)
        if (strcmp(smp->keys[i], key) == 0)
            return smp->values[i];
    return NULL;
}

/* The whole exposition: samples, and the families TYPE declared. */
struct tp_doc {
    struct tp_sample *samples;
    size_t            n;
    char              types[256][96];
    char              kinds[256][16];
    size_t            ntypes;
};

static void tp_comment(struct tp_doc *d, const char *line)
{
    char name[96], kind[16];
    if (sscanf(line, "# TYPE %95s %15s", name, kind) == 2) {
        assert_true(d->ntypes < 256);
        strcpy(d->types[d->ntypes], name);
        strcpy(d->kinds[d->ntypes++], kind);
        return;
    }
    assert_int_equal(strncmp(line, "# HELP ", 7), 0);
}

static void tp_parse(struct tp_doc *d, char *text)
{
    memset(d, 0, sizeof(*d));
    d->samples = calloc(4096, sizeof(*d->samples));
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            tp_comment(d, line);
            continue;
        }
        assert_true(d->n < 4096);
        tp_sample_line(line, &d->samples[d->n++]);
    }
}

/* The family a sample belongs to must have been declared before it. */
static const char *tp_kind_of(const struct tp_doc *d, const char *sample)
{
    static const char *const suffixes[] = { "_bucket", "_sum", "_count", "" };
    for (size_t t = 0; t < d->ntypes; t++) {
        size_t len = strlen(d->types[t]);
        if (strncmp(sample, d->types[t], len) != 0)
            continue;
        for (size_t s = 0; s < 4; s++)
            if (strcmp(sample + len, suffixes[s]) == 0 &&
                (s == 3 || strcmp(d->kinds[t], "histogram") == 0))
                return d->kinds[t];
    }
    return NULL;
}

/* The value of the sample `name` with pool (and tier, server, le when not
 * NULL); fails when there is none. */
static double tp_value(const struct tp_doc *d, const char *name, const char *pool,
                       const char *tier, const char *server, const char *le)
{
    const char *want[4] = { pool, tier, server, le };
    const char *keys[4] = { "pool", "tier", "server", "le" };
    for (size_t i = 0; i < d->n; i++) {
        const struct tp_sample *s = &d->samples[i];
        bool ok = strcmp(s->name, name) == 0;
        for (int k = 0; ok && k < 4; k++) {
            const char *v = tp_label(s, keys[k]);
            ok = want[k] == NULL ? v == NULL : v != NULL && strcmp(v, want[k]) == 0;
        }
        if (ok)
            return s->value;
    }
    fail_msg("no sample %s pool=%s tier=%s server=%s le=%s", name, pool, tier, server, le);
    return -1;
}

static char *evbuffer_text(struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    char *s = calloc(1, len + 1);
    evbuffer_remove(b, s, len);
    return s;
}

/* ---- histogram ---- */

static void test_bucket_bounds(void **state)
{
    (void)state;
    assert_int_equal(METRICS_NBOUNDS, 14);
    assert_int_equal(metrics_bucket_of(-5), 0);
    assert_int_equal(metrics_bucket_of(0), 0);
    for (uint32_t i = 0; i < METRICS_NBOUNDS; i++) {
        /* "le": a value equal to a bound is in that bucket */
        assert_int_equal(metrics_bucket_of(metrics_bounds_ns[i]), i);
        assert_int_equal(metrics_bucket_of(metrics_bounds_ns[i] + 1), i + 1);
        /* the "le" text is the bound in seconds */
        assert_true(strtod(metrics_bounds_le[i], NULL) * 1e9 - (double)metrics_bounds_ns[i] < 1);
        assert_true(i == 0 || metrics_bounds_ns[i] > metrics_bounds_ns[i - 1]);
    }
    assert_int_equal(metrics_bucket_of(INT64_MAX), METRICS_NBOUNDS);
    assert_int_equal(metrics_bounds_ns[0], 50000);   /* 50 µs */
}

static void test_hist_merge(void **state)
{
    (void)state;
    struct metrics_hist a = { 0 }, b = { 0 }, sum = { 0 };
    metrics_hist_observe(&a, 10000);        /* 10 µs */
    metrics_hist_observe(&a, 300000);       /* 300 µs */
    metrics_hist_observe(&b, 300000);
    metrics_hist_observe(&b, 2000000000);   /* 2 s: +Inf */
    metrics_hist_observe(&b, -1);           /* a clock step back: 0 */
    metrics_hist_merge(&sum, &a);
    metrics_hist_merge(&sum, &b);
    assert_int_equal(metrics_hist_count(&sum), 5);
    assert_int_equal(sum.bucket[0], 2);
    assert_int_equal(sum.bucket[metrics_bucket_of(300000)], 2);
    assert_int_equal(sum.bucket[METRICS_NBOUNDS], 1);
    assert_int_equal(sum.sum_ns, 10000 + 300000 * 2 + 2000000000LL);
    struct metrics_hist c;
    metrics_hist_copy(&c, &b);
    assert_memory_equal(&c, &b, sizeof(b));
    int64_t t0 = metrics_now_ns();
    metrics_hist_observe(&c, metrics_now_ns() - t0);
    assert_true(t0 > 0);
    assert_int_equal(metrics_hist_count(&c), 4);
    assert_true(c.bucket[0] >= 1);   /* two clock reads: well under 50 µs */
}

/* ---- escaping ---- */

static void test_escape_roundtrip(void **state)
{
    (void)state;
    static const char *const cases[] = { "plain", "a\"b", "back\\slash", "new\nline",
                                         "\\\"\n\\n", "" };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "x{k=\"", 5);
        metrics_escape(b, cases[i], true);
        evbuffer_add(b, "\"} 1", 4);
        char *text = evbuffer_text(b);
        assert_null(strchr(text, '\n'));   /* one line whatever the value */
        struct tp_sample s;
        tp_sample_line(text, &s);
        assert_string_equal(tp_label(&s, "k"), cases[i]);
        free(text);
        evbuffer_free(b);
    }
}

/* ---- the whole exposition ---- */

static const char POOLS[] =
    "plain:\n"
    "  listen: 127.0.0.1:22121\n"
    "  servers:\n"
    "    - 127.0.0.1:11211:1 \"odd\\\\name\"\n"   /* the name keeps its quotes */
    "    - 127.0.0.1:11212:1\n"
    "tiered:\n"
    "  listen: 127.0.0.1:22122\n"
    "  master:\n"
    "    servers: [127.0.0.1:11221:1]\n"
    "  slave:\n"
    "    servers: [127.0.0.1:11231:1]\n";

struct fx {
    struct conf         *conf;
    struct stats_worker  w[2];
    struct stats_worker *wp[2];
};

static int fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    char err[512];
    if (conf_yaml_load_text(POOLS, strlen(POOLS), "t", &fx->conf, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    for (int i = 0; i < 2; i++) {
        stats_worker_init(&fx->w[i], fx->conf);
        fx->wp[i] = &fx->w[i];
    }
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < 2; i++)
        stats_worker_deinit(&fx->w[i]);
    conf_destroy(&fx->conf);
    free(fx);
    return 0;
}

static char *fx_scrape_zk(struct fx *fx, int zk_connected)
{
    struct metrics_process p = { .conf = fx->conf, .workers = fx->wp, .nworkers = 2,
                                 .start_time_s = 1000, .generation = 3, .loaded_at_s = 2000,
                                 .reloads = 2, .reload_failures = 1, .dns_failures = 4,
                                 .zk_connected = zk_connected };
    struct evbuffer *b = evbuffer_new();
    metrics_write(b, &p);
    char *text = evbuffer_text(b);
    evbuffer_free(b);
    return text;
}

static char *fx_scrape(struct fx *fx)
{
    return fx_scrape_zk(fx, -1);
}

/* strata_zookeeper_connected only with -c zk://... */
static void test_exposition_zookeeper(void **state)
{
    struct fx *fx = *state;
    for (int zk = -1; zk <= 1; zk++) {
        char *text = fx_scrape_zk(fx, zk);
        struct tp_doc d;
        tp_parse(&d, text);
        bool found = false;
        for (size_t i = 0; i < d.n; i++) {
            if (strcmp(d.samples[i].name, "strata_zookeeper_connected") != 0)
                continue;
            assert_true(d.samples[i].value == zk);
            found = true;
        }
        assert_true(found == (zk >= 0));
        free(d.samples);
        free(text);
    }
}

/* Counters written in two workers come out summed, under the names
 * derived from the stats lists, each sample after its family's TYPE. */
static void test_exposition_counters(void **state)
{
    struct fx *fx = *state;
    struct stats_pool *p0 = &fx->w[0].view->pools[0], *p1 = &fx->w[1].view->pools[0];
    stats_pool_add(p0, client_eof, 2);
    stats_pool_add(p1, client_eof, 3);
    stats_pool_add(p1, client_connections, 4);
    stats_server_add(&p0->servers[1], requests, 7);
    stats_server_add(&p1->servers[1], requests, 5);
    stats_set(&p1->servers[0].f[STATS_server_ejected_at], 1500000);
    stats_limit_add(p0, reply_too_large, 1);
    stats_limit_add(p1, reply_too_large, 1);
    stats_tier_add(&fx->w[0].view->pools[1].tiers[1], hits, 9);
    char *text = fx_scrape(fx);
    struct tp_doc d;
    tp_parse(&d, text);
    for (size_t i = 0; i < d.n; i++)
        if (tp_kind_of(&d, d.samples[i].name) == NULL)
            fail_msg("sample %s has no TYPE", d.samples[i].name);
    assert_true(tp_value(&d, "strata_client_eof_total", "plain", NULL, NULL, NULL) == 5);
    assert_true(tp_value(&d, "strata_client_connections", "plain", NULL, NULL, NULL) == 4);
    assert_true(tp_value(&d, "strata_requests_total", "plain", "master", "127.0.0.1:11212",
                         NULL) == 12);
    assert_true(tp_value(&d, "strata_requests_total", "plain", "master", "\"odd\\\\name\"",
                         NULL) == 0);
    assert_true(tp_value(&d, "strata_server_ejected_at_seconds", "plain", "master",
                         "\"odd\\\\name\"", NULL) == 1.5);
    assert_true(tp_value(&d, "strata_reply_too_large_total", "plain", NULL, NULL, NULL) == 2);
    assert_true(tp_value(&d, "strata_tier_hits_total", "tiered", "slave", NULL, NULL) == 9);
    assert_true(tp_value(&d, "strata_tier_async_pending", "tiered", "master", NULL, NULL) == 0);
    assert_true(tp_value(&d, "strata_config_generation", NULL, NULL, NULL, NULL) == 3);
    assert_true(tp_value(&d, "strata_reloads_total", NULL, NULL, NULL, NULL) == 2);
    assert_true(tp_value(&d, "strata_reload_failures_total", NULL, NULL, NULL, NULL) == 1);
    assert_true(tp_value(&d, "strata_dns_failures_total", NULL, NULL, NULL, NULL) == 4);
    assert_true(tp_value(&d, "strata_start_time_seconds", NULL, NULL, NULL, NULL) == 1000);
    assert_string_equal(tp_kind_of(&d, "strata_client_connections"), "gauge");
    assert_string_equal(tp_kind_of(&d, "strata_requests_total"), "counter");
    free(d.samples);
    free(text);
}

/* Histograms: per-worker observations merged; buckets cumulative and
 * the +Inf bucket equal to _count; _sum in seconds. */
static void test_exposition_histograms(void **state)
{
    struct fx *fx = *state;
    int64_t values[] = { 40000, 60000, 60000, 3000000, 5000000000LL };
    for (int i = 0; i < 5; i++) {
        metrics_hist_observe(&fx->w[i % 2].view->pools[1].latency, values[i]);
        metrics_hist_observe(&fx->w[i % 2].view->pools[1].servers[1].latency, values[i]);
    }
    char *text = fx_scrape(fx);
    struct tp_doc d;
    tp_parse(&d, text);
    const char *b = "strata_request_duration_seconds_bucket";
    assert_true(tp_value(&d, b, "tiered", NULL, NULL, "5e-05") == 1);
    assert_true(tp_value(&d, b, "tiered", NULL, NULL, "0.0001") == 3);
    assert_true(tp_value(&d, b, "tiered", NULL, NULL, "0.0025") == 3);
    assert_true(tp_value(&d, b, "tiered", NULL, NULL, "0.005") == 4);
    assert_true(tp_value(&d, b, "tiered", NULL, NULL, "1") == 4);
    assert_true(tp_value(&d, b, "tiered", NULL, NULL, "+Inf") == 5);
    assert_true(tp_value(&d, "strata_request_duration_seconds_count", "tiered", NULL, NULL,
                         NULL) == 5);
    double sum = tp_value(&d, "strata_request_duration_seconds_sum", "tiered", NULL, NULL, NULL);
    assert_true(sum > 5.00315 && sum < 5.00317);
    assert_true(tp_value(&d, "strata_server_request_duration_seconds_count", "tiered", "slave",
                         "127.0.0.1:11231", NULL) == 5);
    assert_true(tp_value(&d, "strata_server_request_duration_seconds_count", "tiered", "master",
                         "127.0.0.1:11221", NULL) == 0);
    assert_true(tp_value(&d, "strata_request_duration_seconds_count", "plain", NULL, NULL,
                         NULL) == 0);
    assert_string_equal(tp_kind_of(&d, b), "histogram");
    free(d.samples);
    free(text);
}

/* ---- HTTP ---- */

struct http_case {
    const char              *req;
    enum metrics_http_status want;
};

static void test_http_parse(void **state)
{
    (void)state;
    static const struct http_case cases[] = {
        { "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_HTTP_OK },
        { "GET /metrics HTTP/1.0\r\n\r\n", METRICS_HTTP_OK },
        { "GET /metrics?x=1 HTTP/1.1\n\n", METRICS_HTTP_OK },
        { "GET /metrics HTTP/1.1\r\nHost: x\r\n", METRICS_HTTP_AGAIN },
        { "GET /metr", METRICS_HTTP_AGAIN },
        { "", METRICS_HTTP_AGAIN },
        { "GET / HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND },
        { "GET /metricsx HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND },
        { "GET /metrics/ HTTP/1.1\r\n\r\n", METRICS_HTTP_NOT_FOUND },
        { "POST /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_METHOD },
        { "HEAD /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_METHOD },
        { "GET /metrics HTTP/2.0\r\n\r\n", METRICS_HTTP_BAD },
        { "GET /metrics\r\n\r\n", METRICS_HTTP_BAD },
        { "GET  HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD },
        { " /metrics HTTP/1.1\r\n\r\n", METRICS_HTTP_BAD },
        { "hello\r\n\r\n", METRICS_HTTP_BAD },
        { "GET /metrics HTTP/1.1 x\r\n\r\n", METRICS_HTTP_BAD },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum metrics_http_status st = metrics_http_parse(cases[i].req, strlen(cases[i].req));
        if (st != cases[i].want)
            fail_msg("case %zu (%s): %d, want %d", i, cases[i].req, st, cases[i].want);
    }
}

/* Every prefix of a whole request is AGAIN: the answer never comes
 * before the head is whole. */
static void test_http_parse_split(void **state)
{
    (void)state;
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
    for (size_t n = 0; n < sizeof(req) - 1; n++)
        assert_int_equal(metrics_http_parse(req, n), METRICS_HTTP_AGAIN);
    assert_int_equal(metrics_http_parse(req, sizeof(req) - 1), METRICS_HTTP_OK);
}

static void test_http_addr(void **state)
{
    (void)state;
    char *host = NULL;
    uint16_t port = 0;
    assert_int_equal(metrics_http_addr("127.0.0.1:9100", &host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9100);
    free(host);
    assert_int_equal(metrics_http_addr("[::1]:80", &host, &port), 0);
    assert_string_equal(host, "::1");
    free(host);
    static const char *const bad[] = { "9100", ":9100", "h:", "h:0", "h:65536", "h:9x",
                                       "[::1:80", "[]:80" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(metrics_http_addr(bad[i], &host, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_bounds),
        cmocka_unit_test(test_hist_merge),
        cmocka_unit_test(test_escape_roundtrip),
        cmocka_unit_test_setup_teardown(test_exposition_counters, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exposition_histograms, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exposition_zookeeper, fx_setup, fx_teardown),
        cmocka_unit_test(test_http_parse),
        cmocka_unit_test(test_http_parse_split),
        cmocka_unit_test(test_http_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
