/*
 * spawn_idle: fork N idle children for the snapshot benchmark.
 *
 *   spawn_idle N TCP_PCT UNIX_PCT UNIX_DIR
 *
 * Child i listens on TCP 127.0.0.1:0 when (i % 100) < TCP_PCT, on a unix socket
 * UNIX_DIR/s<i>.sock when (i % 100) < TCP_PCT + UNIX_PCT, and otherwise only pause()s.
 * Every child writes one byte to a shared pipe once it is set up ('k' ok, 'E' failed);
 * the parent reads N bytes (no sleeps), prints one line
 *
 *   ready n=N tcp=T unix=U pgid=P
 *
 * on stdout and then waits until its stdin reaches EOF. Then it SIGKILLs and reaps
 * every child itself and exits 0.
 *
 * The parent makes itself a process-group leader (setpgid(0,0)) and the children
 * stay in that group, so an outside cleanup can kill exactly this tree with
 * `kill -KILL -- -PGID`. Children also get PR_SET_PDEATHSIG=SIGKILL, so they die
 * with the parent if it is killed first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t *kids;
static int nkids;

static void kill_and_reap(void) {
    for (int i = 0; i < nkids; i++)
        kill(kids[i], SIGKILL);
    /* Reap everything we forked (they are our children). */
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
}

static int child_setup(int kind, int idx, const char *dir) {
    if (kind == 't') {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return -1;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = 0;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return -1;
        if (listen(s, 16) < 0) return -1;
    } else if (kind == 'u') {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0) return -1;
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        int n = snprintf(a.sun_path, sizeof a.sun_path, "%s/s%d.sock", dir, idx);
        if (n < 0 || (size_t)n >= sizeof a.sun_path) { errno = ENAMETOOLONG; return -1; }
        unlink(a.sun_path);
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return -1;
        if (listen(s, 16) < 0) return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s N TCP_PCT UNIX_PCT UNIX_DIR\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]), tcp_pct = atoi(argv[2]), unix_pct = atoi(argv[3]);
    const char *dir = argv[4];
    if (n <= 0 || tcp_pct < 0 || unix_pct < 0 || tcp_pct + unix_pct > 100) {
        fprintf(stderr, "spawn_idle: bad arguments\n");
        return 2;
    }
    if (setpgid(0, 0) < 0) { perror("spawn_idle: setpgid"); return 1; }
    signal(SIGPIPE, SIG_IGN);

    int ready[2];
    if (pipe(ready) < 0) { perror("spawn_idle: pipe"); return 1; }
    int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0) { perror("spawn_idle: /dev/null"); return 1; }

    kids = calloc((size_t)n, sizeof *kids);
    if (!kids) { perror("spawn_idle: calloc"); return 1; }
    pid_t parent = getpid();
    int ntcp = 0, nunix = 0;

    for (int i = 0; i < n; i++) {
        int slot = i % 100;
        int kind = slot < tcp_pct ? 't' : slot < tcp_pct + unix_pct ? 'u' : 'p';
        if (kind == 't') ntcp++;
        if (kind == 'u') nunix++;
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "spawn_idle: fork #%d failed: %s\n", i, strerror(errno));
            kill_and_reap();
            return 1;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            close(ready[0]);
            dup2(devnull, 0);
            dup2(devnull, 1);
            close(devnull);
            char b = child_setup(kind, i, dir) == 0 ? 'k' : 'E';
            if (b == 'E')
                fprintf(stderr, "spawn_idle: child %d (%c): %s\n", i, kind, strerror(errno));
            while (write(ready[1], &b, 1) < 0 && errno == EINTR)
                ;
            close(ready[1]);
            for (;;) pause();
        }
        kids[nkids++] = pid;
    }
    close(ready[1]);
    close(devnull);

    int got = 0, bad = 0;
    char buf[4096];
    while (got < n) {
        ssize_t r = read(ready[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* EOF: some child died before reporting */
        for (ssize_t k = 0; k < r; k++)
            if (buf[k] != 'k') bad++;
        got += (int)r;
    }
    close(ready[0]);
    if (got < n || bad) {
        fprintf(stderr, "spawn_idle: only %d/%d children ready, %d failed\n", got - bad, n, bad);
        kill_and_reap();
        return 1;
    }
    printf("ready n=%d tcp=%d unix=%d pgid=%d\n", n, ntcp, nunix, (int)getpgid(0));
    fflush(stdout);

    /* Idle until whoever started us closes our stdin. */
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR)) break;
    }
    kill_and_reap();
    return 0;
}
