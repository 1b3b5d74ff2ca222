/* One kv node: start-up and the libuv loop. See server.h. The Ready cycle
 * is src/node's (node.h); its I/O, kvd's half of node_io, is server_io.c. */
#include "server/server_int.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "common/logging.h"
#include "kv/client.h"
#include "kv/errors.h"
#include "server/http.h"
#include "server/notify.h"
#include "server/store.h"
#include "storage/clusterfile.h"
#include "storage/datadir.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

void server_config_default(server_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->snapshot_entries = SERVER_SNAPSHOT_ENTRIES_DEFAULT;
    cfg->snapshot_bytes = SERVER_SNAPSHOT_BYTES_DEFAULT;
    cfg->snapshots_keep = KV_SNAPSHOTS_KEEP_DEFAULT;
    cfg->tick_ms = SERVER_TICK_MS_DEFAULT;
    cfg->election_ticks = SERVER_ELECTION_TICKS_DEFAULT;
    cfg->quota_bytes = SERVER_QUOTA_BYTES_DEFAULT;
    cfg->slow_fsync_ms = 100;
}

uint64_t server_node_id(const char *name) {
    uint64_t id = kv_xxh3(name, strlen(name));
    return id == 0 ? 1 : id;
}

/* ---- faults ---------------------------------------------------------------- */

_Noreturn void server_fatal(server *s, int exit_code, const char *word, const char *fmt, ...) {
    (void)s;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kv_log(KV_LOG_ERROR, word, "%s; stopping (exit %d)", msg, exit_code);
    /* Let it crash: no clean-up that could block or write more. */
    _exit(exit_code);
}

_Noreturn void server_fatal_sm(server *s, int rc, const char *fmt, ...) {
    assert(rc != 0);
    char msg[512], why[SM_ERROR_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sm_last_error(s->sm, why, sizeof why);
    bool corrupt = rc == KV_ECORRUPT || rc == KV_EMISSING || rc == KV_EVERSION;
    server_fatal(s, corrupt ? KVD_EXIT_CORRUPT : KVD_EXIT_IO, kv_errword(rc), "%s: %s%s%s%s", msg,
                 kv_strerror(rc), why[0] ? " (" : "", why, why[0] ? ")" : "");
}

int server_exit_code(int rc) {
    switch (rc) {
    case 0:
        return KVD_EXIT_OK;
    case KV_ECORRUPT:
    case KV_EMISSING:
    case KV_EVERSION:
        return KVD_EXIT_CORRUPT;
    case KV_ELOCKED:
        return KVD_EXIT_LOCKED;
    case KV_EINVAL:
    case KV_ECONFIG:
        return KVD_EXIT_USAGE;
    default:
        return KVD_EXIT_IO;
    }
}

/* ---- the loop ------------------------------------------------------------------ */

/* A follower's link to its leader that was up and closed (a kill -9 closes
 * it at once) is a hint to Raft: forget that leader and campaign soon, as
 * raft_leader_unreachable says, instead of after an election timeout. Only
 * the link going down counts, once per time it was up: a link that never
 * came up, or stays down, says nothing new. Looked at every loop turn (a
 * few compares), so every follower forgets the dead leader at once, before
 * the first of them campaigns at its next tick. */
static void leader_link_watch(server *s) {
    if (s->stopping)
        return; /* our own links are closing */
    uint64_t lead = raft_leader(s->r);
    bool up = lead != 0 && lead != s->id && net_peer_connected(s->net, lead);
    if (lead != s->watch_leader) {
        s->watch_leader = lead;
        s->watch_link_up = up;
        return;
    }
    if (s->watch_link_up && !up && raft_state_role(s->r) == RAFT_FOLLOWER) {
        const server_member *m = server_member_by_id(s, lead);
        KV_LOGI("LEADER", "link to leader %s closed: campaigning soon unless it is heard from",
                m ? m->name : "?");
        raft_leader_unreachable(s->r, lead);
    }
    s->watch_link_up = up;
}

/* Once per loop turn: the leader's link looked at, every Ready raft has
 * (src/node), then the snapshot and check point work that follows applying. */
/* One Raft tick (and every fifth the operations tick). */
static void tick_once(server *s) {
    node_tick(s->node);
    if (++s->ticks % 5 == 0)
        server_ops_tick(s);
}

/* With --read-lease the leader's ticks are its lease clock, so none may be
 * lost: a loop that stalled (a slow disk, SIGSTOP, a swapped-out page)
 * gets every tick that fell due by the monotonic clock before it steps
 * messages or serves a read, or it would think its lease younger than it
 * is while followers, whose clocks ran on, already elected a new leader.
 * More than two election timeouts of ticks change nothing further. */
static void ticks_catch_up(server *s) {
    uint64_t due = (kv_now_ns() - s->tick_origin_ns) / ((uint64_t)s->cfg.tick_ms * 1000000u);
    uint64_t cap = 2u * s->cfg.election_ticks + 2u;
    if (due > s->ticks + cap)
        s->ticks = due - cap;
    while (s->ticks < due)
        tick_once(s);
}

static void on_prepare(uv_prepare_t *h) {
    server *s = h->data;
    if (s->cfg.read_lease)
        ticks_catch_up(s);
    leader_link_watch(s);
    int rc = node_run(s->node);
    if (rc != 0) /* the node_io callbacks are fail-stop: only raft_ready is left */
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "raft_ready: %s", kv_strerror(rc));
    /* a snapshot drops the log behind it: not while entries still wait to
     * enter the log (server_io.c) */
    if (!server_log_backlogged(s))
        server_snapshot_maybe_take(s);
    server_hash_step(s);
    server_watch_step(s); /* what was just applied, to the watchers */
    server_loop_turn(s); /* the loop waits for I/O next */
}

