/*
 * proc_cost: what each piece of a /proc snapshot costs on this machine.
 *
 *   proc_cost [ROUNDS]
 *
 * For every process in /proc, does one kind of work at a time (read stat, read status,
 * readlink exe, walk fd/ and readlink each entry, ...) with the leanest syscalls
 * (openat on a /proc/PID dirfd, one read into a reused 64 KiB buffer, close), and prints
 * the median over ROUNDS (default 9) of the total time for the whole process table, plus
 * the cost per process. Also times the /proc/net tables (read in 1 MiB chunks).
 * Used to explain where `ci-janitor snapshot` spends its time; see BENCHMARKS.md.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXP 40000
static int pids[MAXP], npids;
static char buf[1 << 20];
static volatile long sink;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void list_pids(void) {
    npids = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while ((e = readdir(d)) && npids < MAXP)
        if (e->d_name[0] >= '1' && e->d_name[0] <= '9') pids[npids++] = atoi(e->d_name);
    closedir(d);
}

static int piddir(int pid) {
    char p[32];
    snprintf(p, sizeof p, "/proc/%d", pid);
    return open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static void read_at(int dfd, const char *name) {
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) sink += r;
    close(fd);
}

static void link_at(int dfd, const char *name) {
    ssize_t r = readlinkat(dfd, name, buf, 4096);
    if (r > 0) sink += r;
}

static void fds(int dfd) {
    int fd = openat(dfd, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return; }
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') link_at(fd, e->d_name);
    closedir(d);
}

enum { OPENDIR, STAT, STATUS, CMDLINE, ENVIRON, CGROUP, EXE, CWD, FD, ALL, NKIND };
static const char *names[NKIND] = {
    "open+close /proc/PID dir", "stat", "status", "cmdline", "environ", "cgroup",
    "readlink exe", "readlink cwd", "fd/ walk + readlink each", "all of the above, one pass",
};

static double run_kind(int k) {
    double t0 = now_ms();
    if (k == ALL) list_pids();
    for (int i = 0; i < npids; i++) {
        int d = piddir(pids[i]);
        if (d < 0) continue;
        switch (k) {
        case STAT: read_at(d, "stat"); break;
        case STATUS: read_at(d, "status"); break;
        case CMDLINE: read_at(d, "cmdline"); break;
        case ENVIRON: read_at(d, "environ"); break;
        case CGROUP: read_at(d, "cgroup"); break;
        case EXE: link_at(d, "exe"); break;
        case CWD: link_at(d, "cwd"); break;
        case FD: fds(d); break;
        case ALL:
            read_at(d, "stat"); read_at(d, "status"); read_at(d, "cmdline");
            read_at(d, "environ"); read_at(d, "cgroup"); link_at(d, "exe");
            link_at(d, "cwd"); fds(d);
            break;
        }
        close(d);
    }
    return now_ms() - t0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 9;
    if (rounds < 1 || rounds > 99) rounds = 9;
    double t[100];
    for (int r = 0; r < rounds; r++) { double t0 = now_ms(); list_pids(); t[r] = now_ms() - t0; }
    qsort(t, rounds, sizeof *t, cmp);
    printf("%d processes; median of %d rounds\n", npids, rounds);
    printf("%-30s %9s %11s\n", "work", "total ms", "us/process");
    printf("%-30s %9.2f %11.2f\n", "list /proc (getdents)", t[rounds / 2], 1e3 * t[rounds / 2] / npids);
    for (int k = 0; k < NKIND; k++) {
        for (int r = 0; r < rounds; r++) t[r] = run_kind(k);
        qsort(t, rounds, sizeof *t, cmp);
        printf("%-30s %9.2f %11.2f\n", names[k], t[rounds / 2], 1e3 * t[rounds / 2] / npids);
    }
    const char *nets[] = {"tcp", "tcp6", "udp", "udp6", "unix"};
    for (int k = 0; k < 5; k++) {
        char p[32];
        snprintf(p, sizeof p, "/proc/net/%s", nets[k]);
        for (int r = 0; r < rounds; r++) {
            double t0 = now_ms();
            read_at(AT_FDCWD, p);
            t[r] = now_ms() - t0;
        }
        qsort(t, rounds, sizeof *t, cmp);
        printf("%-30s %9.2f\n", p, t[rounds / 2]);
    }
    return 0;
}
