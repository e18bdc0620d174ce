/* unixsock: the rules for the file behind a unix-socket listen (see
 * docs/security.md, "Unix sockets"): only a socket is ever removed to
 * make room for a listener, and a path that comes from ZooKeeper must
 * lie directly in the directory unix_socket_dir allows. */
#ifndef STRATA_UNIXSOCK_H
#define STRATA_UNIXSOCK_H

#include <stddef.h>

/* Makes room for a listener at `path`: nothing there is fine; a socket
 * (a stale one) is unlinked; anything else (a regular file, a
 * directory, a symlink, a fifo, a device) is left alone. Returns 0, or
 * -1 with err ("PATH is a regular file, not a socket: ..."). */
int unixsock_clear(const char *path, char *err, size_t errlen);

/* Unlinks `path` only if it is a socket (at exit, or when a listener is
 * given up); anything else is left. */
void unixsock_remove(const char *path);

/* Whether a unix-socket path from ZooKeeper may be used: `dir` is
 * unix_socket_dir (NULL: none allowed). The path must be absolute,
 * without "." or ".." elements, and its directory must be `dir` itself
 * (compared as text: a subdirectory is not allowed; the file itself is
 * checked by unixsock_clear when it is bound).
 * Returns 0, or -1 with err. */
int unixsock_path_allowed(const char *path, const char *dir, char *err, size_t errlen);

#endif
