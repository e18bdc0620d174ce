/* zk_int: what zk.c and zk_node.c share, not part of zk.h. */
#ifndef STRATA_ZK_INT_H
#define STRATA_ZK_INT_H

#include <stddef.h>

/* Writes a message into the caller's buffer (if any); returns -1 so that
 * callers can `return zk_error(...)`. */
__attribute__((format(printf, 3, 4)))
int zk_error(char *err, size_t errlen, const char *fmt, ...);

#endif
