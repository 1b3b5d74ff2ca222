/*
 * Snapshots in the node: taking them every N applied entries, serving them
 * to lagging followers as a byte stream (raft's snapshot_read), receiving
 * that stream and installing it.
 *
 * The stream of snapshot (index, term), as raft ships it in chunks:
 *   u32 manifest length | MANIFEST.kv bytes (with their own checksum)
 *   then for each snapshot chunk k in order:
 *   u32 k | u32 len | u64 xxh3 of the data | data
 * so the receiver checks each piece against the manifest (snap_recv) and
 * installs only a snapshot whose every file checks.
 */
#include "server/server_int.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "server/store.h"
#include "snapfile/snapfile.h"

#include <assert.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM_CHUNK_HEADER SNAPSTREAM_CHUNK_HEADER_BYTES

static void snap_path(const server *s, uint64_t index, uint64_t term, char *buf, size_t cap) {
    if (snprintf(buf, cap, "%s/%016" PRIx64 "-%016" PRIx64, s->snap_dir, index, term) >= (int)cap)
        buf[0] = 0;
}

/* ---- sending ---------------------------------------------------------------- */

void server_snap_out_close(server *s) {
    server_snap_out *o = &s->snap_out;
    snap_reader_close(o->reader);
    free(o->offsets);
    free(o->buf);
    memset(o, 0, sizeof(*o));
    o->cached_chunk = UINT64_MAX;
}

static int snap_out_open(server *s, uint64_t index, uint64_t term) {
    server_snap_out *o = &s->snap_out;
    if (o->reader != NULL && o->index == index && o->term == term)
        return 0;
    server_snap_out_close(s);
    char path[SERVER_PATH_BYTES];
    snap_path(s, index, term, path, sizeof path);
    int rc = snap_reader_open(s->rfs, path, &o->reader);
    if (rc == KV_ECORRUPT || rc == KV_EVERSION)
        /* bit rot in our own manifest: raft would start over with this
         * same newest snapshot forever (see snap_out_chunk) */
        server_fatal(s, KVD_EXIT_CORRUPT, kv_errword(rc),
                     "snapshot file %s/" SNAP_MANIFEST_NAME
                     " no longer checks (%s); cannot send snapshot %" PRIu64,
                     path, kv_strerror(rc), index);
    if (rc != 0)
        return KV_ESTALE; /* deleted (snap_gc): raft starts over with the newest */
    const uint8_t *m;
    size_t mlen;
    snap_reader_manifest(o->reader, &m, &mlen);
    o->manifest_len = (uint32_t)mlen;
    o->chunks = snap_reader_chunks_count(o->reader);
    o->offsets = malloc((o->chunks + 1) * sizeof(uint64_t));
    o->buf = malloc(STREAM_CHUNK_HEADER + KV_SNAPSHOT_CHUNK_BYTES);
    if (o->offsets == NULL || o->buf == NULL) {
        server_snap_out_close(s);
        return KV_ENOMEM;
    }
    uint64_t off = 4 + mlen;
    for (uint64_t k = 0; k < o->chunks; k++) {
        snap_chunk ch;
        snap_reader_chunk(o->reader, k, &ch);
        o->offsets[k] = off;
        off += STREAM_CHUNK_HEADER + ch.len;
    }
    o->offsets[o->chunks] = off;
    o->index = index;
    o->term = term;
    o->cached_chunk = UINT64_MAX;
    return 0;
}

static int snap_out_chunk(server *s, uint64_t k) {
    server_snap_out *o = &s->snap_out;
    if (o->cached_chunk == k)
        return 0;
    size_t len;
    uint64_t x;
    int rc = snap_reader_read(o->reader, k, o->buf + STREAM_CHUNK_HEADER, KV_SNAPSHOT_CHUNK_BYTES,
                              &len, &x);
    if (rc == KV_ECORRUPT) {
        /* Our own snapshot no longer matches its manifest (bit rot; an SST
         * may be shared with db/ through a hard link): starting over would
         * send the same bad bytes forever and the follower would never
         * catch up. Fail-stop, naming the file (snap_reader_read logged the
         * offset too). */
        snap_chunk ch;
        char path[SERVER_PATH_BYTES];
        snap_reader_chunk(o->reader, k, &ch);
        snap_path(s, o->index, o->term, path, sizeof path);
        server_fatal(s, KVD_EXIT_CORRUPT, "CORRUPT",
                     "snapshot file %s/%s offset %" PRIu64 " (chunk %" PRIu64
                     ") no longer matches its manifest",
                     path, snap_reader_file_name(o->reader, ch.file), ch.offset, k);
    }
    if (rc != 0) {
        KV_LOGE(kv_errword(rc), "snapshot %" PRIu64 ": chunk %" PRIu64 " unreadable: %s", o->index,
                k, kv_strerror(rc));
        return rc;
    }
    kv_put_u32(o->buf, (uint32_t)k);
    kv_put_u32(o->buf + 4, (uint32_t)len);
    kv_put_u64(o->buf + 8, x);
    o->buf_len = STREAM_CHUNK_HEADER + len;
    o->cached_chunk = k;
    return 0;
}

