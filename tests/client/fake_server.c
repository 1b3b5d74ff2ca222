/* A fake kv node: see fake_server.h. */
#include "fake_server.h"

#include "common/checksum.h"
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
#define FAKE_SESSIONS_MAX                                                                          \
    1024 /* a shared client registers up to 64 (client_int.h KVC_SESSIONS_MAX) */
#define FAKE_LOG_MAX 65536
#define FAKE_HELLOS_MAX 64
#define FAKE_PORT_FIRST 22000
#define FAKE_PORT_SPAN 900 /* below tests/cluster's 23000.. */
#define FAKE_MEMBERS_MAX 16
#define FAKE_TYPES 32
#define FAKE_SNAP_BYTES_DEFAULT (5u * 512u * 1024u)
#define FAKE_SNAP_PIECE_DEFAULT (1024u * 1024u)
#define FAKE_SNAP_CHUNK 300000u

typedef struct fake_kv {
    uint8_t *key, *value;
    size_t key_len, value_len;
} fake_kv;

#define FAKE_LEASE_BASE 500u /* LEASE_GRANT: ids from here, one per write applied */

typedef struct fake_session {
    uint64_t client_id, last_seq;
    int last_code;
    uint64_t last_index; /* the stored reply's index (as the server's session) */
} fake_session;

typedef struct fake_member {
    char name[64], address[64];
    bool learner, joining;
    uint64_t id;
} fake_member;

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
    uint64_t type_counts[FAKE_TYPES];
    /* membership and operations */
    fake_member members[FAKE_MEMBERS_MAX];
    size_t members_count;
    uint64_t next_member_id;
    char leader_name[64], leader_addr[64];
    uint64_t changes_seen, changes_applied;
    char transfer_to[64];
    long transfer_left; /* STATUS answers before it switches; -1: none pending */
    bool transferring;  /* STATUS says it hands leadership to transfer_to */
    uint64_t hashes_seen, checkpoint, hash_index;
    uint32_t snap_reads, snap_gen;
    uint64_t snap_index, snap_term; /* the current snapshot; index 0: gone */
    uint8_t *snap;
    uint64_t snap_len;
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
    case KV__REQUEST__TYPE__LEASE_GRANT: /* the id is the entry's index */
        r->lease = r->index = FAKE_LEASE_BASE + f->applied;
        return 0;
    default:
        return KV_EPROTO;
    }
}

/* LEASE_KEEPALIVE: the leases granted (ids FAKE_LEASE_BASE + n) are alive,
 * with 9 s left; LEASE_LIST: the first one. */
static void on_lease(fake_server *f, const Kv__Request *q, Kv__Response *r, Kv__Lease *l,
                     Kv__Lease **lp) {
    kv__lease__init(l);
    *lp = l;
    l->id = q->type == KV__REQUEST__TYPE__LEASE_LIST ? FAKE_LEASE_BASE : q->lease;
    l->ttl = l->remaining = 9;
    bool known = l->id >= FAKE_LEASE_BASE && l->id < FAKE_LEASE_BASE + f->applied;
    r->code = known ? 0 : KV_ENOTFOUND;
    r->leases = known ? lp : NULL;
    r->n_leases = known;
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
        r->index = s->last_index;
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
        s->last_index = r->index;
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
    if ((unsigned)q->type < FAKE_TYPES)
        f->type_counts[q->type]++;
    if (f->log_count >= FAKE_LOG_MAX)
        return;
    fake_req *l = &f->log[f->log_count++];
    *l = (fake_req){.type = q->type, .client_id = q->client_id, .seq = q->seq};
    size_t n = q->key.len < sizeof l->key - 1 ? q->key.len : sizeof l->key - 1;
    if (n > 0)
        memcpy(l->key, q->key.data, n);
}

/* ---- membership and operations ---- */

static fake_member *member(fake_server *f, const char *name) {
    for (size_t i = 0; i < f->members_count; i++)
        if (strcmp(f->members[i].name, name) == 0)
            return &f->members[i];
    return NULL;
}

