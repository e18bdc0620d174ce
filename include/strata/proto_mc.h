/* proto_mc: memcached text protocol. Requests from clients are framed from
 * an evbuffer (line, then a data block for storage commands) and parsed
 * into struct mc_req; backend responses are framed into struct mc_rsp one
 * unit at a time (a line, or a VALUE line with its data). The line parsers
 * are pure functions; only the framing functions touch evbuffers. */
#ifndef STRATA_PROTO_MC_H
#define STRATA_PROTO_MC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct redis_limits;

#define MC_KEY_MAX 250

/* ACTION(ENUM_SUFFIX, "command word", kind) */
#define MC_CMD_LIST(ACTION)                     \
    ACTION(GET,       "get",       RETRIEVAL)   \
    ACTION(GETS,      "gets",      RETRIEVAL)   \
    ACTION(GAT,       "gat",       RETRIEVAL)   \
    ACTION(GATS,      "gats",      RETRIEVAL)   \
    ACTION(SET,       "set",       STORAGE)     \
    ACTION(ADD,       "add",       STORAGE)     \
    ACTION(REPLACE,   "replace",   STORAGE)     \
    ACTION(APPEND,    "append",    STORAGE)     \
    ACTION(PREPEND,   "prepend",   STORAGE)     \
    ACTION(CAS,       "cas",       STORAGE)     \
    ACTION(DELETE,    "delete",    KEYED)       \
    ACTION(INCR,      "incr",      KEYED)       \
    ACTION(DECR,      "decr",      KEYED)       \
    ACTION(TOUCH,     "touch",     KEYED)       \
    ACTION(VERSION,   "version",   PROXY)       \
    ACTION(QUIT,      "quit",      PROXY)       \
    ACTION(VERBOSITY, "verbosity", PROXY)       \
    ACTION(STATS,     "stats",     PROXY)       \
    ACTION(FLUSH_ALL, "flush_all", BROADCAST)

#define MC_ENUM_CMD(e, s, k) MC_CMD_##e,
enum mc_cmd { MC_CMD_LIST(MC_ENUM_CMD) MC_CMD_COUNT };
#undef MC_ENUM_CMD

enum mc_cmd_kind {
    MC_KIND_RETRIEVAL,   /* one or more keys, VALUE* END reply */
    MC_KIND_STORAGE,     /* one key and a data block */
    MC_KIND_KEYED,       /* one key, one-line reply */
    MC_KIND_PROXY,       /* answered by the proxy itself */
    MC_KIND_BROADCAST,   /* sent to every server */
};

const char *mc_cmd_name(enum mc_cmd cmd);
enum mc_cmd_kind mc_cmd_kind(enum mc_cmd cmd);

/* A token as an offset into the line: lines move, offsets stay valid. */
struct mc_token {
    uint32_t off;
    uint32_t len;
};

struct mc_req {
    enum mc_cmd      cmd;
    char            *line;       /* command line without "\r\n", NUL-ended */
    size_t           line_len;
    size_t           line_cap;
    struct mc_token *keys;       /* keys[0..nkeys) in request order */
    uint32_t         nkeys;
    uint32_t         keys_cap;
    uint32_t         flags;      /* storage */
    int64_t          exptime;    /* storage, touch, gat, gats */
    uint32_t         vlen;       /* storage: bytes of the data block */
    uint64_t         cas;        /* cas */
    uint64_t         delta;      /* incr, decr */
    bool             noreply;
    struct mc_token  arg;        /* verbosity level, stats args, flush_all delay */
    struct evbuffer *data;       /* storage: the data block without "\r\n" */
    uint64_t         swallow;    /* framing: bytes of an oversized data
                                    block still to drop (see mc_req_read) */
};

enum mc_status {
    MC_OK,          /* one whole request/response unit was framed */
    MC_AGAIN,       /* need more bytes; nothing was consumed (but see
                       mc_req_read) */
    MC_ERROR,       /* bad input; its bytes were consumed; reply and go on */
    MC_FATAL,       /* the stream can no longer be framed; reply and close */
    MC_UNKNOWN,     /* unknown command; its line was consumed; reply ERROR */
};

/* Reply fences on backend connections (backend_fence.h): none, one
 * after every request, or one after each batch written at once. */
enum mc_fence {
    MC_FENCE_OFF = 0,
    MC_FENCE_REQUEST = 1,
    MC_FENCE_BATCH = 2,
};

