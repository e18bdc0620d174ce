/* crash: a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) is
 * written to the log with a backtrace, then delivered again with its
 * default action, so the process still dies of it and dumps core as it
 * would have (nutcracker and redis-server log a crash the same way). */
#ifndef STRATA_CRASH_H
#define STRATA_CRASH_H

/* Installs the handlers (on an alternate stack, so a stack overflow is
 * reported too). Call once, from the main thread, after log_setup. */
void crash_setup(void);

/* An alternate signal stack for the calling thread (each worker), so
 * that its stack overflow is logged too: the stack to give back to
 * crash_thread_teardown when the thread ends, or NULL (warned). */
void *crash_thread_setup(void);
void crash_thread_teardown(void *stack);

/* "SIGHUP" for SIGHUP: the signal's name for log lines ("SIG?" when
 * unknown). */
const char *crash_signal_name(int sig, char *buf, unsigned len);

#endif
