/* Unit tests of proto_mc backend responses: line parsing and framing of
 * response units from a byte stream however it is split. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "strata/proto_mc.h"

static const struct mc_limits lim = { .max_line = 300, .max_value = 1024 };

#include "test_line.h"
#include "test_sbuf.h"

static int
rsp_setup(void **state)
{
    struct mc_rsp *rsp = malloc(sizeof(*rsp));

    if (rsp == NULL)
        return -1;
    mc_rsp_init(rsp);
    *state = rsp;
    return 0;
}

static int
rsp_teardown(void **state)
{
    mc_rsp_deinit(*state);
    free(*state);
    return 0;
}

static enum mc_status
parse(struct mc_rsp *rsp, const char *line)
{
    return test_rsp_parse(rsp, line, &lim);
}

/* ---- parsing ---------------------------------------------------------- */

static void
test_parse_simple(void **state)
{
    static const struct {
        const char       *line;
        enum mc_rsp_type  type;
    } cases[] = {
        { "END", MC_RSP_END },
        { "STORED", MC_RSP_STORED },
        { "NOT_STORED", MC_RSP_NOT_STORED },
        { "EXISTS", MC_RSP_EXISTS },
        { "NOT_FOUND", MC_RSP_NOT_FOUND },
        { "DELETED", MC_RSP_DELETED },
        { "TOUCHED", MC_RSP_TOUCHED },
        { "OK", MC_RSP_OK },
        { "VERSION 1.6.18", MC_RSP_VERSION },
        { "ERROR", MC_RSP_ERROR },
        { "ERROR unknown command", MC_RSP_ERROR },
        { "CLIENT_ERROR bad data chunk", MC_RSP_CLIENT_ERROR },
        { "SERVER_ERROR out of memory storing object", MC_RSP_SERVER_ERROR },
        { "0", MC_RSP_NUMBER },
        { "MN", MC_RSP_MN },
    };
    struct mc_rsp *rsp = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (parse(rsp, cases[i].line) != MC_OK)
            fail_msg("\"%s\" did not parse", cases[i].line);
        assert_int_equal(rsp->type, cases[i].type);
    }
}

static void
test_parse_number(void **state)
{
    struct mc_rsp *rsp = *state;

    assert_int_equal(parse(rsp, "42"), MC_OK);
    assert_int_equal(rsp->type, MC_RSP_NUMBER);
    assert_int_equal(rsp->number, 42);
    assert_int_equal(parse(rsp, "18446744073709551615"), MC_OK);
    assert_true(rsp->number == UINT64_MAX);
}

static void
test_parse_value(void **state)
{
    struct mc_rsp *rsp = *state;

    assert_int_equal(parse(rsp, "VALUE foo 4294967295 1024"), MC_OK);
    assert_int_equal(rsp->type, MC_RSP_VALUE);
    assert_int_equal(rsp->key.len, 3);
    assert_memory_equal(rsp->line + rsp->key.off, "foo", 3);
    assert_int_equal(rsp->flags, UINT32_MAX);
    assert_int_equal(rsp->vlen, 1024);
    assert_false(rsp->has_cas);

    assert_int_equal(parse(rsp, "VALUE k 3 0 18446744073709551615"), MC_OK);
    assert_int_equal(rsp->type, MC_RSP_VALUE);
    assert_memory_equal(rsp->line + rsp->key.off, "k", 1);
    assert_int_equal(rsp->flags, 3);
    assert_int_equal(rsp->vlen, 0);
    assert_true(rsp->has_cas);
    assert_true(rsp->cas == UINT64_MAX);
}

static void
test_parse_garbage(void **state)
{
    static const char *lines[] = {
        "", " ", " END", "END ", "STORED x", "stored", "FOO", "ERRORS",
        "VERSIONX", "MN x", "mn", "MNX", "VALUE", "VALUE k", "VALUE k 0", "VALUE k x 1",
        "VALUE k 0 x", "VALUE k 0 1 x", "VALUE k 0 1 2 3",
        "VALUE k 0 1025", "VALUE k -1 1", "VALUE k 4294967296 1",
        "12a", "-1", "+1", "18446744073709551616",
    };
    struct mc_rsp *rsp = *state;
    char line[400];

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        if (parse(rsp, lines[i]) != MC_ERROR)
            fail_msg("\"%s\" parsed", lines[i]);
    }
    memset(line, 'k', sizeof(line));
    memcpy(line, "VALUE ", 6);
    snprintf(line + 6 + 251, sizeof(line) - 6 - 251, " 0 1");
    assert_int_equal(parse(rsp, line), MC_ERROR);
    snprintf(line + 6 + 250, sizeof(line) - 6 - 250, " 0 1");
    assert_int_equal(parse(rsp, line), MC_OK);
}