int server_snapshot_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                         size_t len, size_t *got, uint64_t *total_size) {
    server *s = ctx;
    int rc = snap_out_open(s, index, term);
    if (rc != 0)
        return rc;
    server_snap_out *o = &s->snap_out;
    const uint8_t *m;
    size_t mlen;
    snap_reader_manifest(o->reader, &m, &mlen);
    uint64_t total = o->offsets[o->chunks];
    *total_size = total;
    size_t done = 0;
    uint8_t *out = buf;
    while (done < len && offset < total) {
        const uint8_t *src;
        uint64_t avail;
        uint8_t hdr[4];
        if (offset < 4) {
            kv_put_u32(hdr, (uint32_t)mlen);
            src = hdr + offset;
            avail = 4 - offset;
        } else if (offset < 4 + mlen) {
            src = m + (offset - 4);
            avail = 4 + mlen - offset;
        } else {
            uint64_t lo = 0, hi = o->chunks; /* the last k with offsets[k] <= offset */
            while (hi - lo > 1) {
                uint64_t mid = (lo + hi) / 2;
                if (o->offsets[mid] <= offset)
                    lo = mid;
                else
                    hi = mid;
            }
            if ((rc = snap_out_chunk(s, lo)) != 0)
                return rc;
            src = o->buf + (offset - o->offsets[lo]);
            avail = o->buf_len - (offset - o->offsets[lo]);
        }
        size_t n = avail < len - done ? (size_t)avail : len - done;
        memcpy(out + done, src, n);
        done += n;
        offset += n;
    }
    *got = done;
    return 0;
}

/* ---- receiving ---------------------------------------------------------------- */

static void stream_path(const server *s, char *buf, size_t cap) {
    if (snprintf(buf, cap, "%s/snap-incoming.stream", s->cfg.data_dir) >= (int)cap)
        buf[0] = 0;
}

void server_snapshot_chunk(server *s, const raft_snapshot_chunk *ch) {
    char path[SERVER_PATH_BYTES];
    stream_path(s, path, sizeof path);
    if (s->snap_in == NULL || s->snap_in_index != ch->index || s->snap_in_term != ch->term ||
        ch->offset == 0) {
        if (s->snap_in)
            fclose(s->snap_in);
        s->rfs->ops->mkdir(s->rfs, s->snap_dir);
        s->snap_in = fopen(path, "w+");
        if (s->snap_in == NULL)
            server_fatal(s, KVD_EXIT_IO, "IO", "cannot create %s", path);
        s->snap_in_index = ch->index;
        s->snap_in_term = ch->term;
        KV_LOGI("SNAPSHOT", "receiving snapshot %" PRIu64 " (term %" PRIu64 ", %" PRIu64 " bytes)",
                ch->index, ch->term, ch->total_size);
    }
    if (fseeko(s->snap_in, (off_t)ch->offset, SEEK_SET) != 0 ||
        fwrite(ch->data, 1, ch->len, s->snap_in) != ch->len)
        server_fatal(s, KVD_EXIT_IO, "IO", "writing %s failed", path);
}

/* Feeds a snapshot stream (len bytes at f's position) to snap_recv; the
 * snapshot lands in snap_dir, checked chunk by chunk against its manifest. */
int server_stream_install(server *s, FILE *f, uint64_t len, snap_meta *out) {
    return store_receive(s->rfs, s->snap_dir, f, len, out);
}

/* Raft's step 2 (raft.h): the snapshot received in chunks becomes the state
 * machine, and the log is emptied, before raft_advance. The steps and their
 * order are store_install's, the same rules as the start-up's (store.h), so
 * a crash anywhere in here is finished by the next start. */
