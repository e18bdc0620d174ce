/* crash: a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) is
 * written to the log with a backtrace, then delivered again with its
 * default action, so the process still dies of it and dumps core as it
 * would have (nutcracker and redis-server log a crash the same way). */
#ifndef STRATA_CRASH_H
#define STRATA_CRASH_H

/* Installs the handlers (on an alternate stack, so a stack overflow of
 * the main thread is reported too). Call once, from the main thread,
 * after log_setup. */
void crash_setup(void);

/* "SIGHUP" for SIGHUP: the signal's name for log lines ("SIG?" when
 * unknown). */
const char *crash_signal_name(int sig, char *buf, unsigned len);

#endif
