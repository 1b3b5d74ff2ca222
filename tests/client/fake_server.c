/* A fake kv node: see fake_server.h. */
#include "fake_server.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "net/frame.h"
#include "proto/kv.pb-c.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAKE_CONNS_MAX 16
#define FAKE_KEYS_MAX 4096
#define FAKE_SESSIONS_MAX 64
#define FAKE_LOG_MAX 65536
#define FAKE_HELLOS_MAX 64
#define FAKE_PORT_FIRST 22000
#define FAKE_PORT_SPAN 900 /* below tests/cluster's 23000.. */

typedef struct fake_kv {
    uint8_t *key, *value;
    size_t key_len, value_len;
} fake_kv;

typedef struct fake_session {
    uint64_t client_id, last_seq;
    int last_code;
} fake_session;

typedef struct fake_conn {
    int fd;
    bool hello_done;
    uint8_t *buf;
    size_t len, cap;
} fake_conn;

struct fake_server {
    fake_config cfg;
    char addr[32];
    int port;
    int listen_fd;
    int wake[2];
    pthread_t tid;
    pthread_mutex_t mu;
    fake_conn conns[FAKE_CONNS_MAX];
    fake_kv kvs[FAKE_KEYS_MAX];
    size_t kvs_count;
    fake_session sessions[FAKE_SESSIONS_MAX];
    size_t sessions_count;
    uint64_t next_client_id;
    uint64_t applied, duplicates, registers, writes_seen;
    bool expired_once;
    fake_req *log;
    uint64_t log_count;
    char hello_cluster[FAKE_HELLOS_MAX][40];
    uint64_t hellos;
};

static void send_frame(int fd, uint8_t type, const ProtobufCMessage *m) {
    uint8_t *buf;
    size_t len;
    if (kv_frame_pack(type, m, &buf, &len) != 0)
        abort();
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break; /* the client went: nothing to do */
        }
        off += (size_t)n;
    }
    free(buf);
}

static fake_kv *find(fake_server *f, const ProtobufCBinaryData *key) {
    for (size_t i = 0; i < f->kvs_count; i++)
        if (f->kvs[i].key_len == key->len && memcmp(f->kvs[i].key, key->data, key->len) == 0)
            return &f->kvs[i];
    return NULL;
}

static void set_value(fake_server *f, const ProtobufCBinaryData *key,
                      const ProtobufCBinaryData *value) {
    fake_kv *e = find(f, key);
    if (e == NULL) {
        assert(f->kvs_count < FAKE_KEYS_MAX);
        e = &f->kvs[f->kvs_count++];
        e->key = malloc(key->len + 1);
        if (key->len > 0)
            memcpy(e->key, key->data, key->len);
        e->key_len = key->len;
    } else {
        free(e->value);
    }
    e->value = malloc(value->len + 1);
    if (value->len > 0)
        memcpy(e->value, value->data, value->len);
    e->value_len = value->len;
}

static void del_value(fake_server *f, fake_kv *e) {
    free(e->key);
    free(e->value);
    *e = f->kvs[--f->kvs_count];
}

static fake_session *session(fake_server *f, uint64_t id) {
    for (size_t i = 0; i < f->sessions_count; i++)
        if (f->sessions[i].client_id == id)
            return &f->sessions[i];
    return NULL;
}

/* Applies a write to the map; the reply's code (current set on COMPARE). */
static int apply(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    fake_kv *e = find(f, &q->key);
    switch (q->type) {
    case KV__REQUEST__TYPE__PUT:
        set_value(f, &q->key, &q->value);
        return 0;
    case KV__REQUEST__TYPE__DELETE:
        if (e == NULL)
            return KV_ENOTFOUND;
        del_value(f, e);
        return 0;
    case KV__REQUEST__TYPE__CAS:
    case KV__REQUEST__TYPE__CAS_ABSENT: {
        bool ok =
            q->type == KV__REQUEST__TYPE__CAS_ABSENT
                ? e == NULL
                : e != NULL && e->value_len == q->expected.len &&
                      (e->value_len == 0 || memcmp(e->value, q->expected.data, e->value_len) == 0);
        if (!ok) {
            r->current_present = e != NULL;
            if (e != NULL)
                r->current = (ProtobufCBinaryData){e->value_len, e->value};
            return KV_ECOMPARE;
        }
        set_value(f, &q->key, &q->value);
        return 0;
    }
    default:
        return KV_EPROTO;
    }
}

