/* proto_redis_int: what the RESP framers share: reasons, least sizes of
 * units, and reading the "<type><number>\r\n" head of a unit at an
 * offset of an evbuffer without draining it (the request framer; the
 * reply framer runs a byte machine over the chains instead, since a reply
 * can hold millions of units and a lookup by offset walks the chains).
 * Internal to src/proto_redis_*.c. */
#ifndef STRATA_PROTO_REDIS_INT_H
#define STRATA_PROTO_REDIS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata/proto_redis.h"

struct evbuffer;

/* Reasons for REDIS_ERROR and REDIS_FATAL (static strings, one place). */
#define REDIS_ERR_UNSUPPORTED  "unsupported command"
#define REDIS_ERR_ARITY        "wrong number of arguments"
#define REDIS_ERR_NUMKEYS      "invalid numkeys"
#define REDIS_ERR_INLINE       "inline commands are not supported"
#define REDIS_ERR_MULTIBULK    "invalid multibulk length"
#define REDIS_ERR_BULK_HEAD    "expected '$'"
#define REDIS_ERR_BULK         "invalid bulk length"
#define REDIS_ERR_BULK_END     "missing CRLF after bulk"
#define REDIS_ERR_TOO_MANY     "too many arguments"
#define REDIS_ERR_TOO_LARGE    "request too large"
#define REDIS_ERR_NOMEM        "out of memory"

/* The fewest bytes a bulk takes ("$0\r\n\r\n") and a reply element
 * takes ("+\r\n"): what is announced but not yet read is counted at
 * least this much against the limits. */
#define REDIS_BULK_MIN 6
#define REDIS_ELEM_MIN 3

/* The longest head: type byte, '-', 19 digits, "\r\n". */
#define REDIS_HEAD_MAX 23

/* Copies the byte at `off` of `in` into *c; false when it has not
 * arrived. */
bool redis_frame_byte(struct evbuffer *in, size_t off, char *c);

/* Reads the number of the head at `off` (its type byte is not looked
 * at): an optional '-', then digits without a leading zero (but "0"),
 * then "\r\n". REDIS_OK with *val and *hlen (the whole head's bytes),
 * REDIS_AGAIN while what has arrived can still become a valid head,
 * REDIS_FATAL when it cannot (so a verdict never depends on how the
 * bytes were split). */
enum redis_status redis_frame_number(struct evbuffer *in, size_t off,
                                     int64_t *val, size_t *hlen);

/* Whether the two bytes at `off` are "\r\n": 1 yes, 0 no (as soon as
 * the first one is not "\r"), -1 not there yet. */
int redis_frame_crlf(struct evbuffer *in, size_t off);

#endif
