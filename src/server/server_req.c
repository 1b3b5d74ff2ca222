/* Client requests: writes become proposals (node_propose), linearizable
 * reads wait for ReadIndex (node_read); both are answered by server_io.c. */
#include "server/server_int.h"

#include "common/clock.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *role_name(raft_role r, bool learner) {
    if (learner)
        return "learner";
    switch (r) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_CANDIDATE:
    case RAFT_PRE_CANDIDATE:
        return "candidate";
    default:
        return "follower";
    }
}

void server_reply_code(net_conn *c, uint64_t id, int code, const char *detail) {
    if (c == NULL)
        return;
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = id;
    r.code = code;
    r.detail = (char *)(detail ? detail : "");
    net_reply(c, &r);
}

/* NOTLEADER with where to go. */
void server_reply_not_leader(server *s, net_conn *c, uint64_t id) {
    if (c == NULL)
        return;
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = id;
    r.code = KV_ENOTLEADER;
    const server_member *m = s->leader_id ? server_member_by_id(s, s->leader_id) : NULL;
    r.leader_name = m ? (char *)m->name : "";
    r.leader_address = m ? (char *)m->addr : "";
    r.detail = m ? "not the leader" : "no leader known right now";
    net_reply(c, &r);
}

static int check_sizes(const Kv__Request *q) {
    if (q->key.len > KV_KEY_BYTES_MAX || q->value.len > KV_VALUE_BYTES_MAX ||
        q->expected.len > KV_VALUE_BYTES_MAX)
        return KV_ETOOBIG;
    return 0;
}

/* ---- writes ---------------------------------------------------------------- */

/* A write's own checks before it is proposed: 0, or the code with the
 * words in why. A txn is checked as the state machine checks it
 * (sm_txn_check), so a refused one never reaches the log. */
static int write_check(const Kv__Request *q, char *why, size_t cap) {
    int rc = check_sizes(q);
    if (rc != 0) {
        snprintf(why, cap, "key over %u bytes or value over %u bytes", KV_KEY_BYTES_MAX,
                 KV_VALUE_BYTES_MAX);
        return rc;
    }
    switch (q->type) {
    case KV__REQUEST__TYPE__REGISTER:
    case KV__REQUEST__TYPE__DELETE_PREFIX: /* the empty prefix: every key */
    case KV__REQUEST__TYPE__LEASE_GRANT:   /* ttl: checked as it applies */
        return 0;
    case KV__REQUEST__TYPE__LEASE_REVOKE:
        if (q->lease == 0) {
            snprintf(why, cap, "a lease revoke needs a lease id");
            return KV_EINVAL;
        }
        return 0;
    case KV__REQUEST__TYPE__TXN:
        if (q->txn == NULL) {
            snprintf(why, cap, "a txn request needs a txn");
            return KV_EPROTO;
        }
        return sm_txn_check(q->txn, why, cap);
    default:
        if (q->key.len == 0) {
            snprintf(why, cap, "a write needs a key");
            return KV_EPROTO;
        }
        return 0;
    }
}

static Kv__Command__Op write_op(Kv__Request__Type t) {
    switch (t) {
    case KV__REQUEST__TYPE__REGISTER:
        return KV__COMMAND__OP__REGISTER;
    case KV__REQUEST__TYPE__PUT:
        return KV__COMMAND__OP__PUT;
    case KV__REQUEST__TYPE__DELETE:
        return KV__COMMAND__OP__DELETE;
    case KV__REQUEST__TYPE__CAS:
        return KV__COMMAND__OP__CAS;
    case KV__REQUEST__TYPE__TXN:
        return KV__COMMAND__OP__TXN;
    case KV__REQUEST__TYPE__DELETE_PREFIX:
        return KV__COMMAND__OP__DELETE_PREFIX;
    case KV__REQUEST__TYPE__LEASE_GRANT:
        return KV__COMMAND__OP__LEASE_GRANT;
    case KV__REQUEST__TYPE__LEASE_REVOKE:
        return KV__COMMAND__OP__LEASE_REVOKE;
    default:
        assert(t == KV__REQUEST__TYPE__CAS_ABSENT);
        return KV__COMMAND__OP__CAS_ABSENT;
    }
}

