/* Internal to src/server: the node's state, shared by its files. */
#ifndef KV_SERVER_SERVER_INT_H
#define KV_SERVER_SERVER_INT_H

#include "net/net.h"
#include "node/node.h"
#include "raft/raft.h"
#include "server/server.h"
#include "server/startup.h"
#include "storage/fs.h"
#include "storage/hardstate.h"
#include "storage/sm.h"
#include "storage/snapshot.h"
#include "storage/wal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <uv.h>

/* Request kinds whose latency is measured (kv_request_duration_seconds). */
enum server_req_kind {
    SERVER_REQ_PUT,
    SERVER_REQ_DELETE,
    SERVER_REQ_CAS,
    SERVER_REQ_GET,
    SERVER_REQ_SCAN,
    SERVER_REQ_KINDS,
    SERVER_REQ_NONE = SERVER_REQ_KINDS /* not measured: sessions, operator requests */
};

/* A latency histogram with the log's fsync buckets (wal_sync_bucket_us). */
typedef struct server_hist {
    uint64_t bucket[WAL_SYNC_BUCKETS + 1]; /* by upper bound; the last: slower */
    uint64_t count;
    uint64_t ns_sum;
} server_hist;

/* The state machine's hash at a check point (kvcli check). */
typedef struct server_hash {
    uint64_t index;
    uint64_t hash;
} server_hash;
#define SERVER_HASHES_KEPT 16u

/* A HASH request waiting for its index to be applied. */
typedef struct server_hash_wait {
    net_conn *conn; /* referenced; NULL: free slot */
    uint64_t req_id;
    uint64_t index;
} server_hash_wait;
#define SERVER_HASH_WAITERS_MAX 64u

/* The snapshot stream being served to followers (raft's snapshot_read). */
typedef struct server_snap_out {
    uint64_t index, term;
    snap_reader *reader;
    uint64_t chunks;
    uint64_t *offsets; /* stream offset of each chunk record; [chunks] = total */
    uint32_t manifest_len;
    uint64_t cached_chunk; /* UINT64_MAX: none */
    uint8_t *buf;          /* the cached chunk record (header + data) */
    size_t buf_len;
} server_snap_out;

/* The snapshot worker's job (server_snap.c): one at a time. */
enum { SERVER_SNAP_JOB_NONE, SERVER_SNAP_JOB_TAKE, SERVER_SNAP_JOB_CLEAN };
typedef struct server_snap_job {
    int kind; /* SERVER_SNAP_JOB_*; NONE: no worker runs */
    pthread_t thread;
    bool threaded;     /* thread runs it (else it ran on the loop) */
    _Atomic bool done; /* the worker finished: rc (TAKE: sn and t) are set */
    int rc;
    snap_meta sn;   /* TAKE: the snapshot taken; CLEAN: the one snap_gc trusts */
    snap_timing t;  /* TAKE: its steps */
    uint64_t t0_ns; /* when the loop started it */
    uint64_t bytes; /* TAKE: bytes_since_snap when it started */
    uint64_t drop;  /* CLEAN: the log dropped up to here (0: not) */
    bool gc;        /* CLEAN: snap_gc too ... */
    uint32_t keep;  /* ... keeping this many */
    int gc_rc;      /* CLEAN: snap_gc's result (rc: the drop's) */
} server_snap_job;

/* The leader's clock of one lease (server_lease.c). */
typedef struct server_lease {
    uint64_t id;
    int64_t ttl;          /* seconds, as the state machine has it */
    uint64_t keys;        /* attached, as of the last look */
    uint64_t deadline_ns; /* kv_now_ns() past which it expires */
    bool revoking;        /* its LEASE_REVOKE is proposed, not applied yet */
} server_lease;

/* The deadlines of every lease, sorted by id; only while leader. */
typedef struct server_leases {
    server_lease *v; /* malloc'd; at most KV_LEASES_MAX */
    size_t n;
    bool leader;            /* the deadlines are this leader's */
    bool synced;            /* v holds the state machine's leases of synced_gen */
    uint64_t synced_gen;    /* sm_leases_generation at the last sync */
    uint64_t turn_ns;       /* when expiry was last looked at */
    uint64_t expired_total; /* revokes proposed for expiry (metrics) */
} server_leases;

