/* Operator requests: member add/remove, leadership transfer, snapshot
 * streaming to a file (kvcli snapshot save) and state machine check points. */
#include "server/server_int.h"

#include "common/logging.h"
#include "kv/errors.h"
#include "server/http.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void done(Kv__Request *q) {
    kv__request__free_unpacked(q, NULL);
}

static void member_add(server *s, net_conn *c, const Kv__Request *q) {
    struct sockaddr_storage sa;
    if (!server_name_valid(q->name) || http_parse_addr(q->address, &sa) != 0 ||
        strlen(q->address) >= SERVER_ADDR_BYTES) {
        server_reply_code(c, q->id, KV_EINVAL,
                          "member add NAME HOST:PORT: a name of 1-63 bytes without ',= ' and a "
                          "numeric address");
        return;
    }
    uint64_t id = server_node_id(q->name);
    if (server_is_member(s, id)) {
        server_reply_code(c, q->id, KV_EEXIST, "already a member");
        return;
    }
    /* the name and address first, then the change itself; the answer comes
     * when the change applies */
    Kv__Command cmd = KV__COMMAND__INIT;
    cmd.op = KV__COMMAND__OP__MEMBER;
    cmd.key.data = (uint8_t *)q->name;
    cmd.key.len = strlen(q->name);
    cmd.value.data = (uint8_t *)q->address;
    cmd.value.len = strlen(q->address);
    uint64_t index;
    int rc = server_propose_cmd(s, NULL, 0, &cmd);
    if (rc == 0) {
        rc = raft_propose_conf(s->r, RAFT_CONF_ADD_LEARNER, id, &index);
        if (rc != 0) { /* take the announcement back: the answer says nothing was done */
            cmd.value.len = 0;
            server_propose_cmd(s, NULL, 0, &cmd);
        }
    }
    if (rc != 0) {
        server_reply_code(c, q->id, rc,
                          rc == KV_EBUSY ? "another membership change is in progress; retry"
                                         : kv_strerror(rc));
        return;
    }
    KV_LOGI("MEMBER", "adding %s at %s as a learner (entry %" PRIu64 ")", q->name, q->address,
            index);
    server_wait_index(s, c, q->id, index);
}

static void member_remove(server *s, net_conn *c, const Kv__Request *q) {
    uint64_t id = server_node_id(q->name);
    if (!server_is_member(s, id)) {
        const server_member *m = server_member_by_name(s, q->name);
        if (m != NULL && m->joining) { /* announced, never added: forget it */
            Kv__Command cmd = KV__COMMAND__INIT;
            cmd.op = KV__COMMAND__OP__MEMBER;
            cmd.key.data = (uint8_t *)q->name;
            cmd.key.len = strlen(q->name);
            server_propose_cmd(s, c, q->id, &cmd);
            return;
        }
        server_reply_code(c, q->id, KV_ENOTFOUND, "no such member");
        return;
    }
    uint64_t index;
    int rc = raft_propose_conf(s->r, RAFT_CONF_REMOVE, id, &index);
    if (rc != 0) {
        server_reply_code(c, q->id, rc,
                          rc == KV_EBUSY    ? "another membership change is in progress; retry"
                          : rc == KV_EINVAL ? "cannot remove the last voter"
                                            : kv_strerror(rc));
        return;
    }
    KV_LOGI("MEMBER", "removing %s (entry %" PRIu64 ")", q->name, index);
    server_wait_index(s, c, q->id, index);
}

static void transfer(server *s, net_conn *c, const Kv__Request *q) {
    uint64_t id = server_node_id(q->name);
    int rc = server_is_member(s, id) ? raft_transfer_leader(s->r, id) : KV_ENOTFOUND;
    if (rc == KV_ENOTLEADER) {
        server_reply_not_leader(s, c, q->id);
        return;
    }
    if (rc == 0)
        KV_LOGI("LEADER", "handing leadership to %s", q->name);
    server_reply_code(c, q->id, rc,
                      rc == 0              ? "transfer started"
                      : rc == KV_EINVAL    ? "not a voter"
                      : rc == KV_ENOTFOUND ? "no such member"
                                           : kv_strerror(rc));
}

