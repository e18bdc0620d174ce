/* crash: log a fatal signal and a backtrace, then die of it (crash.h). */
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strata/crash.h"
#include "strata/log.h"

#define CRASH_FRAMES     64
#define CRASH_STACK_SIZE (64 * 1024)

static const int crash_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };

const char *crash_signal_name(int sig, char *buf, unsigned len)
{
    const char *abbrev = sigabbrev_np(sig);
    snprintf(buf, len, "SIG%s", abbrev != NULL ? abbrev : "?");
    return buf;
}

/* Writes s with write(2): async-signal-safe. */
static void crash_puts(int fd, const char *s)
{
    ssize_t unused = write(fd, s, strlen(s));
    (void)unused;
}

/* Decimal of v into buf (async-signal-safe, no snprintf). */
static const char *crash_utoa(unsigned long v, char *buf, size_t len)
{
    char *p = buf + len - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && p > buf);
    return p;
}

/* Runs on the fatal signal, with the handler already reset to the
 * default (SA_RESETHAND): only async-signal-safe calls, then the signal
 * is raised again and kills the process as it would have. */
static void crash_handler(int sig)
{
    int fd = log_fd_current();
    char num[24];
    const char *abbrev = sigabbrev_np(sig);
    void *frames[CRASH_FRAMES];
    crash_puts(fd, "[crash] ALERT signal ");
    crash_puts(fd, crash_utoa((unsigned long)sig, num, sizeof(num)));
    crash_puts(fd, " (SIG");
    crash_puts(fd, abbrev != NULL ? abbrev : "?");
    crash_puts(fd, ") received: pid ");
    crash_puts(fd, crash_utoa((unsigned long)getpid(), num, sizeof(num)));
    crash_puts(fd, " is dying of it; backtrace:\n");
    int n = backtrace(frames, CRASH_FRAMES);
    backtrace_symbols_fd(frames, n, fd);
    crash_puts(fd, "[crash] end of backtrace; the signal is delivered again\n");
    raise(sig);
}

void *crash_thread_setup(void)
{
    /* a thread that blocks every signal (the workers: signals belong to
     * the main thread) would be killed by a fault without the handler */
    sigset_t fatal;
    sigemptyset(&fatal);
    for (size_t i = 0; i < sizeof(crash_signals) / sizeof(crash_signals[0]); i++)
        sigaddset(&fatal, crash_signals[i]);
    pthread_sigmask(SIG_UNBLOCK, &fatal, NULL);
    void *stack = malloc(CRASH_STACK_SIZE);
    stack_t ss = { .ss_sp = stack, .ss_size = CRASH_STACK_SIZE, .ss_flags = 0 };
    if (stack == NULL || sigaltstack(&ss, NULL) != 0) {
        log_warn("crash: no alternate signal stack: a stack overflow will not be logged");
        free(stack);
        return NULL;
    }
    return stack;
}

void crash_thread_teardown(void *stack)
{
    stack_t ss = { .ss_flags = SS_DISABLE };
    if (stack == NULL)
        return;
    sigaltstack(&ss, NULL);
    free(stack);
}

void crash_setup(void)
{
    static void *altstack;
    void *warm[1];
    /* backtrace() loads libgcc on its first call (it may allocate): do it
     * now, not in the handler. */
    (void)backtrace(warm, 1);
    if (altstack == NULL)
        altstack = crash_thread_setup();   /* the main thread's */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = crash_handler;
    sa.sa_flags = SA_RESETHAND | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(crash_signals) / sizeof(crash_signals[0]); i++)
        sigaction(crash_signals[i], &sa, NULL);
}
