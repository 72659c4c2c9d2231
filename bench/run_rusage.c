/*
 * run_rusage: run one command, print its wall time and peak RSS.
 *
 *   run_rusage CMD [ARGS...]
 *
 * Prints "WALL_NS MAXRSS_KIB STATUS" on stdout, where STATUS is the raw wait status.
 * The command's stdout and stderr go to /dev/null.
 *
 * Why a C helper instead of Python's os.wait4(): on Linux, exec records the *old*
 * address space's high-water RSS into the child's ru_maxrss (exec_mmap ->
 * setmax_mm_hiwater_rss). A child forked (or vforked/posix_spawned) from a 20 MiB
 * Python driver therefore reports >= 20 MiB however small the program it execs.
 * Forking from this tiny static program keeps that floor at a few hundred KiB; the
 * benchmark shows it as the `/bin/true` row.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CMD [ARGS...]\n", argv[0]);
        return 2;
    }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) { perror("run_rusage: /dev/null"); return 2; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("run_rusage: fork"); return 2; }
    if (pid == 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) { perror("run_rusage: wait4"); return 2; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("%lld %ld %d\n", ns, ru.ru_maxrss, status);
    return 0;
}
