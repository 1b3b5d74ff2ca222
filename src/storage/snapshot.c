/* Snapshots (snapshot.h): create, verify, list, gc. Restore is in
 * snap_restore.c, shipping in snap_ship.c, manifests in snap_manifest.c. */
#include "storage/snap_internal.h"
#include "storage/sm_internal.h"

#include "common/clock.h"
#include "common/crashpoint.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- create ------------------------------------------------------------- */

/* Reads index, term and membership from the checkpoint at dir, so they are
 * exactly the state in it. *mem malloc'd (NULL when none), owned by the
 * caller. */
static int snap__checkpoint_meta(sm *s, const char *dir, uint64_t *index, uint64_t *term,
                                 uint8_t **mem, size_t *mem_len) {
    rocksdb_block_based_table_options_t *table = NULL;
    rocksdb_options_t *o = sm__options_new(&table);
    rocksdb_options_set_create_if_missing(o, 0);
    /* nothing is written: a small memtable, without the bloom filter that
     * would be zeroed (1% of the keys' write buffer) on every snapshot. Three
     * keys are read: a bounded table cache, so that the open loads a few
     * tables (RocksDB 7.8: min(16, (64 - 10) / 4)) rather than every one
     * (their index and filter blocks), and no table properties read for
     * statistics. The two halved the read-back of snapshots of a state
     * machine growing to 200 MiB (20-22 ms to 11 ms a snapshot). */
    rocksdb_options_set_write_buffer_size(o, 1u << 20);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0);
    rocksdb_options_set_max_open_files(o, 64);
    rocksdb_options_set_skip_stats_update_on_db_open(o, 1);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(ro, 1);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_for_read_only(o, dir, 0, &err);
    int rv = 0;
    *mem = NULL;
    *mem_len = 0;
    if (err != NULL) {
        rv = sm__fail(s, err);
        KV_LOGE(kv_errword(rv), "snapshot %s: open checkpoint: %s", dir, err);
        rocksdb_free(err);
    } else {
        rv = sm__meta_u64(s, db, ro, SM_META_APPLIED_INDEX, index);
        if (rv == 0)
            rv = sm__meta_u64(s, db, ro, SM_META_APPLIED_TERM, term);
        char *v = NULL;
        if (rv == 0)
            v = rocksdb_get(db, ro, SM_META_MEMBERSHIP, strlen(SM_META_MEMBERSHIP), mem_len, &err);
        if (err != NULL) {
            rv = sm__fail(s, err);
            KV_LOGE(kv_errword(rv), "snapshot %s: reading the membership: %s", dir, err);
            rocksdb_free(err);
        }
        if (v != NULL && (*mem = malloc(*mem_len ? *mem_len : 1)) != NULL)
            memcpy(*mem, v, *mem_len);
        if (v != NULL && *mem == NULL)
            rv = KV_ENOMEM;
        rocksdb_free(v);
        rocksdb_close(db);
    }
    rocksdb_readoptions_destroy(ro);
    sm__options_free(o, table);
    return rv;
}

static void snap__manifest_files_free(Kv__SnapshotManifest *m) {
    for (size_t i = 0; i < m->n_files; i++) {
        free(m->files[i]->name);
        free(m->files[i]->chunk_xxh3);
        free(m->files[i]);
    }
    free(m->files);
    m->files = NULL;
    m->n_files = 0;
}

/* Whether the file at path is there with size bytes. */
static bool snap__file_has_size(kv_fs *fs, const char *path, uint64_t size) {
    kv_file *file;
    uint64_t got = 0;
    if (fs->ops->open(fs, path, KV_FS_READ, &file) != 0)
        return false;
    int rv = fs->ops->size(file, &got);
    fs->ops->close(file);
    return rv == 0 && got == size;
}

/* RocksDB table files never change once written: a .sst of the same name
 * and size in the previous snapshot's manifest (prev, may be NULL) has the
 * same bytes, so its hashes are taken from there instead of reading the
 * whole store again on every snapshot (and it was synced then). */
