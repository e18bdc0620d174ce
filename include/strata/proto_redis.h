/* proto_redis: RESP, the protocol of Redis pools. Requests from clients
 * (multibulk arrays of bulk strings) are framed from an evbuffer into
 * struct redis_req; backend replies (simple strings, errors, integers,
 * bulks, arrays nested to any depth, nils) are framed one whole top-level
 * reply at a time into struct redis_rsp. One command table (name, kind,
 * read-only or write, arity, key positions, how split replies merge) is
 * the single source for routing, for the master/slave read split and for
 * checking a reply against its request. */
#ifndef STRATA_PROTO_REDIS_H
#define STRATA_PROTO_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum redis_status {
    REDIS_OK,      /* one whole request/reply was framed and consumed */
    REDIS_AGAIN,   /* need more bytes; nothing was consumed */
    REDIS_ERROR,   /* a whole request was consumed but cannot be run
                      (unknown command, wrong number of arguments); the
                      stream is still in step */
    REDIS_FATAL,   /* the stream can no longer be framed (bad syntax, a
                      length that overflows or is over a limit) */
};

/* How a command's keys are placed and how the proxy runs it. */
enum redis_cmd_kind {
    REDIS_KIND_KEY,      /* routed by its first key, args[1] */
    REDIS_KIND_MULTI,    /* every argument from args[1] is a key: split
                            per server, replies merged (MGET, DEL, ...) */
    REDIS_KIND_PAIRS,    /* key value pairs from args[1]: split (MSET) */
    REDIS_KIND_EVAL,     /* EVAL/EVALSHA: args[2] numkeys, routed by
                            args[3], the first key */
    REDIS_KIND_PROXY,    /* answered by the proxy: PING, QUIT, AUTH */
};

/* How the replies of a split request become the client's one reply. */
enum redis_merge {
    REDIS_MERGE_NONE,    /* not split */
    REDIS_MERGE_ARRAY,   /* each part's array, elements put back in key
                            order (MGET) */
    REDIS_MERGE_SUM,     /* integers added (DEL, UNLINK, TOUCH) */
    REDIS_MERGE_OK,      /* +OK when every part said +OK (MSET) */
};

struct redis_cmd {
    const char          *name;      /* lower case, e.g. "mget" */
    enum redis_cmd_kind  kind;
    enum redis_merge     merge;
    bool                 readonly;  /* safe to send to a replica */
    int32_t              arity;     /* Redis style, counting the command
                                       name: n > 0 exactly n arguments,
                                       n < 0 at least -n */
};

/* The command table entry for name[0..len) (any case), or NULL when the
 * proxy does not support the command (nutcracker 0.5.0's list). */
const struct redis_cmd *redis_cmd_lookup(const char *name, size_t len);

/* The whole table, sorted by name, and its length in *n (for tests, stats
 * and anything that lists the supported commands). */
const struct redis_cmd *redis_cmd_table(size_t *n);

/* An argument as an offset into req->buf: the buffer may move. */
struct redis_token {
    uint32_t off;
    uint32_t len;
};

struct redis_limits {
    uint32_t max_bulk;      /* longest bulk string in a request */
    uint32_t max_args;      /* most arguments in one request */
    size_t   max_request;   /* bytes of one whole request */
    size_t   max_reply;     /* bytes of one whole backend reply */
    uint32_t max_depth;     /* nesting of arrays in a reply */
};

