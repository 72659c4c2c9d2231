/*
 * guard_floor: the least a process-lineage guard can do, for bench/guard_side.sh to run
 * beside ci-janitor's guard over the same fork workload.
 *
 *   guard_floor JOURNAL        (runs until SIGTERM or SIGINT)
 *
 * Subscribes to the kernel's process events (the netlink proc connector, filtered in the
 * kernel on Linux 6.6+) on two sockets, as ci-janitor's guard does: exec events wake it at
 * once (a short-lived process must be read before it exits); fork and exit events are
 * taken with them, and wake it on their own only after 10 ms without a wake-up. For each
 * event:
 *   - fork: reads the child's /proc/PID/stat (its start time, the identity a birth needs);
 *   - exec: opens /proc/PID and reads cmdline and environ (scanning it for
 *     RUNNER_TRACKING_ID) and the fd/1 and fd/2 links (the pipes a hang report names);
 *   - exit: nothing to read;
 * then appends one line per event to JOURNAL with one write(2) per wake-up. Built with
 * -DNO_PIPES it skips the fd links, with -DNO_READS every /proc read (what the wake-ups
 * alone cost). No parsing
 * beyond that, no lineage, no JSON escaping: the physical floor of the guard's work on this
 * machine (the wake-ups, the system calls and the kernel's /proc formatting).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* struct proc_input of Linux 6.6+ (older headers lack it): the op, then the events wanted. */
struct listen_filtered {
    unsigned int mcast_op;
    unsigned int event_type;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static char journal[1 << 16];
static size_t used;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(journal + used, sizeof journal - used, fmt, ap);
    va_end(ap);
    if (n > 0 && used + (size_t)n < sizeof journal) used += (size_t)n;
}

static ssize_t read_at(int dir, const char *name, char *buf, size_t cap) {
    int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap);
    close(fd);
    return n;
}

static void on_fork(int pid) {
#ifdef NO_READS
    note("birth %d\n", pid);
    return;
#endif
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    /* Field 22, counted after the ')' that ends the name. */
    char *p = strrchr(buf, ')');
    unsigned long long start = 0;
    for (int field = 2; p && *p; p++) {
        if (*p == ' ' && ++field == 22) {
            start = strtoull(p + 1, NULL, 10);
            break;
        }
    }
    note("birth %d %llu\n", pid, start);
}

static void on_exec(int pid) {
#ifdef NO_READS
    note("exec %d\n", pid);
    return;
#endif
    static char buf[1 << 17];
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", pid);
    int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return;
    ssize_t n = read_at(dir, "cmdline", buf, sizeof buf);
    char argv0[128] = "";
    if (n > 0) snprintf(argv0, sizeof argv0, "%.*s", (int)strnlen(buf, (size_t)n), buf);
    n = read_at(dir, "environ", buf, sizeof buf);
    int marked = n > 0 && memmem(buf, (size_t)n, "RUNNER_TRACKING_ID=", 19) != NULL;
    char link[256];
#ifdef NO_PIPES
    ssize_t l1 = 0, l2 = 0;
    (void)link;
#else
    ssize_t l1 = readlinkat(dir, "fd/1", link, sizeof link);
    ssize_t l2 = readlinkat(dir, "fd/2", link, sizeof link);
#endif
    close(dir);
    note("exec %d %s %d %zd %zd\n", pid, argv0, marked, l1, l2);
}

static int subscribe(unsigned int events) {
    int sk = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (sk < 0) { perror("socket"); return -1; }
    int rcv = 4 << 20;
    setsockopt(sk, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
    struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0};
    if (bind(sk, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return -1; }
    /* PROC_CN_MCAST_LISTEN with an event filter (Linux 6.6+). */
    struct {
        struct nlmsghdr nl;
        struct cn_msg cn;
        struct listen_filtered in;
    } __attribute__((packed)) sub;
    memset(&sub, 0, sizeof sub);
    sub.nl.nlmsg_len = sizeof sub;
    sub.nl.nlmsg_type = NLMSG_DONE;
    sub.cn.id.idx = CN_IDX_PROC;
    sub.cn.id.val = CN_VAL_PROC;
    sub.cn.len = sizeof(struct listen_filtered);
    sub.in.mcast_op = PROC_CN_MCAST_LISTEN;
    sub.in.event_type = events;
    if (send(sk, &sub, sizeof sub, 0) < 0) { perror("send"); return -1; }
    return sk;
}

/* Handles every event queued on `sk`. */
static void drain(int sk) {
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = recv(sk, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR || errno == ENOBUFS) continue;
            return; /* EAGAIN: drained */
        }
        struct nlmsghdr *nl = (struct nlmsghdr *)buf;
        if (!NLMSG_OK(nl, (size_t)n)) continue;
        struct cn_msg *cn = NLMSG_DATA(nl);
        struct proc_event *ev = (struct proc_event *)cn->data;
        switch (ev->what) {
        case PROC_EVENT_FORK:
            if (ev->event_data.fork.child_pid == ev->event_data.fork.child_tgid)
                on_fork(ev->event_data.fork.child_tgid);
            break;
        case PROC_EVENT_EXEC:
            on_exec(ev->event_data.exec.process_tgid);
            break;
        case PROC_EVENT_EXIT:
            if (ev->event_data.exit.process_pid == ev->event_data.exit.process_tgid)
                note("exit %d %u\n", ev->event_data.exit.process_tgid,
                     ev->event_data.exit.exit_code);
            break;
        default:
            break;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s JOURNAL\n", argv[0]);
        return 2;
    }
    int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) { perror(argv[1]); return 1; }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int sk_exec = subscribe(PROC_EVENT_EXEC);
    int sk_fe = subscribe(PROC_EVENT_FORK | PROC_EVENT_EXIT);
    if (sk_exec < 0 || sk_fe < 0) return 1;

    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (!stop) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long since_ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
        /* Fork and exit events wake us only once 10 ms have passed since the last drain. */
        struct pollfd pfd[2] = {{.fd = sk_exec, .events = POLLIN}, {.fd = sk_fe, .events = POLLIN}};
        int nfds = since_ms >= 10 ? 2 : 1;
        int timeout = since_ms >= 10 ? -1 : (int)(10 - since_ms);
        if (poll(pfd, (nfds_t)nfds, timeout) < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 1;
        }
        /* Forks before execs: a fork's event is queued before its child's exec. */
        drain(sk_fe);
        drain(sk_exec);
        clock_gettime(CLOCK_MONOTONIC, &last);
        if (used) {
            ssize_t w = write(out, journal, used);
            (void)w;
            used = 0;
        }
    }
    return 0;
}
