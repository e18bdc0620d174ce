/* log: one line per event, "[time] LEVEL file:line message", to stderr or
 * the -o file. The level and the file are the only process-wide state. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "strata/log.h"

static int   log_level_cur = LOG_NOTICE;
static int   log_fd = STDERR_FILENO;
static char *log_path;

static const char *const level_names[] = {
    "EMERG", "ALERT", "CRIT", "ERROR", "WARN", "NOTICE",
    "INFO", "DEBUG", "VERB", "VVERB", "VVVERB", "PVERB",
};

static int log_open(const char *path)
{
    if (path == NULL)
        return STDERR_FILENO;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int log_setup(int level, const char *path)
{
    log_level_set(level);
    int fd = log_open(path);
    if (fd < 0)
        return -1;
    log_fd = fd;
    free(log_path);
    log_path = path != NULL ? strdup(path) : NULL;
    return 0;
}

void log_teardown(void)
{
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = STDERR_FILENO;
    free(log_path);
    log_path = NULL;
}

int log_reopen(void)
{
    if (log_path == NULL)
        return 0;
    int fd = log_open(log_path);
    if (fd < 0)
        return -1;
    int old = log_fd;
    log_fd = fd;
    close(old);
    return 0;
}

void log_level_set(int level)
{
    if (level < 0)
        level = 0;
    if (level > LOG_LEVEL_MAX)
        level = LOG_LEVEL_MAX;
    __atomic_store_n(&log_level_cur, level, __ATOMIC_RELAXED);
}

void log_level_up(void)   { log_level_set(log_level_cur + 1); }
void log_level_down(void) { log_level_set(log_level_cur - 1); }

int log_fd_current(void)
{
    return __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
}

bool log_loggable(int level)
{
    return level <= __atomic_load_n(&log_level_cur, __ATOMIC_RELAXED);
}

void log_write(int level, const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    struct timeval tv;
    struct tm tm;
    int errno_saved = errno;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "[%Y-%m-%d %H:%M:%S", &tm);
    const char *base = strrchr(file, '/');
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, ".%03ld] %s %s:%d ",
                          (long)(tv.tv_usec / 1000),
                          level_names[level < 0 ? 0 : level],
                          base != NULL ? base + 1 : file, line);
    if (n < sizeof(buf)) {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
        va_end(ap);
        n += m > 0 ? (size_t)m : 0;
    }
    if (n >= sizeof(buf) - 1)
        n = sizeof(buf) - 2;
    buf[n++] = '\n';
    /* One write per line: lines from several workers never interleave. */
    ssize_t unused = write(__atomic_load_n(&log_fd, __ATOMIC_RELAXED), buf, n);
    (void)unused;
    errno = errno_saved;
}