/* A write: returns false when the connection must close unanswered. */
static bool on_write(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    f->writes_seen++;
    if (f->cfg.busy_forever || f->writes_seen <= f->cfg.busy_writes) {
        r->code = KV_EBUSY;
        return true;
    }
    fake_session *s = q->client_id ? session(f, q->client_id) : NULL;
    if (q->client_id != 0 && f->cfg.expire_session_once && !f->expired_once && s != NULL) {
        f->expired_once = true;
        *s = f->sessions[--f->sessions_count]; /* evicted */
        s = NULL;
    }
    if (q->client_id != 0 && s == NULL) {
        r->code = KV_ESTALE;
        r->detail = "session expired";
        return true;
    }
    if (s != NULL && q->seq == s->last_seq) {
        f->duplicates++;
        r->code = s->last_code; /* the stored reply */
        return true;
    }
    if (s != NULL && q->seq < s->last_seq) {
        r->code = KV_ESTALE;
        r->detail = "seq superseded by a newer one";
        return true;
    }
    r->code = apply(f, q, r);
    f->applied++;
    if (s != NULL) {
        s->last_seq = q->seq;
        s->last_code = r->code;
    }
    return f->cfg.close_after_apply == 0 || f->applied != f->cfg.close_after_apply;
}

static int cmp_kv(const void *a, const void *b) {
    const fake_kv *x = *(fake_kv *const *)a, *y = *(fake_kv *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = n ? memcmp(x->key, y->key, n) : 0;
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Fills r for a SCAN; returns the array to free after sending. */
static void *on_scan(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    fake_kv **m = calloc(f->kvs_count + 1, sizeof *m);
    size_t n = 0;
    for (size_t i = 0; i < f->kvs_count; i++) {
        fake_kv *e = &f->kvs[i];
        if (e->key_len < q->key.len ||
            (q->key.len > 0 && memcmp(e->key, q->key.data, q->key.len) != 0))
            continue;
        fake_kv after = {.key = q->start_after.data, .key_len = q->start_after.len};
        fake_kv *pa = &after;
        if (q->start_after.len > 0 && cmp_kv(&e, &pa) <= 0)
            continue;
        m[n++] = e;
    }
    qsort(m, n, sizeof *m, cmp_kv);
    size_t limit = q->limit ? q->limit : KV_SCAN_KEYS_MAX;
    size_t k = n < limit ? n : limit;
    r->more = n > k;
    Kv__KeyValue *kvs = calloc(k + 1, sizeof *kvs);
    Kv__KeyValue **ptrs = calloc(k + 1, sizeof *ptrs);
    for (size_t i = 0; i < k; i++) {
        kv__key_value__init(&kvs[i]);
        kvs[i].key = (ProtobufCBinaryData){m[i]->key_len, m[i]->key};
        kvs[i].value = (ProtobufCBinaryData){m[i]->value_len, m[i]->value};
        ptrs[i] = &kvs[i];
    }
    r->n_kvs = k;
    r->kvs = ptrs;
    free(m);
    void **keep = malloc(2 * sizeof *keep);
    keep[0] = kvs;
    keep[1] = ptrs;
    return keep;
}

static void log_req(fake_server *f, const Kv__Request *q) {
    if (f->log_count >= FAKE_LOG_MAX)
        return;
    fake_req *l = &f->log[f->log_count++];
    *l = (fake_req){.type = q->type, .client_id = q->client_id, .seq = q->seq};
    size_t n = q->key.len < sizeof l->key - 1 ? q->key.len : sizeof l->key - 1;
    if (n > 0)
        memcpy(l->key, q->key.data, n);
}

/* Handles one request; false: close the connection without an answer. */
static bool on_request(fake_server *f, fake_conn *fc, const Kv__Request *q) {
    Kv__Response r = KV__RESPONSE__INIT;
    Kv__NodeStatus st = KV__NODE_STATUS__INIT;
    r.id = q->id;
    void **scan_keep = NULL;
    log_req(f, q);
    if (f->cfg.black_hole)
        return true;
    bool leader_only =
        q->type != KV__REQUEST__TYPE__STATUS &&
        !(q->stale && (q->type == KV__REQUEST__TYPE__GET || q->type == KV__REQUEST__TYPE__SCAN));
    bool answer = true;
    if (leader_only && f->cfg.follower) {
        r.code = KV_ENOTLEADER;
        r.detail = (char *)(f->cfg.notleader_detail ? f->cfg.notleader_detail : "not the leader");
        r.outcome_unknown = f->cfg.notleader_unknown;
        r.leader_address = (char *)(f->cfg.leader_address ? f->cfg.leader_address : "");
    } else if (leader_only && f->cfg.unavailable) {
        r.code = KV_EUNAVAILABLE;
        r.detail = "no leader";
    } else if (q->type == KV__REQUEST__TYPE__REGISTER) {
        f->registers++;
        assert(f->sessions_count < FAKE_SESSIONS_MAX);
        fake_session *s = &f->sessions[f->sessions_count++];
        *s = (fake_session){.client_id = f->next_client_id++};
        r.client_id = s->client_id;
    } else if (q->type == KV__REQUEST__TYPE__GET) {
        fake_kv *e = find(f, &q->key);
        r.code = e ? 0 : KV_ENOTFOUND;
        if (e != NULL)
            r.value = (ProtobufCBinaryData){e->value_len, e->value};
        r.index = f->applied;
    } else if (q->type == KV__REQUEST__TYPE__SCAN) {
        scan_keep = on_scan(f, q, &r);
    } else if (q->type == KV__REQUEST__TYPE__STATUS) {
        st.name = (char *)(f->cfg.name ? f->cfg.name : "f");
        st.address = f->addr;
        st.role = f->cfg.follower ? "follower" : "leader";
        st.term = 3;
        st.leader_name = f->cfg.follower ? "" : st.name;
        st.commit = st.applied = st.last_index = f->applied;
        st.snapshot_index = 0;
        st.version = "0.1.0";
        st.cluster_id = "fake-cluster";
        st.warning = "";
        r.status = &st;
    } else {
        answer = on_write(f, q, &r);
    }
    if (answer)
        send_frame(fc->fd, KV_FRAME_RESPONSE, &r.base);
    if (scan_keep != NULL) {
        free(scan_keep[0]);
        free(scan_keep[1]);
        free(scan_keep);
    }
    return answer;
}

static bool on_hello(fake_server *f, fake_conn *fc, const uint8_t *p, uint32_t len) {
    Kv__Hello *h = kv__hello__unpack(NULL, len, p);
    if (h == NULL)
        return false;
    if (f->hellos < FAKE_HELLOS_MAX)
        snprintf(f->hello_cluster[f->hellos], sizeof f->hello_cluster[0], "%s", h->cluster_id);
    f->hellos++;
    Kv__HelloReply r = KV__HELLO_REPLY__INIT;
    r.node_name = (char *)(f->cfg.name ? f->cfg.name : "f");
    r.cluster_id = "fake-cluster";
    r.version = KV_WIRE_VERSION;
    if (f->cfg.token != NULL && strcmp(h->token, f->cfg.token) != 0) {
        r.code = KV_EAUTH;
        r.reason = "wrong token";
    } else if (h->cluster_id[0] != '\0' && strcmp(h->cluster_id, "fake-cluster") != 0) {
        r.code = KV_ECONFIG;
        r.reason = "another cluster";
    }
    kv__hello__free_unpacked(h, NULL);
    send_frame(fc->fd, KV_FRAME_HELLO_REPLY, &r.base);
    fc->hello_done = true;
    return r.code == 0;
}

static void conn_close(fake_conn *fc) {
    close(fc->fd);
    free(fc->buf);
    *fc = (fake_conn){.fd = -1};
}

/* Reads what came and handles every whole frame. */
static void on_readable(fake_server *f, fake_conn *fc) {
    if (fc->cap - fc->len < 65536) {
        fc->cap = fc->cap ? 2 * fc->cap : 65536 * 4;
        fc->buf = realloc(fc->buf, fc->cap);
    }
    ssize_t n = recv(fc->fd, fc->buf + fc->len, fc->cap - fc->len, 0);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        conn_close(fc);
        return;
    }
    fc->len += (size_t)n;
    size_t off = 0;
    while (fc->len - off >= KV_FRAME_HEADER_BYTES) {
        kv_frame_header h;
        if (kv_frame_header_decode(fc->buf + off, KV_FRAME_BYTES_MAX, &h) != 0) {
            conn_close(fc);
            return;
        }
        if (fc->len - off < KV_FRAME_HEADER_BYTES + h.length)
            break;
        const uint8_t *p = fc->buf + off + KV_FRAME_HEADER_BYTES;
        off += KV_FRAME_HEADER_BYTES + h.length;
        bool keep;
        pthread_mutex_lock(&f->mu);
        if (!fc->hello_done) {
            keep = h.type == KV_FRAME_HELLO && on_hello(f, fc, p, h.length);
        } else {
            Kv__Request *q = kv__request__unpack(NULL, h.length, p);
            keep = q != NULL && h.type == KV_FRAME_REQUEST && on_request(f, fc, q);
            if (q != NULL)
                kv__request__free_unpacked(q, NULL);
        }
        pthread_mutex_unlock(&f->mu);
        if (!keep) {
            conn_close(fc);
            return;
        }
    }
    memmove(fc->buf, fc->buf + off, fc->len - off);
    fc->len -= off;
}

static void *fake_run(void *arg) {
    fake_server *f = arg;
    for (;;) {
        struct pollfd p[FAKE_CONNS_MAX + 2];
        int map[FAKE_CONNS_MAX + 2];
        nfds_t n = 0;
        p[n++] = (struct pollfd){.fd = f->wake[0], .events = POLLIN};
        p[n++] = (struct pollfd){.fd = f->listen_fd, .events = POLLIN};
        for (int i = 0; i < FAKE_CONNS_MAX; i++)
            if (f->conns[i].fd >= 0) {
                map[n] = i;
                p[n++] = (struct pollfd){.fd = f->conns[i].fd, .events = POLLIN};
            }
        if (poll(p, n, -1) < 0)
            continue;
        if (p[0].revents)
            break;
        if (p[1].revents & POLLIN) {
            int fd = accept(f->listen_fd, NULL, NULL);
            int i = 0;
            while (fd >= 0 && i < FAKE_CONNS_MAX && f->conns[i].fd >= 0)
                i++;
            if (fd >= 0 && i < FAKE_CONNS_MAX)
                f->conns[i] = (fake_conn){.fd = fd};
            else if (fd >= 0)
                close(fd);
        }
        for (nfds_t k = 2; k < n; k++)
            if (p[k].revents)
                on_readable(f, &f->conns[map[k]]);
    }
    return NULL;
}

fake_server *fake_start(const fake_config *cfg) {
    fake_server *f = calloc(1, sizeof *f);
    f->cfg = *cfg;
    f->next_client_id = 100;
    f->log = calloc(FAKE_LOG_MAX, sizeof *f->log);
    for (int i = 0; i < FAKE_CONNS_MAX; i++)
        f->conns[i].fd = -1;
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(f->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int start = (int)(((unsigned)getpid() * 131u + (unsigned)(uintptr_t)f / 64u) % FAKE_PORT_SPAN);
    for (int i = 0; i < FAKE_PORT_SPAN && f->port == 0; i++) {
        int port = FAKE_PORT_FIRST + (start + i) % FAKE_PORT_SPAN;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) == 0)
            f->port = port;
    }
    if (f->port == 0 || listen(f->listen_fd, 64) != 0 || pipe(f->wake) != 0) {
        close(f->listen_fd);
        free(f->log);
        free(f);
        return NULL;
    }
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", f->port);
    pthread_mutex_init(&f->mu, NULL);
    if (pthread_create(&f->tid, NULL, fake_run, f) != 0)
        abort();
    return f;
}