typedef struct server {
    server_config cfg;
    uint64_t id;
    char cluster_id[40];
    kv_fs *fs;  /* the log and hard state (no-sync with --unsafe-no-fsync) */
    kv_fs *rfs; /* the real one, for snapshots */
    int lock_fd;
    char snap_dir[SERVER_PATH_BYTES];
    char db_dir[SERVER_PATH_BYTES];

    uv_loop_t loop;
    uv_timer_t tick;
    uv_prepare_t prepare;
    uv_async_t wal_async;
    pthread_t loop_thread; /* the one that runs the loop (wal_append_now's callbacks) */
    uv_signal_t sigterm, sigint;
    uv_timer_t disk_timer;
    uv_work_t disk_work;  /* the data dir's walk, on libuv's thread pool */
    bool disk_walking;    /* disk_work queued, its after-callback not run yet */
    uint64_t disk_walked; /* the walk's result, for the after-callback */
    bool stopping;
    uint64_t ticks;
    uint64_t tick_origin_ns; /* kv_now_ns() when the tick timer started */

    net *net;
    struct http_server *http;
    node *node; /* the Ready loop and the write and read queues (node.h) */
    raft *r;    /* node_raft(node), borrowed */
    wal *w;
    hs *h;
    sm *sm;

    server_member members[SERVER_BOOK_MAX]; /* the address book */
    size_t members_count;
    server_member known[SERVER_BOOK_MAX]; /* learned outside the log (--join) */
    size_t known_count;
    uint64_t peer_ids[SERVER_BOOK_MAX]; /* peers declared to net */
    size_t peers_count;

    /* Written by the log's threads, read on the loop. */
    pthread_mutex_t mu;
    uint64_t durable_index, durable_term;
    int wal_error;

    /* Entries the log's queue had no room for (server_io.c): copies, in
     * index order, handed to the log as its queue drains. While any wait,
     * the leader answers writes BUSY. */
    wal_entry *backlog;
    size_t backlog_n, backlog_cap;
    uint64_t backlog_bytes;
    uint64_t log_full_total; /* appends that found the log's queue full */

    uint64_t leader_id;
    /* The leader whose link on_tick watches, and whether that link was up
     * (the hint raft_leader_unreachable: server.c, leader_link_watch) */
    uint64_t watch_leader;
    bool watch_link_up;

    uint64_t snap_index;       /* the newest snapshot taken or installed */
    uint64_t bytes_since_snap; /* entry bytes applied since it */
    uint64_t snap_bytes_base;  /* entry bytes applied before it (since start) */
    bool snap_wanted;          /* server_snapshot_take: start one when none runs */
    server_snap_job snap_job;
    uv_async_t snap_async; /* the worker finished */
    uint64_t snap_term;
    server_snap_out snap_out;
    FILE *snap_in; /* the snapshot stream being received */
    uint64_t snap_in_index, snap_in_term;

    /* scratch for applying */
    sm_entry *apply_entries;
    sm_reply *apply_replies;
    uint8_t **apply_bufs; /* membership payloads made while applying */
    size_t apply_cap;
    size_t apply_count;      /* of the apply being answered (io_apply..io_apply_end) */
    bool applying;           /* between io_apply and io_apply_end */
    bool apply_book_changed; /* a CONF or MEMBER entry in it */
    uint64_t apply_ns_total;
    uint64_t apply_batches;

    server_leases leases; /* server_lease.c */

    server_hash hashes[SERVER_HASHES_KEPT];
    sm_view *hash_view; /* the check point being hashed, or NULL */
    uint64_t hash_index;
    uint64_t hashes_next;
    server_hash_wait hash_waiters[SERVER_HASH_WAITERS_MAX];
    uint8_t *scratch;
    size_t scratch_cap;

    /* the disk quota (server_disk.c) */
    uint64_t disk_used;
    bool nospace;          /* alarm: writes are refused with NOSPACE */
    uint64_t compacted_at; /* applied index of the last compaction in alarm */
    uint64_t compacted_ms; /* loop time of that compaction */
    uint64_t nospace_alarms;
    uint64_t nospace_replies;

    /* watchers (server_watch.c) */
    struct server_watcher *watchers; /* [watchers_count]; NULL while none ever */
    uint32_t watchers_count;
    uint32_t watch_cursor;   /* the watcher a turn's pumping starts with */
    uv_idle_t watch_idle;    /* active while a watcher has more to read */
    uint64_t watch_events_total;
    uint64_t watch_canceled_total;

    /* counters (metrics) */
#define SERVER_REQUEST_TYPES 32u /* > every kv.Request.Type (server_req.c asserts) */
    uint64_t requests_by_type[SERVER_REQUEST_TYPES];
    uint64_t leader_changes;
    uint64_t proposals;
    uint64_t applied_entries;
    uint64_t snapshots_taken;
    uint64_t snapshots_installed;
    server_hist req_latency[SERVER_REQ_KINDS]; /* answered requests, by kind */
    /* The loop's turns (server_loop_turn): the time it was busy between
     * two waits for I/O, callbacks and Ready processing included. */
    server_hist loop_turns;
    uint64_t loop_turn_max_ns;
    uint64_t loop_mark_ns, loop_idle_mark_ns; /* at the end of the last turn */
    uint64_t loop_slow_logged_ns;             /* when a slow turn was last logged */
    uint64_t refused_logged_ns;               /* when a refused Raft message was last logged */
    uint64_t refused_quiet;                   /* refused since, not logged */
} server;

