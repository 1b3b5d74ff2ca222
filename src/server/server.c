/* One kv node: start-up and the libuv loop. See server.h. The Ready cycle
 * is src/node's (node.h); its I/O, kvd's half of node_io, is server_io.c. */
#include "server/server_int.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "common/logging.h"
#include "kv/client.h"
#include "kv/errors.h"
#include "kvd/check.h"
#include "server/http.h"
#include "server/notify.h"
#include "server/store.h"
#include "storage/clusterfile.h"
#include "storage/datadir.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* Once per loop turn: every Ready raft has (src/node), then the snapshot
 * and check point work that follows applying. */
static void on_prepare(uv_prepare_t *h) {
    server *s = h->data;
    int rc = node_run(s->node);
    if (rc != 0) /* the node_io callbacks are fail-stop: only raft_ready is left */
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "raft_ready: %s", kv_strerror(rc));
    server_snapshot_maybe_take(s);
    server_hash_step(s);
}

static void on_tick(uv_timer_t *h) {
    server *s = h->data;
    node_tick(s->node);
    if (++s->ticks % 5 == 0)
        server_ops_tick(s);
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

int server_lock_data_dir(server *s) {
    char path[SERVER_PATH_BYTES];
    kv_fs_join(path, sizeof path, s->cfg.data_dir, "LOCK");
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        KV_LOGE("IO", "cannot open %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(s->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        if (n > 0)
            pid[strcspn(pid, "\n")] = 0;
        KV_LOGE("LOCKED", "data dir %s is in use by another kvd (pid %s); exiting",
                s->cfg.data_dir, n > 0 ? pid : "?");
        return KV_ELOCKED;
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, buf, (size_t)len, 0) != len)
        KV_LOGW("IO", "cannot write the pid into %s", path);
    return 0;
}

/* What a node whose data dir holds nothing must be told (pitfalls.md, "a
 * member whose disk was replaced comes back as itself"). */
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

/* --join ADDR: the cluster id and the members (with this node announced
 * by member add, or not yet: then it waits for the leader) from a member. */
static int join_fetch(server *s, bool fresh, const char *stored_id) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.token = s->cfg.token;
    o.timeout_ms = 10000;
    kv_client *c = NULL;
    char *line = NULL;
    kv_member *ms = NULL;
    size_t n = 0;
    int rc = KV_EUNAVAILABLE;
    /* a cluster between leaders (an election, a partition healing) is
     * waited for, up to SERVER_JOIN_WAIT_MS, not a reason to exit */
    for (uint64_t t0 = kv_now_ns(); rc == KV_EUNAVAILABLE || rc == KV_ETIMEOUT;) {
        if (c != NULL)
            kv_client_close(c);
        kv_free(line);
        line = NULL;
        c = NULL;
        rc = kv_client_open(&c, s->cfg.join, &o);
        if (rc == 0)
            rc = kv_node_status(c, NULL, &line);
        if (rc == 0)
            rc = kv_member_list(c, &ms, &n);
        if ((rc != KV_EUNAVAILABLE && rc != KV_ETIMEOUT) ||
            kv_now_ns() - t0 > SERVER_JOIN_WAIT_MS * 1000000ull)
            break;
        KV_LOGW(kv_errword(rc), "--join %s: %s; trying again", s->cfg.join, kv_strerror(rc));
    }
    if (rc != 0) {
        fprintf(stderr, "kvd: --join %s: cannot learn the cluster from it: %s (%s)\n",
                s->cfg.join, kv_strerror(rc), kv_errword(rc));
        if (c != NULL)
            kv_client_close(c);
        kv_free(line);
        return rc == KV_EAUTH || rc == KV_ECONFIG || rc == KV_EVERSION ? KV_ECONFIG : KV_EIO;
    }
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
    kv_client_close(c);
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
    return stored_id[0] == 0 ? server_cluster_save(s, NULL) : 0;
}

