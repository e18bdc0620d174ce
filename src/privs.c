/* privs: dropping root privileges to a named user (memcached's -u). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "strata/privs.h"

/* The uid and gid of `user` from the password database. Returns 0, or
 * -1 with a message in err. */
static int privs_lookup(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    char buf[4096];
    struct passwd pw, *found = NULL;
    int rc = getpwnam_r(user, &pw, buf, sizeof(buf), &found);
    if (found == NULL) {
        snprintf(err, errlen, "cannot switch to user '%s': %s", user,
                 rc != 0 ? strerror(rc) : "no such user");
        return -1;
    }
    *uid = pw.pw_uid;
    *gid = pw.pw_gid;
    return 0;
}

/* True when the real, effective and saved ids all equal uid and gid. */
static bool privs_are(uid_t uid, gid_t gid)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0)
        return false;
    return ru == uid && eu == uid && su == uid && rg == gid && eg == gid && sg == gid;
}

/* setgroups, setgid, setuid, in that order: each later step needs the
 * privilege the earlier ones still have. */
static int privs_switch(const char *user, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    const char *step = NULL;
    if (setgroups(1, &gid) != 0)
        step = "setgroups";
    else if (setgid(gid) != 0)
        step = "setgid";
    else if (setuid(uid) != 0)
        step = "setuid";
    if (step != NULL) {
        snprintf(err, errlen, "cannot switch to user '%s': %s: %s", user, step,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* Whether switching to `user` needs doing: 1 (running as root), 0 (not
 * root, and `user` is who we run as) or -1 with a message in err. */
static int privs_target(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
    if (privs_lookup(user, uid, gid, err, errlen) != 0)
        return -1;
    if (geteuid() == 0)
        return 1;
    if (*uid == geteuid())
        return 0;
    snprintf(err, errlen, "cannot switch to user '%s': not running as root", user);
    return -1;
}

int privs_check(const char *user, char *err, size_t errlen)
{
    uid_t uid;
    gid_t gid;
    return privs_target(user, &uid, &gid, err, errlen) < 0 ? -1 : 0;
}

int privs_drop(const char *user, char *err, size_t errlen)
{
    uid_t uid;
    gid_t gid;
    int need = privs_target(user, &uid, &gid, err, errlen);
    if (need <= 0)
        return need;
    if (privs_switch(user, uid, gid, err, errlen) != 0)
        return -1;
    if (!privs_are(uid, gid) || (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))) {
        snprintf(err, errlen, "switched to user '%s', but root can still be regained", user);
        return -1;
    }
    return 0;
}
