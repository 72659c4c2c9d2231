/*
 * sweep_floor: the C reference for the sweep benchmark (bench/sweep_ns.sh): the least work a
 * sweep can do, in lean C, so that ci-janitor's cost is measured as a ratio to it.
 *
 *   sweep_floor baseline FILE   record every process (pid, start time) and every listening
 *                               TCP socket (inode) in FILE
 *   sweep_floor sweep FILE      kill what appeared since, and wait until it is gone and its
 *                               ports are free
 *
 * The sweep:
 *   1. lists /proc (getdents) and reads /proc/PID/stat of every process (open, read,
 *      close): a process is new when its (pid, start time) is not in the baseline; zombies
 *      and kernel threads are skipped, and so are this program and its ancestors;
 *   2. opens a pidfd for each new process (after its stat was read: the window in which its
 *      pid could be reused in between is accepted here, ci-janitor re-checks);
 *   3. sends SIGKILL once per process group (kill(-pgid)) when every live member of the
 *      group is new, otherwise to each new member through its pidfd;
 *   4. waits on all pidfds with one epoll set until every one has exited;
 *   5. dumps the listening TCP sockets (IPv4 and IPv6) with netlink sock_diag, and repeats
 *      that (every 1 ms, for at most 5 s) until none but the baseline's is left.
 * No grace period, no classification, no report: only diff, kill per group, wait, check.
 * Prints "new=N groups=G group_kills=K pidfd_kills=P ports_left=L" on stdout.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

struct proc {
    int pid, ppid, pgid;
    unsigned long long start;
    char state;
};

static struct proc *procs;
static size_t nprocs, capprocs;

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* Parses /proc/PID/stat: state, ppid, pgrp and starttime (field 22), after the last ')'. */
static int read_stat(int pid, struct proc *p) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    if (!s || s[1] != ' ') return -1;
    s += 2;
    p->pid = pid;
    p->state = *s;
    /* fields 4.. : ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
     * stime cutime cstime priority nice num_threads itrealvalue starttime */
    unsigned long long f[19];
    char *e = s + 1;
    for (int i = 0; i < 19; i++) f[i] = strtoull(e, &e, 10);
    p->ppid = (int)f[0];
    p->pgid = (int)f[1];
    p->start = f[18];
    return 0;
}

/* Every process in /proc, into procs[]. Kernel threads (flags & PF_KTHREAD would need one
 * more field; ppid 2 or pid 2 is enough here) are kept but never new in a namespace. */
static void scan(void) {
    DIR *d = opendir("/proc");
    if (!d) die("opendir /proc");
    struct dirent *de;
    nprocs = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
        if (nprocs == capprocs) {
            capprocs = capprocs ? capprocs * 2 : 1024;
            procs = realloc(procs, capprocs * sizeof *procs);
            if (!procs) die("realloc");
        }
        if (read_stat(atoi(de->d_name), &procs[nprocs]) == 0) nprocs++;
    }
    closedir(d);
}

static int cmp_proc(const void *a, const void *b) {
    const struct proc *x = a, *y = b;
    return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The inodes of the listening TCP sockets, IPv4 and IPv6: one sock_diag dump each. */
static size_t listeners(uint64_t **out) {
    static uint64_t *inodes;
    static size_t cap;
    size_t n = 0;
    int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (s < 0) die("socket netlink");
    int families[2] = {AF_INET, AF_INET6};
    static char buf[1 << 16];
    for (int fi = 0; fi < 2; fi++) {
        struct {
            struct nlmsghdr nlh;
            struct inet_diag_req_v2 req;
        } msg = {0};
        msg.nlh.nlmsg_len = sizeof msg;
        msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        msg.req.sdiag_family = families[fi];
        msg.req.sdiag_protocol = IPPROTO_TCP;
        msg.req.idiag_states = 1 << TCP_LISTEN;
        struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
        if (sendto(s, &msg, sizeof msg, 0, (struct sockaddr *)&nl, sizeof nl) < 0) die("sendto");
        for (int done = 0; !done;) {
            ssize_t r = recv(s, buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                die("recv");
            }
            for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)r);
                 h = NLMSG_NEXT(h, r)) {
                if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
                    done = 1;
                    break;
                }
                struct inet_diag_msg *m = NLMSG_DATA(h);
                if (n == cap) {
                    cap = cap ? cap * 2 : 256;
                    inodes = realloc(inodes, cap * sizeof *inodes);
                    if (!inodes) die("realloc");
                }
                inodes[n++] = m->idiag_inode;
            }
        }
    }
    close(s);
    qsort(inodes, n, sizeof *inodes, cmp_u64);
    *out = inodes;
    return n;
}

/* Orders indices into procs[] by process group. */
static int cmp_pgid(const void *a, const void *b) {
    int x = procs[*(const size_t *)a].pgid, y = procs[*(const size_t *)b].pgid;
    return x < y ? -1 : x > y;
}