static bool snap__reuse_hashes(kv_fs *fs, const char *path, const char *name,
                               const Kv__SnapshotManifest *prev, Kv__SnapshotManifest__File *f) {
    size_t nlen = strlen(name);
    if (prev == NULL || nlen < 4 || strcmp(name + nlen - 4, ".sst") != 0)
        return false;
    size_t lo = 0, hi = prev->n_files; /* files are sorted by name */
    const Kv__SnapshotManifest__File *p = NULL;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(prev->files[mid]->name, name);
        if (c == 0) {
            p = prev->files[mid];
            break;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (p == NULL || p->n_chunk_xxh3 == 0 || !snap__file_has_size(fs, path, p->size))
        return false;
    f->chunk_xxh3 = malloc(p->n_chunk_xxh3 * sizeof(uint64_t));
    if (f->chunk_xxh3 == NULL)
        return false;
    memcpy(f->chunk_xxh3, p->chunk_xxh3, p->n_chunk_xxh3 * sizeof(uint64_t));
    f->n_chunk_xxh3 = p->n_chunk_xxh3;
    f->size = p->size;
    f->xxh3 = p->xxh3;
    return true;
}

/* Lists dir's files into m (sorted), each hashed by chunks and synced (or
 * its hashes reused from prev, see above). The info LOG files RocksDB
 * leaves when a checkpoint is opened are removed. */
static int snap__manifest_files(kv_fs *fs, const char *dir, Kv__SnapshotManifest *m,
                                const Kv__SnapshotManifest *prev) {
    char **names = NULL;
    size_t count = 0;
    int rv = fs->ops->list(fs, dir, &names, &count);
    if (rv != 0)
        return rv;
    m->files = calloc(count ? count : 1, sizeof *m->files);
    rv = m->files == NULL ? KV_ENOMEM : count > KV_SNAPSHOT_FILES_MAX ? KV_ETOOBIG : 0;
    char path[SNAP_PATH_BYTES_MAX];
    for (size_t i = 0; i < count && rv == 0; i++) {
        rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, dir, names[i]);
        if (rv == 0 && strncmp(names[i], "LOG", 3) == 0) {
            rv = fs->ops->unlink(fs, path);
            continue;
        }
        Kv__SnapshotManifest__File *f = calloc(1, sizeof *f);
        if (rv == 0 && f == NULL)
            rv = KV_ENOMEM;
        if (rv != 0) {
            free(f);
            break;
        }
        kv__snapshot_manifest__file__init(f);
        m->files[m->n_files++] = f;
        f->name = strdup(names[i]);
        if (f->name == NULL)
            rv = KV_ENOMEM;
        else if (!snap__reuse_hashes(fs, path, names[i], prev, f))
            rv = snap__hash_file(fs, path, m->chunk_bytes, true, &f->size, &f->xxh3,
                                 &f->chunk_xxh3, &f->n_chunk_xxh3);
    }
    kv_fs_free_list(names, count);
    assert(rv != 0 || m->n_files <= count);
    return rv;
}

/* Writes dir/MANIFEST.kv (synced, dir synced) for the checkpoint in dir. */
static int snap__write_manifest(kv_fs *fs, const char *dir, uint64_t index, uint64_t term,
                                const uint8_t *mem, size_t mem_len) {
    Kv__SnapshotManifest m;
    kv__snapshot_manifest__init(&m);
    m.format = SNAP_FORMAT;
    m.index = index;
    m.term = term;
    m.chunk_bytes = KV_SNAPSHOT_CHUNK_BYTES;
    if (mem != NULL) {
        m.membership = kv__membership__unpack(NULL, mem_len, mem);
        if (m.membership == NULL)
            return KV_ECORRUPT; /* sm_apply stores only what decodes */
    }
    /* the newest snapshot beside this one, for snap__reuse_hashes */
    char parent[SNAP_PATH_BYTES_MAX];
    kv_fs_dirname(dir, parent, sizeof parent);
    snap_meta *list = NULL;
    size_t n = 0;
    snap_manifest prev = {0};
    const char *why;
    bool have_prev = snap_list(fs, parent, &list, &n) == 0 && n > 0 &&
                     snap__manifest_read(fs, list[n - 1].path, &prev, &why) == 0 &&
                     prev.m->chunk_bytes == m.chunk_bytes;
    free(list);
    int rv = snap__manifest_files(fs, dir, &m, have_prev ? prev.m : NULL);
    if (prev.m != NULL)
        snap_manifest_free(&prev);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rv == 0)
        rv = snap_manifest_encode(&m, &buf, &len);
    char path[SNAP_PATH_BYTES_MAX];
    if (rv == 0)
        rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, dir, SNAP_MANIFEST_NAME);
    if (rv == 0)
        rv = kv_fs_write_atomic(fs, path, buf, len); /* syncs it and dir */
    free(buf);
    if (m.membership != NULL)
        kv__membership__free_unpacked(m.membership, NULL);
    snap__manifest_files_free(&m);
    return rv;
}

