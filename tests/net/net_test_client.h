/* The loopback tests' server fixture, client jobs on a second thread and
 * the client's blocking socket: shared by test_loopback.c and test_conns.c.
 * Header-only (each test is one program). Not in net_test_loop.h because
 * test_peer_from.c, which includes that, has an on_request and a stats of
 * its own. */
#ifndef KV_TESTS_NET_CLIENT_H
#define KV_TESTS_NET_CLIENT_H

#include "net/net.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "net/frame.h"

#include "net_test_loop.h"
#include "net_test_util.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- the server side ---- */

#define HELD_MAX 8

typedef struct fixture {
    uv_loop_t loop;
    net_config cfg;
    net *n;
    bool hold;         /* on_request keeps requests instead of answering */
    size_t value_echo; /* answer with this many bytes of value (0: the key) */
    Kv__Request *held[HELD_MAX];
    net_conn *held_conn[HELD_MAX];
    int held_count;
    int requests_seen;
} fixture;

static uint8_t big_value[KV_VALUE_BYTES_MAX];

static inline void on_request(void *ctx, net_conn *c, Kv__Request *req) {
    fixture *f = ctx;
    f->requests_seen++;
    if (f->hold) {
        ck_assert_int_lt(f->held_count, HELD_MAX);
        net_conn_ref(c);
        f->held[f->held_count] = req;
        f->held_conn[f->held_count++] = c;
        return;
    }
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = req->id;
    r.index = req->value.len;
    r.value = req->key;
    if (f->value_echo > 0) {
        r.value.data = big_value;
        r.value.len = f->value_echo;
    }
    int rc = net_reply(c, &r);
    ck_assert(rc == 0 || rc == KV_ECLOSED || rc == KV_EBUSY);
    kv__request__free_unpacked(req, NULL);
}

static inline void on_raft_unused(void *ctx, const char *from, const raft_msg *m) {
    (void)ctx;
    (void)from;
    (void)m;
    ck_abort_msg("no Raft message expected here");
}

static inline void fixture_config(fixture *f, int port) {
    memset(f, 0, sizeof *f);
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
    net_config_default(&f->cfg);
    static char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    f->cfg.loop = &f->loop;
    f->cfg.listen_addr = addr;
    f->cfg.node_name = "n1";
    f->cfg.cluster_id = "c1";
    f->cfg.ctx = f;
    f->cfg.on_request = on_request;
    f->cfg.on_raft = on_raft_unused;
}

static inline void fixture_open(fixture *f) {
    ck_assert_int_eq(net_open(&f->cfg, &f->n), 0);
}

/* net_close must leave no handle behind: the loop then closes cleanly. */
static inline void fixture_close(fixture *f) {
    if (f->n != NULL)
        net_close(f->n);
    f->n = NULL;
    for (int i = 0; i < f->held_count; i++) {
        net_conn_unref(f->held_conn[i]);
        kv__request__free_unpacked(f->held[i], NULL);
    }
    ck_assert_int_eq(uv_loop_close(&f->loop), 0);
}

static inline net_stats stats(const fixture *f) {
    net_stats s;
    net_get_stats(f->n, &s);
    return s;
}

/* ---- jobs: a blocking client on its own thread ---- */

typedef struct job job;
struct job {
    void (*fn)(job *);
    fixture *f;
    int port;
    int fd; /* kept open across jobs when a test wants it */
    uint64_t seed;
    uv_async_t done;
    char fail[512];
};

#define JFAIL(j, ...)                                                                              \
    do {                                                                                           \
        if ((j)->fail[0] == '\0')                                                                  \
            snprintf((j)->fail, sizeof(j)->fail, __VA_ARGS__);                                     \
        return;                                                                                    \
    } while (0)
#define JCHECK(j, cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            JFAIL(j, "%s:%d: %s", __FILE__, __LINE__, #cond);                                      \
    } while (0)

static inline void *job_main(void *arg) {
    job *j = arg;
    j->fn(j);
    uv_async_send(&j->done);
    return NULL;
}

static inline void job_done_cb(uv_async_t *a) {
    uv_stop(a->loop);
}

