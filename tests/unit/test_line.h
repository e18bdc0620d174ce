/* test_line: loads a protocol line into an mc_req or mc_rsp, as the
 * framing does once it has found the line, so that the protocol tests can
 * call the line parsers directly. Include after <cmocka.h>. */
#ifndef STRATA_TEST_LINE_H
#define STRATA_TEST_LINE_H

#include <stdlib.h>
#include <string.h>

#include "strata/proto_mc.h"

/* Copies s into *line (grown as needed), NUL-ended. */
static inline void
test_line_set(char **line, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);

    if (n + 1 > *cap) {
        *line = realloc(*line, n + 1);
        assert_non_null(*line);
        *cap = n + 1;
    }
    memcpy(*line, s, n + 1);
    *len = n;
}

static inline enum mc_status
test_req_parse(struct mc_req *req, const char *line, const struct mc_limits *lim,
               const char **err)
{
    mc_req_reset(req);
    test_line_set(&req->line, &req->line_len, &req->line_cap, line);
    *err = NULL;
    return mc_req_parse(req, lim, err);
}

static inline enum mc_status
test_rsp_parse(struct mc_rsp *rsp, const char *line, const struct mc_limits *lim)
{
    mc_rsp_reset(rsp);
    test_line_set(&rsp->line, &rsp->line_len, &rsp->line_cap, line);
    return mc_rsp_parse(rsp, lim);
}

#endif