static void snap__meta_fill(snap_meta *out, const char *snap_dir, uint64_t index, uint64_t term) {
    out->index = index;
    out->term = term;
    snprintf(out->path, sizeof out->path, "%s/%016" PRIx64 "-%016" PRIx64, snap_dir, index, term);
    out->fresh = false;
}

/* Moves the finished tmp dir to its final name durably (or drops it when
 * that snapshot already exists). */
static int snap__install(kv_fs *fs, const char *tmp, const char *snap_dir, snap_meta *out) {
    assert(out->index > 0);
    if (fs->ops->exists(fs, out->path) == 0) {
        KV_LOGI("EXIST", "snapshot %s exists already; keeping it", out->path);
        return kv_fs_rmtree(fs, tmp);
    }
    int rv = fs->ops->rename(fs, tmp, out->path);
    if (rv == 0)
        rv = fs->ops->sync_dir(fs, snap_dir);
    out->fresh = rv == 0;
    return rv;
}

static int snap__create(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out, snap_timing *t,
                        bool live);

int snap_create(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out) {
    return snap__create(s, fs, snap_dir, out, NULL, false);
}

int snap_create_timed(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out, snap_timing *t) {
    return snap__create(s, fs, snap_dir, out, t, false);
}

int snap_create_live(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out, snap_timing *t) {
    return snap__create(s, fs, snap_dir, out, t, true);
}

/* live: snap_create_live (the apply thread goes on); else the apply thread
 * calls, and nothing is applied until it returns. */
static int snap__create(sm *s, kv_fs *fs, const char *snap_dir, snap_meta *out, snap_timing *t,
                        bool live) {
    assert(s != NULL && fs != NULL && out != NULL);
    uint64_t applied_at_start = sm_applied_index(s);
    snap_timing unused;
    if (t == NULL)
        t = &unused;
    memset(t, 0, sizeof *t);
    uint64_t t0 = kv_now_ns(), t1;
    static _Atomic uint32_t counter;
    char tmp[SNAP_PATH_BYTES_MAX], name[64];
    snprintf(name, sizeof name, "tmp-%ld-%u", (long)getpid(), (unsigned)counter++);
    int rv = kv_fs_join(tmp, SNAP_PATH_BYTES_MAX, snap_dir, name);
    if (rv == 0 && strlen(snap_dir) + 40 >= SNAP_PATH_BYTES_MAX)
        rv = KV_EINVAL;
    if (rv == 0 && (rv = fs->ops->mkdir(fs, snap_dir)) == 0)
        rv = kv_fs_sync_parent(fs, snap_dir);
    if (rv == 0)
        rv = kv_fs_rmtree(fs, tmp);
    t1 = kv_now_ns();
    /* The checkpoint would flush too (log_size_for_flush 0) but, live, the
     * memtable would by then hold batches applied after this flush; it takes
     * the flushed state alone then (RocksDB's own WAL is off: there is no
     * log to copy). */
    if (rv == 0)
        rv = sm_flush(s); /* this also moves durable_index; safe beside apply */
    if (rv != 0)
        return rv;
    t->flush_ns = kv_now_ns() - t1;
    t1 = kv_now_ns();
    char *err = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(s->db, &err);
    if (err == NULL)
        rocksdb_checkpoint_create(cp, tmp, live ? UINT64_MAX /* never flush */ : 0 /* flush */,
                                  &err);
    if (cp != NULL)
        rocksdb_checkpoint_object_destroy(cp);
    if (err != NULL) {
        rv = sm__fail(s, err);
        rv = rv == KV_ECORRUPT || rv == KV_ENOSPACE ? rv : KV_EIO;
        KV_LOGE(kv_errword(rv), "snapshot: checkpoint into %s: %s", tmp, err);
        rocksdb_free(err);
        (void)kv_fs_rmtree(fs, tmp);
        return rv;
    }
    t->checkpoint_ns = kv_now_ns() - t1;
    if (kv_crashpoint("snapshot.checkpoint"))
        return KV_EIO;
    t1 = kv_now_ns();
    uint64_t index = 0, term = 0;
    uint8_t *mem = NULL;
    size_t mem_len = 0;
    rv = snap__checkpoint_meta(s, tmp, &index, &term, &mem, &mem_len);
    if (rv == 0 && index == 0)
        rv = KV_EINVAL; /* nothing applied: nothing to snapshot */
    assert(rv != 0 || index <= sm_applied_index(s));
    assert(rv != 0 || index >= applied_at_start); /* flushed before the checkpoint */
    t->meta_ns = kv_now_ns() - t1;
    t1 = kv_now_ns();
    if (rv == 0)
        rv = snap__write_manifest(fs, tmp, index, term, mem, mem_len);
    free(mem);
    t->manifest_ns = kv_now_ns() - t1;
    if (rv == 0 && kv_crashpoint("snapshot.manifest"))
        return KV_EIO;
    t1 = kv_now_ns();
    if (rv == 0) {
        snap__meta_fill(out, snap_dir, index, term);
        rv = snap__install(fs, tmp, snap_dir, out);
    }
    if (rv != 0) {
        (void)kv_fs_rmtree(fs, tmp);
        return rv;
    }
    t->install_ns = kv_now_ns() - t1;
    KV_LOGI("SNAPSHOT", "snapshot %s taken in %" PRIu64 " ms", out->path,
            (kv_now_ns() - t0) / 1000000);
    return 0;
}