static int do_baseline(const char *file) {
    scan();
    uint64_t *inodes;
    size_t ni = listeners(&inodes);
    FILE *f = fopen(file, "w");
    if (!f) die(file);
    fprintf(f, "%zu %zu\n", nprocs, ni);
    for (size_t i = 0; i < nprocs; i++) fprintf(f, "%d %llu\n", procs[i].pid, procs[i].start);
    for (size_t i = 0; i < ni; i++) fprintf(f, "%llu\n", (unsigned long long)inodes[i]);
    if (fclose(f)) die(file);
    return 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int do_sweep(const char *file) {
    FILE *f = fopen(file, "r");
    if (!f) die(file);
    size_t nb, nbi;
    if (fscanf(f, "%zu %zu", &nb, &nbi) != 2) die("baseline header");
    struct proc *base = calloc(nb + 1, sizeof *base);
    uint64_t *base_inodes = calloc(nbi + 1, sizeof *base_inodes);
    if (!base || !base_inodes) die("calloc");
    for (size_t i = 0; i < nb; i++)
        if (fscanf(f, "%d %llu", &base[i].pid, &base[i].start) != 2) die("baseline process");
    for (size_t i = 0; i < nbi; i++) {
        unsigned long long x;
        if (fscanf(f, "%llu", &x) != 1) die("baseline socket");
        base_inodes[i] = x;
    }
    fclose(f);
    qsort(base, nb, sizeof *base, cmp_proc);

    /* Enough descriptors for one pidfd per process. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    scan();
    qsort(procs, nprocs, sizeof *procs, cmp_proc);
    /* Ancestors (this program up to the namespace's init) are never targets. */
    int me = getpid();
    char *is_new = calloc(nprocs + 1, 1);
    if (!is_new) die("calloc");
    for (size_t i = 0; i < nprocs; i++) {
        struct proc *p = &procs[i];
        if (p->state == 'Z' || p->state == 'X' || p->pid == 2 || p->ppid == 2) continue;
        struct proc *b = bsearch(p, base, nb, sizeof *base, cmp_proc);
        is_new[i] = !(b && b->start == p->start);
    }
    for (int pid = me; pid > 0;) {
        struct proc key = {.pid = pid};
        struct proc *a = bsearch(&key, procs, nprocs, sizeof *procs, cmp_proc);
        if (!a) break;
        is_new[a - procs] = 0;
        pid = a->ppid;
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int *pidfd = malloc((nprocs + 1) * sizeof *pidfd);
    if (!pidfd) die("malloc");
    size_t nnew = 0;
    for (size_t i = 0; i < nprocs; i++) {
        pidfd[i] = -1;
        if (!is_new[i]) continue;
        int fd = (int)syscall(SYS_pidfd_open, procs[i].pid, 0);
        if (fd < 0) {
            is_new[i] = 0; /* gone already */
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        pidfd[i] = fd;
        nnew++;
    }

    /* A group may be signalled whole when every live member of it is new. Sort indices by
     * pgid; a group is "pure" when none of its members is an old (non-zombie) process. */
    size_t *order = malloc((nprocs + 1) * sizeof *order);
    if (!order) die("malloc");
    for (size_t i = 0; i < nprocs; i++) order[i] = i;
    qsort(order, nprocs, sizeof *order, cmp_pgid);
    size_t groups = 0, group_kills = 0, pidfd_kills = 0;
    for (size_t s = 0; s < nprocs;) {
        size_t e = s;
        int pgid = procs[order[s]].pgid, pure = 1, any = 0;
        while (e < nprocs && procs[order[e]].pgid == pgid) {
            struct proc *p = &procs[order[e]];
            if (pidfd[order[e]] >= 0)
                any = 1;
            else if (p->state != 'Z' && p->state != 'X')
                pure = 0;
            e++;
        }
        if (any) {
            groups++;
            if (pure && pgid > 1 && kill(-pgid, SIGKILL) == 0) {
                group_kills++;
            } else {
                for (size_t k = s; k < e; k++) {
                    if (pidfd[order[k]] < 0) continue;
                    if (syscall(SYS_pidfd_send_signal, pidfd[order[k]], SIGKILL, NULL, 0) == 0)
                        pidfd_kills++;
                }
            }
        }
        s = e;
    }

    /* Wait until every pidfd has reported the exit. */
    size_t left = nnew;
    struct epoll_event evs[256];
    while (left > 0) {
        int r = epoll_wait(ep, evs, 256, 5000);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (r == 0) break; /* 5 s: something would not die */
        for (int k = 0; k < r; k++) {
            uint32_t i = evs[k].data.u32;
            epoll_ctl(ep, EPOLL_CTL_DEL, pidfd[i], NULL);
            close(pidfd[i]);
            pidfd[i] = -1;
            left--;
        }
    }

    /* Ports: no listening socket but the baseline's. */
    size_t ports_left = 0;
    double deadline = now_ms() + 5000;
    for (;;) {
        uint64_t *inodes;
        size_t ni = listeners(&inodes);
        ports_left = 0;
        for (size_t i = 0; i < ni; i++)
            if (!bsearch(&inodes[i], base_inodes, nbi, sizeof *base_inodes, cmp_u64)) ports_left++;
        if (ports_left == 0 || now_ms() > deadline) break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    printf("new=%zu groups=%zu group_kills=%zu pidfd_kills=%zu alive=%zu ports_left=%zu\n", nnew,
           groups, group_kills, pidfd_kills, left, ports_left);
    return left || ports_left ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s baseline|sweep FILE\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "baseline")) return do_baseline(argv[2]);
    if (!strcmp(argv[1], "sweep")) return do_sweep(argv[2]);
    fprintf(stderr, "usage: %s baseline|sweep FILE\n", argv[0]);
    return 2;
}