/* ---- replies against their command ------------------------------------ */

/* Every reply line against the commands sent to backends: "x" where it
 * fits. Columns: get gets gat gats set add replace append prepend cas
 * delete incr decr touch flush_all version. */
static const char *const fit_cmds[] = {
    "get", "gets", "gat", "gats", "set", "add", "replace", "append",
    "prepend", "cas", "delete", "incr", "decr", "touch", "flush_all", "version",
};

static const struct {
    const char *line;
    const char *fits;   /* one column per fit_cmds entry */
} fit_cases[] = {
    /*                                    ggggsarappcdidtfv */
    { "VALUE k 0 1",                     "x.x............." },
    { "VALUE k 0 1 7",                   ".x.x............" },
    { "END",                             "xxxx............" },
    { "STORED",                          "....xxxxxx......" },
    { "NOT_STORED",                      "....xxxxxx......" },
    { "EXISTS",                          "....xxxxxx......" },
    { "NOT_FOUND",                       "....xxxxxxxxxx.." },
    { "DELETED",                         "..........x....." },
    { "TOUCHED",                         ".............x.." },
    { "42",                              "...........xx..." },
    { "OK",                              "..............x." },
    { "VERSION 1.6.21",                  "...............x" },
    { "ERROR",                           "xxxxxxxxxxxxxxxx" },
    { "CLIENT_ERROR bad command line",   "xxxxxxxxxxxxxxxx" },
    { "SERVER_ERROR out of memory",      "xxxxxxxxxxxxxxxx" },
    { "MN",                              "................" },   /* a fence */
};

static enum mc_cmd
fit_cmd(const char *name)
{
    for (int c = 0; c < MC_CMD_COUNT; c++)
        if (strcmp(mc_cmd_name((enum mc_cmd)c), name) == 0)
            return (enum mc_cmd)c;
    fail_msg("no command %s", name);
    return MC_CMD_COUNT;
}

static void
test_fits_table(void **state)
{
    struct mc_rsp *rsp = *state;
    size_t ncmd = sizeof(fit_cmds) / sizeof(fit_cmds[0]);

    for (size_t i = 0; i < sizeof(fit_cases) / sizeof(fit_cases[0]); i++) {
        assert_int_equal(parse(rsp, fit_cases[i].line), MC_OK);
        assert_int_equal(strlen(fit_cases[i].fits), ncmd);
        for (size_t c = 0; c < ncmd; c++) {
            bool want = fit_cases[i].fits[c] == 'x';
            if (mc_rsp_fits(fit_cmd(fit_cmds[c]), rsp) != want)
                fail_msg("\"%s\" to %s: want %s", fit_cases[i].line, fit_cmds[c],
                         want ? "fits" : "does not fit");
        }
    }
}

/* A unit that was never parsed fits nothing. */
static void
test_fits_unparsed(void **state)
{
    struct mc_rsp *rsp = *state;

    mc_rsp_reset(rsp);
    assert_false(mc_rsp_fits(MC_CMD_GET, rsp));
    assert_false(mc_rsp_fits(MC_CMD_SET, rsp));
}

/* ---- framing ---------------------------------------------------------- */

static const char *const type_names[] = {
#define TYPE_NAME(e, s) #e,
    MC_RSP_LIST(TYPE_NAME)
#undef TYPE_NAME
};

