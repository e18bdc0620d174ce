/* daemon: detaching with a launcher that waits for the start, and the pid
 * file (see daemon.h for the picture). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata/daemon.h"

/* The launcher of -d: waits until the daemon says it serves (a byte on
 * the pipe) or is gone (end of file). Returns the launcher's exit status:
 * 0, or 1 with a line on stderr. */
static int daemon_wait(int fd, const char *log_file)
{
    char c;
    ssize_t n;
    do {
        n = read(fd, &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1)
        return 0;
    fprintf(stderr, "strata: the daemon did not start%s%s\n",
            log_file != NULL ? "; see " : "", log_file != NULL ? log_file : "");
    return 1;
}

/* A start failure (a port in use, a bad user) is the launcher's non-zero
 * exit, not a silent 0; the daemon's stdio stays on the launcher's
 * terminal until daemon_ready, so start-up errors reach it. */
int daemon_start(const char *log_file, int *ready_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(p[1]);
        _exit(daemon_wait(p[0], log_file));
    }
    close(p[0]);
    if (setsid() < 0)
        return -1;
    signal(SIGHUP, SIG_IGN);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    umask(0);
    *ready_fd = p[1];
    return 0;
}

void daemon_ready(int *ready_fd)
{
    if (*ready_fd < 0)
        return;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    ssize_t unused = write(*ready_fd, "", 1);
    (void)unused;
    close(*ready_fd);
    *ready_fd = -1;
}

int daemon_pid_file_write(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f);
}
