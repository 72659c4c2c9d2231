/*
 * subreaper: run a command as a child subreaper that reaps at once, like systemd or tini
 * as pid 1 (pid 1 on this VM reaps orphaned zombies only every 1-2 s).
 *
 *   subreaper CMD [ARGS...]
 *
 * Sets PR_SET_CHILD_SUBREAPER, forks and execs CMD, then reaps every child: CMD, and every
 * orphan of CMD's descendants, which the kernel reparents to us instead of pid 1. Exits
 * with CMD's status as soon as CMD has exited (adopted processes still alive then go on to
 * pid 1; the benchmark kills its own before it exits). SIGINT, SIGTERM and SIGHUP are
 * passed on to CMD.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t cmd = -1;

static void forward(int sig) {
    if (cmd > 0) kill(cmd, sig);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CMD [ARGS...]\n", argv[0]);
        return 2;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        perror("subreaper: prctl");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    cmd = fork();
    if (cmd < 0) { perror("subreaper: fork"); return 2; }
    if (cmd == 0) {
        execvp(argv[1], argv + 1);
        perror("subreaper: exec");
        _exit(127);
    }
    int rc = 1, status;
    for (;;) {
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: nothing left */
        }
        if (p == cmd) {
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    return rc;
}
