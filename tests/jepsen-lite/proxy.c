/*
 * kv-jepsen: a frame-aware proxy on every peer link (with --netns and the
 * "wire" nemesis), for the faults nftables cannot give: delay with jitter,
 * duplicated, reordered and cut frames.
 *
 * Node A's link to node B (A opens it; only A's RAFT frames flow on it after
 * the handshake) is redirected by a DNAT rule in A's namespace to a proxy
 * for the pair (A, B) listening in the clients' namespace at
 * 10.77.0.100:PROXY_PORT_BASE + 10*A + B. The proxy connects to B from
 * 10.77.1.<A+1>, an address of A's alone, so the partitions' drop rules at B
 * still see A (net.c drops both). What flows A -> B is read frame by frame
 * (frame.h: a 32-byte header, the payload length at byte 8) and faulted
 * while a wire event lasts; handshake frames and everything B -> A pass
 * untouched.
 *
 * Threads: one accept thread per pair, two per proxied connection; the
 * fault settings are atomics the nemesis sets from the main thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "jepsen.h"

#define PROXY_PORT_BASE 30000
#define FRAME_HEADER_BYTES 32u
#define FRAME_PAYLOAD_MAX (64u << 20) /* past it: not a frame of ours, cut */

/* The fault settings of every pair while a wire event lasts (0: none). */
static atomic_int wire_delay_ms, wire_jitter_ms, wire_dup_pct, wire_reorder_pct, wire_cut_pct;
static atomic_uint_fast64_t wire_frames, wire_faults;

typedef struct pipe_ctx {
    int from, to;
    bool faulted; /* the A -> B direction */
    uint64_t seed;
    int a, b; /* the pair */
} pipe_ctx;

static int read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t w = write(fd, (const char *)buf + put, n - put);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        put += (size_t)w;
    }
    return 0;
}

/* Reads one frame into *buf (grown as needed); its length or -1. */
static ssize_t read_frame(int fd, uint8_t **buf, size_t *cap) {
    uint8_t h[FRAME_HEADER_BYTES];
    if (read_full(fd, h, sizeof h) != 0)
        return -1;
    uint32_t len =
        (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
    if (len > FRAME_PAYLOAD_MAX)
        return -1;
    size_t total = FRAME_HEADER_BYTES + len;
    if (total > *cap) {
        uint8_t *b = realloc(*buf, total);
        if (b == NULL)
            return -1;
        *buf = b;
        *cap = total;
    }
    memcpy(*buf, h, sizeof h);
    if (len > 0 && read_full(fd, *buf + FRAME_HEADER_BYTES, len) != 0)
        return -1;
    return (ssize_t)total;
}

/* Sends one RAFT frame with the current faults; -1 ends the connection. */
static int send_faulted(pipe_ctx *p, rng *r, const uint8_t *f, size_t n, uint8_t **held,
                        size_t *held_n) {
    int delay = atomic_load(&wire_delay_ms), jitter = atomic_load(&wire_jitter_ms);
    atomic_fetch_add(&wire_frames, 1);
    if (delay + jitter > 0)
        sleep_ms((uint64_t)delay + rng_range(r, 0, (uint64_t)jitter));
    if ((int)rng_range(r, 0, 99) < atomic_load(&wire_cut_pct)) {
        atomic_fetch_add(&wire_faults, 1);
        write_full(p->to, f, n / 2); /* half a frame, then the link dies */
        return -1;
    }
    if (*held == NULL && (int)rng_range(r, 0, 99) < atomic_load(&wire_reorder_pct)) {
        *held = malloc(n); /* sent after the next frame */
        if (*held != NULL) {
            memcpy(*held, f, n);
            *held_n = n;
            atomic_fetch_add(&wire_faults, 1);
            return 0;
        }
    }
    int copies = (int)rng_range(r, 0, 99) < atomic_load(&wire_dup_pct) ? 2 : 1;
    for (int c = 0; c < copies; c++)
        if (write_full(p->to, f, n) != 0)
            return -1;
    atomic_fetch_add(&wire_faults, (uint64_t)(copies - 1));
    if (*held != NULL) {
        int rc = write_full(p->to, *held, *held_n);
        free(*held);
        *held = NULL;
        return rc;
    }
    return 0;
}

static void *pipe_main(void *arg) {
    pipe_ctx *p = arg;
    rng r = {p->seed};
    uint8_t *buf = NULL, *held = NULL;
    size_t cap = 0, held_n = 0;
    for (;;) {
        ssize_t n = read_frame(p->from, &buf, &cap);
        if (n < 0)
            break;
        bool raft = buf[5] == 5; /* type: KV_FRAME_RAFT */
        int rc = p->faulted && raft ? send_faulted(p, &r, buf, (size_t)n, &held, &held_n)
                                    : write_full(p->to, buf, (size_t)n);
        if (rc != 0)
            break;
    }
    shutdown(p->from, SHUT_RDWR);
    shutdown(p->to, SHUT_RDWR);
    free(buf);
    free(held);
    return NULL;
}

typedef struct pair_ctx {
    int a, b, lfd;
    pthread_t th;
} pair_ctx;

static pair_ctx pairs[NODES_MAX][NODES_MAX];

/* Connects to node b from A's proxy address 10.77.1.<a+1>. */
static int dial(int a, int b) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    char ip[32];
    snprintf(ip, sizeof ip, "10.77.1.%d", a + 1);
    inet_pton(AF_INET, ip, &src.sin_addr);
    node_host(b, ip, sizeof ip);
    inet_pton(AF_INET, ip, &dst.sin_addr);
    dst.sin_port = htons((uint16_t)node_port(b));
    /* as kvd's own peer links (src/net: TCP_USER_TIMEOUT), or the proxy
     * would hide a dead link from A by acknowledging what B never gets; a
     * connect gives up after two SYN retries, not the default two minutes */
    int one = 1, syncnt = 2;
    unsigned user_timeout_ms = 3000;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof syncnt);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Runs one proxied connection: dials B (here, not in the accept thread, so
 * a dial stalled by a partition never holds up the pair's next
 * connection), then two pipes; closes both ends when done. */