int server_cluster_save(server *s, const char *founders) {
    cf_info c = {0};
    size_t len = strlen(s->cluster_id);
    if (len >= sizeof c.id)
        return KV_EINVAL;
    memcpy(c.id, s->cluster_id, len + 1);
    snprintf(c.founders, sizeof c.founders, "%s", founders ? founders : "");
    int rc = cf_write(s->rfs, s->cfg.data_dir, &c);
    if (rc != 0)
        KV_LOGE(kv_errword(rc), "cannot write %s/" CF_FILE ": %s", s->cfg.data_dir,
                kv_strerror(rc));
    return rc;
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

static void report_problem(void *arg, const kv_check_problem *p) {
    (void)arg;
    if (p->offset == KV_CHECK_NO_OFFSET)
        KV_LOGE(p->word, "%s: %s", p->file, p->detail);
    else
        KV_LOGE(p->word, "%s offset %llu: %s", p->file, (unsigned long long)p->offset, p->detail);
}

int server_hs_load(server *s, hs_state *st) {
    assert(s->w != NULL && s->h == NULL);
    uint64_t term = 0;
    int rc = wal_term_at(s->w, wal_last_index(s->w), &term);
    if (rc == 0)
        rc = hs_load(s->fs, s->cfg.data_dir, term, report_problem, NULL, &s->h, st);
    return rc;
}

/* The address book at start-up: the state machine's (the membership as
 * applied), else kvd init's founders, else the cluster joined (--join). */
static int book_load(server *s, bool fresh, bool *bootstrap) {
    cf_info cf;
    int rc = cluster_identity(s, fresh, &cf, bootstrap);
    if (rc != 0)
        return rc;
    Kv__Membership *mpb = server_members_stored(s);
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

static int open_storage(server *s, raft_config *rc_out, wal_entry **ents, size_t *nents) {
    server_config *cfg = &s->cfg;
    if (cfg->join == NULL && dd_check_format(s->rfs, cfg->data_dir, NULL, NULL) == KV_EMISSING) {
        refuse_empty(s, "and was not made by kvd init"); /* and nothing is created */
        return KV_ECONFIG;
    }
    int rc = dd_init(s->rfs, cfg->data_dir);
    if (rc != 0)
        return rc;
    if ((rc = server_lock_data_dir(s)) != 0)
        return rc;
    wal_options wo;
    wal_options_default(&wo);
    if (cfg->wal_segment_bytes != 0)
        wo.segment_bytes = cfg->wal_segment_bytes;
    wo.slow_sync_ns = (uint64_t)cfg->slow_fsync_ms * 1000000u;
    kv_fs_join(s->db_dir, sizeof s->db_dir, cfg->data_dir, "db");
    kv_fs_join(s->snap_dir, sizeof s->snap_dir, cfg->data_dir, "snap");
    /* the log, the state machine and the newest snapshot, made to agree */
    store_start ss;
    if ((rc = store_open(s->fs, s->rfs, cfg->data_dir, &wo, &s->w, &s->sm, &ss)) != 0)
        return rc;
    hs_state st; /* after the log: checked against its highest term */
    if ((rc = server_hs_load(s, &st)) != 0) {
        store_start_free(&ss);
        return rc;
    }
    /* membership and addresses: the data dir's, else kvd init's founders,
     * else the cluster joined */
    bool fresh = ss.last == 0 && !ss.has_snap, bootstrap = false;
    if ((rc = book_load(s, fresh, &bootstrap)) != 0) {
        store_start_free(&ss);
        return rc;
    }
    raft_config_init(rc_out, s->id);
    rc_out->election_ticks = cfg->election_ticks;
    rc_out->seed = s->id ^ (uint64_t)getpid() ^ kv_now_ns();
    rc_out->snapshot_read = server_snapshot_read;
    rc_out->snapshot_ctx = s;
    rc_out->hs.term = st.term;
    rc_out->hs.vote = st.vote;
    rc_out->hs.commit = st.commit;
    rc_out->applied = ss.applied;
    if (ss.has_snap) {
        rc_out->has_snapshot = true;
        rc_out->snapshot.index = ss.snap.index;
        rc_out->snapshot.term = ss.snap.term;
        /* the membership at the snapshot's index, not the state machine's
         * (later) one: raft replays the log's changes after it */
        if (ss.snap_members != NULL)
            server_members_to_raft(ss.snap_members, &rc_out->snapshot.membership);
        s->snap_index = ss.snap.index;
        s->snap_term = ss.snap.term;
    }
    if (bootstrap) {
        for (size_t i = 0; i < s->members_count; i++)
            rc_out->bootstrap.voters[rc_out->bootstrap.voters_count++] = s->members[i].id;
    }
    *ents = ss.entries; /* taken */
    *nents = ss.entries_count;
    ss.entries = NULL;
    ss.entries_count = 0;
    KV_LOGI("START",
            "node %s (id %016" PRIx64 ") cluster %s: log %" PRIu64 "..%" PRIu64 ", applied %" PRIu64
            ", snapshot %" PRIu64 ", term %" PRIu64,
            cfg->name, s->id, s->cluster_id, ss.first, ss.last, ss.applied,
            ss.has_snap ? ss.snap.index : 0, st.term);
    store_start_free(&ss);
    return 0;
}

static int start_raft(server *s, raft_config *rcfg, wal_entry *we, size_t n) {
    raft_entry *re = n ? calloc(n, sizeof(*re)) : NULL;
    if (n && re == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        re[i].index = we[i].index;
        re[i].term = we[i].term;
        re[i].type = we[i].type;
        re[i].data = we[i].data;
        re[i].len = we[i].len;
    }
    rcfg->entries = re;
    rcfg->entries_count = n;
    node_io io;
    node_limits lim;
    server_io_init(s, &io, &lim);
    int rc = node_new(rcfg, &io, &lim, &s->node);
    if (rc == 0)
        s->r = node_raft(s->node); /* borrowed */
    free(re);
    wal_entries_free(we, n);
    if (rc != 0)
        KV_LOGE(kv_errword(rc), "the persisted raft state does not restart: %s", kv_strerror(rc));
    return rc;
}

int server_run(const server_config *cfg) {
    server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KVD_EXIT_IO;
    s->cfg = *cfg;
    s->id = server_node_id(cfg->name);
    s->lock_fd = -1;
    s->rfs = kv_fs_posix();
    s->fs = cfg->unsafe_no_fsync ? kv_fs_posix_unsafe_nosync() : s->rfs;
    pthread_mutex_init(&s->mu, NULL);
    s->snap_out.cached_chunk = UINT64_MAX;
    kv_log_set_prefix(cfg->name);
    if (cfg->unsafe_no_fsync)
        KV_LOGW("UNSAFE", "--unsafe-no-fsync: nothing is synced; a crash loses acknowledged "
                          "writes. For tests only.");

    raft_config rcfg;
    wal_entry *we = NULL;
    size_t n = 0;
    int rc = open_storage(s, &rcfg, &we, &n);
    if (rc == 0)
        rc = start_raft(s, &rcfg, we, n);
    if (rc != 0) {
        int code = server_exit_code(rc);
        /* closed anyway, so the sanitizer builds see no leak on this path */
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

    uv_loop_init(&s->loop);
    net_config nc;
    net_config_default(&nc);
    nc.loop = &s->loop;
    nc.listen_addr = cfg->listen;
    nc.node_name = cfg->name;
    nc.cluster_id = s->cluster_id;
    nc.token = cfg->token;
    nc.ctx = s;
    nc.on_request = server_on_request;
    nc.on_raft = on_raft;
    int exit_code = KVD_EXIT_OK;
    if ((rc = net_open(&nc, &s->net)) != 0) {
        fprintf(stderr, "kvd: cannot listen on %s: %s\n", cfg->listen, kv_strerror(rc));
        exit_code = rc == KV_EINVAL ? KVD_EXIT_USAGE : KVD_EXIT_IO;
    }
    if (exit_code == 0) {
        server_peers_sync(s);
        if (cfg->metrics != NULL &&
            (rc = http_open(&s->loop, cfg->metrics, server_http, s, &s->http)) != 0)
            exit_code = rc == KV_EINVAL ? KVD_EXIT_USAGE : KVD_EXIT_IO;
    }

    s->tick.data = s->prepare.data = s->wal_async.data = s->sigterm.data = s->sigint.data = s;
    uv_async_init(&s->loop, &s->wal_async, server_on_wal_async);
    if (exit_code != 0)
        goto stop;
    uv_timer_init(&s->loop, &s->tick);
    uv_timer_start(&s->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
    uv_prepare_init(&s->loop, &s->prepare);
    uv_prepare_start(&s->prepare, on_prepare);
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

    uv_run(&s->loop, UV_RUN_DEFAULT);

stop:
    /* SIGTERM: the log first (everything queued is synced), then the rest. */
    http_close(s->http);
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
    free(s->apply_entries);
    free(s->apply_replies);
    free(s->apply_bufs);
    free(s->scratch);
    close(s->lock_fd);
    free(s);
    if (exit_code == KVD_EXIT_OK)
        KV_LOGI("STOP", "clean shutdown");
    return exit_code;
}