static void snapshot_read(server *s, net_conn *c, const Kv__Request *q) {
    uint64_t index = q->index, term = q->term;
    if (q->offset == 0 && index == 0) {
        server_log_backlog_drain(s); /* the snapshot may drop the log behind it */
        server_snapshot_take_now(s); /* a fresh one, of everything applied now */
        index = s->snap_index;
        term = s->snap_term;
        if (index == 0) {
            server_reply_code(c, q->id, KV_EUNAVAILABLE, "nothing applied yet");
            return;
        }
    }
    uint8_t *buf = malloc(KV_SNAPSHOT_CHUNK_BYTES);
    if (buf == NULL) {
        server_reply_code(c, q->id, KV_EBUSY, "out of memory");
        return;
    }
    size_t got = 0;
    uint64_t total = 0;
    int rc =
        server_snapshot_read(s, index, term, q->offset, buf, KV_SNAPSHOT_CHUNK_BYTES, &got, &total);
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = q->id;
    r.code = rc;
    r.detail = rc == KV_ESTALE ? "that snapshot is gone; start again" : "";
    r.snap_index = index;
    r.snap_term = term;
    r.snap_total = total;
    r.value.data = buf;
    r.value.len = rc == 0 ? got : 0;
    net_reply(c, &r);
    free(buf);
}

static void check_point(server *s, net_conn *c, const Kv__Request *q) {
    if (!node_is_leader(s->node)) {
        server_reply_not_leader(s, c, q->id);
        return;
    }
    Kv__Command cmd = KV__COMMAND__INIT;
    cmd.op = KV__COMMAND__OP__HASH;
    server_propose_cmd(s, c, q->id, &cmd);
}

/* ---- check points ------------------------------------------------------ */

#define HASH_KEYS_PER_TURN 20000u /* about a millisecond of hashing per loop turn */

static void hash_record(server *s, uint64_t index, uint64_t hash) {
    s->hashes[s->hashes_next % SERVER_HASHES_KEPT] = (server_hash){.index = index, .hash = hash};
    s->hashes_next++;
}

int server_hash_at(const server *s, uint64_t index, uint64_t *hash) {
    if (s->hash_view != NULL && s->hash_index == index)
        return KV_EBUSY;
    for (size_t i = 0; i < SERVER_HASHES_KEPT; i++)
        if (s->hashes[i].index == index && index != 0) {
            *hash = s->hashes[i].hash;
            return 0;
        }
    return KV_ENOTFOUND;
}

static void hash_steps(server *s, uint32_t keys) {
    if (s->hash_view == NULL)
        return;
    bool done = false;
    uint64_t h = 0;
    int rc = sm_view_hash_step(s->hash_view, keys, &done, &h);
    if (rc != 0) /* a node that cannot hash never stays up silent (kvcli check) */
        server_fatal_sm(s, rc, "hashing the state machine at %" PRIu64, s->hash_index);
    if (!done)
        return;
    sm_view_close(s->hash_view);
    s->hash_view = NULL;
    hash_record(s, s->hash_index, h);
    server_hash_waiters_serve(s);
}

void server_hash_step(server *s) {
    hash_steps(s, HASH_KEYS_PER_TURN);
}

void server_hash_checkpoint(server *s, uint64_t index) {
    /* one at a time: a newer check point replaces an unfinished one (its
     * askers get NOTFOUND and try a new check point) */
    server_hash_abort(s);
    int rc = sm_view_open(s->sm, &s->hash_view);
    if (rc != 0)
        server_fatal_sm(s, rc, "opening a view of the state machine at %" PRIu64, index);
    s->hash_index = index;
}

void server_hash_abort(server *s) {
    if (s->hash_view == NULL)
        return;
    sm_view_close(s->hash_view);
    s->hash_view = NULL;
    server_hash_waiters_serve(s); /* they learn it is not known here */
}

static void hash_answer(server *s, net_conn *c, uint64_t req_id, uint64_t index) {
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = req_id;
    r.index = index;
    r.code = server_hash_at(s, index, &r.hash);
    r.detail = r.code == 0 ? "" : "no hash recorded at that index on this node";
    net_reply(c, &r);
}