static void *conn_main(void *arg) {
    pipe_ctx *up = arg;
    up->to = dial(up->a, up->b);
    if (up->to < 0) {
        close(up->from);
        free(up);
        return NULL;
    }
    pipe_ctx down = {up->to, up->from, false, 0, up->a, up->b};
    pthread_t th;
    if (pthread_create(&th, NULL, pipe_main, &down) == 0) {
        pipe_main(up);
        pthread_join(th, NULL);
    }
    close(up->from);
    close(up->to);
    free(up);
    return NULL;
}

static void *accept_main(void *arg) {
    pair_ctx *pc = arg;
    uint64_t seq = 0;
    for (;;) {
        int c = accept4(pc->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* closed: proxy_stop */
        }
        pipe_ctx *p = malloc(sizeof *p);
        pthread_t th;
        if (p == NULL) {
            close(c);
            continue;
        }
        *p = (pipe_ctx){c, -1, true,
                        opt.seed ^ ((uint64_t)pc->a << 40) ^ ((uint64_t)pc->b << 32) ^ ++seq,
                        pc->a, pc->b};
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (pthread_create(&th, NULL, conn_main, p) != 0) {
            close(c);
            free(p);
            continue;
        }
        pthread_detach(th);
    }
}

static int listen_on(int a, int b) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy_port(a, b))};
    inet_pton(AF_INET, "10.77.0.100", &sa.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int proxy_port(int a, int b) {
    return PROXY_PORT_BASE + 10 * (a + 1) + (b + 1);
}

int proxy_start(void) {
    for (int a = 0; a < opt.nodes; a++)
        for (int b = 0; b < opt.nodes; b++) {
            if (a == b)
                continue;
            pair_ctx *pc = &pairs[a][b];
            *pc = (pair_ctx){.a = a, .b = b, .lfd = listen_on(a, b)};
            if (pc->lfd < 0 || pthread_create(&pc->th, NULL, accept_main, pc) != 0) {
                fprintf(stderr, "kv-jepsen: proxy n%d->n%d: %s\n", a + 1, b + 1, strerror(errno));
                return -1;
            }
            pthread_detach(pc->th);
        }
    return 0;
}

void proxy_faults(int delay_ms, int jitter_ms, int dup_pct, int reorder_pct, int cut_pct) {
    atomic_store(&wire_delay_ms, delay_ms);
    atomic_store(&wire_jitter_ms, jitter_ms);
    atomic_store(&wire_dup_pct, dup_pct);
    atomic_store(&wire_reorder_pct, reorder_pct);
    atomic_store(&wire_cut_pct, cut_pct);
}

void proxy_counts(uint64_t *frames, uint64_t *faults) {
    *frames = atomic_load(&wire_frames);
    *faults = atomic_load(&wire_faults);
}
