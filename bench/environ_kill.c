/*
 * environ_kill: what the GitHub runner does at the end of a job, in lean C: read every
 * /proc/PID/environ, and SIGKILL each process that carries RUNNER_TRACKING_ID=MARKER.
 * No grace period, no process groups, no second look for children born meanwhile.
 *
 *   environ_kill MARKER
 *
 * The marker is an argument, not our own environment, so this program never matches
 * itself (it also skips its own pid). Kills by plain pid, like the runner (which reads
 * the environment of every process and calls Process.Kill on the matches).
 * Prints "matched=M killed=K" on stdout.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *buf;
static size_t cap = 1 << 16;

/* Reads the whole file into buf; returns its length or -1. */
static ssize_t slurp(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) { close(fd); return -1; }
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    return (ssize_t)len;
}

int main(int argc, char **argv) {
    if (argc != 2 || !*argv[1]) {
        fprintf(stderr, "usage: %s MARKER\n", argv[0]);
        return 2;
    }
    char want[512];
    int wl = snprintf(want, sizeof want, "RUNNER_TRACKING_ID=%s", argv[1]);
    if (wl < 0 || (size_t)wl >= sizeof want) return 2;
    buf = malloc(cap);
    if (!buf) return 1;
    pid_t me = getpid();
    DIR *d = opendir("/proc");
    if (!d) { perror("environ_kill: /proc"); return 1; }
    int matched = 0, killed = 0;
    struct dirent *e;
    char path[64];
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == me) continue;
        snprintf(path, sizeof path, "/proc/%ld/environ", pid);
        ssize_t n = slurp(path);
        if (n <= 0) continue;
        /* Entries are NUL-separated; compare whole entries. */
        for (ssize_t off = 0; off < n;) {
            char *entry = buf + off;
            size_t el = strnlen(entry, (size_t)(n - off));
            if (el == (size_t)wl && memcmp(entry, want, (size_t)wl) == 0) {
                matched++;
                if (kill((pid_t)pid, SIGKILL) == 0) killed++;
                break;
            }
            off += (ssize_t)el + 1;
        }
    }
    closedir(d);
    printf("matched=%d killed=%d\n", matched, killed);
    return 0;
}