/* From now on a follower of member name. */
static void follow(fake_server *f, const char *leader) {
    char name[64];
    snprintf(name, sizeof name, "%s", leader); /* may be f->leader_name itself */
    snprintf(f->leader_name, sizeof f->leader_name, "%s", name);
    fake_member *m = member(f, name);
    snprintf(f->leader_addr, sizeof f->leader_addr, "%s", m ? m->address : "");
    f->cfg.follower = true;
    f->cfg.leader_address = f->leader_addr;
}

static bool name_ok(const char *s) {
    if (s == NULL || s[0] == '\0' || strlen(s) >= 64)
        return false;
    for (; *s; s++)
        if (*s <= ' ' || *s == ',' || *s == '=')
            return false;
    return true;
}

/* MEMBER_ADD, MEMBER_REMOVE; false: close unanswered. */
static bool on_change(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    if (++f->changes_seen <= f->cfg.busy_changes) {
        r->code = KV_EBUSY;
        r->detail = "a membership change is in progress";
        return true;
    }
    fake_member *m = member(f, q->name);
    if (q->type == KV__REQUEST__TYPE__MEMBER_ADD) {
        if (!name_ok(q->name) || q->address[0] == '\0' || strlen(q->address) >= 64)
            r->code = KV_EINVAL;
        else if (m != NULL)
            r->code = KV_EEXIST;
        else if (f->members_count == FAKE_MEMBERS_MAX)
            r->code = KV_ETOOBIG;
        else {
            m = &f->members[f->members_count++];
            *m = (fake_member){.learner = true, .id = f->next_member_id++};
            snprintf(m->name, sizeof m->name, "%s", q->name);
            snprintf(m->address, sizeof m->address, "%s", q->address);
        }
    } else if (m == NULL) {
        r->code = KV_ENOTFOUND;
    } else {
        *m = f->members[--f->members_count];
    }
    if (r->code != 0)
        return true;
    f->changes_applied++;
    return f->cfg.close_after_change == 0 || f->changes_applied != f->cfg.close_after_change;
}

static void on_transfer(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    if (member(f, q->name) == NULL) {
        r->code = KV_ENOTFOUND;
        return;
    }
    snprintf(f->transfer_to, sizeof f->transfer_to, "%s", q->name);
    f->transferring = !f->cfg.transfer_given_up;
    if (!f->cfg.transfer_never && !f->cfg.transfer_given_up)
        f->transfer_left = f->cfg.transfer_after;
}