static void propose(server *s, net_conn *c, Kv__Request *q) {
    uint64_t id = q->id;
    char why[160] = "";
    int rc = write_check(q, why, sizeof why);
    if (rc != 0) {
        server_reply_code(c, id, rc, why);
        return;
    }
    if (!node_is_leader(s->node)) {
        server_reply_not_leader(s, c, id);
        return;
    }
    /* NOSPACE alarm: deletes (which give space back) and sessions still go */
    if (s->nospace && q->type != KV__REQUEST__TYPE__DELETE &&
        q->type != KV__REQUEST__TYPE__DELETE_PREFIX && q->type != KV__REQUEST__TYPE__REGISTER &&
        q->type != KV__REQUEST__TYPE__LEASE_REVOKE) {
        s->nospace_replies++;
        server_reply_code(c, id, KV_ENOSPACE,
                          "the disk quota is reached: writes are refused until space is freed; "
                          "reads and deletes work");
        return;
    }
    Kv__Command cmd = KV__COMMAND__INIT;
    cmd.op = write_op(q->type);
    cmd.txn = q->txn;
    cmd.client_id = q->client_id;
    cmd.seq = q->seq;
    cmd.key = q->key;
    cmd.value = q->value;
    cmd.expected = q->expected;
    cmd.lease = q->lease; /* PUT, CAS, CAS_ABSENT: attach; LEASE_REVOKE: which */
    cmd.ttl = q->ttl;     /* LEASE_GRANT */
    server_propose_cmd(s, c, id, &cmd);
}

void server_req_done(server *s, enum server_req_kind kind, uint64_t t0_ns) {
    if (kind == SERVER_REQ_NONE)
        return;
    assert(kind < SERVER_REQ_KINDS);
    uint64_t ns = kv_now_ns() - t0_ns;
    server_hist *h = &s->req_latency[kind];
    size_t b = 0;
    while (b < WAL_SYNC_BUCKETS && ns > wal_sync_bucket_us[b] * 1000u)
        b++;
    h->bucket[b]++;
    h->count++;
    h->ns_sum += ns;
}

static enum server_req_kind write_kind(Kv__Command__Op op) {
    switch (op) {
    case KV__COMMAND__OP__PUT:
        return SERVER_REQ_PUT;
    case KV__COMMAND__OP__DELETE:
        return SERVER_REQ_DELETE;
    case KV__COMMAND__OP__CAS:
    case KV__COMMAND__OP__CAS_ABSENT:
        return SERVER_REQ_CAS;
    default:
        return SERVER_REQ_NONE;
    }
}

int server_propose_cmd(server *s, net_conn *c, uint64_t id, const Kv__Command *cmd) {
    size_t len = kv__command__get_packed_size(cmd);
    if (len > KV_COMMAND_BYTES_MAX) { /* a txn: one key and two values cannot be */
        char why[128];
        snprintf(why, sizeof why, "command of %zu bytes encoded is over KV_COMMAND_BYTES_MAX (%u)",
                 len, (unsigned)KV_COMMAND_BYTES_MAX);
        server_reply_code(c, id, KV_ETOOBIG, why);
        return KV_ETOOBIG;
    }
    /* back-pressure from the disk: the log's queue is full (server_io.c) */
    if (c != NULL && server_log_backlogged(s)) {
        server_reply_code(c, id, KV_EBUSY, "the log is behind (its queue is full); retry later");
        return KV_EBUSY;
    }
    /* node_propose's own check, made first for the detail text */
    if (node_pending_bytes(s->node) + len > KV_PENDING_PROPOSAL_BYTES_MAX) {
        server_reply_code(c, id, KV_EBUSY, "too many bytes of writes pending on the leader");
        return KV_EBUSY;
    }
    if (len > s->scratch_cap) {
        uint8_t *b = realloc(s->scratch, len);
        if (b == NULL) {
            server_reply_code(c, id, KV_EBUSY, "out of memory");
            return KV_EBUSY;
        }
        s->scratch = b;
        s->scratch_cap = len;
    }
    kv__command__pack(cmd, s->scratch);
    int rc;
    if (c == NULL) { /* nobody waits for it: not the node's to answer */
        rc = raft_propose(s->r, s->scratch, len, NULL);
    } else {
        node_tag tag = {.owner = c, .id = id, .kind = write_kind(cmd->op)};
        rc = node_propose(s->node, s->scratch, len, &tag, NULL);
    }
    if (rc != 0) {
        if (rc == KV_ENOTLEADER) {
            server_reply_not_leader(s, c, id);
            return rc;
        }
        server_reply_code(c, id, rc,
                          rc == KV_EBUSY ? "the leader is busy (uncommitted bytes or transfer)"
                                         : kv_strerror(rc));
        return rc;
    }
    if (c != NULL) { /* answered by server_io.c, which unrefs it */
        net_conn_ref(c);
        s->proposals++;
    }
    return 0;
}

