/* privs: dropping root privileges to a named user (memcached's -u). */
#ifndef STRATA_PRIVS_H
#define STRATA_PRIVS_H

#include <stddef.h>

/* Switches the whole process to `user`: supplementary groups to the
 * user's primary group only, then gid, then uid, and checks that root
 * cannot be regained. Call it after every listener is bound and before
 * any thread is started. Not running as root, naming the current user is
 * a no-op and any other user an error. Returns 0, or -1 with a message in
 * err (the process may then be half switched: the caller must exit). */
int privs_drop(const char *user, char *err, size_t errlen);

/* What privs_drop would refuse without switching anything: an unknown
 * user, or another user while not running as root. Lets main fail before
 * it daemonizes. Returns 0, or -1 with a message in err. */
int privs_check(const char *user, char *err, size_t errlen);

#endif