void server_snapshot_install(server *s, const raft_snapshot_meta *meta) {
    FILE *f = s->snap_in;
    off_t len = -1;
    if (f != NULL && fflush(f) == 0 && fseeko(f, 0, SEEK_END) == 0)
        len = ftello(f);
    if (len < 0 || fseeko(f, 0, SEEK_SET) != 0)
        server_fatal(s, KVD_EXIT_IO, "IO",
                     "snapshot %" PRIu64 ": the received stream is unreadable", meta->index);
    server_hash_abort(s);    /* its view must not outlive the state machine */
    server_snapshot_stop(s); /* nor the snapshot worker; nothing else may write snap_dir */
    s->snap_wanted = false;
    snap_meta sn;
    int rc = store_install(s->rfs, s->snap_dir, s->w, &s->sm, s->db_dir, f, (uint64_t)len,
                           meta->index, meta->term, &sn);
    if (rc != 0)
        /* Raft acknowledged every chunk, so a bad stream is a local fault
         * (the chunks were checked against the manifest as they came):
         * stop; the next start finishes what is durable, and raft asks
         * the leader again for the rest. */
        server_fatal_sm(s, rc, "installing snapshot %" PRIu64, meta->index);
    fclose(s->snap_in);
    s->snap_in = NULL;
    char path[SERVER_PATH_BYTES];
    stream_path(s, path, sizeof path);
    unlink(path);
    pthread_mutex_lock(&s->mu);
    s->durable_index = meta->index;
    s->durable_term = meta->term;
    pthread_mutex_unlock(&s->mu);
    Kv__Membership *m = server_members_stored(s->sm);
    if (m != NULL) {
        server_members_from_pb(s, m);
        kv__membership__free_unpacked(m, NULL);
        server_peers_sync(s);
    }
    s->snap_index = meta->index;
    s->snap_term = meta->term;
    s->snap_bytes_base += s->bytes_since_snap;
    s->bytes_since_snap = 0;
    s->snapshots_installed++;
    KV_LOGI("SNAPSHOT", "installed snapshot %" PRIu64 " (term %" PRIu64 ") from the leader",
            meta->index, meta->term);
}

/* ---- taking ------------------------------------------------------------------ */
/*
 * A snapshot is taken on a worker thread, one at a time, so that the loop
 * never waits for RocksDB's flush, the checkpoint, the hashing of its files
 * or the syncs (issue 13: every node took one at nearly the same moment,
 * on its loop). snap_create_live needs no pause in applying: the checkpoint
 * holds what RocksDB flushed, which ends with a whole apply batch, and its
 * index and term are read back from it. The loop keeps what touches Raft
 * and the log: when the worker reports (s->snap_async), snap_taken tells
 * raft (raft_snapshot_done), compacts its memory, drops the log on disk up
 * to sm_log_drop_bound, and decides the clean-up (a snapshot being sent
 * stays: docs/rules.md "a snapshot in flight pins the log"). The clean-up
 * runs on the worker too, as a second job: wal_drop_prefix, which waits for
 * the log's storage thread (behind the appends queued and their fdatasync),
 * and snap_gc, which reads only the manifest and the file sizes of the
 * snapshot just taken (snapshot.h). The log's
 * wal_drop_prefix and wal_reset are called from one thread at a time: the
 * install (wal_reset) waits for the worker.
 *
 * The worker uses s->sm, s->rfs and s->snap_dir; whatever replaces or
 * closes the state machine (an install, the shutdown) waits for it first
 * (snap_job_finish), and nothing else writes snap_dir while it runs (the
 * chunks of a snapshot being received go to a file outside snap_dir;
 * store_install, which writes there, waits). Failures stop the node as
 * before (server_fatal_sm, from the loop).
 *
 * When: every --snapshot-entries applied entries or --snapshot-bytes
 * applied bytes, each on a grid shifted by this node's place among the
 * members (snap_phase), so that the nodes of a cluster take theirs at
 * different moments; never within half a period of the last one.
 */

static void *snap_worker(void *arg) {
    server *s = arg;
    server_snap_job *j = &s->snap_job;
    if (j->kind == SERVER_SNAP_JOB_TAKE) {
        j->rc = snap_create_live(s->sm, s->rfs, s->snap_dir, &j->sn, &j->t);
    } else {
        /* waits for the log's storage thread to reach it: behind the
         * appends queued, and their fdatasync */
        j->rc = j->drop > 0 ? wal_drop_prefix(s->w, j->drop) : 0;
        j->gc_rc = j->rc == 0 && j->gc ? snap_gc(s->rfs, s->snap_dir, j->keep, &j->sn) : 0;
    }
    atomic_store(&j->done, true);
    uv_async_send(&s->snap_async);
    return NULL;
}