static void on_tick(uv_timer_t *h) {
    server *s = h->data;
    if (s->cfg.read_lease)
        ticks_catch_up(s);
    else
        tick_once(s); /* a stalled loop's ticks are lost: elections wait longer */
    server_lease_tick(s); /* by the clock: expiry looks at most every 50 ms */
}

/* A refused message is counted by the core (kv_raft_msgs_refused_total);
 * it is logged at most once a second, so a misbehaving peer cannot flood
 * the log. */
static void on_raft(void *ctx, const char *from, const raft_msg *m) {
    server *s = ctx;
    int rc = node_step(s->node, m);
    if (rc == 0 || rc == KV_EINVAL)
        return;
    uint64_t now = kv_now_ns();
    if (now - s->refused_logged_ns < 1000000000ull) {
        s->refused_quiet++;
        return;
    }
    KV_LOGW(kv_errword(rc), "message type %d from %s refused: %s (%llu more since the last line)",
            (int)m->type, from, kv_strerror(rc), (unsigned long long)s->refused_quiet);
    s->refused_logged_ns = now;
    s->refused_quiet = 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
    server *s = h->data;
    if (s->stopping)
        return;
    KV_LOGI("STOP", "signal %d: shutting down", signum);
    server_notify("STOPPING=1");
    s->stopping = true;
    node_fail_all(s->node, KV_EUNAVAILABLE);
    server_ops_close(s);
    net_stop_listening(s->net);
    uv_stop(&s->loop);
}

/* ---- start-up ----------------------------------------------------------------- */

/* What start-up hands the loop: the data dir locked; the log, the state
 * machine and the newest snapshot opened and made to agree (store.h); the
 * hard state checked against the log; Raft's configuration and the durable
 * entries it restarts from. The address book and the cluster id, which the
 * network needs as well, go into the server (s->members, s->cluster_id).
 * Filled by server_start_up, also partly when it fails: start_adopt moves
 * every handle into the server, which closes them. */
