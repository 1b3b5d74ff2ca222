/* The node's storage at start-up and at a snapshot install (store.h). */
#include "server/store.h"

#include "common/crashpoint.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "proto/kv.pb-c.h"
#include "snapfile/snapfile.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define STORE_PATH_BYTES 4096u

/* ---- receiving (steps a, b) ---------------------------------------------- */

typedef struct store__walk {
    kv_fs *rfs;
    const char *snap_dir;
    snap_recv *r;
    uint64_t chunks_in;
    bool died; /* at the crash point install.receiving */
} store__walk;

static int store__on_manifest(void *arg, const uint8_t *m, size_t len) {
    store__walk *w = arg;
    assert(w->r == NULL);
    return snap_recv_begin(w->rfs, w->snap_dir, m, len, &w->r);
}

static int store__on_chunk(void *arg, uint32_t k, const uint8_t *data, uint32_t len,
                           uint64_t xxh3) {
    store__walk *w = arg;
    if (w->r == NULL)
        return KV_ECORRUPT; /* a chunk before the manifest */
    int rc = snap_recv_chunk(w->r, k, data, len, xxh3);
    if (rc == 0 && ++w->chunks_in == 2 && kv_crashpoint("install.receiving")) {
        w->died = true;
        return KV_EIO;
    }
    return rc;
}

int store_receive(kv_fs *rfs, const char *snap_dir, FILE *f, uint64_t len, snap_meta *out) {
    assert(rfs != NULL && snap_dir != NULL && f != NULL && out != NULL);
    store__walk w = {.rfs = rfs, .snap_dir = snap_dir};
    int rc = snapstream_walk(f, len, store__on_manifest, store__on_chunk, &w, NULL);
    /* died: dropped as an abort would (a real crash leaves the tmp dir,
     * which snap_latest ignores and snap_gc removes) */
    assert(!w.died || rc == KV_EIO);
    if (rc == 0 && w.r == NULL)
        rc = KV_ECORRUPT; /* an empty stream */
    if (rc == 0)
        rc = snap_recv_finish(w.r, out);
    if (rc != 0)
        snap_recv_abort(w.r); /* finish freed it only on success */
    return rc;
}

/* ---- reconciling (steps c, d) ---------------------------------------------- */

int store_reconcile(wal *w, sm **s, const char *db_dir, const snap_meta *sn, bool install) {
    assert(w != NULL && s != NULL && *s != NULL && db_dir != NULL && sn != NULL);
    assert(sn->index > 0 && sn->term > 0);
    int rc = 0;
    if (install || sm_applied_index(*s) < sn->index) {
        KV_LOGI("SNAPSHOT", "state machine at %" PRIu64 ": restoring snapshot %" PRIu64 " into it",
                sm_applied_index(*s), sn->index);
        if ((rc = snap_restore(s, db_dir, sn->path)) != 0)
            return rc;
        if (install && kv_crashpoint("install.restored"))
            return KV_EIO;
    }
    uint64_t applied = sm_applied_index(*s);
    assert(applied >= sn->index); /* invariant 1 */
    uint64_t t = 0;
    bool holds = wal_term_at(w, sn->index, &t) == 0 && t == sn->term;
    if (!install && !holds && applied > sn->index) {
        /* the state machine applied entries after S from a log that does
         * not hold S: they cannot have been committed after S */
        KV_LOGE("CORRUPT",
                "the state machine applied %" PRIu64 " past snapshot %" PRIu64 " (term %" PRIu64
                ") but the log does not hold that snapshot's entry",
                applied, sn->index, sn->term);
        return KV_ECORRUPT;
    }
    if (install || !holds) { /* Raft §7: otherwise discard the entire log */
        KV_LOGW("RESET",
                "the log (%" PRIu64 "..%" PRIu64 ") %s; reset to snapshot %" PRIu64
                " (term %" PRIu64 ")",
                wal_first_index(w), wal_last_index(w),
                install ? "is replaced by the snapshot installed"
                        : "does not hold the snapshot's last entry",
                sn->index, sn->term);
        if ((rc = wal_reset(w, sn->index, sn->term)) != 0)
            return rc;
    }
    /* invariants 2 and 3: the log holds S, and terms never fall below it */
    rc = wal_term_at(w, sn->index, &t);
    assert(rc == 0 && t == sn->term);
    if (wal_last_index(w) > sn->index && (rc = wal_term_at(w, sn->index + 1, &t)) == 0 &&
        t < sn->term) {
        KV_LOGE("CORRUPT",
                "log entry %" PRIu64 " has term %" PRIu64 ", below snapshot %" PRIu64
                "'s term %" PRIu64,
                sn->index + 1, t, sn->index, sn->term);
        return KV_ECORRUPT;
    }
    return rc;
}

