/*
 * fork_rate: a steady fork/exec workload for the guard benchmark.
 *
 *   fork_rate RATE SECONDS
 *
 * Forks RATE children per second for SECONDS seconds, on an absolute schedule
 * (clock_nanosleep, TIMER_ABSTIME: no drift); each child execs /bin/true, so every one
 * is a fork, an exec and an exit. Children are reaped as they finish. Prints
 * "forks N elapsed_ns E" on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void reap(int block) {
    for (;;) {
        pid_t p = waitpid(-1, NULL, block ? 0 : WNOHANG);
        if (p > 0) continue;
        if (p < 0 && errno == EINTR) continue;
        return;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s RATE SECONDS\n", argv[0]);
        return 2;
    }
    long rate = atol(argv[1]), secs = atol(argv[2]);
    if (rate <= 0 || secs <= 0) return 2;
    long total = rate * secs, step_ns = 1000000000L / rate, forks = 0;
    struct timespec t0, next, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    next = t0;
    for (long i = 0; i < total; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (pid > 0) forks++;
        reap(0);
        next.tv_nsec += step_ns;
        while (next.tv_nsec >= 1000000000L) { next.tv_nsec -= 1000000000L; next.tv_sec++; }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {}
    }
    reap(1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("forks %ld elapsed_ns %lld\n", forks, ns);
    return 0;
}