typedef struct server_start {
    int lock_fd; /* -1: not locked */
    wal *w;
    hs *h;
    sm *sm;
    raft_config raft;   /* without its entries: start_raft adds them */
    wal_entry *entries; /* owned (wal_entries_free) */
    size_t entries_count;
} server_start;

/* What a node whose data dir holds nothing must be told (docs/rules.md "a
 * replaced disk never votes"). */
static void refuse_empty(const server *s, const char *why) {
    fprintf(stderr,
            "kvd: %s holds no data %s.\n"
            "  A new cluster: run 'kvd init' once on each founder first (the same --cluster\n"
            "    and --cluster-token on every one), then start kvd.\n"
            "  A member whose disk was replaced or wiped: it lost the writes it acknowledged\n"
            "    and must not vote as itself. On a running member: kvcli member remove %s,\n"
            "    then kvcli member add %s HOST:PORT; then start this node with\n"
            "    --join HOST:PORT (any member). docs/deploy.md, \"A replaced disk\".\n",
            s->cfg.data_dir, why, s->cfg.name, s->cfg.name);
}

/* A SIGTERM or SIGINT during start-up, before the loop's handlers exist,
 * would kill the process by the signal (exit 143, counted as a crash by a
 * supervisor or a test). It is remembered instead, and the node stops
 * cleanly (exit 0) as soon as the loop runs. */
static volatile sig_atomic_t early_signal;

static void on_early_signal(int signum) {
    early_signal = signum;
}

static void early_signals_catch(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_early_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* Asks the member at --join for its status line (*line) and its members
 * (*ms, *n). A cluster between leaders (an election, a partition healing)
 * is waited for, up to SERVER_JOIN_WAIT_MS, not a reason to exit. On 0 the
 * caller owns *line and *ms (kv_free); on failure nothing is owned, the
 * reason is on stderr, and the error is KV_ECONFIG (another cluster, a
 * wrong token) or KV_EIO. */
static int join_ask(const server *s, char **line, kv_member **ms, size_t *n) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.token = s->cfg.token;
    o.timeout_ms = 10000;
    kv_client *c = NULL;
    *line = NULL;
    *ms = NULL;
    *n = 0;
    int rc = KV_EUNAVAILABLE;
    for (uint64_t t0 = kv_now_ns(); rc == KV_EUNAVAILABLE || rc == KV_ETIMEOUT;) {
        if (c != NULL)
            kv_client_close(c);
        kv_free(*line);
        *line = NULL;
        c = NULL;
        rc = kv_client_open(&c, s->cfg.join, &o);
        if (rc == 0)
            rc = kv_node_status(c, NULL, line);
        if (rc == 0)
            rc = kv_member_list(c, ms, n);
        if ((rc != KV_EUNAVAILABLE && rc != KV_ETIMEOUT) ||
            kv_now_ns() - t0 > SERVER_JOIN_WAIT_MS * 1000000ull || early_signal != 0)
            break;
        KV_LOGW(kv_errword(rc), "--join %s: %s; trying again", s->cfg.join, kv_strerror(rc));
    }
    if (c != NULL)
        kv_client_close(c);
    if (rc != 0) {
        fprintf(stderr, "kvd: --join %s: cannot learn the cluster from it: %s (%s)\n", s->cfg.join,
                kv_strerror(rc), kv_errword(rc));
        kv_free(*line);
        *line = NULL;
        return rc == KV_EAUTH || rc == KV_ECONFIG || rc == KV_EVERSION ? KV_ECONFIG : KV_EIO;
    }
    assert(*line != NULL);
    return 0;
}

/* --join ADDR: the cluster id and the members (with this node announced
 * by member add, or not yet: then it waits for the leader) from a member. */
