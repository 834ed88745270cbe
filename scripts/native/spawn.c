/* spawn LOG PROG ARGS...: runs PROG with stdin /dev/null, stdout /dev/null and
   stderr to LOG, waits for it, prints one JSON line: wall time, realtime at
   spawn and exit, and wait4's rusage. Forked from this small process, so the
   child's ru_maxrss is not inflated by the (large) Python parent's image. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: spawn LOG PROG ARGS...\n"); return 2; }
    int log = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (log < 0 || null < 0) { perror("open"); return 2; }
    double real0 = now(CLOCK_REALTIME), m0 = now(CLOCK_MONOTONIC);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
        dup2(null, 0); dup2(null, 1); dup2(log, 2);
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status; struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 2; }
    double m1 = now(CLOCK_MONOTONIC);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("{\"wall_ms\":%.3f,\"spawn\":%.6f,\"end\":%.6f,\"exit\":%d,\"maxrss_kib\":%ld,\"user_ms\":%.3f,\"sys_ms\":%.3f}\n",
           (m1 - m0) * 1e3, real0, real0 + (m1 - m0), code, ru.ru_maxrss,
           ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3, ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3);
    return 0;
}