_Noreturn void server_fatal(server *s, int exit_code, const char *word, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* server_fatal for a failure rc of the state machine (or of a snapshot of
 * it): KVD_EXIT_CORRUPT for corruption, else KVD_EXIT_IO; the line ends with
 * RocksDB's status text, which names the damaged file (docs/rules.md: name
 * the file). */
_Noreturn void server_fatal_sm(server *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* server_members.c: the address book (names, addresses, roles) */
const server_member *server_member_by_id(const server *s, uint64_t id);
const server_member *server_member_by_name(const server *s, const char *name);
bool server_name_valid(const char *name);
int server_members_parse(server *s, const char *spec); /* --cluster (server_book_parse) */
/* Remembers m's name and address outside the book (never stored). */
void server_members_know(server *s, const server_member *m);
void server_members_from_pb(server *s, const Kv__Membership *m);
/* The book as a kv.Membership (malloc'd into *buf). */
int server_members_encode(const server *s, uint64_t index, uint8_t **buf, size_t *len);
/* A MEMBER entry: name joins at addr (addr "": forget a joining name). */
void server_members_joining(server *s, const char *name, const char *addr);
/* A CONF entry: the members become rm's (names from the book). */
void server_members_conf(server *s, const raft_membership *rm);
/* id is a voter or learner of the latest membership in the log. */
bool server_is_member(const server *s, uint64_t id);
/* Voters and learners of m (not joining ones). */
void server_members_to_raft(const Kv__Membership *m, raft_membership *out);
/* The membership stored in the state machine db (unpacked; free with
 * kv__membership__free_unpacked), or NULL when none was applied yet. */
Kv__Membership *server_members_stored(sm *db);
/* net's peers := the book minus this node. */
void server_peers_sync(server *s);

/* server_ops.c: operator requests (members, transfer, snapshots, check) */
void server_ops_request(server *s, net_conn *c, Kv__Request *q); /* frees q */
void server_hash_waiters_serve(server *s);
/* Answers (c, req_id) with the hash at index once it is known. */
void server_hash_wait_add(server *s, net_conn *c, uint64_t req_id, uint64_t index);
/* A check point entry at index was just applied: hash the state machine as
 * it is now, in steps (server_hash_step, once per loop turn). */
void server_hash_checkpoint(server *s, uint64_t index);
void server_hash_step(server *s);
/* Drops a hash in progress (before the state machine is replaced or closed). */
void server_hash_abort(server *s);
/* The hash recorded at check point index: 0, KV_EBUSY (still being
 * computed), KV_ENOTFOUND. */
int server_hash_at(const server *s, uint64_t index, uint64_t *hash);
void server_ops_tick(server *s); /* leader: promote caught-up learners */
void server_ops_close(server *s);

/* server_req.c: client requests */
void server_on_request(void *ctx, net_conn *c, Kv__Request *req);
void server_reply_code(net_conn *c, uint64_t id, int code, const char *detail);
void server_reply_not_leader(server *s, net_conn *c, uint64_t id);
/* Proposes cmd; on success the reply goes to (c, id) once applied (c NULL:
 * no reply). On failure the reply was sent; returns its code. */
int server_propose_cmd(server *s, net_conn *c, uint64_t id, const Kv__Command *cmd);
/* Answers (c, req_id) when the entry at index (a CONF entry proposed on
 * s->r in this term) applies; not measured (SERVER_REQ_NONE). */
void server_wait_index(server *s, net_conn *c, uint64_t req_id, uint64_t index);
/* Counts one answered request of kind that arrived at t0_ns. */
void server_req_done(server *s, enum server_req_kind kind, uint64_t t0_ns);
/* Answers the GET or SCAN q on c from the state machine as it is now. */
void server_serve_read(server *s, net_conn *c, const Kv__Request *q);
/* Queues q for a ReadIndex round (node_read); io_read_done answers it and
 * frees q. Not the leader, or too many reads waiting: answered now. */
void server_read_round(server *s, net_conn *c, Kv__Request *q, enum server_req_kind kind,
                       uint64_t t0_ns);

/* server_lease.c: leases (the leader's deadlines and expiry) */
/* LEASE_KEEPALIVE and LEASE_LIST: a read round, then server_lease_serve.
 * Takes q. */
void server_lease_request(server *s, net_conn *c, Kv__Request *q);
/* Answers q (KEEPALIVE or LIST) once its read round confirmed leadership. */
void server_lease_serve(server *s, net_conn *c, const Kv__Request *q);
/* Each tick: while leader, proposes the revoke of expired leases. */
void server_lease_tick(server *s);
/* The node became leader or stopped being one (io_role_changed). */
void server_lease_role(server *s, bool leader);
uint64_t server_leases_expired_total(const server *s);
void server_lease_free(server *s);

/* server_watch.c: WATCH streams, served by any node from what it applied */
void server_watch_init(server *s);                          /* the loop's idle handle */
void server_watch_request(server *s, net_conn *c, Kv__Request *q); /* frees q */
/* Once per loop turn, after applying: each watcher gets what was applied
 * since its last events (a bounded amount per turn). Nothing when none. */
void server_watch_step(server *s);
void server_watch_close(server *s); /* every watcher dropped (shutdown) */

/* server_io.c: kvd's half of node_io (fail-stop: every callback returns 0) */
void server_io_init(server *s, node_io *io, node_limits *lim);
/* The log's completion thread reported (s->wal_async): node_log_durable. */
void server_on_wal_async(uv_async_t *h);

/* server_metrics.c: GET /metrics and /health (an http_handler) */
int server_http(void *ctx, const char *path, char **body, size_t *len, const char **ctype);
/* Called once per loop turn, last thing before the loop waits for I/O
 * (the end of the uv_prepare callback): counts the turn that ends here. */
void server_loop_turn(server *s);

/* server_io.c: the log's back-pressure. True while entries wait for room
 * in the log's queue (writes are refused BUSY meanwhile). */
bool server_log_backlogged(const server *s);
/* Hands every waiting entry to the log, waiting for room as long as it
 * takes (blocks the loop: only before a snapshot, which needs the log
 * whole; the backlog is rare and short). */
void server_log_backlog_drain(server *s);
/* Frees the backlog (shutdown). */
void server_log_backlog_free(server *s);

/* server_disk.c: the disk quota and its NOSPACE alarm */
void server_disk_start(server *s);

/* server_snap.c: snapshots */
int server_snapshot_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                         size_t len, size_t *got, uint64_t *total_size);
void server_snap_out_close(server *s);
void server_snapshot_chunk(server *s, const raft_snapshot_chunk *ch);
void server_snapshot_install(server *s, const raft_snapshot_meta *meta);
/* Each loop turn: starts a snapshot on the worker when one is due. */
void server_snapshot_maybe_take(server *s);
/* Asks for a snapshot of everything applied, taken on the worker as soon
 * as none runs (the disk quota). */
void server_snapshot_take(server *s);
/* Takes a snapshot of everything applied now (unless one covers it), on
 * the loop, after the one in progress: s->snap_index names it on return
 * (kvcli snapshot save). */
void server_snapshot_take_now(server *s);
/* s->snap_async: the worker finished. */
void server_on_snap_async(uv_async_t *h);
/* Waits for the worker (before the state machine is replaced or closed);
 * a snapshot it took stays on disk unused; a failure stops the node. */
void server_snapshot_stop(server *s);
int server_stream_install(server *s, FILE *f, uint64_t len, snap_meta *out);

#endif /* KV_SERVER_SERVER_INT_H */
