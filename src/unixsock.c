/* unixsock: what may be at, and where may be, a unix-socket listen's
 * file (unixsock.h). No sockets are opened here. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata/unixsock.h"

__attribute__((format(printf, 3, 4)))
static int unixsock_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* What kind of file `mode` is, for messages. */
static const char *unixsock_kind(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISLNK(mode))
        return "a symbolic link";
    if (S_ISFIFO(mode))
        return "a fifo";
    return "a device";
}

int unixsock_clear(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return unixsock_error(err, errlen, "cannot check %s: %s", path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return unixsock_error(err, errlen, "%s is %s, not a socket: refusing to replace it "
                              "(only a stale socket is removed)", path,
                              unixsock_kind(st.st_mode));
    if (unlink(path) != 0 && errno != ENOENT)
        return unixsock_error(err, errlen, "cannot remove the stale socket %s: %s", path,
                              strerror(errno));
    return 0;
}

void unixsock_remove(const char *path)
{
    struct stat st;
    if (path != NULL && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
}

/* The directory part of an absolute path (without its trailing '/',
 * "/" for the root) into buf. */
static void unixsock_dirname(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    snprintf(buf, len, "%.*s", (int)n, path);
}

/* Why `path` is not a plain absolute path to a file, or NULL. */
static const char *unixsock_lexical(const char *path)
{
    size_t len = strlen(path);
    if (path[0] != '/')
        return "is not an absolute path";
    if (path[len - 1] == '/')
        return "ends in '/'";
    if (strstr(path, "//") != NULL)
        return "has an empty path element";
    if (strstr(path, "/./") != NULL || strstr(path, "/../") != NULL ||
        (len >= 2 && strcmp(path + len - 2, "/.") == 0) ||
        (len >= 3 && strcmp(path + len - 3, "/..") == 0))
        return "has a '.' or '..' element";
    return NULL;
}

int unixsock_path_allowed(const char *path, const char *dir, char *err, size_t errlen)
{
    char parent[PATH_MAX], want[PATH_MAX];
    if (dir == NULL)
        return unixsock_error(err, errlen, "a unix socket listen (%s) from ZooKeeper is "
                              "refused: no unix_socket_dir is set in the settings file", path);
    if (dir[0] != '/')
        return unixsock_error(err, errlen, "unix_socket_dir %s is not an absolute path", dir);
    const char *why = unixsock_lexical(path);
    if (why != NULL)
        return unixsock_error(err, errlen, "unix socket path %s %s", path, why);
    snprintf(want, sizeof(want), "%s", dir);
    size_t wl = strlen(want);
    while (wl > 1 && want[wl - 1] == '/')
        want[--wl] = '\0';
    unixsock_dirname(path, parent, sizeof(parent));
    if (strcmp(parent, want) != 0)
        return unixsock_error(err, errlen, "unix socket path %s from ZooKeeper is not in "
                              "unix_socket_dir %s (only files directly in it are allowed)",
                              path, want);
    return 0;
}
