/* fuzz_split: the ways the framing harnesses cut one input into reads, and
 * the log both harnesses keep of what the parser returned, so that the
 * result of every cut can be compared with the result of one whole read. */
#ifndef STRATA_FUZZ_SPLIT_H
#define STRATA_FUZZ_SPLIT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

enum fuzz_split {
    FUZZ_SPLIT_WHOLE,     /* every byte in one read */
    FUZZ_SPLIT_BYTES,     /* one byte per read */
    FUZZ_SPLIT_RANDOM,    /* 1..64 bytes per read, drawn from the input */
    FUZZ_SPLIT_CR,        /* a read ends after each '\r' (cuts "\r\n") */
    FUZZ_SPLIT_COUNT
};

struct fuzz_cutter {
    enum fuzz_split how;
    uint64_t        state;   /* xorshift state for FUZZ_SPLIT_RANDOM */
};

/* Seeds the cutter from the input (FNV-1a), so a run is reproducible. */
static inline void fuzz_cutter_init(struct fuzz_cutter *c, enum fuzz_split how,
                                    const uint8_t *d, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 0x100000001b3ULL;
    c->how = how;
    c->state = h | 1;
}

/* Length of the next read of d[pos..n), at least 1. */
static inline size_t fuzz_cutter_next(struct fuzz_cutter *c, const uint8_t *d,
                                      size_t pos, size_t n)
{
    size_t left = n - pos, k;

    switch (c->how) {
    case FUZZ_SPLIT_BYTES:
        return 1;
    case FUZZ_SPLIT_RANDOM:
        c->state ^= c->state << 13;
        c->state ^= c->state >> 7;
        c->state ^= c->state << 17;
        k = 1 + (size_t)(c->state % 64);
        return k < left ? k : left;
    case FUZZ_SPLIT_CR:
        for (k = 0; k < left; k++)
            if (d[pos + k] == '\r')
                return k + 1;
        return left;
    default:
        return left;
    }
}

/* The log: a byte string of everything observable about each result. */
static inline void fuzz_log_u64(struct evbuffer *log, uint64_t v)
{
    evbuffer_add(log, &v, sizeof(v));
}

static inline void fuzz_log_bytes(struct evbuffer *log, const void *p, size_t n)
{
    fuzz_log_u64(log, n);
    if (n > 0)
        evbuffer_add(log, p, n);
}

static inline void fuzz_log_str(struct evbuffer *log, const char *s)
{
    fuzz_log_bytes(log, s != NULL ? s : "(null)", strlen(s != NULL ? s : "(null)"));
}

/* Appends a copy of `data` (which keeps its bytes). */
static inline void fuzz_log_buffer(struct evbuffer *log, const struct evbuffer *data)
{
    size_t n = data != NULL ? evbuffer_get_length(data) : 0;
    char *p = n > 0 ? malloc(n) : NULL;

    if (n > 0 && (p == NULL || evbuffer_copyout((struct evbuffer *)data, p, n) != (ev_ssize_t)n))
        abort();
    fuzz_log_bytes(log, p, n);
    free(p);
}

/* Aborts (a finding) when the two logs differ. */
static inline void fuzz_log_compare(struct evbuffer *whole, struct evbuffer *cut,
                                    enum fuzz_split how, const char *what)
{
    size_t n = evbuffer_get_length(whole), m = evbuffer_get_length(cut);
    const unsigned char *a = evbuffer_pullup(whole, -1);
    const unsigned char *b = evbuffer_pullup(cut, -1);

    if (n == m && (n == 0 || memcmp(a, b, n) == 0))
        return;
    fprintf(stderr, "%s: results differ between one read and split %d "
            "(log %zu vs %zu bytes)\n", what, (int)how, n, m);
    abort();
}

#define FUZZ_CHECK(cond)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* Feeds one input through `run` whole and then cut every other way, and
 * checks every cut logs the same as the whole (`what` names the framer). */
typedef void (*fuzz_run_fn)(const uint8_t *d, size_t n, enum fuzz_split how,
                            struct evbuffer *log);

static inline void fuzz_compare_splits(const uint8_t *d, size_t n, fuzz_run_fn run,
                                       const char *what)
{
    struct evbuffer *whole = evbuffer_new(), *cut = evbuffer_new();

    FUZZ_CHECK(whole != NULL && cut != NULL);
    run(d, n, FUZZ_SPLIT_WHOLE, whole);
    for (int how = FUZZ_SPLIT_BYTES; how < FUZZ_SPLIT_COUNT; how++) {
        evbuffer_drain(cut, evbuffer_get_length(cut));
        run(d, n, (enum fuzz_split)how, cut);
        fuzz_log_compare(whole, cut, (enum fuzz_split)how, what);
    }
    evbuffer_free(whole);
    evbuffer_free(cut);
}

#endif
