/*
 * spawn_groups: leave G process groups of K idle processes behind, orphaned, like a CI job
 * that leaked its servers. For the sweep benchmark (bench/sweep.sh).
 *
 *   spawn_groups G K IGNORE_PCT LISTEN_PCT TAG [RESPAWN_PCT [MAX_RESPAWNS]]
 *
 * Forks G group leaders; each calls setpgid(0,0) and forks K-1 members into its group.
 * Process i (i = group * K + member, 0-based) then
 *   - ignores SIGTERM (SIG_IGN) when ((i+1) * IGNORE_PCT) % 100 < IGNORE_PCT
 *     (10% with K = 10: the last member of every group);
 *   - listens on TCP 127.0.0.1:0 (its own socket, not inherited) when
 *     (i * LISTEN_PCT) % 100 < LISTEN_PCT (10% with K = 10: every group leader);
 *   - writes one line "pid starttime pgid ppid I L port" to a shared pipe
 *     (starttime = field 22 of /proc/PID/stat; I/L are 1/0 for ignores TERM / listens;
 *     each line is far below PIPE_BUF, so writes do not interleave) and pause()s forever.
 * With RESPAWN_PCT > 0, the leader of every group g with (g * RESPAWN_PCT) % 100 <
 * RESPAWN_PCT is a supervisor: it also ignores SIGTERM and, whenever one of its children
 * exits, forks a replacement (default SIGTERM disposition, not reported on the pipe: it is
 * born after the ground truth was taken; same group, cwd, environment and command line),
 * at most MAX_RESPAWNS times (default 50). Like `while :; do server; done` or a process
 * manager restarting its workers.
 * TAG is not used; it only makes every process's command line unique to this round (the
 * children are forks of this program, so they share its argv), for `pkill -f`.
 * Everything inherits the environment (the driver sets RUNNER_TRACKING_ID) and the cwd.
 *
 * The parent reads G*K lines (readiness over a pipe, no sleeps), prints
 *
 *   ready n=N groups=G ignore=I listen=L supervisors=S
 *
 * then the N lines, on stdout, and exits 0: the leaders are orphaned (reparented to the
 * nearest subreaper, or pid 1), the members stay their leader's children. It does NOT kill
 * what it started: that is the cleaner's job, and the driver's afterwards (by pid + start
 * time). On failure (a fork or a child fails, or nothing for 60 s) it prints the lines it got
 * after "failed ..." and exits 1, so the driver can still clean up by identity.
 * Children write to stderr only on a setup error; stdin/stdout are /dev/null.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int ready_w = -1, devnull = -1;
static volatile sig_atomic_t timed_out;

static void on_alarm(int sig) {
    (void)sig;
    timed_out = 1;
}

static unsigned long long my_starttime(void) {
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p += 2; /* field 3 (state) */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p) return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

/* Role of process i, set up in the process itself; then report and idle forever. */
/* A supervisor: reap children and fork a replacement for each, until the budget is spent. */
static void supervise(int max_respawns) {
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    int respawned = 0;
    for (;;) {
        pid_t c;
        while ((c = waitpid(-1, NULL, WNOHANG)) > 0) {
            if (respawned >= max_respawns) continue;
            respawned++;
            pid_t r = fork();
            if (r == 0) {
                signal(SIGTERM, SIG_DFL);
                signal(SIGCHLD, SIG_DFL);
                sigprocmask(SIG_SETMASK, &old, NULL);
                for (;;) pause();
            }
        }
        sigsuspend(&old); /* SIGCHLD has a handler, so this returns when a child exits */
    }
}

static void on_chld(int sig) { (void)sig; }