static int join_fetch(server *s, bool fresh, const char *stored_id) {
    char *line;
    kv_member *ms;
    size_t n;
    int rc = join_ask(s, &line, &ms, &n);
    if (rc != 0)
        return rc;
    const char *cl = strstr(line, "cluster=");
    if (cl != NULL) {
        cl += strlen("cluster=");
        size_t len = strcspn(cl, " \n");
        if (len < sizeof s->cluster_id) {
            memcpy(s->cluster_id, cl, len);
            s->cluster_id[len] = 0;
        }
    }
    /* known, not in the book: the book is built only from the log or a
     * snapshot, so it is the same on every node at the same index */
    s->members_count = 0;
    for (size_t i = 0; i < n; i++) {
        server_member m = {0};
        m.id = ms[i].id ? ms[i].id : server_node_id(ms[i].name);
        snprintf(m.name, sizeof m.name, "%s", ms[i].name);
        snprintf(m.addr, sizeof m.addr, "%s", ms[i].address);
        server_members_know(s, &m);
    }
    bool announced = server_member_by_id(s, s->id) != NULL;
    bool voter = false;
    for (size_t i = 0; i < n; i++)
        voter |= (ms[i].id ? ms[i].id : server_node_id(ms[i].name)) == s->id && !ms[i].learner &&
                 !ms[i].joining;
    kv_free(ms);
    kv_free(line);
    if (s->cluster_id[0] == 0)
        return KV_ECONFIG;
    if (stored_id[0] != 0 && strcmp(stored_id, s->cluster_id) != 0) {
        fprintf(stderr, "kvd: --join %s: that is cluster %s, this data dir belongs to %s\n",
                s->cfg.join, s->cluster_id, stored_id);
        return KV_ECONFIG;
    }
    if (fresh && voter) {
        /* an empty log must never vote as a member that had one */
        char why[160];
        snprintf(why, sizeof why, "but %s is a voting member of cluster %s", s->cfg.name,
                 s->cluster_id);
        refuse_empty(s, why);
        return KV_ECONFIG;
    }
    KV_LOGI("JOIN", "joining cluster %s through %s (%zu members known)%s", s->cluster_id,
            s->cfg.join, n,
            announced ? "" : "; not announced yet: run kvcli member add NAME HOST:PORT");
    return stored_id[0] == 0 ? startup_cluster_save(s->rfs, s->cfg.data_dir, s->cluster_id, NULL)
                             : 0;
}

/* The cluster this data dir belongs to (DIR/CLUSTER), and whether this
 * start bootstraps it: only a fresh data dir made by kvd init does. A
 * fresh one without CLUSTER joins (--join) or is refused; one that has
 * entries but no CLUSTER is damaged. *cf gets the file (zeroed when there
 * is none); *bootstrap is true when this start bootstraps from its
 * founders. */
static int cluster_identity(server *s, bool fresh, cf_info *cf, bool *bootstrap) {
    memset(cf, 0, sizeof *cf);
    *bootstrap = false;
    int rc = cf_read(s->rfs, s->cfg.data_dir, cf, NULL, NULL);
    if (rc == KV_ECORRUPT) {
        KV_LOGE("CORRUPT", "%s/" CF_FILE " is damaged (kvd check names the offset)",
                s->cfg.data_dir);
        return rc;
    }
    if (rc == 0) {
        snprintf(s->cluster_id, sizeof s->cluster_id, "%s", cf->id);
        *bootstrap = fresh && cf->founders[0] != '\0' && s->cfg.join == NULL;
        if (fresh && cf->founders[0] == '\0' && s->cfg.join == NULL) {
            refuse_empty(s, "yet (it joined a cluster and received nothing)");
            return KV_ECONFIG;
        }
        return 0;
    }
    if (rc != KV_EMISSING)
        return rc;
    if (!fresh) {
        KV_LOGE("MISSING", "%s/" CF_FILE " is missing but the data dir holds a log",
                s->cfg.data_dir);
        return KV_ECORRUPT;
    }
    if (s->cfg.join == NULL) {
        refuse_empty(s, "and was not made by kvd init");
        return KV_ECONFIG;
    }
    return 0; /* written once --join has learned the id */
}