int store_install(kv_fs *rfs, const char *snap_dir, wal *w, sm **s, const char *db_dir, FILE *f,
                  uint64_t len, uint64_t index, uint64_t term, snap_meta *out) {
    assert(index > 0 && term > 0);
    int rc = store_receive(rfs, snap_dir, f, len, out);
    if (rc != 0) {
        KV_LOGE(kv_errword(rc), "snapshot %" PRIu64 " received but not installable: %s", index,
                kv_strerror(rc));
        return rc;
    }
    if (out->index != index || out->term != term) {
        KV_LOGE("CORRUPT",
                "snapshot received for %" PRIu64 "/%" PRIu64 " describes %" PRIu64 "/%" PRIu64,
                index, term, out->index, out->term);
        return KV_ECORRUPT;
    }
    if (kv_crashpoint("install.received"))
        return KV_EIO;
    rc = store_reconcile(w, s, db_dir, out, true);
    if (rc != 0) {
        KV_LOGE(kv_errword(rc), "installing snapshot %s: %s", out->path, kv_strerror(rc));
        return rc;
    }
    if (kv_crashpoint("install.reset"))
        return KV_EIO;
    assert(sm_applied_index(*s) == index && wal_last_index(w) == index);
    return 0;
}

/* ---- start-up -------------------------------------------------------------- */

void store_start_free(store_start *st) {
    if (st->snap_members != NULL)
        kv__membership__free_unpacked(st->snap_members, NULL);
    wal_entries_free(st->entries, st->entries_count);
    st->snap_members = NULL;
    st->entries = NULL;
    st->entries_count = 0;
}

/* S into out; has_snap false when there is none. */
static int store__find_snap(kv_fs *rfs, const char *snap_dir, store_start *out) {
    int rc = snap_latest(rfs, snap_dir, &out->snap);
    if (rc == KV_ENOTFOUND)
        return 0;
    out->has_snap = rc == 0;
    return rc;
}

/* The membership Raft restarts from with S: S's own, from its manifest (the
 * state machine's may be later: raft replays the changes after S). */
static int store__snap_members(kv_fs *rfs, store_start *out) {
    int rc = snap_membership(rfs, out->snap.path, &out->snap_members);
    return rc == KV_ENOTFOUND ? 0 : rc;
}

/* The log must reach back to S (or to 1 without one). */
static int store__log_covers(wal *w, const store_start *out) {
    uint64_t first = wal_first_index(w);
    if (out->has_snap && out->snap.index + 1 < first) {
        KV_LOGE("MISSING",
                "the log starts at %" PRIu64 " but the newest valid snapshot ends at %" PRIu64,
                first, out->snap.index);
        return KV_ECORRUPT;
    }
    if (!out->has_snap && first > 1) {
        KV_LOGE("MISSING",
                "the log starts at %" PRIu64 " and no valid snapshot covers the entries before it",
                first);
        return KV_ECORRUPT;
    }
    return 0;
}

/* What a crash inside snap_restore leaves beside db_dir: the stage (the
 * old db after the swap, or a half-copied new one) and, where the file
 * system cannot exchange, the old db between the two renames. Nothing is
 * restoring at start-up; S itself stays in snap/. */
static int store__drop_stage(kv_fs *rfs, const char *db_dir) {
    char stage[STORE_PATH_BYTES + 16];
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        snprintf(stage, sizeof stage, "%s.restore%s", db_dir, i == 0 ? "" : ".old");
        if (rfs->ops->exists(rfs, stage) == 0) {
            KV_LOGW("TORN", "removing %s, left by a snapshot restore that did not finish", stage);
            rc = kv_fs_rmtree(rfs, stage);
        }
    }
    return rc;
}

int store_open(kv_fs *fs, kv_fs *rfs, const char *data_dir, const wal_options *wo, wal **w, sm **s,
               store_start *out) {
    assert(fs != NULL && rfs != NULL && data_dir != NULL && w != NULL && s != NULL);
    memset(out, 0, sizeof *out);
    char db_dir[STORE_PATH_BYTES], snap_dir[STORE_PATH_BYTES];
    int rc = kv_fs_join(db_dir, sizeof db_dir, data_dir, "db");
    if (rc == 0)
        rc = kv_fs_join(snap_dir, sizeof snap_dir, data_dir, "snap");
    if (rc == 0)
        rc = store__drop_stage(rfs, db_dir);
    if (rc == 0)
        rc = wal_open(fs, data_dir, wo, NULL, NULL, w);
    if (rc == 0)
        rc = sm_open(db_dir, NULL, s);
    if (rc == 0)
        rc = store__find_snap(rfs, snap_dir, out);
    if (rc == 0)
        rc = store__log_covers(*w, out);
    if (rc == 0 && out->has_snap)
        rc = store_reconcile(*w, s, db_dir, &out->snap, false);
    if (rc == 0 && out->has_snap)
        rc = store__snap_members(rfs, out);
    if (rc != 0) {
        store_start_free(out);
        return rc;
    }
    out->applied = sm_applied_index(*s);
    out->first = wal_first_index(*w);
    out->last = wal_last_index(*w);
    if (out->applied > out->last) {
        KV_LOGE("CORRUPT", "the state machine applied %" PRIu64 " but the log ends at %" PRIu64,
                out->applied, out->last);
        store_start_free(out);
        return KV_ECORRUPT;
    }
    uint64_t lo = out->has_snap ? out->snap.index + 1 : out->first;
    if (out->last >= lo)
        rc = wal_read(*w, lo, out->last + 1, UINT64_MAX, &out->entries, &out->entries_count);
    if (rc != 0)
        store_start_free(out);
    return rc;
}