/* ---- verify ------------------------------------------------------------- */

static void snap__report(kv_check_fn fn, void *arg, const char *word, const char *file,
                         uint64_t offset, uint64_t index, const char *detail) {
    kv_check_problem p = {
        .word = word, .file = file, .offset = offset, .index = index, .detail = detail};
    if (fn != NULL)
        fn(arg, &p);
}

/* Checks one file against its manifest entry. */
static int snap__verify_file(kv_fs *fs, const char *dir, const snap_manifest *sm, size_t i,
                             kv_check_fn fn, void *arg) {
    const Kv__SnapshotManifest__File *f = sm->m->files[i];
    char path[SNAP_PATH_BYTES_MAX];
    int rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, dir, f->name);
    if (rv != 0)
        return rv;
    uint64_t size = 0, xxh3 = 0, *chunks = NULL;
    size_t n = 0;
    rv = snap__hash_file(fs, path, sm->m->chunk_bytes, false, &size, &xxh3, &chunks, &n);
    if (rv == KV_EMISSING) {
        snap__report(fn, arg, "MISSING", path, KV_CHECK_NO_OFFSET, sm->m->index,
                     "snapshot file missing");
        return KV_EMISSING;
    }
    if (rv != 0)
        return rv;
    uint64_t bad = KV_CHECK_NO_OFFSET;
    for (size_t k = 0; k < n && k < f->n_chunk_xxh3 && bad == KV_CHECK_NO_OFFSET; k++)
        if (chunks[k] != f->chunk_xxh3[k])
            bad = (uint64_t)k * sm->m->chunk_bytes;
    free(chunks);
    if (bad != KV_CHECK_NO_OFFSET)
        snap__report(fn, arg, "CORRUPT", path, bad, sm->m->index, "chunk checksum mismatch");
    else if (size != f->size)
        snap__report(fn, arg, "CORRUPT", path, size < f->size ? size : f->size, sm->m->index,
                     "file size differs from the manifest");
    else if (xxh3 != f->xxh3)
        snap__report(fn, arg, "CORRUPT", path, KV_CHECK_NO_OFFSET, sm->m->index,
                     "file checksum mismatch");
    else
        return 0;
    return KV_ECORRUPT;
}