struct redis_req {
    const struct redis_cmd *cmd;   /* set on REDIS_OK (and ERROR when the
                                      command is known) */
    char               *buf;       /* the request as received ("*N\r\n$..")
                                      NUL-ended; owned */
    size_t              len;
    size_t              cap;
    struct redis_token *args;      /* payload of each bulk; args[0] is the
                                      command name */
    uint32_t            nargs;
    uint32_t            args_cap;
    /* keys: args[key_first + i * key_step] for i in [0, nkeys); for
     * REDIS_KIND_PAIRS the value of key i follows it. Set on REDIS_OK;
     * nkeys is 0 for the proxy's own commands. */
    uint32_t            key_first;
    uint32_t            key_step;
    uint32_t            nkeys;
    /* framing progress across REDIS_AGAIN calls, so a request arriving in
     * many reads is scanned once */
    size_t              scan_off;    /* bytes of the input already parsed */
    uint32_t            scan_nargs;  /* announced argument count, 0: none yet */
    size_t              want;        /* on REDIS_AGAIN: the fewest bytes the
                                        whole request can take, as its heads
                                        so far announce (0: not known yet) */
};

void redis_req_init(struct redis_req *req);
/* Forgets the request, keeps capacity (and clears framing progress). */
void redis_req_reset(struct redis_req *req);
/* After reset: frees the request buffer and argument array whose
 * capacity passes `keep` bytes (a large SET's value lives in the
 * buffer), so a request kept for reuse does not keep them. Returns the
 * bytes of capacity still kept. */
size_t redis_req_shrink(struct redis_req *req, size_t keep);
void redis_req_deinit(struct redis_req *req);

/* Frames one request from `in`. REDIS_AGAIN consumes nothing (progress is
 * kept in req: call again with the same req when more bytes arrive).
 * REDIS_OK: the whole request was removed from `in` into req->buf, args
 * and keys are set. REDIS_ERROR: the whole request was consumed, *err is
 * the reason (a static string) — an unsupported command or a wrong
 * argument count for a known one. REDIS_FATAL: *err says why; the caller
 * closes the connection (nothing after it can be trusted). Inline
 * (non-multibulk) commands are REDIS_FATAL, as nutcracker refuses them. */
enum redis_status redis_req_read(struct evbuffer *in, struct redis_req *req,
                                 const struct redis_limits *lim, const char **err);

/* The reply types, by their first byte. */
enum redis_rsp_type {
    REDIS_RSP_STATUS  = '+',
    REDIS_RSP_ERROR   = '-',
    REDIS_RSP_INTEGER = ':',
    REDIS_RSP_BULK    = '$',
    REDIS_RSP_ARRAY   = '*',
};

/* Framing progress of the unit in progress (private to
 * proto_redis_rsp.c; the caller only zeroes it, through init/reset). */
struct redis_rsp_scan {
    uint8_t             state;     /* what the next byte must be */
    char                unit;      /* type byte of the unit in progress */
    bool                neg;       /* its head's number has a '-' */
    bool                zero;      /* ... and its first digit is '0' */
    uint8_t             ndigits;
    bool                elems_on;  /* want_elems, taken as the reply began */
    uint64_t            num;       /* digits so far */
    size_t              unit_off;  /* where the unit began */
    size_t              skip;      /* bulk payload bytes still to pass */
};

struct redis_rsp {
    enum redis_rsp_type type;      /* of the top-level reply */
    bool                nil;       /* $-1 or *-1 */
    int64_t             integer;   /* INTEGER: its value */
    int64_t             count;     /* ARRAY: elements; BULK: bytes */
    struct evbuffer    *data;      /* the whole reply's bytes, created on
                                      demand, owned */
    /* Set by the caller before a reply starts: record where each
     * top-level element lies (only a reply whose elements are merged
     * needs them: MGET split over shards). Left false, nothing is
     * recorded, whatever the number of elements. */
    bool                want_elems;
    /* ARRAY with want_elems: each top-level element's bytes within data
     * (offset, length), in order, nelems of them (not nested ones); the
     * array shrinks back after a reply of many elements */
    struct { size_t off; size_t len; } *elems;
    uint32_t            nelems;
    uint32_t            elems_cap;
    /* framing progress across REDIS_AGAIN calls: every byte of the input
     * is examined once, however the reply is split */
    size_t              scan_off;  /* bytes of the reply examined */
    uint32_t            depth;     /* open arrays */
    int64_t            *pending;   /* per open array level: elements left */
    uint32_t            pending_cap;
    struct redis_rsp_scan scan;
};