/* Starts kind on the worker; a CLEAN drops the log up to drop (0: none)
 * and, when gc, removes old snapshots, made being the one just taken. */
static void snap_job_start(server *s, int kind, uint64_t drop, bool gc, const snap_meta *made) {
    server_snap_job *j = &s->snap_job;
    assert(j->kind == SERVER_SNAP_JOB_NONE && kind != SERVER_SNAP_JOB_NONE);
    j->kind = kind;
    j->rc = j->gc_rc = 0;
    j->drop = drop;
    j->gc = gc;
    if (made != NULL)
        j->sn = *made;
    j->t0_ns = kv_now_ns();
    j->bytes = s->bytes_since_snap;
    j->keep = s->cfg.snapshots_keep;
    memset(&j->t, 0, sizeof j->t);
    atomic_store(&j->done, false);
    /* signals stay with the loop thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&j->thread, NULL, snap_worker, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    j->threaded = rc == 0;
    if (rc != 0) {
        KV_LOGW("NOMEM", "no snapshot thread (%s): working on the loop", strerror(rc));
        snap_worker(s); /* reported through snap_async all the same */
    }
}

static void snap_taken(server *s, const snap_meta *sn, const snap_timing *t, uint64_t t0,
                       uint64_t bytes, bool on_loop);

/* When the worker has finished (wait: once it has), acts on its result. */
static void snap_job_finish(server *s, bool wait) {
    server_snap_job *j = &s->snap_job;
    if (j->kind == SERVER_SNAP_JOB_NONE || (!wait && !atomic_load(&j->done)))
        return;
    if (j->threaded)
        pthread_join(j->thread, NULL);
    assert(atomic_load(&j->done));
    int kind = j->kind, rc = j->rc;
    j->kind = SERVER_SNAP_JOB_NONE;
    if (kind == SERVER_SNAP_JOB_CLEAN) {
        if (rc != 0)
            server_fatal(s, KVD_EXIT_IO, kv_errword(rc),
                         "dropping log entries up to %" PRIu64 ": %s", j->drop, kv_strerror(rc));
        if (j->gc_rc != 0)
            KV_LOGW(kv_errword(j->gc_rc), "removing old snapshots from %s: %s", s->snap_dir,
                    kv_strerror(j->gc_rc));
        return;
    }
    if (rc != 0)
        server_fatal_sm(s, rc, "taking a snapshot at %" PRIu64, sm_applied_index(s->sm));
    snap_meta sn = j->sn;
    snap_timing t = j->t;
    snap_taken(s, &sn, &t, j->t0_ns, j->bytes, !j->threaded);
}

void server_on_snap_async(uv_async_t *h) {
    snap_job_finish(h->data, false);
}

void server_snapshot_stop(server *s) {
    server_snap_job *j = &s->snap_job;
    if (j->kind == SERVER_SNAP_JOB_NONE)
        return;
    if (j->threaded)
        pthread_join(j->thread, NULL);
    int kind = j->kind, rc = j->rc;
    j->kind = SERVER_SNAP_JOB_NONE;
    if (kind == SERVER_SNAP_JOB_TAKE && rc != 0)
        server_fatal_sm(s, rc, "taking a snapshot at %" PRIu64, sm_applied_index(s->sm));
    if (kind == SERVER_SNAP_JOB_CLEAN && rc != 0)
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "dropping log entries up to %" PRIu64 ": %s",
                     j->drop, kv_strerror(rc));
    if (kind == SERVER_SNAP_JOB_TAKE) /* on disk: the next start finds it */
        KV_LOGI("SNAPSHOT", "snapshot %" PRIu64 " taken; not used before the %s", j->sn.index,
                s->stopping ? "stop" : "install");
}

/* Tells raft and the log about snapshot sn, just taken (since t0; on_loop:
 * by the loop itself). */