static void
describe(struct sbuf *sig, enum mc_status st, const struct mc_rsp *rsp)
{
    if (st == MC_FATAL) {
        sbuf_printf(sig, "FATAL\n");
        return;
    }
    sbuf_printf(sig, "%s", type_names[rsp->type]);
    if (rsp->type == MC_RSP_NUMBER)
        sbuf_printf(sig, " %llu", (unsigned long long)rsp->number);
    if (rsp->type == MC_RSP_VALUE) {
        size_t n = evbuffer_get_length(rsp->data);
        sbuf_printf(sig, " %.*s f=%u", (int)rsp->key.len,
                    rsp->line + rsp->key.off, rsp->flags);
        if (rsp->has_cas)
            sbuf_printf(sig, " cas=%llu", (unsigned long long)rsp->cas);
        sbuf_add(sig, " [", 2);
        sbuf_add_escaped(sig, (char *)evbuffer_pullup(rsp->data, -1), n);
        sbuf_add(sig, "]", 1);
        assert_int_equal(n, rsp->vlen);
    }
    if (rsp->type == MC_RSP_VERSION || rsp->type == MC_RSP_SERVER_ERROR)
        sbuf_printf(sig, " <%s>", rsp->line);
    sbuf_add(sig, "\n", 1);
}

static char *
feed(const char *s, size_t len, const size_t *cuts, size_t ncuts)
{
    struct evbuffer *in = evbuffer_new();
    struct mc_rsp rsp;
    struct sbuf sig = { 0 };
    size_t from = 0;
    enum mc_status st = MC_AGAIN;

    mc_rsp_init(&rsp);
    sbuf_add(&sig, "", 0);
    for (size_t i = 0; i <= ncuts && st != MC_FATAL; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        evbuffer_add(in, s + from, to - from);
        from = to;
        while ((st = mc_rsp_read(in, &rsp, &lim)) != MC_AGAIN) {
            describe(&sig, st, &rsp);
            if (st == MC_FATAL)
                break;
        }
    }
    if (st != MC_FATAL)
        assert_int_equal(evbuffer_get_length(in), 0);
    mc_rsp_deinit(&rsp);
    evbuffer_free(in);
    return sig.p;
}

static const char stream[] =
    "VALUE a 1 3\r\nx\r\n\r\n"                 /* "\r\n" inside the value */
    "VALUE b 0 5 77\r\n\r\n\r\n\r\r\n"
    "VALUE c 2 0\r\n\r\n"                      /* empty value */
    "END\r\n"
    "STORED\r\n"
    "NOT_STORED\n"                             /* bare "\n" */
    "EXISTS\r\nNOT_FOUND\r\nDELETED\r\nTOUCHED\r\nOK\r\n"
    "12345\r\n"
    "VERSION 1.6.18\r\n"
    "ERROR\r\n"
    "CLIENT_ERROR bad command line format\r\n"
    "SERVER_ERROR out of memory\r\n"
    "VALUE d 0 2 5\nhi\r\n"
    "END\r\n";

static const char stream_sig[] =
    "VALUE a f=1 [x\\r\\n]\n"
    "VALUE b f=0 cas=77 [\\r\\n\\r\\n\\r]\n"
    "VALUE c f=2 []\n"
    "END\n"
    "STORED\n"
    "NOT_STORED\n"
    "EXISTS\nNOT_FOUND\nDELETED\nTOUCHED\nOK\n"
    "NUMBER 12345\n"
    "VERSION <VERSION 1.6.18>\n"
    "ERROR\n"
    "CLIENT_ERROR\n"
    "SERVER_ERROR <SERVER_ERROR out of memory>\n"
    "VALUE d f=0 cas=5 [hi]\n"
    "END\n";

static void
test_frame_whole(void **state)
{
    char *sig;

    (void)state;
    sig = feed(stream, sizeof(stream) - 1, NULL, 0);
    assert_string_equal(sig, stream_sig);
    free(sig);
}

static void
test_frame_every_split(void **state)
{
    (void)state;
    for (size_t cut = 1; cut < sizeof(stream) - 1; cut++) {
        char *sig = feed(stream, sizeof(stream) - 1, &cut, 1);
        if (strcmp(sig, stream_sig) != 0)
            fail_msg("split at %zu:\n%s", cut, sig);
        free(sig);
    }
}