void redis_rsp_init(struct redis_rsp *rsp);
/* Forgets the reply and the framing progress; keeps want_elems and the
 * arrays' capacity, but gives back an element array grown past
 * REDIS_RSP_ELEMS_KEEP entries and the bytes of rsp->data. */
void redis_rsp_reset(struct redis_rsp *rsp);
void redis_rsp_deinit(struct redis_rsp *rsp);

/* Element records kept across replies; more are freed by reset. */
#define REDIS_RSP_ELEMS_KEEP 1024

/* Frames one whole top-level reply from a backend into rsp (its bytes
 * moved into rsp->data). REDIS_AGAIN consumes nothing (progress kept in
 * rsp: only the bytes that arrived since the last call are examined, so
 * a reply costs time linear in its size however it is split);
 * REDIS_FATAL: garbage, a bad length, deeper than max_depth or longer
 * than max_reply — the caller resets the backend connection. */
enum redis_status redis_rsp_read(struct evbuffer *in, struct redis_rsp *rsp,
                                 const struct redis_limits *lim);

/* True when rsp can be a reply to a request for `cmd` with `nkeys` keys
 * (the keys a split part asked for): an error fits every command;
 * MERGE_ARRAY needs an array of exactly nkeys elements, MERGE_SUM an
 * integer, MERGE_OK a status; the proxy's own commands never go to a
 * backend; anything else fits any reply. A pure function. */
bool redis_rsp_fits(const struct redis_cmd *cmd, uint32_t nkeys,
                    const struct redis_rsp *rsp);

/* ---- composing (proto_redis_compose.c) ----
 * Each appends to `out` and returns 0, or -1 when the buffer cannot grow
 * (then `out` may hold part of the unit and is to be discarded). */

/* The request for the keys key_idx[0..n) of req (indices into its keys,
 * in that order): the command name, then for each key the key (and for
 * REDIS_KIND_PAIRS its value). Used for split multi-key requests. */
int redis_compose_split(struct evbuffer *out, const struct redis_req *req,
                        const uint32_t *key_idx, uint32_t n);

/* A command from its arguments: "*<argc>\r\n" then each as a bulk. */
int redis_compose_command(struct evbuffer *out, uint32_t argc,
                          const char *const *argv, const size_t *argvlen);

/* "-<text>\r\n"; text is e.g. "ERR no server available". */
int redis_compose_error(struct evbuffer *out, const char *text);
/* "+<text>\r\n" */
int redis_compose_status(struct evbuffer *out, const char *text);
/* ":<n>\r\n" */
int redis_compose_integer(struct evbuffer *out, int64_t n);
/* "*<n>\r\n" */
int redis_compose_array_header(struct evbuffer *out, uint32_t n);
/* "$<n>\r\n<p>\r\n" */
int redis_compose_bulk(struct evbuffer *out, const char *p, size_t n);
/* A bulk string of text's bytes, moved (text is left empty). */
int redis_compose_bulk_buffer(struct evbuffer *out, struct evbuffer *text);
/* "$-1\r\n", the nil bulk */
int redis_compose_nil(struct evbuffer *out);
/* Appends element i of the array reply rsp (its bytes, copied); -1 when
 * elements were not recorded (want_elems). A lookup from the start of
 * rsp->data: for taking every element, redis_compose_take_element. */
int redis_compose_element(struct evbuffer *out, const struct redis_rsp *rsp,
                          uint32_t i);
/* Moves element i of the array reply rsp from the front of rsp->data to
 * out (chains moved, not copied), dropping the bytes before it (the
 * head, elements passed over). Elements are taken in increasing order,
 * and rsp->data loses them: the cost of taking them all is linear in
 * the reply. -1 when not recorded or already passed. */
int redis_compose_take_element(struct evbuffer *out, struct redis_rsp *rsp,
                               uint32_t i);

#endif
