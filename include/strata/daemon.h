/* daemon: -d and -p. The launcher of `strata -d` waits until the daemon
 * serves or fails and exits 0 or 1 accordingly:
 *
 *   launcher ── fork ──► child ── setsid, fork ──► daemon
 *      │                  (exits)                    │ start-up (stderr still
 *      │                                             │  the launcher's)
 *      ◄──────────── a byte on the pipe: serving ────┤ daemon_ready
 *      ◄──────────── end of file: it failed ─────────┘ (exit)
 */
#ifndef STRATA_DAEMON_H
#define STRATA_DAEMON_H

/* Detaches. Returns 0 in the daemon with *ready_fd to hand to
 * daemon_ready, or -1 (errno). The launcher never returns: it exits 0
 * once the daemon is ready, or 1 with "strata: the daemon did not start;
 * see LOG_FILE" on stderr (log_file may be NULL). */
int daemon_start(const char *log_file, int *ready_fd);

/* The daemon serves: its launcher may exit 0, and stdio leaves the
 * launcher's terminal for /dev/null. *ready_fd becomes -1; nothing when
 * it is already -1 (no -d). */
void daemon_ready(int *ready_fd);

/* Writes this process's pid to `path`. 0, or -1 (errno). */
int daemon_pid_file_write(const char *path);

#endif
