/* test_sbuf: a growing string for building expected and actual outputs
 * in the protocol tests. Include after <cmocka.h>. */
#ifndef STRATA_TEST_SBUF_H
#define STRATA_TEST_SBUF_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char   *p;
    size_t  len;
    size_t  cap;
};

static inline void
sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void
sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    sbuf_add(b, tmp, (size_t)n);
}

/* Appends bytes with \r and \n made visible. */
static inline void
sbuf_add_escaped(struct sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r')
            sbuf_add(b, "\\r", 2);
        else if (s[i] == '\n')
            sbuf_add(b, "\\n", 2);
        else
            sbuf_add(b, s + i, 1);
    }
}

#endif