void server_wait_index(server *s, net_conn *c, uint64_t req_id, uint64_t index) {
    assert(c != NULL && index > 0);
    node_tag tag = {.owner = c, .id = req_id, .kind = SERVER_REQ_NONE};
    if (node_wait_index(s->node, index, 0, &tag) != 0)
        server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory queueing a proposal");
    net_conn_ref(c);
    s->proposals++;
}

/* ---- reads ------------------------------------------------------------------ */

/* A key's revisions into a KeyValue (info NULL: none known). */
static void kv_of_info(Kv__KeyValue *kv, const sm_key_info *info) {
    if (info == NULL)
        return;
    kv->create_rev = info->create_rev;
    kv->mod_rev = info->mod_rev;
    kv->version = info->version;
    kv->lease = info->lease;
}

typedef struct scan_acc {
    Kv__KeyValue *kvs;
    Kv__KeyValue **ptrs;
    size_t count, cap;
    uint8_t *arena; /* keys and values, copied */
    size_t used, arena_cap;
} scan_acc;

static int scan_cb(void *arg, const void *key, size_t klen, const void *val, size_t vlen,
                   const sm_key_info *info) {
    scan_acc *a = arg;
    if (a->count == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 64;
        Kv__KeyValue *k = realloc(a->kvs, ncap * sizeof(*k));
        if (k == NULL)
            return KV_ENOMEM;
        a->kvs = k;
        a->cap = ncap;
    }
    Kv__KeyValue *kv = &a->kvs[a->count++];
    kv__key_value__init(kv);
    kv->key.data = malloc(klen + vlen + 1);
    if (kv->key.data == NULL)
        return KV_ENOMEM;
    memcpy(kv->key.data, key, klen);
    memcpy(kv->key.data + klen, val, vlen);
    kv->key.len = klen;
    kv->value.data = kv->key.data + klen;
    kv->value.len = vlen;
    kv_of_info(kv, info);
    return 0;
}

