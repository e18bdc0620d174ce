/* notify: READY, RELOADING and STOPPING for the service manager through
 * libsystemd's sd_notify (see notify.h); the only file that includes a
 * systemd header. */
#include <stdio.h>
#include <string.h>

#include "strata/log.h"
#include "strata/notify.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

bool notify_supported(void)
{
    return true;
}

/* Sends `state` (newline-separated assignments) when NOTIFY_SOCKET is
 * set. A failure is logged and otherwise ignored: the proxy serves
 * either way (systemd then times the start out and says so). */
static void notify_send(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0)
        log_warn("cannot notify the service manager (NOTIFY_SOCKET): %s", strerror(-rc));
}
#else
bool notify_supported(void)
{
    return false;
}

static void notify_send(const char *state)
{
    (void)state;
}
#endif

void notify_ready(const char *status)
{
    char state[512];
    snprintf(state, sizeof(state), "READY=1\nSTATUS=%s", status);
    notify_send(state);
}

void notify_reloading(void)
{
    notify_send("RELOADING=1\nSTATUS=reloading the configuration");
}

void notify_stopping(void)
{
    notify_send("STOPPING=1\nSTATUS=stopping: answering the requests in flight");
}