/* The address book at start-up: the state machine's (the membership as
 * applied), else kvd init's founders, else the cluster joined (--join). */
static int book_load(server *s, sm *db, bool fresh, bool *bootstrap) {
    cf_info cf;
    int rc = cluster_identity(s, fresh, &cf, bootstrap);
    if (rc != 0)
        return rc;
    Kv__Membership *mpb = server_members_stored(db);
    if (mpb != NULL) {
        server_members_from_pb(s, mpb);
        kv__membership__free_unpacked(mpb, NULL);
    } else if (cf.founders[0] != '\0' && s->cfg.join == NULL) {
        if (server_members_parse(s, cf.founders) != 0)
            return KV_ECORRUPT; /* kvd init checked them */
        if (server_member_by_id(s, s->id) == NULL) {
            fprintf(stderr, "kvd: --name %s is not one of the founders kvd init was given (%s)\n",
                    s->cfg.name, cf.founders);
            return KV_ECONFIG;
        }
    } else if (s->cfg.join != NULL) {
        return join_fetch(s, fresh, cf.id);
    } else {
        refuse_empty(s, "of a membership");
        return KV_ECONFIG;
    }
    return 0;
}

/* Step 1: the data dir exists (made by kvd init, or now for --join) and is
 * this process's alone. */
static int start_lock(server *s, server_start *st) {
    const server_config *cfg = &s->cfg;
    if (cfg->join == NULL && dd_check_format(s->rfs, cfg->data_dir, NULL, NULL) == KV_EMISSING) {
        refuse_empty(s, "and was not made by kvd init"); /* and nothing is created */
        return KV_ECONFIG;
    }
    int rc = dd_init(s->rfs, cfg->data_dir);
    if (rc != 0)
        return rc;
    return startup_lock(cfg->data_dir, &st->lock_fd);
}

/* Step 2: the log, the state machine and the newest snapshot, made to
 * agree (store.h); then the hard state, checked against the log's highest
 * term. On 0 the caller owns *ss (store_start_free). */
static int start_store(server *s, server_start *st, store_start *ss, hs_state *hst) {
    const server_config *cfg = &s->cfg;
    wal_options wo;
    wal_options_default(&wo);
    if (cfg->wal_segment_bytes != 0)
        wo.segment_bytes = cfg->wal_segment_bytes;
    if (cfg->wal_queue_bytes != 0)
        wo.queue_bytes_max = cfg->wal_queue_bytes;
    wo.slow_sync_ns = (uint64_t)cfg->slow_fsync_ms * 1000000u;
    int rc = store_open(s->fs, s->rfs, cfg->data_dir, &wo, &st->w, &st->sm, ss);
    if (rc != 0)
        return rc;
    if ((rc = startup_hs_load(s->fs, cfg->data_dir, st->w, &st->h, hst)) != 0)
        store_start_free(ss);
    return rc;
}

/* Step 4: Raft's configuration from the hard state, the snapshot and,
 * when this start bootstraps, the founders in the book. */
static void start_raft_config(server *s, const store_start *ss, const hs_state *hst, bool bootstrap,
                              raft_config *rcfg) {
    raft_config_init(rcfg, s->id);
    rcfg->election_ticks = s->cfg.election_ticks;
    rcfg->lease_read = s->cfg.read_lease;
    rcfg->seed = s->id ^ (uint64_t)getpid() ^ kv_now_ns();
    rcfg->snapshot_read = server_snapshot_read;
    rcfg->snapshot_ctx = s;
    rcfg->hs.term = hst->term;
    rcfg->hs.vote = hst->vote;
    rcfg->hs.commit = hst->commit;
    rcfg->applied = ss->applied;
    if (ss->has_snap) {
        rcfg->has_snapshot = true;
        rcfg->snapshot.index = ss->snap.index;
        rcfg->snapshot.term = ss->snap.term;
        /* the membership at the snapshot's index, not the state machine's
         * (later) one: raft replays the log's changes after it */
        if (ss->snap_members != NULL)
            server_members_to_raft(ss->snap_members, &rcfg->snapshot.membership);
    }
    if (bootstrap) {
        for (size_t i = 0; i < s->members_count; i++)
            rcfg->bootstrap.voters[rcfg->bootstrap.voters_count++] = s->members[i].id;
    }
    assert(rcfg->bootstrap.voters_count <= KV_NODES_MAX);
}