void server_serve_read(server *s, net_conn *c, const Kv__Request *q) {
    if (q->type == KV__REQUEST__TYPE__LEASE_KEEPALIVE || q->type == KV__REQUEST__TYPE__LEASE_LIST) {
        server_lease_serve(s, c, q); /* a read round confirmed the leader */
        return;
    }
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = q->id;
    r.index = sm_applied_index(s->sm);
    r.detail = "";
    if (q->type == KV__REQUEST__TYPE__GET) {
        void *val = NULL;
        size_t vlen = 0;
        sm_key_info info;
        r.code = sm_get_ex(s->sm, q->key.data, q->key.len, &val, &vlen, &info);
        if (r.code == KV_ECORRUPT) /* never answer from a damaged store */
            server_fatal_sm(s, r.code, "reading a key");
        r.value.data = val;
        r.value.len = vlen;
        /* the value once, in value; kv carries the key and the revisions */
        Kv__KeyValue kv = KV__KEY_VALUE__INIT;
        if (r.code == 0) {
            kv.key = q->key;
            kv_of_info(&kv, &info);
            r.kv = &kv;
        }
        net_reply(c, &r);
        free(val);
        return;
    }
    scan_acc a = {0};
    bool more = false;
    uint32_t limit = q->limit == 0 || q->limit > KV_SCAN_KEYS_MAX ? KV_SCAN_KEYS_MAX : q->limit;
    r.code = sm_scan(s->sm, q->key.data, q->key.len, q->start_after.data, q->start_after.len, limit,
                     KV_SCAN_REPLY_BYTES_MAX, scan_cb, &a, &more);
    if (r.code == KV_ECORRUPT)
        server_fatal_sm(s, r.code, "scanning keys");
    a.ptrs = a.count ? malloc(a.count * sizeof(*a.ptrs)) : NULL;
    if (a.count && a.ptrs == NULL)
        r.code = KV_ENOMEM;
    for (size_t i = 0; a.ptrs && i < a.count; i++)
        a.ptrs[i] = &a.kvs[i];
    if (r.code == 0) {
        r.kvs = a.ptrs;
        r.n_kvs = a.count;
        r.more = more;
    }
    net_reply(c, &r);
    for (size_t i = 0; i < a.count; i++)
        free(a.kvs[i].key.data);
    free(a.kvs);
    free(a.ptrs);
}

static void read_request(server *s, net_conn *c, Kv__Request *q) {
    if (q->key.len > KV_KEY_BYTES_MAX || q->start_after.len > KV_KEY_BYTES_MAX) {
        server_reply_code(c, q->id, KV_ETOOBIG, "key over 4096 bytes");
        kv__request__free_unpacked(q, NULL);
        return;
    }
    if (q->type == KV__REQUEST__TYPE__GET && q->key.len == 0) {
        server_reply_code(c, q->id, KV_EPROTO, "a get needs a key");
        kv__request__free_unpacked(q, NULL);
        return;
    }
    uint64_t t0 = kv_now_ns();
    enum server_req_kind kind =
        q->type == KV__REQUEST__TYPE__GET ? SERVER_REQ_GET : SERVER_REQ_SCAN;
    if (q->stale) {
        server_serve_read(s, c, q);
        server_req_done(s, kind, t0);
        kv__request__free_unpacked(q, NULL);
        return;
    }
    server_read_round(s, c, q, kind, t0);
}

void server_read_round(server *s, net_conn *c, Kv__Request *q, enum server_req_kind kind,
                       uint64_t t0_ns) {
    node_tag tag = {.owner = c, .data = q, .id = q->id, .kind = kind, .t0_ns = t0_ns};
    int rc = node_read(s->node, &tag);
    if (rc != 0) {
        if (rc == KV_ENOTLEADER)
            server_reply_not_leader(s, c, q->id);
        else
            server_reply_code(c, q->id, rc, "too many reads waiting");
        kv__request__free_unpacked(q, NULL);
        return;
    }
    net_conn_ref(c); /* and q, kept in the tag: io_read_done (server_io.c) frees both */
}

/* ---- status ------------------------------------------------------------------ */

