/* log: leveled logging to stderr or a file, with nutcracker's -v levels. */
#ifndef STRATA_LOG_H
#define STRATA_LOG_H

#include <stdbool.h>

/* nutcracker's levels (nc_log.h). */
enum log_level {
    LOG_EMERG = 0, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARN, LOG_NOTICE,
    LOG_INFO, LOG_DEBUG, LOG_VERB, LOG_VVERB, LOG_VVVERB, LOG_PVERB,
    LOG_LEVEL_MAX = LOG_PVERB,
};

/* Opens `path` for appending (NULL: stderr). Returns 0 or -1. */
int log_setup(int level, const char *path);
void log_teardown(void);
/* Reopens the log file (SIGHUP, for logrotate). */
int log_reopen(void);
void log_level_up(void);
void log_level_down(void);
void log_level_set(int level);
bool log_loggable(int level);

/* The descriptor lines go to (the crash handler writes there itself). */
int log_fd_current(void);

void log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_at(lvl, ...)                                              \
    do {                                                              \
        if (log_loggable(lvl))                                        \
            log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);        \
    } while (0)

#define log_error(...) log_at(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, __VA_ARGS__)
#define log_notice(...) log_at(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)  log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)

#endif