struct mc_limits {
    size_t   max_line;           /* longest request line, without "\r\n" */
    uint32_t max_value;          /* largest data block */
    size_t   read_chunk;         /* bytes read from a socket at once (-m) */
    size_t   max_reply;          /* reply one retrieval may gather; 0: no limit */
    const struct redis_limits *redis;   /* Redis pools' limits (derived
                                           from these); NULL: none */
    enum mc_fence fence_replies; /* memcached servers: where a meta no-op
                                    goes (settings fence_replies) */
    bool     redis_fence_replies; /* Redis servers: an ECHO of a random
                                    token after each written batch
                                    (settings redis_fence_replies) */
};

/* Lifecycle of a request reused across many parses: init allocates
 * nothing; reset forgets the previous request but keeps capacity. */
void mc_req_init(struct mc_req *req);
void mc_req_reset(struct mc_req *req);
/* After reset: frees the line and key arrays whose capacity passes
 * `keep` bytes (a long multiget's), so a request kept for reuse does not
 * keep them. Returns the bytes of capacity still kept. */
size_t mc_req_shrink(struct mc_req *req, size_t keep);
void mc_req_deinit(struct mc_req *req);

/* Parses req->line[0..line_len) into the other fields of req (not data).
 * Returns MC_OK, MC_UNKNOWN (an unknown command, or a word count memcached
 * answers "ERROR" to), or MC_ERROR with *err set to the reason to send
 * after "CLIENT_ERROR " (a static string); req->noreply is set on errors
 * too, for the caller to stay silent as memcached does. MC_FATAL (with *err) when
 * a storage line has no valid byte count, so the data block that follows
 * cannot be framed. A storage MC_ERROR always has a valid req->vlen. */
enum mc_status mc_req_parse(struct mc_req *req, const struct mc_limits *lim,
                            const char **err);

/* Frames one request from `in`: finds the line (bare "\n" accepted),
 * copies it into req->line, parses it, and for storage commands waits for
 * the whole data block, moves it into req->data (created on demand) and
 * drains its "\r\n". Returns MC_AGAIN without consuming anything until a
 * whole request is there. On MC_ERROR and MC_UNKNOWN the bad request's bytes
 * (including a data block whose length is known) were consumed; on MC_FATAL (a line
 * longer than lim->max_line, a byte count that cannot be trusted) the
 * caller replies *err and closes.
 * One exception keeps memory bounded: a data block over lim->max_value is
 * dropped as it arrives, its line first, with MC_AGAIN until the last byte
 * is gone, then MC_ERROR "value too large". So after MC_AGAIN, call again
 * with the same req (it holds that progress in req->swallow); reset and
 * init clear it. */
enum mc_status mc_req_read(struct evbuffer *in, struct mc_req *req,
                           const struct mc_limits *lim, const char **err);

/* ---- composing (proto_mc_compose.c) ----
 * Every unit the proxy writes in the text protocol. Each appends to `out`
 * and returns 0, or -1 when the arguments cannot make a valid unit or the
 * buffer cannot grow; a failed line is not appended, but after a failed
 * mc_compose_block or mc_compose_value `out` may hold part of the unit
 * and is to be discarded. */

/* Appends the request line for `req` as it should go to a backend: the
 * same command and arguments, with `noreply` removed (the proxy swallows
 * the reply itself so pipelined replies stay matched by position), and
 * "\r\n". For retrieval commands only the keys req->keys[key_idx[i]] for
 * i in [0, nkey_idx) are written, so a multi-key get can be split per
 * server; key_idx NULL means every key. Storage data is not written. */
int mc_req_compose_line(struct evbuffer *out, const struct mc_req *req,
                        const uint32_t *key_idx, uint32_t nkey_idx);

/* "<cmd>[ <exptime>] <key>...\r\n" for the retrieval command `cmd` (gat
 * and gats take req->exptime) and the keys req->keys[key_idx[i]] (or
 * req->keys[i] when key_idx is NULL), i in [0, n). -1 when n is 0, a key
 * index is out of range or cmd is no retrieval. */
int mc_compose_get(struct evbuffer *out, enum mc_cmd cmd, const struct mc_req *req,
                   const uint32_t *key_idx, uint32_t n);

/* "<cmd> <key> <flags> <exptime> <vlen>\r\n": set, add, replace, append
 * or prepend (not cas); the data block follows with mc_compose_block. */