static uint64_t mix(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The stream of generation gen of this node: u32 manifest length, the
 * manifest, chunk records (src/snapfile/snapfile.h). */
static uint8_t *make_stream(const fake_server *f, uint32_t gen, uint64_t *len) {
    uint32_t want = f->cfg.snap_bytes ? f->cfg.snap_bytes : FAKE_SNAP_BYTES_DEFAULT;
    uint8_t *b = malloc(want + FAKE_SNAP_CHUNK + 256);
    char manifest[128];
    int m = snprintf(manifest, sizeof manifest, "fake manifest of %s, generation %u",
                     f->cfg.name ? f->cfg.name : "f", gen);
    kv_put_u32(b, (uint32_t)m);
    memcpy(b + 4, manifest, (size_t)m);
    uint64_t off = 4 + (uint64_t)m;
    uint64_t x = kv_xxh3(manifest, (size_t)m) | 1;
    for (uint32_t k = 0; off < want; k++) {
        uint32_t n = FAKE_SNAP_CHUNK - k * 1000u;
        uint8_t *d = b + off + 16;
        for (uint32_t i = 0; i < n; i++)
            d[i] = (uint8_t)mix(&x);
        kv_put_u32(b + off, k);
        kv_put_u32(b + off + 4, n);
        kv_put_u64(b + off + 8, kv_xxh3(d, n));
        off += 16 + n;
    }
    *len = off;
    return b;
}

static void snap_meta(uint32_t gen, uint64_t *index, uint64_t *term) {
    *index = 50 + 10 * (uint64_t)gen;
    *term = 2 + gen / 2;
}

/* SNAPSHOT_READ; false: close unanswered. */
static bool on_snapshot_read(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    f->snap_reads++;
    if (f->snap_reads == f->cfg.snap_close_at) {
        if (f->cfg.snap_then_leader != NULL)
            follow(f, f->cfg.snap_then_leader);
        return false;
    }
    if (q->offset == 0 && q->index == 0 && q->term == 0) {
        free(f->snap);
        f->snap = make_stream(f, ++f->snap_gen, &f->snap_len);
        snap_meta(f->snap_gen, &f->snap_index, &f->snap_term);
    } else if (q->index != f->snap_index || q->term != f->snap_term || f->snap_index == 0) {
        r->code = KV_ESTALE;
        r->detail = "no such snapshot";
        return true;
    }
    if (f->snap_reads == f->cfg.snap_stale_at) {
        f->snap_index = 0; /* taken over by a newer one */
        r->code = KV_ESTALE;
        r->detail = "no such snapshot";
        return true;
    }
    if (q->offset > f->snap_len) {
        r->code = KV_EINVAL;
        return true;
    }
    uint64_t piece = f->cfg.snap_piece ? f->cfg.snap_piece : FAKE_SNAP_PIECE_DEFAULT;
    uint64_t n = f->snap_len - q->offset < piece ? f->snap_len - q->offset : piece;
    r->snap_index = f->snap_index;
    r->snap_term = f->snap_term;
    r->snap_total = f->snap_len;
    r->value = (ProtobufCBinaryData){(size_t)n, f->snap + q->offset};
    return true;
}

/* HASH; false: no answer at all. */
static bool on_hash(fake_server *f, const Kv__Request *q, Kv__Response *r) {
    f->hash_index = q->index;
    if (f->cfg.hash_silent)
        return false;
    if (++f->hashes_seen <= f->cfg.hash_notfound) {
        r->code = KV_ENOTFOUND;
        r->detail = "restarted since that index";
        return true;
    }
    r->hash = f->cfg.hash;
    r->index = q->index;
    return true;
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
        q->type != KV__REQUEST__TYPE__STATUS && q->type != KV__REQUEST__TYPE__HASH &&
        q->type != KV__REQUEST__TYPE__SNAPSHOT_READ &&
        !(q->stale && (q->type == KV__REQUEST__TYPE__GET || q->type == KV__REQUEST__TYPE__SCAN));
    bool answer = true, silent = false;
    Kv__Membership ms = KV__MEMBERSHIP__INIT;
    Kv__Member mv[FAKE_MEMBERS_MAX], *mp[FAKE_MEMBERS_MAX];
    Kv__Lease lease, *lease_p;
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
        if (f->transfer_left >= 0 && f->transfer_left-- == 0) {
            follow(f, f->transfer_to);
            f->transfer_left = -1;
            f->transferring = false;
        }
        st.transferring_to = f->transferring ? f->transfer_to : "";
        st.name = (char *)(f->cfg.name ? f->cfg.name : "f");
        st.address = f->addr;
        st.role = f->cfg.follower ? "follower" : "leader";
        st.term = 3;
        st.leader_name = f->leader_name;
        for (size_t i = 0; i < f->members_count; i++) {
            kv__member__init(&mv[i]);
            mv[i].id = f->members[i].id;
            mv[i].name = f->members[i].name;
            mv[i].address = f->members[i].address;
            mv[i].learner = f->members[i].learner;
            mv[i].joining = f->members[i].joining;
            mp[i] = &mv[i];
        }
        ms.n_members = f->members_count;
        ms.members = mp;
        ms.index = 7;
        st.membership = &ms;
        st.commit = st.applied = st.last_index = f->applied;
        st.snapshot_index = 0;
        st.version = "0.1.0";
        st.cluster_id = "fake-cluster";
        st.warning = "";
        r.status = &st;
    } else if (q->type == KV__REQUEST__TYPE__MEMBER_ADD ||
               q->type == KV__REQUEST__TYPE__MEMBER_REMOVE) {
        answer = on_change(f, q, &r);
    } else if (q->type == KV__REQUEST__TYPE__TRANSFER_LEADER) {
        on_transfer(f, q, &r);
    } else if (q->type == KV__REQUEST__TYPE__SNAPSHOT_READ) {
        answer = on_snapshot_read(f, q, &r);
    } else if (q->type == KV__REQUEST__TYPE__CHECK_POINT) {
        r.index = f->checkpoint = 1000 + f->type_counts[q->type];
        r.hash = f->cfg.hash;
    } else if (q->type == KV__REQUEST__TYPE__HASH) {
        silent = !on_hash(f, q, &r);
    } else if (q->type == KV__REQUEST__TYPE__LEASE_KEEPALIVE ||
               q->type == KV__REQUEST__TYPE__LEASE_LIST) {
        on_lease(f, q, &r, &lease, &lease_p);
    } else {
        answer = on_write(f, q, &r);
    }
    if (answer && !silent)
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
    f->next_member_id = 1;
    f->transfer_left = -1;
    snprintf(f->leader_name, sizeof f->leader_name, "%s",
             cfg->leader_name ? cfg->leader_name
             : cfg->follower  ? ""
             : cfg->name      ? cfg->name
                              : "f");
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
    free(f->snap);
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

void fake_set_members(fake_server *f, const char *list) {
    pthread_mutex_lock(&f->mu);
    f->members_count = 0;
    for (const char *p = list; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        assert(eq != NULL && f->members_count < FAKE_MEMBERS_MAX);
        fake_member *m = &f->members[f->members_count++];
        *m = (fake_member){.id = f->next_member_id++};
        size_t nlen = (size_t)(eq - p);
        if (nlen > 0 && (p[nlen - 1] == '+' || p[nlen - 1] == '?')) {
            m->learner = p[nlen - 1] == '+';
            m->joining = p[nlen - 1] == '?';
            nlen--;
        }
        snprintf(m->name, sizeof m->name, "%.*s", (int)nlen, p);
        snprintf(m->address, sizeof m->address, "%.*s", (int)(len - (size_t)(eq + 1 - p)), eq + 1);
        p = end ? end + 1 : NULL;
    }
    if (f->cfg.follower && f->leader_name[0] != '\0')
        follow(f, f->leader_name); /* the leader's address from the list */
    pthread_mutex_unlock(&f->mu);
}

void fake_members(fake_server *f, char *out, size_t out_len) {
    pthread_mutex_lock(&f->mu);
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < f->members_count && n < out_len; i++) {
        const fake_member *m = &f->members[i];
        n += (size_t)snprintf(out + n, out_len - n, "%s%s%s=%s", i ? "," : "", m->name,
                              m->learner   ? "+"
                              : m->joining ? "?"
                                           : "",
                              m->address);
    }
    pthread_mutex_unlock(&f->mu);
}

uint64_t fake_count(fake_server *f, int type) {
    pthread_mutex_lock(&f->mu);
    uint64_t v = (unsigned)type < FAKE_TYPES ? f->type_counts[type] : 0;
    pthread_mutex_unlock(&f->mu);
    return v;
}

uint8_t *fake_snapshot(fake_server *f, uint32_t gen, uint64_t *len, uint64_t *index,
                       uint64_t *term) {
    pthread_mutex_lock(&f->mu);
    uint8_t *b = make_stream(f, gen, len);
    snap_meta(gen, index, term);
    pthread_mutex_unlock(&f->mu);
    return b;
}

FAKE_COUNTER(fake_checkpoint, checkpoint)
FAKE_COUNTER(fake_hash_index, hash_index)