int snap_verify(kv_fs *fs, const char *path, kv_check_fn fn, void *arg) {
    assert(fs != NULL && path != NULL);
    snap_manifest sm;
    const char *why = NULL;
    char mpath[SNAP_PATH_BYTES_MAX];
    int rv = kv_fs_join(mpath, SNAP_PATH_BYTES_MAX, path, SNAP_MANIFEST_NAME);
    if (rv == 0)
        rv = snap__manifest_read(fs, path, &sm, &why);
    if (rv != 0) {
        const char *word = rv == KV_EMISSING   ? "MISSING"
                           : rv == KV_EVERSION ? "VERSION"
                                               : "CORRUPT";
        snap__report(fn, arg, word, mpath, KV_CHECK_NO_OFFSET, 0,
                     why != NULL ? why : kv_strerror(rv));
        return rv == KV_EMISSING ? KV_EMISSING : KV_ECORRUPT;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    uint64_t index = 0, term = 0;
    if (snap__parse_name(base, &index, &term) && (index != sm.m->index || term != sm.m->term)) {
        snap__report(fn, arg, "CORRUPT", mpath, KV_CHECK_NO_OFFSET, index,
                     "manifest index/term differ from the directory name");
        rv = KV_ECORRUPT;
    }
    bool missing = false;
    for (size_t i = 0; i < sm.m->n_files; i++) {
        int frv = snap__verify_file(fs, path, &sm, i, fn, arg);
        missing |= frv == KV_EMISSING;
        if (frv != 0 && frv != KV_EMISSING)
            rv = KV_ECORRUPT;
    }
    snap_manifest_free(&sm);
    if (rv == 0 && missing)
        rv = KV_EMISSING;
    assert(rv == 0 || rv == KV_ECORRUPT || rv == KV_EMISSING);
    return rv;
}

int snap_membership(kv_fs *fs, const char *path, Kv__Membership **out) {
    assert(fs != NULL && path != NULL && out != NULL);
    *out = NULL;
    snap_manifest sm;
    const char *why = NULL;
    int rv = snap__manifest_read(fs, path, &sm, &why);
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "snapshot %s/" SNAP_MANIFEST_NAME ": %s", path,
                why != NULL ? why : kv_strerror(rv));
        return rv;
    }
    rv = KV_ENOTFOUND;
    const Kv__Membership *m = sm.m->membership;
    if (m != NULL) { /* a copy that outlives the manifest: pack, unpack */
        size_t len = kv__membership__get_packed_size(m);
        uint8_t *buf = malloc(len ? len : 1);
        rv = buf == NULL ? KV_ENOMEM : 0;
        if (rv == 0) {
            size_t packed = kv__membership__pack(m, buf);
            assert(packed == len);
            *out = kv__membership__unpack(NULL, len, buf);
            rv = *out == NULL ? KV_ENOMEM : 0;
        }
        free(buf);
    }
    snap_manifest_free(&sm);
    assert((rv == 0) == (*out != NULL));
    return rv;
}

/* ---- list, latest, check_all, gc ---------------------------------------- */

int snap_list(kv_fs *fs, const char *snap_dir, snap_meta **out, size_t *count) {
    assert(fs != NULL && out != NULL && count != NULL);
    char **names = NULL;
    size_t n = 0;
    *out = NULL;
    *count = 0;
    int rv = snap__list_dir(fs, snap_dir, &names, &n);
    if (rv != 0)
        return rv;
    snap_meta *v = n > 0 ? calloc(n, sizeof *v) : NULL;
    if (n > 0 && v == NULL)
        rv = KV_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        uint64_t index = 0, term = 0;
        if (snap__parse_name(names[i], &index, &term))
            snap__meta_fill(&v[k++], snap_dir, index, term); /* sorted: fixed-width hex */
    }
    kv_fs_free_list(names, n);
    if (rv != 0 || k == 0) {
        free(v);
        return rv;
    }
    assert(k <= n);
    *out = v;
    *count = k;
    return 0;
}

static void snap__log_problem(void *arg, const kv_check_problem *p) {
    (void)arg;
    KV_LOGW(p->word, "snapshot file %s offset %lld: %s", p->file,
            p->offset == KV_CHECK_NO_OFFSET ? -1LL : (long long)p->offset, p->detail);
}

