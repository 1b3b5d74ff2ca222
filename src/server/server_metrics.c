/* GET /metrics (Prometheus text format) and GET /health.
 *
 * /metrics: every family once. A figure another family already carries is
 * not repeated: requests answered BUSY or TOOBIG are
 * kv_responses_total{code=...}; the time in and the number of log fsyncs
 * are the kv_wal_fsync_seconds histogram's _sum and _count;
 * kv_faults_total counts connection-level faults (frames refused, output
 * over its limit), not answers. `promtool check metrics` passes on it
 * (tests/cluster/test_ops_metrics.sh). */
#include "server/server_int.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out {
    char *buf;
    size_t len, cap;
} out;

__attribute__((format(printf, 2, 3))) static void put(out *o, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (o->buf && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = (o->cap ? o->cap * 2 : 4096) + (size_t)n;
        char *b = realloc(o->buf, ncap);
        if (b == NULL)
            return;
        o->buf = b;
        o->cap = ncap;
    }
}

static void metric(out *o, const char *name, const char *type, const char *help, uint64_t v) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name, v);
}

static void histogram_head(out *o, const char *name, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
}

/* One histogram's series; labels is "" or 'key="value",' (with the comma). */
static void histogram(out *o, const char *name, const char *labels, const server_hist *h) {
    uint64_t cum = 0;
    for (size_t b = 0; b <= WAL_SYNC_BUCKETS; b++) {
        cum += h->bucket[b];
        if (b < WAL_SYNC_BUCKETS)
            put(o, "%s_bucket{%sle=\"%g\"} %" PRIu64 "\n", name, labels,
                (double)wal_sync_bucket_us[b] / 1e6, cum);
        else
            put(o, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
    }
    assert(cum == h->count);
    size_t n = strlen(labels);
    char sel[96] = "";
    if (n > 0) /* the labels without the trailing comma, in braces */
        snprintf(sel, sizeof sel, "{%.*s}", (int)(n - 1), labels);
    put(o, "%s_sum%s %.6f\n%s_count%s %" PRIu64 "\n", name, sel, (double)h->ns_sum / 1e9, name,
        sel, h->count);
}

/* A loop turn busier than this is logged (at most once a second): a stall
 * that long shows in the clients' tail latency. */
#define LOOP_SLOW_TURN_NS (50ull * 1000000u)

/* The turn that ends now: the wall time since the end of the last one less
 * the time the loop spent waiting for I/O in between (libuv's idle time,
 * UV_METRICS_IDLE_TIME), so an idle node shows no long turns. */
void server_loop_turn(server *s) {
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(&s->loop);
    if (s->loop_mark_ns != 0) {
        uint64_t wall = now - s->loop_mark_ns, waited = idle - s->loop_idle_mark_ns;
        uint64_t busy = wall > waited ? wall - waited : 0;
        size_t b = 0;
        while (b < WAL_SYNC_BUCKETS && busy > wal_sync_bucket_us[b] * 1000u)
            b++;
        s->loop_turns.bucket[b]++;
        s->loop_turns.count++;
        s->loop_turns.ns_sum += busy;
        if (busy > s->loop_turn_max_ns)
            s->loop_turn_max_ns = busy;
        if (busy >= LOOP_SLOW_TURN_NS && now - s->loop_slow_logged_ns >= 1000000000ull) {
            s->loop_slow_logged_ns = now;
            KV_LOGW("SLOWLOOP", "one loop turn took %" PRIu64 " ms (longest so far %" PRIu64 " ms)",
                    busy / 1000000, s->loop_turn_max_ns / 1000000);
        }
    }
    s->loop_mark_ns = uv_hrtime();
    s->loop_idle_mark_ns = idle;
}

/* Answered client requests by kind, from arrival to answer on this node. */
static void request_latency(server *s, out *o) {
    static const char *kinds[SERVER_REQ_KINDS] = {"put", "delete", "cas", "get", "scan"};
    histogram_head(o, "kv_request_duration_seconds",
                   "client requests from arrival to answer, by type (writes: on the leader)");
    for (size_t k = 0; k < SERVER_REQ_KINDS; k++) {
        char labels[32];
        snprintf(labels, sizeof labels, "type=\"%s\",", kinds[k]);
        histogram(o, "kv_request_duration_seconds", labels, &s->req_latency[k]);
    }
}

/* The apply path, the disk, requests and connections, and the build. */
static void metrics_io(server *s, out *o, const wal_stats *ws) {
    net_stats ns;
    net_get_stats(s->net, &ns);
    put(o, "# HELP kv_apply_seconds_total time applying committed entries to RocksDB\n"
           "# TYPE kv_apply_seconds_total counter\nkv_apply_seconds_total %.6f\n",
        (double)s->apply_ns_total / 1e9);
    metric(o, "kv_apply_batches_total", "counter", "apply calls (batches of committed entries)",
           s->apply_batches);
    metric(o, "kv_disk_used_bytes", "gauge", "bytes the data dir uses", s->disk_used);
    metric(o, "kv_disk_quota_bytes", "gauge", "the disk quota (--quota-bytes)",
           s->cfg.quota_bytes);
    metric(o, "kv_nospace_alarm", "gauge", "1 while over the quota: writes refused",
           s->nospace);
    metric(o, "kv_nospace_total", "counter", "writes refused with NOSPACE", s->nospace_replies);
    put(o, "# HELP kv_requests_by_type_total client requests by type\n"
           "# TYPE kv_requests_by_type_total counter\n");
    for (size_t t = 1; t < SERVER_REQUEST_TYPES && t < kv__request__type__descriptor.n_values; t++)
        if (s->requests_by_type[t] != 0 || t <= KV__REQUEST__TYPE__SCAN)
            put(o, "kv_requests_by_type_total{type=\"%s\"} %" PRIu64 "\n",
                kv__request__type__descriptor.values[t].name, s->requests_by_type[t]);
    put(o, "# HELP kv_responses_total answers by result code\n"
           "# TYPE kv_responses_total counter\n");
    for (size_t c = 0; c < NET_REPLY_CODES; c++)
        if (ns.replies_by_code[c] != 0 || c == 0)
            put(o, "kv_responses_total{code=\"%s\"} %" PRIu64 "\n",
                c == 0 ? "OK" : kv_errword(-(int)c), ns.replies_by_code[c]);
    metric(o, "kv_conns_open", "gauge", "connections open", ns.conns_open);
    metric(o, "kv_log_queue_full_total", "counter",
           "appends that found the log's queue full (writes refused BUSY meanwhile)",
           s->log_full_total);
    metric(o, "kv_client_conns_open", "gauge", "client connections open", ns.clients_open);
    metric(o, "kv_conns_refused_total", "counter",
           "connections over the limit (a client is told BUSY)", ns.conns_refused);
    metric(o, "kv_requests_total", "counter", "client requests received", ns.requests);
    put(o, "# HELP kv_faults_total connection-level faults by code word (frames refused, "
           "output over its limit, slow fsyncs, quota alarms)\n"
           "# TYPE kv_faults_total counter\n");
    put(o, "kv_faults_total{code=\"PROTOCOL\"} %" PRIu64 "\n", ns.frames_bad);
    put(o, "kv_faults_total{code=\"TOOBIG\"} %" PRIu64 "\n", ns.frames_toobig);
    put(o, "kv_faults_total{code=\"AUTH\"} %" PRIu64 "\n", ns.hello_refused);
    put(o, "kv_faults_total{code=\"BUSY\"} %" PRIu64 "\n", ns.output_overflows + ns.busy_inflight);
    put(o, "kv_faults_total{code=\"SLOWDISK\"} %" PRIu64 "\n", ws->slow_syncs);
    put(o, "kv_faults_total{code=\"NOSPACE\"} %" PRIu64 "\n", s->nospace_alarms);
    metric(o, "kv_raft_messages_sent_total", "counter", "Raft messages sent", ns.raft_msgs_sent);
    metric(o, "kv_raft_messages_dropped_total", "counter", "Raft messages dropped (peer down)",
           ns.raft_msgs_dropped);
    metric(o, "kv_raft_messages_received_total", "counter", "Raft messages received",
           ns.raft_msgs_received);
    metric(o, "kv_unsafe_no_fsync", "gauge", "1: started with --unsafe-no-fsync (NOT durable)",
           s->cfg.unsafe_no_fsync);
    put(o, "# HELP kv_build_info the kvd build: always 1, the version in a label\n"
           "# TYPE kv_build_info gauge\nkv_build_info{version=\"%s\"} 1\n",
        KV_VERSION_STRING);
}

static void metrics(server *s, out *o) {
    raft_role role = raft_state_role(s->r);
    metric(o, "kv_term", "gauge", "Raft term", raft_term(s->r));
    metric(o, "kv_role", "gauge", "0 follower, 1 pre-candidate, 2 candidate, 3 leader", role);
    metric(o, "kv_has_leader", "gauge", "1 when a leader is known", s->leader_id != 0);
    metric(o, "kv_commit_index", "gauge", "Raft commit index", raft_commit_index(s->r));
    metric(o, "kv_applied_index", "gauge", "last entry applied to the state machine",
           sm_applied_index(s->sm));
    metric(o, "kv_last_index", "gauge", "last log index", raft_last_index(s->r));
    metric(o, "kv_snapshot_index", "gauge", "newest snapshot's index", s->snap_index);
    metric(o, "kv_leader_changes_total", "counter", "leaders seen", s->leader_changes);
    metric(o, "kv_leases", "gauge", "leases in the applied state", sm_leases_count(s->sm));
    metric(o, "kv_leases_expired_total", "counter",
           "leases this node revoked as leader because they expired",
           server_leases_expired_total(s));
    uint64_t kc_hits = 0, kc_misses = 0;
    sm_key_cache_counts(s->sm, &kc_hits, &kc_misses);
    metric(o, "kv_key_cache_hits_total", "counter",
           "puts and deletes that found their key's revisions in the key cache", kc_hits);
    metric(o, "kv_key_cache_misses_total", "counter",
           "puts and deletes that read their key's revisions from RocksDB", kc_misses);
    metric(o, "kv_raft_msgs_refused_total", "counter",
           "Raft messages refused: fields no correct node sends", raft_msgs_refused(s->r));
    metric(o, "kv_proposals_total", "counter", "writes proposed by this node as leader",
           s->proposals);
    metric(o, "kv_proposals_pending", "gauge", "writes waiting for commit",
           node_writes_waiting(s->node));
    metric(o, "kv_proposals_pending_bytes", "gauge", "bytes of writes waiting",
           node_pending_bytes(s->node));
    metric(o, "kv_applied_entries_total", "counter", "entries applied", s->applied_entries);
    metric(o, "kv_watchers", "gauge", "watchers on this node", s->watchers_count);
    metric(o, "kv_watch_events_total", "counter", "events sent to watchers",
           s->watch_events_total);
    metric(o, "kv_watch_canceled_total", "counter",
           "watchers cancelled for falling behind their buffer limit (CANCELED)",
           s->watch_canceled_total);
    metric(o, "kv_snapshots_taken_total", "counter", "snapshots taken", s->snapshots_taken);
    metric(o, "kv_snapshots_installed_total", "counter", "snapshots installed from the leader",
           s->snapshots_installed);
    wal_stats ws;
    wal_get_stats(s->w, &ws);
    metric(o, "kv_wal_slow_syncs_total", "counter", "log fdatasyncs over --slow-fsync-ms",
           ws.slow_syncs);
    server_hist fsync = {.count = ws.syncs, .ns_sum = ws.sync_ns_total};
    memcpy(fsync.bucket, ws.sync_hist, sizeof fsync.bucket);
    histogram_head(o, "kv_wal_fsync_seconds", "log fdatasync latency");
    histogram(o, "kv_wal_fsync_seconds", "", &fsync);
    request_latency(s, o);
    histogram_head(o, "kv_loop_turn_seconds",
                   "busy time of each turn of the node's loop (I/O callbacks, Raft's Ready, "
                   "snapshot and check work), waiting for I/O excluded");
    histogram(o, "kv_loop_turn_seconds", "", &s->loop_turns);
    put(o, "# HELP kv_loop_turn_seconds_max the longest loop turn since the start\n"
           "# TYPE kv_loop_turn_seconds_max gauge\nkv_loop_turn_seconds_max %.6f\n",
        (double)s->loop_turn_max_ns / 1e9);
    metric(o, "kv_wal_records_total", "counter", "records written to the log", ws.records);
    metric(o, "kv_wal_bytes_total", "counter", "bytes written to the log", ws.bytes);
    put(o, "# HELP kv_wal_sync_seconds_max slowest log fdatasync\n"
           "# TYPE kv_wal_sync_seconds_max gauge\nkv_wal_sync_seconds_max %.6f\n",
        (double)ws.sync_ns_max / 1e9);
    metrics_io(s, o, &ws);
}

/* GET /health: 200 when this node knows a leader, has applied close to
 * the commit index and is under its quota; 503 otherwise, "health" saying
 * why. "leader" is the leader's name (null when none is known): a
 * follower says whom it follows, not that it leads. */
static int health(server *s, out *o) {
    uint64_t commit = raft_commit_index(s->r), applied = sm_applied_index(s->sm);
    bool caught_up = applied + 1000 >= commit;
    bool ok = s->leader_id != 0 && caught_up && !s->nospace;
    raft_role role = raft_state_role(s->r);
    const server_member *l = s->leader_id != 0 ? server_member_by_id(s, s->leader_id) : NULL;
    put(o, "{\"health\":\"%s\",\"name\":\"%s\",\"role\":\"%s\",\"leader\":",
        ok                 ? "ok"
        : s->leader_id == 0 ? "no leader"
        : s->nospace        ? "NOSPACE: over the disk quota"
                            : "catching up",
        s->cfg.name,
        role == RAFT_LEADER                                         ? "leader"
        : role == RAFT_CANDIDATE || role == RAFT_PRE_CANDIDATE ? "candidate"
                                                                : "follower");
    if (l != NULL)
        put(o, "\"%s\"", l->name);
    else if (s->leader_id != 0)
        put(o, "\"%016" PRIx64 "\"", s->leader_id); /* known by id only, not yet by name */
    else
        put(o, "null");
    put(o, ",\"applied\":%" PRIu64 ",\"commit\":%" PRIu64 "%s}\n", applied, commit,
        s->cfg.unsafe_no_fsync ? ",\"warning\":\"unsafe-no-fsync\"" : "");
    return ok ? 200 : 503;
}

int server_http(void *ctx, const char *path, char **body, size_t *len, const char **ctype) {
    server *s = ctx;
    out o = {0};
    int code = 200;
    if (strcmp(path, "/metrics") == 0) {
        *ctype = "text/plain; version=0.0.4";
        metrics(s, &o);
    } else if (strcmp(path, "/health") == 0) {
        *ctype = "application/json";
        code = health(s, &o);
    } else {
        code = 404;
        put(&o, "not found: try /metrics or /health\n");
    }
    *body = o.buf;
    *len = o.len;
    return code;
}