/* Start-up as one step: lock the data dir, open the storage, learn the
 * cluster id and the members (the data dir's, kvd init's founders, or the
 * cluster joined), and configure Raft. Fills *st; on failure what was
 * opened is in *st too (start_adopt, then start_abandon, closes it). */
static int server_start_up(server *s, server_start *st) {
    memset(st, 0, sizeof *st);
    st->lock_fd = -1;
    int rc = start_lock(s, st);
    store_start ss;
    hs_state hst;
    if (rc != 0 || (rc = start_store(s, st, &ss, &hst)) != 0)
        return rc;
    /* Step 3: membership and addresses */
    bool fresh = ss.last == 0 && !ss.has_snap, bootstrap = false;
    if ((rc = book_load(s, st->sm, fresh, &bootstrap)) != 0) {
        store_start_free(&ss);
        return rc;
    }
    start_raft_config(s, &ss, &hst, bootstrap, &st->raft);
    st->entries = ss.entries; /* taken */
    st->entries_count = ss.entries_count;
    ss.entries = NULL;
    ss.entries_count = 0;
    KV_LOGI("START",
            "node %s (id %016" PRIx64 ") cluster %s: log %" PRIu64 "..%" PRIu64 ", applied %" PRIu64
            ", snapshot %" PRIu64 ", term %" PRIu64,
            s->cfg.name, s->id, s->cluster_id, ss.first, ss.last, ss.applied,
            ss.has_snap ? ss.snap.index : 0, hst.term);
    store_start_free(&ss);
    return 0;
}

/* The loop's owner takes what start-up opened (also after a failure, to
 * close it). */
static void start_adopt(server *s, server_start *st) {
    assert(s->w == NULL && s->sm == NULL && s->h == NULL && s->lock_fd < 0);
    s->lock_fd = st->lock_fd;
    s->w = st->w;
    s->h = st->h;
    s->sm = st->sm;
    if (st->raft.has_snapshot) {
        s->snap_index = st->raft.snapshot.index;
        s->snap_term = st->raft.snapshot.term;
    }
    st->lock_fd = -1;
    st->w = NULL;
    st->h = NULL;
    st->sm = NULL;
}

/* Raft from st's configuration and entries (freed here, also on failure). */
static int start_raft(server *s, server_start *st) {
    size_t n = st->entries_count;
    wal_entry *we = st->entries;
    st->entries = NULL;
    st->entries_count = 0;
    raft_entry *re = n ? calloc(n, sizeof(*re)) : NULL;
    if (n && re == NULL) {
        wal_entries_free(we, n);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        re[i].index = we[i].index;
        re[i].term = we[i].term;
        re[i].type = we[i].type;
        re[i].data = we[i].data;
        re[i].len = we[i].len;
    }
    st->raft.entries = re;
    st->raft.entries_count = n;
    node_io io;
    node_limits lim;
    server_io_init(s, &io, &lim);
    int rc = node_new(&st->raft, &io, &lim, &s->node);
    if (rc == 0)
        s->r = node_raft(s->node); /* borrowed */
    free(re);
    st->raft.entries = NULL;
    wal_entries_free(we, n);
    if (rc != 0)
        KV_LOGE(kv_errword(rc), "the persisted raft state does not restart: %s", kv_strerror(rc));
    return rc;
}