static void
test_frame_byte_at_a_time(void **state)
{
    size_t cuts[sizeof(stream)];
    char *sig;

    (void)state;
    for (size_t i = 0; i + 2 < sizeof(stream); i++)
        cuts[i] = i + 1;
    sig = feed(stream, sizeof(stream) - 1, cuts, sizeof(stream) - 2);
    assert_string_equal(sig, stream_sig);
    free(sig);
}

/* MC_AGAIN leaves the input untouched, even with the VALUE line whole. */
static void
test_frame_again_keeps_input(void **state)
{
    static const char unit[] = "VALUE k 0 4\r\nabcd\r\n";
    struct mc_rsp *rsp = *state;
    struct evbuffer *in = evbuffer_new();

    for (size_t n = 0; n + 1 < sizeof(unit) - 1; n++) {
        evbuffer_add(in, unit + n, 1);
        assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_AGAIN);
        assert_int_equal(evbuffer_get_length(in), n + 1);
    }
    evbuffer_add(in, "\n", 1);
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_OK);
    assert_int_equal(rsp->type, MC_RSP_VALUE);
    assert_int_equal(evbuffer_get_length(rsp->data), 4);
    assert_int_equal(evbuffer_get_length(in), 0);
    evbuffer_free(in);
}

/* The data buffer is created once and reused for every VALUE. */
static void
test_frame_data_reused(void **state)
{
    struct mc_rsp *rsp = *state;
    struct evbuffer *in = evbuffer_new();
    struct evbuffer *data;

    evbuffer_add_printf(in, "VALUE a 0 1\r\nx\r\nVALUE b 0 2\r\nyz\r\n");
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_OK);
    data = rsp->data;
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_OK);
    assert_ptr_equal(rsp->data, data);
    assert_int_equal(evbuffer_get_length(data), 2);
    assert_memory_equal(evbuffer_pullup(data, -1), "yz", 2);
    mc_rsp_reset(rsp);
    assert_int_equal(evbuffer_get_length(data), 0);
    evbuffer_free(in);
}

static void
test_frame_fatal(void **state)
{
    static const char *bad[] = {
        "HELLO\r\n",
        "VALUE k 0 3\r\nabcde\r\n",              /* block not ended by \r\n */
        "VALUE k 0 3\r\nabc\n\r",
        "VALUE k 0 2000\r\n",                    /* over max_value */
        "STORED \r\n",
    };
    struct mc_rsp *rsp = *state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct evbuffer *in = evbuffer_new();
        evbuffer_add(in, bad[i], strlen(bad[i]));
        if (mc_rsp_read(in, rsp, &lim) != MC_FATAL)
            fail_msg("\"%s\" was not fatal", bad[i]);
        evbuffer_free(in);
    }
}

static void
test_frame_line_too_long(void **state)
{
    struct mc_rsp *rsp = *state;
    struct evbuffer *in = evbuffer_new();
    char line[400];

    memset(line, 'x', sizeof(line));
    memcpy(line, "SERVER_ERROR ", 13);
    evbuffer_add(in, line, lim.max_line);
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_AGAIN);
    evbuffer_add(in, "\r\n", 2);
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_OK);
    assert_int_equal(rsp->type, MC_RSP_SERVER_ERROR);

    evbuffer_add(in, line, lim.max_line + 1);
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_FATAL);
    evbuffer_drain(in, evbuffer_get_length(in));
    evbuffer_add(in, line, lim.max_line + 1);
    evbuffer_add(in, "\r\n", 2);
    assert_int_equal(mc_rsp_read(in, rsp, &lim), MC_FATAL);
    evbuffer_free(in);
}

#define RSP_TEST(f) cmocka_unit_test_setup_teardown(f, rsp_setup, rsp_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        RSP_TEST(test_parse_simple),
        RSP_TEST(test_parse_number),
        RSP_TEST(test_parse_value),
        RSP_TEST(test_parse_garbage),
        RSP_TEST(test_frame_whole),
        RSP_TEST(test_frame_every_split),
        RSP_TEST(test_frame_byte_at_a_time),
        RSP_TEST(test_frame_again_keeps_input),
        RSP_TEST(test_frame_data_reused),
        RSP_TEST(test_frame_fatal),
        RSP_TEST(test_frame_line_too_long),
        RSP_TEST(test_fits_table),
        RSP_TEST(test_fits_unparsed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