/* Runs j->fn on a thread while the loop serves; returns when it is done. */
static inline void run_job(fixture *f, job *j, void (*fn)(job *)) {
    j->fn = fn;
    j->f = f;
    j->fail[0] = '\0';
    ck_assert_int_eq(uv_async_init(&f->loop, &j->done, job_done_cb), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, job_main, j), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    uv_close((uv_handle_t *)&j->done, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    ck_assert_msg(j->fail[0] == '\0', "client: %s", j->fail);
}

/* ---- the client's blocking socket ---- */

static inline int cli_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline bool cli_write(int fd, const void *buf, size_t len) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* 1: read len bytes; 0: EOF or reset before any; -1: timeout, error, or a
 * short read. */
static inline int cli_read(int fd, void *buf, size_t len) {
    uint8_t *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, p + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return got == 0 ? 0 : -1;
        if (n < 0)
            return -1;
        got += (size_t)n;
    }
    return 1;
}

static inline bool cli_send(int fd, uint8_t type, const ProtobufCMessage *msg) {
    uint8_t *buf;
    size_t len;
    if (kv_frame_pack(type, msg, &buf, &len) != 0)
        return false;
    bool ok = cli_write(fd, buf, len);
    free(buf);
    return ok;
}

/* Reads one frame of type; returns its payload (malloc'd) or NULL. */
static inline uint8_t *cli_recv(int fd, uint8_t type, size_t *len) {
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    kv_frame_header h;
    if (cli_read(fd, hdr, sizeof hdr) != 1 ||
        kv_frame_header_decode(hdr, KV_FRAME_BYTES_MAX, &h) != 0 || h.type != type)
        return NULL;
    uint8_t *p = malloc(h.length + 1u);
    if (cli_read(fd, p, h.length) != 1 && h.length > 0) {
        free(p);
        return NULL;
    }
    if (kv_frame_payload_check(&h, p) != 0) {
        free(p);
        return NULL;
    }
    *len = h.length;
    return p;
}

/* True when the server closes the connection (EOF or reset) with nothing
 * more to read. */
static inline bool cli_closed(int fd) {
    uint8_t b;
    return cli_read(fd, &b, 1) == 0;
}

static inline Kv__HelloReply *cli_hello(int fd, uint32_t version, const char *cluster,
                                        const char *token, const char *name) {
    Kv__Hello h = KV__HELLO__INIT;
    h.version = version;
    h.cluster_id = (char *)cluster;
    h.token = (char *)token;
    h.node_name = (char *)name;
    if (!cli_send(fd, KV_FRAME_HELLO, &h.base))
        return NULL;
    size_t len;
    uint8_t *p = cli_recv(fd, KV_FRAME_HELLO_REPLY, &len);
    if (p == NULL)
        return NULL;
    Kv__HelloReply *r = kv__hello_reply__unpack(NULL, len, p);
    free(p);
    return r;
}

/* A client connection past a successful handshake, or -1. */
static inline int cli_open(int port) {
    int fd = cli_connect(port);
    if (fd < 0)
        return -1;
    Kv__HelloReply *r = cli_hello(fd, KV_WIRE_VERSION, "", "", "");
    bool ok = r != NULL && r->code == 0;
    if (r != NULL)
        kv__hello_reply__free_unpacked(r, NULL);
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline bool cli_put(int fd, uint64_t id, const char *key, const void *value,
                           size_t value_len) {
    Kv__Request q = KV__REQUEST__INIT;
    q.id = id;
    q.type = KV__REQUEST__TYPE__PUT;
    q.key.data = (uint8_t *)key;
    q.key.len = strlen(key);
    q.value.data = (uint8_t *)value;
    q.value.len = value_len;
    return cli_send(fd, KV_FRAME_REQUEST, &q.base);
}

static inline Kv__Response *cli_response(int fd) {
    size_t len;
    uint8_t *p = cli_recv(fd, KV_FRAME_RESPONSE, &len);
    if (p == NULL)
        return NULL;
    Kv__Response *r = kv__response__unpack(NULL, len, p);
    free(p);
    return r;
}

/* One PUT on fd answered as on_request answers it (key echoed). */
static inline bool cli_roundtrip(int fd, uint64_t id, const char *key) {
    if (!cli_put(fd, id, key, "v", 1))
        return false;
    Kv__Response *r = cli_response(fd);
    bool ok = r != NULL && r->id == id && r->code == 0 && r->index == 1 &&
              nt_bytes_eq(r->value.data, r->value.len, key, strlen(key));
    if (r != NULL)
        kv__response__free_unpacked(r, NULL);
    return ok;
}

#endif