static void become_leak(int i, int ignore_pct, int listen_pct, int supervisor,
                        int max_respawns) {
    if (supervisor) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_chld;
        sa.sa_flags = SA_NOCLDSTOP;
        sigaction(SIGCHLD, &sa, NULL);
    }
    int ign = supervisor || ((i + 1) * ignore_pct) % 100 < ignore_pct;
    int lis = (i * listen_pct) % 100 < listen_pct;
    int port = 0, ok = 1;
    if (ign) signal(SIGTERM, SIG_IGN);
    if (lis) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0 ||
            getsockname(s, (struct sockaddr *)&a, &len) < 0) {
            fprintf(stderr, "spawn_groups: child %d: listen: %s\n", i, strerror(errno));
            ok = 0;
        } else {
            port = ntohs(a.sin_port);
        }
    }
    char line[128];
    int n = snprintf(line, sizeof line, "%d %llu %d %d %d %d %d\n", (int)getpid(),
                     my_starttime(), (int)getpgid(0), (int)getppid(), ign, lis, port);
    if (!ok) line[0] = 'E'; /* the parent counts it as a failure */
    while (write(ready_w, line, (size_t)n) < 0 && errno == EINTR)
        ;
    close(ready_w);
    close(devnull);
    if (supervisor) supervise(max_respawns);
    for (;;) pause();
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: %s G K IGNORE_PCT LISTEN_PCT TAG [RESPAWN_PCT [MAX_RESPAWNS]]\n",
                argv[0]);
        return 2;
    }
    int g = atoi(argv[1]), k = atoi(argv[2]);
    int ignore_pct = atoi(argv[3]), listen_pct = atoi(argv[4]);
    int respawn_pct = argc > 6 ? atoi(argv[6]) : 0;
    int max_respawns = argc > 7 ? atoi(argv[7]) : 50;
    if (g <= 0 || k <= 0 || ignore_pct < 0 || ignore_pct > 100 || listen_pct < 0 ||
        listen_pct > 100 || respawn_pct < 0 || respawn_pct > 100 || max_respawns < 0) {
        fprintf(stderr, "spawn_groups: bad arguments\n");
        return 2;
    }
    int n = g * k;
    signal(SIGPIPE, SIG_IGN);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) { perror("spawn_groups: pipe"); return 1; }
    ready_w = fds[1];
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) { perror("spawn_groups: /dev/null"); return 1; }
    fflush(stdout);

    for (int gi = 0; gi < g; gi++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "spawn_groups: fork of leader %d: %s\n", gi, strerror(errno));
            break;
        }
        if (pid == 0) {
            /* Leader: own group, then its members, then itself. */
            close(fds[0]);
            dup2(devnull, 0);
            dup2(devnull, 1);
            if (setpgid(0, 0) < 0) {
                fprintf(stderr, "spawn_groups: setpgid: %s\n", strerror(errno));
                _exit(1);
            }
            for (int m = 1; m < k; m++) {
                pid_t c = fork();
                if (c < 0) {
                    fprintf(stderr, "spawn_groups: fork of member %d/%d: %s\n", gi, m,
                            strerror(errno));
                    break; /* the parent sees fewer lines and fails */
                }
                if (c == 0) become_leak(gi * k + m, ignore_pct, listen_pct, 0, 0);
            }
            become_leak(gi * k, ignore_pct, listen_pct,
                        respawn_pct > 0 && (gi * respawn_pct) % 100 < respawn_pct, max_respawns);
        }
    }
    close(fds[1]);
    close(devnull);

    /* Read every line; bail out after 60 s without progress. */
    size_t cap = (size_t)n * 64 + 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) { perror("spawn_groups: malloc"); return 1; }
    int got = 0, bad = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: the read below fails with EINTR */
    sigaction(SIGALRM, &sa, NULL);
    alarm(60);
    while (got < n && !timed_out) {
        if (len + 256 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        ssize_t r = read(fds[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* EOF: every writer gone before all lines arrived */
        for (ssize_t i = 0; i < r; i++)
            if (buf[len + (size_t)i] == '\n') got++;
        len += (size_t)r;
    }
    alarm(0);
    buf[len] = 0;
    for (char *p = buf; *p;) {
        if (*p == 'E') bad++;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
    int nign = 0, nlis = 0, nsup = 0;
    for (int i = 0; i < n; i++) {
        int sup = i % k == 0 && respawn_pct > 0 && ((i / k) * respawn_pct) % 100 < respawn_pct;
        nsup += sup;
        nign += sup || ((i + 1) * ignore_pct) % 100 < ignore_pct;
        nlis += (i * listen_pct) % 100 < listen_pct;
    }
    if (got < n || bad) {
        printf("failed n=%d got=%d bad=%d\n", n, got, bad);
        fputs(buf, stdout);
        return 1;
    }
    printf("ready n=%d groups=%d ignore=%d listen=%d supervisors=%d\n", n, g, nign, nlis, nsup);
    fputs(buf, stdout);
    fflush(stdout);
    return 0;
}