static void hash_request(server *s, net_conn *c, const Kv__Request *q) {
    if (q->index == 0) {
        server_reply_code(c, q->id, KV_EINVAL, "HASH needs the check point's index");
        return;
    }
    uint64_t h;
    if (sm_applied_index(s->sm) >= q->index && server_hash_at(s, q->index, &h) != KV_EBUSY) {
        hash_answer(s, c, q->id, q->index);
        return;
    }
    server_hash_wait_add(s, c, q->id, q->index);
}

void server_hash_wait_add(server *s, net_conn *c, uint64_t req_id, uint64_t index) {
    for (size_t i = 0; i < SERVER_HASH_WAITERS_MAX; i++) {
        server_hash_wait *w = &s->hash_waiters[i];
        if (w->conn == NULL) {
            w->conn = c;
            w->req_id = req_id;
            w->index = index;
            net_conn_ref(c);
            return;
        }
    }
    server_reply_code(c, req_id, KV_EBUSY, "too many hash requests waiting");
}

void server_hash_waiters_serve(server *s) {
    uint64_t applied = sm_applied_index(s->sm);
    for (size_t i = 0; i < SERVER_HASH_WAITERS_MAX; i++) {
        server_hash_wait *w = &s->hash_waiters[i];
        uint64_t h;
        if (w->conn != NULL && applied >= w->index && server_hash_at(s, w->index, &h) != KV_EBUSY) {
            hash_answer(s, w->conn, w->req_id, w->index);
            net_conn_unref(w->conn);
            w->conn = NULL;
        }
    }
}

void server_ops_close(server *s) {
    server_hash_abort(s);
    for (size_t i = 0; i < SERVER_HASH_WAITERS_MAX; i++) {
        server_hash_wait *w = &s->hash_waiters[i];
        if (w->conn != NULL) {
            server_reply_code(w->conn, w->req_id, KV_EUNAVAILABLE, "the node is shutting down");
            net_conn_unref(w->conn);
            w->conn = NULL;
        }
    }
}

/* Leader: a learner that has caught up becomes a voter (docs/rules.md: manual
 * promotion races, etcd#15107). */
void server_ops_tick(server *s) {
    if (!node_is_leader(s->node))
        return;
    raft_membership rm;
    raft_membership_get(s->r, &rm);
    for (uint32_t i = 0; i < rm.learners_count; i++) {
        uint64_t id = rm.learners[i];
        if (!raft_learner_caught_up(s->r, id))
            continue;
        uint64_t index;
        if (raft_propose_conf(s->r, RAFT_CONF_PROMOTE, id, &index) == 0) {
            const server_member *m = server_member_by_id(s, id);
            KV_LOGI("MEMBER", "promoting %s to voter: it has caught up (entry %" PRIu64 ")",
                    m ? m->name : "?", index);
        }
        return; /* one change at a time */
    }
}

void server_ops_request(server *s, net_conn *c, Kv__Request *q) {
    bool leader_only = q->type == KV__REQUEST__TYPE__MEMBER_ADD ||
                       q->type == KV__REQUEST__TYPE__MEMBER_REMOVE ||
                       q->type == KV__REQUEST__TYPE__TRANSFER_LEADER;
    if (leader_only && !node_is_leader(s->node)) {
        server_reply_not_leader(s, c, q->id);
        done(q);
        return;
    }
    switch (q->type) {
    case KV__REQUEST__TYPE__MEMBER_ADD:
        member_add(s, c, q);
        break;
    case KV__REQUEST__TYPE__MEMBER_REMOVE:
        member_remove(s, c, q);
        break;
    case KV__REQUEST__TYPE__TRANSFER_LEADER:
        transfer(s, c, q);
        break;
    case KV__REQUEST__TYPE__SNAPSHOT_READ:
        snapshot_read(s, c, q);
        break;
    case KV__REQUEST__TYPE__CHECK_POINT:
        check_point(s, c, q);
        break;
    default:
        hash_request(s, c, q);
        break;
    }
    done(q);
}
