/* test_crash: a fatal signal in a worker thread, a fault and a stack
 * overflow, is written to the log with a backtrace and the process still
 * dies of it. Each case runs in a child process. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "strata/crash.h"
#include "strata/log.h"

static char log_path[64];

/* Recursion without end (the depth is only known at run time, so the
 * compiler cannot tell). */
static volatile int depth_limit = -1;

static int deep(int n)
{
    volatile char frame[4096];
    frame[0] = (char)n;
    if (n == depth_limit)
        return 0;
    return deep(n + 1) + frame[0];
}

static void *fault_thread(void *arg)
{
    /* as a worker thread: every signal blocked before its set-up */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    void *stack = crash_thread_setup();
    if (arg != NULL) {
        raise(SIGSEGV);   /* as a fault would deliver it, in this thread */
    } else {
        deep(0);
    }
    crash_thread_teardown(stack);
    return NULL;
}

/* Runs the case in a child (no core: RLIMIT_CORE 0); the signal it died
 * of, and its log in buf. */
static int run_child(bool fault, char *buf, size_t len)
{
    snprintf(log_path, sizeof(log_path), "/tmp/test_crash.%ld.log", (long)getpid());
    unlink(log_path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        log_setup(LOG_NOTICE, log_path);
        crash_setup();
        pthread_t t;
        pthread_create(&t, NULL, fault_thread, fault ? (void *)1 : NULL);
        pthread_join(t, NULL);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    FILE *f = fopen(log_path, "r");
    size_t n = f != NULL ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f != NULL)
        fclose(f);
    unlink(log_path);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void expect_crash_log(bool fault)
{
    char buf[8192];
    assert_int_equal(run_child(fault, buf, sizeof(buf)), SIGSEGV);
    assert_non_null(strstr(buf, "[crash] ALERT signal 11 (SIGSEGV) received: pid "));
    assert_non_null(strstr(buf, "[crash] end of backtrace; the signal is delivered again"));
}

static void test_fault_in_a_thread_is_logged(void **state)
{
    (void)state;
    expect_crash_log(true);
}

static void test_stack_overflow_in_a_thread_is_logged(void **state)
{
    (void)state;
    expect_crash_log(false);
}

static void test_signal_names(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(crash_signal_name(SIGHUP, buf, sizeof(buf)), "SIGHUP");
    assert_string_equal(crash_signal_name(SIGTTIN, buf, sizeof(buf)), "SIGTTIN");
    assert_string_equal(crash_signal_name(SIGSEGV, buf, sizeof(buf)), "SIGSEGV");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_names),
        cmocka_unit_test(test_fault_in_a_thread_is_logged),
        cmocka_unit_test(test_stack_overflow_in_a_thread_is_logged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