static server *server_new(const server_config *cfg) {
    server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cfg = *cfg;
    s->id = server_node_id(cfg->name);
    s->lock_fd = -1;
    s->rfs = kv_fs_posix();
    s->fs = cfg->unsafe_no_fsync ? kv_fs_posix_unsafe_nosync() : s->rfs;
    kv_fs_join(s->db_dir, sizeof s->db_dir, cfg->data_dir, "db");
    kv_fs_join(s->snap_dir, sizeof s->snap_dir, cfg->data_dir, "snap");
    pthread_mutex_init(&s->mu, NULL);
    s->snap_out.cached_chunk = UINT64_MAX;
    return s;
}

/* A start that failed: closes what it opened, so the sanitizer builds see
 * no leak on this path. */
static int start_abandon(server *s, int rc) {
    int code = server_exit_code(rc);
    if (s->w != NULL)
        wal_close(s->w);
    sm_close(s->sm);
    if (s->h != NULL)
        hs_close(s->h);
    node_free(s->node);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
    return code;
}

/* ---- serving ------------------------------------------------------------------ */

/* File descriptors kvd needs besides its connections: RocksDB's table
 * files, the log's segments, snapshots being sent, /metrics. */
#define SERVER_FDS_OTHER 1024u

/* The client connections this process can hold: the soft limit on open
 * files is raised toward the hard one to fit conns_max clients, the
 * reserve and SERVER_FDS_OTHER; when the hard limit is lower, fewer clients
 * are taken (logged), so a client past it is told BUSY instead of the
 * accept failing for want of a descriptor. */
static uint32_t conns_fitting_fds(uint32_t conns_max) {
    rlim_t want = (rlim_t)conns_max + KV_CONNS_RESERVE + SERVER_FDS_OTHER;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return conns_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = up.rlim_cur;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return conns_max;
    rlim_t floor = KV_CONNS_RESERVE + SERVER_FDS_OTHER + 64u;
    uint32_t fit = rl.rlim_cur > floor ? (uint32_t)(rl.rlim_cur - KV_CONNS_RESERVE - SERVER_FDS_OTHER)
                                       : 64u;
    KV_LOGW("CONFIG",
            "open files are limited to %llu (ulimit -n, LimitNOFILE): at most %u client "
            "connections instead of %u",
            (unsigned long long)rl.rlim_cur, fit, conns_max);
    return fit;
}

/* The network and /metrics. Returns a kvd_exit code. */
static int serve_open(server *s) {
    const server_config *cfg = &s->cfg;
    net_config nc;
    net_config_default(&nc);
    nc.conns_max = conns_fitting_fds(nc.conns_max);
    nc.loop = &s->loop;
    nc.listen_addr = cfg->listen;
    nc.node_name = cfg->name;
    nc.cluster_id = s->cluster_id;
    nc.token = cfg->token;
    nc.ctx = s;
    nc.on_request = server_on_request;
    nc.on_raft = on_raft;
    int rc = net_open(&nc, &s->net);
    if (rc != 0) {
        fprintf(stderr, "kvd: cannot listen on %s: %s\n", cfg->listen, kv_strerror(rc));
        return rc == KV_EINVAL ? KVD_EXIT_USAGE : KVD_EXIT_IO;
    }
    server_peers_sync(s);
    if (cfg->metrics != NULL &&
        (rc = http_open(&s->loop, cfg->metrics, server_http, s, &s->http)) != 0)
        return rc == KV_EINVAL ? KVD_EXIT_USAGE : KVD_EXIT_IO;
    return KVD_EXIT_OK;
}