static void snap_taken(server *s, const snap_meta *sn, const snap_timing *t, uint64_t t0,
                       uint64_t bytes, bool on_loop) {
    uint64_t l0 = kv_now_ns();
    int rc = raft_snapshot_done(s->r, sn->index, sn->term);
    if (rc != 0 && rc != KV_ESTALE)
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "raft refused snapshot %" PRIu64 ": %s",
                     sn->index, kv_strerror(rc));
    s->snap_index = sn->index;
    s->snap_term = sn->term;
    /* what was applied while it was taken counts toward the next */
    s->bytes_since_snap = s->bytes_since_snap > bytes ? s->bytes_since_snap - bytes : 0;
    s->snap_bytes_base += bytes;
    s->snapshots_taken++;
    /* Raft's memory: keep what active followers still need. */
    uint64_t floor = raft_compact_floor(s->r);
    uint64_t compact = floor > 0 && floor - 1 < sn->index ? floor - 1 : sn->index;
    if (compact > 0)
        raft_compact(s->r, compact);
    /* The log on disk: only what RocksDB or the snapshot holds durably
     * (dropped on the worker: wal_drop_prefix waits for the log's thread). */
    uint64_t drop = sm_log_drop_bound(s->sm, sn->index);
    if (drop > compact)
        drop = compact;
    /* A snapshot being sent stays (docs/rules.md etcd#4055): skip the clean-up
     * while an older one is in flight. Raft sends only its newest (sn from
     * now on), which snap_gc keeps. */
    uint64_t sending = raft_snapshot_sending(s->r);
    bool gc = sending == 0 || sending >= sn->index;
    if (gc && s->snap_out.reader != NULL && s->snap_out.index != sn->index)
        server_snap_out_close(s);
    uint64_t now = kv_now_ns();
#define MS(ns) ((double)(ns) / 1e6)
    KV_LOGI("SNAPSHOT",
            "took snapshot %" PRIu64 " (term %" PRIu64 ") in %.1f ms %s the loop (flush %.1f, "
            "checkpoint %.1f, read-back %.1f, manifest %.1f, rename %.1f ms), then %.1f ms on "
            "it; the log is dropped up to %" PRIu64,
            sn->index, sn->term, MS(l0 - t0), on_loop ? "on" : "off", MS(t->flush_ns),
            MS(t->checkpoint_ns), MS(t->meta_ns), MS(t->manifest_ns), MS(t->install_ns),
            MS(now - l0), drop);
#undef MS
    if ((drop > 0 || gc) && !s->stopping)
        snap_job_start(s, SERVER_SNAP_JOB_CLEAN, drop, gc, sn);
}

/* This node's place among the members, by id (0..*count-1): the shift of
 * its snapshot grid, so that the nodes take theirs apart. */
static uint64_t snap_phase(const server *s, uint64_t period) {
    uint64_t rank = 0, count = 0;
    for (size_t i = 0; i < s->members_count; i++) {
        count++;
        rank += s->members[i].id < s->id;
    }
    if (count == 0 || rank >= count)
        return 0;
    return period / count * rank;
}

/* Whether value has crossed a point of the grid phase + k * period since
 * last, at least period / 2 after it. */
static bool snap_due(uint64_t last, uint64_t value, uint64_t period, uint64_t phase) {
    if (period == 0 || value < last + period / 2)
        return false;
    if (value >= last + period)
        return true;
    return (value + period - phase) / period > (last + period - phase) / period;
}

void server_snapshot_maybe_take(server *s) {
    if (s->snap_job.kind != SERVER_SNAP_JOB_NONE || s->stopping)
        return; /* stopping: net_close still runs the loop after server_snapshot_stop */
    uint64_t applied = sm_applied_index(s->sm);
    if (applied == 0 || applied == s->snap_index)
        return;
    uint64_t ne = s->cfg.snapshot_entries, nb = s->cfg.snapshot_bytes;
    bool by_entries = snap_due(s->snap_index, applied, ne, snap_phase(s, ne));
    bool by_bytes = snap_due(s->snap_bytes_base, s->snap_bytes_base + s->bytes_since_snap, nb,
                             snap_phase(s, nb));
    if (by_entries || by_bytes || s->snap_wanted) {
        s->snap_wanted = false;
        snap_job_start(s, SERVER_SNAP_JOB_TAKE, 0, false, NULL);
    }
}

void server_snapshot_take(server *s) {
    s->snap_wanted = true; /* at the next turn, or after the one in progress */
}

void server_snapshot_take_now(server *s) {
    snap_job_finish(s, true); /* the one in progress (which may start a clean-up) */
    snap_job_finish(s, true);
    uint64_t applied = sm_applied_index(s->sm);
    if (applied == 0 || applied == s->snap_index)
        return;
    s->snap_wanted = false;
    snap_meta sn;
    snap_timing t;
    uint64_t t0 = kv_now_ns(), bytes = s->bytes_since_snap;
    int rc = snap_create_live(s->sm, s->rfs, s->snap_dir, &sn, &t);
    if (rc != 0)
        server_fatal_sm(s, rc, "taking a snapshot at %" PRIu64, applied);
    snap_taken(s, &sn, &t, t0, bytes, true);
}