static void status_request(server *s, net_conn *c, const Kv__Request *q) {
    Kv__NodeStatus st = KV__NODE_STATUS__INIT;
    raft_membership rm;
    raft_membership_get(s->r, &rm);
    bool learner = false;
    for (uint32_t i = 0; i < rm.learners_count; i++)
        learner |= rm.learners[i] == s->id;
    const server_member *me = server_member_by_id(s, s->id);
    const server_member *ld = s->leader_id ? server_member_by_id(s, s->leader_id) : NULL;
    st.name = (char *)s->cfg.name;
    st.address = me ? (char *)me->addr : (char *)s->cfg.listen;
    st.role = (char *)role_name(raft_state_role(s->r), learner);
    st.term = raft_term(s->r);
    st.leader_name = ld ? (char *)ld->name : "";
    uint64_t target = raft_transferring(s->r);
    const server_member *to = target != 0 ? server_member_by_id(s, target) : NULL;
    st.transferring_to = to ? (char *)to->name : "";
    st.commit = raft_commit_index(s->r);
    st.applied = sm_applied_index(s->sm);
    st.last_index = raft_last_index(s->r);
    st.snapshot_index = s->snap_index;
    st.version = KV_VERSION_STRING;
    st.unsafe_no_fsync = s->cfg.unsafe_no_fsync;
    st.warning = s->cfg.unsafe_no_fsync ? "UNSAFE: started with --unsafe-no-fsync; "
                                          "acknowledged writes are lost at a crash"
                                        : "";
    st.cluster_id = s->cluster_id;
    st.id = s->id;
    Kv__Member mem[KV_NODES_MAX];
    Kv__Member *ptrs[KV_NODES_MAX];
    Kv__Membership m = KV__MEMBERSHIP__INIT;
    for (size_t i = 0; i < s->members_count; i++) {
        kv__member__init(&mem[i]);
        mem[i].id = s->members[i].id;
        mem[i].name = s->members[i].name;
        mem[i].address = s->members[i].addr;
        for (uint32_t j = 0; j < rm.learners_count; j++)
            mem[i].learner |= rm.learners[j] == s->members[i].id;
        ptrs[i] = &mem[i];
    }
    m.members = ptrs;
    m.n_members = s->members_count;
    st.membership = &m;
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = q->id;
    r.status = &st;
    r.index = st.applied;
    r.detail = "";
    net_reply(c, &r);
}

/* ---- dispatch -------------------------------------------------------------- */

_Static_assert(KV__REQUEST__TYPE__LEASE_LIST < SERVER_REQUEST_TYPES,
               "every request type has its counter");

void server_on_request(void *ctx, net_conn *c, Kv__Request *q) {
    server *s = ctx;
    if ((unsigned)q->type < SERVER_REQUEST_TYPES)
        s->requests_by_type[q->type]++;
    if (s->stopping) {
        server_reply_code(c, q->id, KV_EUNAVAILABLE, "the node is shutting down");
        kv__request__free_unpacked(q, NULL);
        return;
    }
    switch (q->type) {
    case KV__REQUEST__TYPE__REGISTER:
    case KV__REQUEST__TYPE__PUT:
    case KV__REQUEST__TYPE__DELETE:
    case KV__REQUEST__TYPE__CAS:
    case KV__REQUEST__TYPE__CAS_ABSENT:
    case KV__REQUEST__TYPE__TXN:
    case KV__REQUEST__TYPE__DELETE_PREFIX:
    case KV__REQUEST__TYPE__LEASE_GRANT:
    case KV__REQUEST__TYPE__LEASE_REVOKE:
        propose(s, c, q);
        kv__request__free_unpacked(q, NULL);
        return;
    case KV__REQUEST__TYPE__GET:
    case KV__REQUEST__TYPE__SCAN:
        read_request(s, c, q); /* takes q */
        return;
    case KV__REQUEST__TYPE__LEASE_KEEPALIVE:
    case KV__REQUEST__TYPE__LEASE_LIST:
        server_lease_request(s, c, q); /* takes q */
        return;
    case KV__REQUEST__TYPE__STATUS:
        status_request(s, c, q);
        kv__request__free_unpacked(q, NULL);
        return;
    case KV__REQUEST__TYPE__WATCH:
        server_watch_request(s, c, q); /* takes q */
        return;
    case KV__REQUEST__TYPE__MEMBER_ADD:
    case KV__REQUEST__TYPE__MEMBER_REMOVE:
    case KV__REQUEST__TYPE__TRANSFER_LEADER:
    case KV__REQUEST__TYPE__SNAPSHOT_READ:
    case KV__REQUEST__TYPE__CHECK_POINT:
    case KV__REQUEST__TYPE__HASH:
        server_ops_request(s, c, q);
        return;
    default:
        server_reply_code(c, q->id, KV_EPROTO, "unknown request type");
        kv__request__free_unpacked(q, NULL);
        return;
    }
}
