/* LD_PRELOAD shim for the knob-write trace (bench/knobtrace.py): records, per FUSE request,
 * when libfuse's worker thread got it from /dev/fuse (read) and when it wrote the reply
 * (writev), with the thread id, opcode and unique id, in CLOCK_MONOTONIC nanoseconds (the
 * clock time.monotonic_ns() reads in both the daemon and the writer).  No locks: one slot
 * per event, taken with an atomic add.  fusetrace_dump(path) writes them as text. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SLOTS (1 << 20)
#define MAX_FD 1024
struct event { int64_t ns; int32_t tid; int32_t kind; uint32_t opcode; uint64_t unique; };
static struct event events[SLOTS];
static unsigned long used;
static signed char fd_is_fuse[MAX_FD];      /* 1 once seen to be /dev/fuse */
#define FUSE_READ_MIN 131072                /* libfuse reads /dev/fuse with a buffer this big */

/* Only positive answers are kept: a descriptor number another file used first may be
 * /dev/fuse's later.  Only reads as big as libfuse's are looked at. */
static int is_fuse(int fd, size_t count) {
    if (fd < 0 || fd >= MAX_FD) return 0;
    if (fd_is_fuse[fd] != 1 && count >= FUSE_READ_MIN) {
        char link[64], target[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n == 9 && !memcmp(target, "/dev/fuse", 9)) fd_is_fuse[fd] = 1;
    }
    return fd_is_fuse[fd] == 1;
}

static void record(int kind, uint32_t opcode, uint64_t unique) {
    unsigned long slot = __atomic_fetch_add(&used, 1, __ATOMIC_RELAXED);
    if (slot >= SLOTS) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    events[slot] = (struct event){ts.tv_sec * 1000000000LL + ts.tv_nsec,
                                  (int32_t)syscall(SYS_gettid), kind, opcode, unique};
}

ssize_t read(int fd, void *buf, size_t count) {
    static ssize_t (*real)(int, void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "read");
    ssize_t n = real(fd, buf, count);
    if (n >= 40 && is_fuse(fd, count)) {
        uint32_t *head = buf;                   /* fuse_in_header: len, opcode, unique */
        record(0, head[1], *(uint64_t *)((char *)buf + 8));
    }
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    static ssize_t (*real)(int, const struct iovec *, int);
    if (!real) real = dlsym(RTLD_NEXT, "writev");
    if (iovcnt > 0 && iov[0].iov_len >= 16 && is_fuse(fd, 0)) {
        int32_t *head = iov[0].iov_base;        /* fuse_out_header: len, error, unique */
        record(1, (uint32_t)head[1], *(uint64_t *)((char *)iov[0].iov_base + 8));
    }
    return real(fd, iov, iovcnt);
}

int fusetrace_dump(const char *path) {
    FILE *out = fopen(path, "w");
    if (!out) return -1;
    unsigned long n = used < SLOTS ? used : SLOTS;
    for (unsigned long i = 0; i < n; i++)
        fprintf(out, "%lld %d %d %u %llu\n", (long long)events[i].ns, events[i].tid,
                events[i].kind, events[i].opcode, (unsigned long long)events[i].unique);
    fclose(out);
    return (int)n;
}