int mc_compose_storage(struct evbuffer *out, enum mc_cmd cmd, const char *key,
                       size_t klen, uint32_t flags, int64_t exptime, size_t vlen);

/* "delete <key>\r\n" */
int mc_compose_delete(struct evbuffer *out, const char *key, size_t klen);

/* "touch <key> <exptime>\r\n" */
int mc_compose_touch(struct evbuffer *out, const char *key, size_t klen,
                     int64_t exptime);

/* A data block and its "\r\n". keep: `data` keeps its bytes (they are
 * referenced, not copied, where libevent allows); else they are moved. */
int mc_compose_block(struct evbuffer *out, struct evbuffer *data, bool keep);

/* A VALUE unit for a client: rsp's VALUE line as the backend sent it, then
 * its data block, moved out of rsp->data. */
struct mc_rsp;
int mc_compose_value(struct evbuffer *out, struct mc_rsp *rsp);

/* A one-line reply for a client: `text` ("END", "SERVER_ERROR ...") and
 * "\r\n". */
int mc_compose_reply_line(struct evbuffer *out, const char *text);

/* Backend response units. MN is the answer to the meta no-op "mn"
 * (memcached >= 1.6): the backend's fence after each request, never a
 * reply to a command. */
#define MC_RSP_LIST(ACTION)          \
    ACTION(VALUE,        "VALUE")        \
    ACTION(END,          "END")          \
    ACTION(STORED,       "STORED")       \
    ACTION(NOT_STORED,   "NOT_STORED")   \
    ACTION(EXISTS,       "EXISTS")       \
    ACTION(NOT_FOUND,    "NOT_FOUND")    \
    ACTION(DELETED,      "DELETED")      \
    ACTION(TOUCHED,      "TOUCHED")      \
    ACTION(OK,           "OK")           \
    ACTION(NUMBER,       "")             \
    ACTION(VERSION,      "VERSION")      \
    ACTION(ERROR,        "ERROR")        \
    ACTION(CLIENT_ERROR, "CLIENT_ERROR") \
    ACTION(SERVER_ERROR, "SERVER_ERROR") \
    ACTION(MN,           "MN")

#define MC_ENUM_RSP(e, s) MC_RSP_##e,
enum mc_rsp_type { MC_RSP_LIST(MC_ENUM_RSP) MC_RSP_COUNT };
#undef MC_ENUM_RSP

struct mc_rsp {
    enum mc_rsp_type type;
    char            *line;       /* the line without "\r\n", NUL-ended */
    size_t           line_len;
    size_t           line_cap;
    struct mc_token  key;        /* VALUE */
    uint32_t         flags;      /* VALUE */
    uint32_t         vlen;       /* VALUE */
    uint64_t         cas;        /* VALUE with a cas unique (gets, gats) */
    bool             has_cas;
    uint64_t         number;     /* NUMBER (incr/decr result) */
    struct evbuffer *data;       /* VALUE: the data block without "\r\n" */
};

void mc_rsp_init(struct mc_rsp *rsp);
void mc_rsp_reset(struct mc_rsp *rsp);
void mc_rsp_deinit(struct mc_rsp *rsp);

/* Parses rsp->line into type and fields. MC_OK, or MC_ERROR for a line
 * that is no memcached response (the backend is then broken). */
enum mc_status mc_rsp_parse(struct mc_rsp *rsp, const struct mc_limits *lim);

/* True when a unit of type rsp->type can be (part of) a memcached reply
 * to `cmd`: storage commands STORED, NOT_STORED, EXISTS, NOT_FOUND;
 * retrievals VALUE (with a cas unique for gets and gats, without one for
 * get and gat) and END; delete DELETED or NOT_FOUND; incr and decr a
 * number or NOT_FOUND; touch TOUCHED or NOT_FOUND; flush_all OK; version
 * VERSION; and ERROR, CLIENT_ERROR, SERVER_ERROR for every command. MN
 * (a fence) fits no command. The keys of VALUE units are not checked
 * here (only the request knows them). A pure function. */
bool mc_rsp_fits(enum mc_cmd cmd, const struct mc_rsp *rsp);

/* Frames one unit from a backend: a line, or a VALUE line with its data
 * block moved into rsp->data. MC_AGAIN consumes nothing; MC_FATAL means
 * garbage (the caller resets the backend connection). */
enum mc_status mc_rsp_read(struct evbuffer *in, struct mc_rsp *rsp,
                           const struct mc_limits *lim);

#endif