void fake_stop(fake_server *f) {
    if (f == NULL)
        return;
    if (write(f->wake[1], "x", 1) != 1)
        abort();
    pthread_join(f->tid, NULL);
    close(f->listen_fd);
    close(f->wake[0]);
    close(f->wake[1]);
    for (int i = 0; i < FAKE_CONNS_MAX; i++)
        if (f->conns[i].fd >= 0)
            conn_close(&f->conns[i]);
    while (f->kvs_count > 0)
        del_value(f, &f->kvs[0]);
    pthread_mutex_destroy(&f->mu);
    free(f->log);
    free(f);
}

const char *fake_addr(const fake_server *f) {
    return f->addr;
}

int fake_port(const fake_server *f) {
    return f->port;
}

#define FAKE_COUNTER(fn, field)                                                                    \
    uint64_t fn(fake_server *f) {                                                                  \
        pthread_mutex_lock(&f->mu);                                                                \
        uint64_t v = f->field;                                                                     \
        pthread_mutex_unlock(&f->mu);                                                              \
        return v;                                                                                  \
    }
FAKE_COUNTER(fake_applied, applied)
FAKE_COUNTER(fake_duplicates, duplicates)
FAKE_COUNTER(fake_registers, registers)
FAKE_COUNTER(fake_hellos, hellos)
FAKE_COUNTER(fake_requests, log_count)

bool fake_hello_cluster(fake_server *f, uint64_t n, char *out, size_t out_len) {
    pthread_mutex_lock(&f->mu);
    bool ok = n < f->hellos && n < FAKE_HELLOS_MAX;
    if (ok)
        snprintf(out, out_len, "%s", f->hello_cluster[n]);
    pthread_mutex_unlock(&f->mu);
    return ok;
}

bool fake_request(fake_server *f, uint64_t n, fake_req *out) {
    pthread_mutex_lock(&f->mu);
    bool ok = n < f->log_count;
    if (ok)
        *out = f->log[n];
    pthread_mutex_unlock(&f->mu);
    return ok;
}

void *fake_value(fake_server *f, const char *key, size_t *len) {
    pthread_mutex_lock(&f->mu);
    ProtobufCBinaryData k = {strlen(key), (uint8_t *)key};
    fake_kv *e = find(f, &k);
    void *v = NULL;
    if (e != NULL) {
        v = malloc(e->value_len + 1);
        if (e->value_len > 0)
            memcpy(v, e->value, e->value_len);
        *len = e->value_len;
    }
    pthread_mutex_unlock(&f->mu);
    return v;
}