int snap_latest(kv_fs *fs, const char *snap_dir, snap_meta *out) {
    assert(fs != NULL && out != NULL);
    snap_meta *v = NULL;
    size_t n = 0;
    int rv = snap_list(fs, snap_dir, &v, &n);
    if (rv != 0)
        return rv;
    rv = KV_ENOTFOUND;
    for (size_t i = n; i-- > 0 && rv == KV_ENOTFOUND;) {
        if (snap_verify(fs, v[i].path, snap__log_problem, NULL) == 0) {
            *out = v[i];
            rv = 0;
        } else {
            KV_LOGW("CORRUPT", "snapshot %s does not verify: skipped", v[i].path);
        }
    }
    free(v);
    return rv;
}

int snap_check_all(kv_fs *fs, const char *snap_dir, kv_check_fn fn, void *arg) {
    assert(fs != NULL && snap_dir != NULL);
    snap_meta *v = NULL;
    size_t n = 0;
    int rv = snap_list(fs, snap_dir, &v, &n);
    if (rv != 0)
        return rv;
    for (size_t i = 0; i < n; i++) {
        int srv = snap_verify(fs, v[i].path, fn, arg);
        if (srv == KV_ECORRUPT || (srv != 0 && rv == 0))
            rv = srv;
    }
    free(v);
    return rv;
}

/* Whether made, as snap_create* returned it for snap_dir, may stand in for
 * a verified snapshot without its files being read (snap_gc, snapshot.h):
 * written by that call, in snap_dir, its manifest naming it, and every
 * file of the manifest there with its size. */
static bool snap__made_ok(kv_fs *fs, const char *snap_dir, const snap_meta *made) {
    size_t dlen = strlen(snap_dir);
    if (!made->fresh || strncmp(made->path, snap_dir, dlen) != 0 || made->path[dlen] != '/')
        return false;
    snap_manifest sm;
    const char *why = NULL;
    if (snap__manifest_read(fs, made->path, &sm, &why) != 0)
        return false;
    bool ok = sm.m->index == made->index && sm.m->term == made->term;
    for (size_t i = 0; ok && i < sm.m->n_files; i++) {
        char path[SNAP_PATH_BYTES_MAX];
        ok = kv_fs_join(path, sizeof path, made->path, sm.m->files[i]->name) == 0 &&
             snap__file_has_size(fs, path, sm.m->files[i]->size);
    }
    snap_manifest_free(&sm);
    return ok;
}

int snap_gc(kv_fs *fs, const char *snap_dir, uint32_t keep, const snap_meta *made) {
    assert(fs != NULL && keep >= 1);
    char **names = NULL;
    size_t n = 0;
    int rv = snap__list_dir(fs, snap_dir, &names, &n);
    if (rv != 0)
        return rv;
    size_t snaps = 0, seen = 0, removed = 0;
    uint64_t index = 0, term = 0;
    for (size_t i = 0; i < n; i++)
        snaps += snap__parse_name(names[i], &index, &term);
    /* The newest snapshot that verifies is never deleted, even when newer
     * ones that fail their checks fill the keep count: deleting it could
     * leave no valid snapshot at all. */
    snap_meta valid;
    const char *valid_name = NULL;
    bool have_valid = made != NULL && snap__made_ok(fs, snap_dir, made);
    if (have_valid)
        valid = *made;
    else
        have_valid = snap_latest(fs, snap_dir, &valid) == 0;
    if (have_valid) {
        valid_name = strrchr(valid.path, '/');
        valid_name = valid_name ? valid_name + 1 : valid.path;
    }
    char path[SNAP_PATH_BYTES_MAX];
    for (size_t i = 0; i < n && rv == 0; i++) {
        bool is_snap = snap__parse_name(names[i], &index, &term);
        bool old = is_snap && seen++ + keep < snaps; /* names sort by index */
        if (old && valid_name != NULL && strcmp(names[i], valid_name) == 0)
            continue;
        if (!old && strncmp(names[i], "tmp-", 4) != 0)
            continue;
        rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, snap_dir, names[i]);
        if (rv == 0)
            rv = kv_fs_rmtree(fs, path);
        removed++;
    }
    kv_fs_free_list(names, n);
    if (rv == 0 && removed > 0)
        rv = fs->ops->sync_dir(fs, snap_dir);
    return rv;
}
