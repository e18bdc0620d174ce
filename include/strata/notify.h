/* notify: the service manager's readiness protocol (sd_notify), so that
 * systemd's Type=notify knows when Strata serves, reloads and stops.
 * Without NOTIFY_SOCKET in the environment, or in a build without
 * libsystemd (configure --without-systemd), every call does nothing. */
#ifndef STRATA_NOTIFY_H
#define STRATA_NOTIFY_H

#include <stdbool.h>

/* True when this build sends notifications (libsystemd was found). */
bool notify_supported(void);
/* READY=1 with a STATUS= line: every listener is bound and the workers
 * run (at start, and when a reload was applied or rejected). */
void notify_ready(const char *status);
/* RELOADING=1: a reload (SIGUSR1) has started; notify_ready ends it. */
void notify_reloading(void);
/* STOPPING=1: shutdown has begun (SIGTERM, SIGINT). */
void notify_stopping(void);

#endif