/* The loop's handles, then the loop until SIGTERM or SIGINT stops it. */
static void serve(server *s) {
    const server_config *cfg = &s->cfg;
    uv_timer_init(&s->loop, &s->tick);
    s->tick_origin_ns = kv_now_ns();
    uv_timer_start(&s->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
    uv_prepare_init(&s->loop, &s->prepare);
    uv_prepare_start(&s->prepare, on_prepare);
    server_watch_init(s);
    server_disk_start(s);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    KV_LOGI("SERVE", "listening on %s%s", cfg->listen,
            cfg->unsafe_no_fsync ? " (UNSAFE: --unsafe-no-fsync)" : "");
    char ready[256];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=serving on %s", cfg->listen);
    server_notify(ready); /* Type=notify: systemd counts the node started */
    if (early_signal != 0) /* came during start-up: the loop's handlers own them now */
        on_signal(&s->sigterm, early_signal);

    s->loop_thread = pthread_self();
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* SIGTERM: the log first (everything queued is synced), then the rest.
 * Frees s; returns exit_code. */
static int server_stop(server *s, int exit_code) {
    if (s->node != NULL) /* what arrived after the signal */
        node_fail_all(s->node, KV_EUNAVAILABLE);
    s->stopping = true;      /* no snapshot job starts any more (net_close runs the loop) */
    server_snapshot_stop(s); /* before its uv_async closes and the state machine */
    http_close(s->http);
    server_watch_close(s);
    if (s->net != NULL)
        net_close(s->net);
    wal_close(s->w);
    uv_walk(&s->loop, close_walk, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    server_snap_out_close(s);
    if (s->snap_in)
        fclose(s->snap_in);
    sm_close(s->sm);
    hs_close(s->h);
    node_free(s->node);
    server_lease_free(s);
    free(s->apply_entries);
    free(s->apply_replies);
    free(s->apply_bufs);
    free(s->scratch);
    server_log_backlog_free(s);
    close(s->lock_fd);
    free(s);
    if (exit_code == KVD_EXIT_OK)
        KV_LOGI("STOP", "clean shutdown");
    return exit_code;
}

/* With lease reads a leader serves reads while a quorum heard from it
 * within the election timeout, counting on those followers to ignore
 * campaigns for as long. A node that restarts forgets it heard from the
 * leader, so it stays silent for one election timeout first: no vote of its
 * can make a new leader while an old one still reads on its lease. */
static void start_lease_wait(server *s) {
    uint64_t ms = (uint64_t)s->cfg.election_ticks * s->cfg.tick_ms;
    KV_LOGI("LEASEWAIT", "--read-lease: waiting %llu ms (one election timeout) before joining",
            (unsigned long long)ms);
    for (uint64_t t = 0; t < ms && early_signal == 0; t += 10)
        usleep(10000);
}

int server_run(const server_config *cfg) {
    early_signals_catch();
    server *s = server_new(cfg);
    if (s == NULL)
        return KVD_EXIT_IO;
    kv_log_set_prefix(cfg->name);
    if (cfg->unsafe_no_fsync)
        KV_LOGW("UNSAFE", "--unsafe-no-fsync: nothing is synced; a crash loses acknowledged "
                          "writes. For tests only.");
    server_start st;
    int rc = server_start_up(s, &st);
    start_adopt(s, &st); /* also what a failed start opened, to close it */
    if (rc == 0)
        rc = start_raft(s, &st);
    if (rc != 0 && early_signal != 0) { /* asked to stop while it started */
        KV_LOGI("STOP", "signal %d during start-up: stopping", (int)early_signal);
        start_abandon(s, rc);
        return KVD_EXIT_OK;
    }
    if (rc != 0)
        return start_abandon(s, rc);
    if (cfg->read_lease)
        start_lease_wait(s);

    uv_loop_init(&s->loop);
    uv_loop_configure(&s->loop, UV_METRICS_IDLE_TIME); /* for server_loop_turn */
    int exit_code = serve_open(s);
    s->tick.data = s->prepare.data = s->wal_async.data = s->sigterm.data = s->sigint.data = s;
    uv_async_init(&s->loop, &s->wal_async, server_on_wal_async);
    s->snap_async.data = s;
    uv_async_init(&s->loop, &s->snap_async, server_on_snap_async);
    if (exit_code == KVD_EXIT_OK)
        serve(s);
    return server_stop(s, exit_code);
}
