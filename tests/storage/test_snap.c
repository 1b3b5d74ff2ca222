/* Snapshots (src/storage/snapshot.h): create, verify, corruption found,
 * restore, chunked install, keep-last-K, the log drop bound. */
#include "storage/snapshot.h"

#include "common/crashpoint.h"
#include "storage/fs_fake.h"
#include "storage/snap_internal.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "test_sm_util.h"

#include <check.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[1024], db[4096], snaps[4096];
static sm *S;
static kv_fs *FS;
static uint64_t next_index;

static void setup(void) {
    tu_tmpdir(dir);
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(snaps, sizeof snaps, "%s/snap", dir);
    S = tu_open(db, 0);
    FS = kv_fs_posix();
    next_index = 1;
    tu_term = 1;
}

static void teardown(void) {
    sm_close(S);
    S = NULL;
    tu_rmrf(dir);
}

/* n PUTs of vlen-byte values; random bytes when seed != NULL (then the SST
 * does not compress and spans several chunks). */
static void fill(int n, size_t vlen, uint64_t *seed) {
    char *v = malloc(vlen + 1);
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "key%06llu", (unsigned long long)next_index);
        for (size_t j = 0; j < vlen; j++)
            v[j] = seed ? (char)('!' + tu_rand(seed) % 90) : (char)('a' + (j + i) % 26);
        v[vlen] = '\0';
        ck_assert_int_eq(tu_apply(S, next_index++, KV__COMMAND__OP__PUT, 0, 0, k, v, NULL, NULL),
                         0);
    }
    free(v);
}

START_TEST(test_create_verify_latest) {
    fill(99, 50, NULL);
    Kv__Member m1 = KV__MEMBER__INIT;
    m1.id = 7, m1.name = "n7", m1.address = "h:1";
    Kv__Member *ms[] = {&m1};
    Kv__Membership mb = KV__MEMBERSHIP__INIT;
    mb.members = ms, mb.n_members = 1, mb.index = 100;
    uint8_t mbuf[64];
    sm_entry e = {.index = next_index++, .term = 4, .type = SM_ENTRY_MEMBERSHIP, .payload = mbuf};
    e.len = kv__membership__pack(&mb, mbuf);
    sm_reply r;
    ck_assert_int_eq(sm_apply(S, &e, 1, &r), 0);
    tu_term = 4;
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    ck_assert_uint_eq(m.index, 100);
    ck_assert_uint_eq(m.term, 4);
    /* the manifest carries index, term and membership of the checkpoint */
    snap_reader *rd = NULL;
    ck_assert_int_eq(snap_reader_open(FS, m.path, &rd), 0);
    const uint8_t *man;
    size_t manlen;
    snap_reader_manifest(rd, &man, &manlen);
    Kv__SnapshotManifest *pm = kv__snapshot_manifest__unpack(NULL, manlen - 24, man + 24);
    ck_assert_ptr_nonnull(pm);
    ck_assert_uint_eq(pm->index, 100);
    ck_assert_uint_eq(pm->term, 4);
    ck_assert_ptr_nonnull(pm->membership);
    ck_assert_uint_eq(pm->membership->n_members, 1);
    ck_assert_uint_eq(pm->membership->members[0]->id, 7);
    ck_assert_uint_ge(pm->n_files, 3); /* CURRENT, MANIFEST-*, OPTIONS-*, SSTs */
    kv__snapshot_manifest__free_unpacked(pm, NULL);
    snap_reader_close(rd);
    ck_assert_uint_ge(sm_durable_index(S), 100); /* the checkpoint flushed */
    tu_problems p = {0};
    ck_assert_int_eq(snap_verify(FS, m.path, tu_problem, &p), 0);
    ck_assert_int_eq(p.count, 0);
    fill(5, 50, NULL);
    snap_meta m2, latest;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m2), 0);
    ck_assert_uint_eq(m2.index, 105);
    ck_assert_uint_eq(m2.term, 4);
    ck_assert_int_eq(snap_latest(FS, snaps, &latest), 0);
    ck_assert_str_eq(latest.path, m2.path);
    ck_assert_int_eq(snap_check_all(FS, snaps, tu_problem, &p), 0);
    /* the snapshot opens as a RocksDB and holds the state of index 100 */
    sm *t = NULL;
    ck_assert_int_eq(sm_open(m.path, NULL, &t), 0);
    ck_assert_uint_eq(sm_applied_index(t), 100);
    sm_close(t);
}
END_TEST

START_TEST(test_corrupt_file_and_manifest) {
    fill(200, 100, NULL);
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    sm_close(S); /* SSTs are hard links: keep the live db away from the flip */
    S = NULL;
    char sst[4096], mf[8192];
    ck_assert(tu_find(m.path, ".sst", sst));
    tu_flip(sst, 10);
    tu_problems p = {0};
    ck_assert_int_eq(snap_verify(FS, m.path, tu_problem, &p), KV_ECORRUPT);
    ck_assert_str_eq(p.word, "CORRUPT");
    ck_assert_str_eq(p.file, sst);
    ck_assert_uint_eq(p.offset, 0); /* the chunk holding byte 10 */
    tu_flip(sst, 10);               /* back */
    ck_assert_int_eq(snap_verify(FS, m.path, tu_problem, &p), 0);
    snprintf(mf, sizeof mf, "%s/%s", m.path, SNAP_MANIFEST_NAME);
    struct stat st;
    ck_assert_int_eq(stat(mf, &st), 0);
    for (off_t off = 0; off < st.st_size; off += st.st_size / 7 + 1) {
        tu_flip(mf, (uint64_t)off); /* header or body: either way CORRUPT */
        memset(&p, 0, sizeof p);
        ck_assert_int_eq(snap_verify(FS, m.path, tu_problem, &p), KV_ECORRUPT);
        ck_assert_str_eq(p.word, "CORRUPT");
        ck_assert_str_eq(p.file, mf);
        tu_flip(mf, (uint64_t)off);
    }
    snap_meta latest;
    tu_flip(mf, 30);
    ck_assert_int_eq(snap_latest(FS, snaps, &latest), KV_ENOTFOUND);
    ck_assert_int_eq(snap_check_all(FS, snaps, tu_problem, &p), KV_ECORRUPT);
}
END_TEST

/* A second snapshot takes the hashes of the table files it shares with the
 * first from the first's manifest (they never change); they still describe
 * the files' bytes, so a flipped shared file fails both. */
START_TEST(test_shared_tables_reuse_hashes) {
    fill(200, 100, NULL);
    snap_meta a, b;
    ck_assert_int_eq(snap_create(S, FS, snaps, &a), 0);
    fill(50, 100, NULL);
    ck_assert_int_eq(snap_create(S, FS, snaps, &b), 0);
    ck_assert_int_eq(snap_verify(FS, a.path, NULL, NULL), 0);
    ck_assert_int_eq(snap_verify(FS, b.path, NULL, NULL), 0);
    snap_manifest ma, mb;
    const char *why;
    ck_assert_int_eq(snap__manifest_read(FS, a.path, &ma, &why), 0);
    ck_assert_int_eq(snap__manifest_read(FS, b.path, &mb, &why), 0);
    int shared = 0;
    for (size_t i = 0; i < ma.m->n_files; i++)
        for (size_t j = 0; j < mb.m->n_files; j++)
            if (strstr(ma.m->files[i]->name, ".sst") &&
                strcmp(ma.m->files[i]->name, mb.m->files[j]->name) == 0) {
                ck_assert_uint_eq(ma.m->files[i]->xxh3, mb.m->files[j]->xxh3);
                shared++;
            }
    ck_assert_int_ge(shared, 1);
    snap_manifest_free(&ma);
    snap_manifest_free(&mb);
    sm_close(S);
    S = NULL;
    char sst[4096];
    ck_assert(tu_find(a.path, ".sst", sst)); /* hard links: b's copy flips too */
    tu_flip(sst, 10);
    ck_assert_int_eq(snap_verify(FS, a.path, NULL, NULL), KV_ECORRUPT);
    ck_assert_int_eq(snap_verify(FS, b.path, NULL, NULL), KV_ECORRUPT);
}
END_TEST

START_TEST(test_missing_file) {
    fill(20, 10, NULL);
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    char cur[8192];
    snprintf(cur, sizeof cur, "%s/CURRENT", m.path);
    ck_assert_int_eq(unlink(cur), 0);
    tu_problems p = {0};
    ck_assert_int_eq(snap_verify(FS, m.path, tu_problem, &p), KV_EMISSING);
    ck_assert_str_eq(p.word, "MISSING");
    ck_assert_str_eq(p.file, cur);
    char mf[8192];
    snprintf(mf, sizeof mf, "%s/%s", m.path, SNAP_MANIFEST_NAME);
    ck_assert_int_eq(unlink(mf), 0);
    ck_assert_int_eq(snap_verify(FS, m.path, tu_problem, &p), KV_EMISSING);
    ck_assert_str_eq(p.file, mf);
}
END_TEST

START_TEST(test_restore) {
    fill(300, 64, NULL);
    tu_apply(S, next_index++, KV__COMMAND__OP__REGISTER, 0, 0, NULL, NULL, NULL, NULL);
    uint64_t client = next_index - 1;
    tu_apply(S, next_index++, KV__COMMAND__OP__PUT, client, 1, "s", "1", NULL, NULL);
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    uint64_t hash = 0, index = sm_applied_index(S);
    ck_assert_int_eq(sm_hash(S, &hash), 0);
    ck_assert_uint_eq(m.index, index);
    /* another node, behind and different */
    char db2[4096];
    snprintf(db2, sizeof db2, "%s/db2", dir);
    sm *t = tu_open(db2, 0);
    sm *saved = S;
    S = t;
    next_index = 1;
    fill(10, 5, NULL);
    S = saved;
    ck_assert_int_eq(snap_restore(&t, db2, m.path), 0);
    uint64_t h2 = 0;
    ck_assert_int_eq(sm_hash(t, &h2), 0);
    ck_assert_uint_eq(h2, hash);
    ck_assert_uint_eq(sm_applied_index(t), index);
    ck_assert_uint_eq(sm_durable_index(t), index);
    /* it goes on from there, sessions included */
    sm_reply r;
    ck_assert_int_eq(tu_apply(t, index + 1, KV__COMMAND__OP__PUT, client, 1, "s", "1", NULL, &r),
                     0);
    ck_assert_uint_eq(r.index, index); /* the duplicate, from the snapshot's sessions */
    sm_close(t);
    ck_assert_int_eq(snap_verify(FS, m.path, NULL, NULL), 0); /* untouched */
    /* a snapshot that does not verify changes nothing */
    sm *u = tu_open(db2, 0);
    char cur[8192];
    snprintf(cur, sizeof cur, "%s/CURRENT", m.path);
    tu_flip(cur, 0);
    ck_assert_int_eq(snap_restore(&u, db2, m.path), KV_ECORRUPT);
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_eq(sm_applied_index(u), index + 1);
    sm_close(u);
}
END_TEST

/* The chunk numbers 0..n-1 in a random order. */
static void shuffle(uint64_t *v, uint64_t n, uint64_t *seed) {
    for (uint64_t i = 0; i < n; i++)
        v[i] = i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = tu_rand(seed) % i, t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Compares two snapshot directories file by file. */
static void same_snapshot(const char *a, const char *b) {
    snap_reader *ra = NULL, *rb = NULL;
    ck_assert_int_eq(snap_reader_open(FS, a, &ra), 0);
    ck_assert_int_eq(snap_reader_open(FS, b, &rb), 0);
    const uint8_t *ma, *mb;
    size_t la, lb;
    snap_reader_manifest(ra, &ma, &la);
    snap_reader_manifest(rb, &mb, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_mem_eq(ma, mb, la);
    snap_reader_close(ra);
    snap_reader_close(rb);
    ck_assert_int_eq(snap_verify(FS, b, tu_problem, &(tu_problems){0}), 0);
}

START_TEST(test_chunked_install) {
    uint64_t seed = tu_seed("test_chunked_install");
    fill(40, 100000, &seed); /* ~4 MB that does not compress: several chunks */
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    snap_reader *rd = NULL;
    ck_assert_int_eq(snap_reader_open(FS, m.path, &rd), 0);
    uint64_t n = snap_reader_chunks_count(rd);
    printf("chunked install: %llu chunks\n", (unsigned long long)n);
    ck_assert_uint_ge(n, 6);
    const uint8_t *man;
    size_t manlen;
    snap_reader_manifest(rd, &man, &manlen);
    char recv_dir[4096];
    snprintf(recv_dir, sizeof recv_dir, "%s/recv", dir);
    snap_recv *rc = NULL;
    uint8_t *bad = malloc(manlen);
    memcpy(bad, man, manlen);
    bad[manlen - 1] ^= 1;
    ck_assert_int_eq(snap_recv_begin(FS, recv_dir, bad, manlen, &rc), KV_ECORRUPT);
    free(bad);
    ck_assert_int_eq(snap_recv_begin(FS, recv_dir, man, manlen, &rc), 0);
    uint64_t *order = malloc(n * sizeof *order), missing[4], count = 0;
    shuffle(order, n, &seed);
    uint8_t *buf = malloc(KV_SNAPSHOT_CHUNK_BYTES);
    size_t len = 0;
    uint64_t h = 0;
    for (uint64_t i = 0; i + 1 < n; i++) { /* all but the last of the order */
        ck_assert_int_eq(snap_reader_read(rd, order[i], buf, KV_SNAPSHOT_CHUNK_BYTES, &len, &h), 0);
        if (i == 1) { /* corrupted on the way: refused, then sent again */
            buf[len / 2] ^= 0x01;
            ck_assert_int_eq(snap_recv_chunk(rc, order[i], buf, len, h), KV_ECORRUPT);
            buf[len / 2] ^= 0x01;
        }
        ck_assert_int_eq(snap_recv_chunk(rc, order[i], buf, len, h), 0);
        if (i == 2) /* a duplicate */
            ck_assert_int_eq(snap_recv_chunk(rc, order[i], buf, len, h), 0);
    }
    snap_meta got;
    ck_assert_int_eq(snap_recv_finish(rc, &got), KV_EMISSING);
    snap_recv_missing(rc, missing, 4, &count);
    ck_assert_uint_eq(count, 1);
    ck_assert_uint_eq(missing[0], order[n - 1]);
    ck_assert_int_eq(snap_reader_read(rd, missing[0], buf, KV_SNAPSHOT_CHUNK_BYTES, &len, &h), 0);
    ck_assert_int_eq(snap_recv_chunk(rc, missing[0], buf, len, h ^ 1), KV_ECORRUPT);
    ck_assert_int_eq(snap_recv_chunk(rc, n, buf, len, h), KV_EINVAL);
    ck_assert_int_eq(snap_recv_chunk(rc, missing[0], buf, len, h), 0);
    ck_assert_int_eq(snap_recv_finish(rc, &got), 0);
    ck_assert_uint_eq(got.index, m.index);
    ck_assert_uint_eq(got.term, m.term);
    same_snapshot(m.path, got.path);
    /* restoring from the received copy gives the source's state */
    uint64_t h1 = 0, h2 = 0;
    ck_assert_int_eq(sm_hash(S, &h1), 0);
    char db2[4096];
    snprintf(db2, sizeof db2, "%s/db2", dir);
    sm *t = tu_open(db2, 0);
    ck_assert_int_eq(snap_restore(&t, db2, got.path), 0);
    ck_assert_int_eq(sm_hash(t, &h2), 0);
    ck_assert_uint_eq(h1, h2);
    sm_close(t);
    free(order);
    free(buf);
    snap_reader_close(rd);
}
END_TEST

/* Receives the snapshot behind rd into snap_dir on fs; finish's result. */
static int recv_all(snap_reader *rd, kv_fs *fs, const char *snap_dir, snap_recv **rc,
                    snap_meta *got) {
    const uint8_t *man;
    size_t manlen;
    snap_reader_manifest(rd, &man, &manlen);
    ck_assert_int_eq(snap_recv_begin(fs, snap_dir, man, manlen, rc), 0);
    uint8_t *buf = malloc(KV_SNAPSHOT_CHUNK_BYTES);
    for (uint64_t k = 0; k < snap_reader_chunks_count(rd); k++) {
        size_t len = 0;
        uint64_t h = 0;
        ck_assert_int_eq(snap_reader_read(rd, k, buf, KV_SNAPSHOT_CHUNK_BYTES, &len, &h), 0);
        ck_assert_int_eq(snap_recv_chunk(*rc, k, buf, len, h), 0);
    }
    free(buf);
    return snap_recv_finish(*rc, got);
}

/* A follower's first snapshot creates its snap dir: once finish returned,
 * the snapshot survives a power loss (the snap dir's own name included). */
START_TEST(test_recv_durable_in_new_dir) {
    fill(20, 100, NULL);
    snap_meta m, got, latest;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    snap_reader *rd = NULL;
    ck_assert_int_eq(snap_reader_open(FS, m.path, &rd), 0);
    fsf *f = fsf_new(tu_seed("test_recv_durable_in_new_dir"));
    kv_fs *fake = fsf_fs(f);
    ck_assert_int_eq(fake->ops->mkdir(fake, "/n2"), 0);
    ck_assert_int_eq(fake->ops->sync_dir(fake, "/"), 0);
    snap_recv *rc = NULL;
    ck_assert_int_eq(recv_all(rd, fake, "/n2/snap", &rc, &got), 0);
    fsf_crash(f, FSF_CRASH_DROP);
    ck_assert_int_eq(snap_latest(fake, "/n2/snap", &latest), 0);
    ck_assert_uint_eq(latest.index, m.index);
    fsf_free(f);
    snap_reader_close(rd);
}
END_TEST

/* A sync that fails while installing is final: finish is not retried into
 * success on pages the kernel may have dropped (fsyncgate). */
START_TEST(test_recv_sync_error_final) {
    fill(20, 100, NULL);
    snap_meta m, got, latest;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    snap_reader *rd = NULL;
    ck_assert_int_eq(snap_reader_open(FS, m.path, &rd), 0);
    fsf *f = fsf_new(tu_seed("test_recv_sync_error_final"));
    kv_fs *fake = fsf_fs(f);
    fsf_fail_sync(f, 1);
    snap_recv *rc = NULL;
    ck_assert_int_eq(recv_all(rd, fake, "/snap", &rc, &got), KV_EIO);
    ck_assert_int_eq(snap_recv_finish(rc, &got), KV_EIO); /* never retried */
    snap_recv_abort(rc);
    ck_assert_int_eq(snap_latest(fake, "/snap", &latest), KV_ENOTFOUND);
    fsf_free(f);
    snap_reader_close(rd);
}
END_TEST

/* A manifest whose file size is near UINT64_MAX: the chunk count must not
 * wrap around to match an empty hash list. */
START_TEST(test_manifest_size_overflow) {
    Kv__SnapshotManifest__File file = KV__SNAPSHOT_MANIFEST__FILE__INIT;
    file.name = "000001.sst";
    file.size = UINT64_MAX;
    Kv__SnapshotManifest__File *files[] = {&file};
    Kv__SnapshotManifest mf = KV__SNAPSHOT_MANIFEST__INIT;
    mf.format = 1;
    mf.index = 5;
    mf.term = 1;
    mf.chunk_bytes = KV_SNAPSHOT_CHUNK_BYTES;
    mf.files = files;
    mf.n_files = 1;
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(snap_manifest_encode(&mf, &buf, &len), 0);
    snap_recv *rc = NULL;
    char recv_dir[4096];
    snprintf(recv_dir, sizeof recv_dir, "%s/recv", dir);
    ck_assert_int_eq(snap_recv_begin(FS, recv_dir, buf, len, &rc), KV_ECORRUPT);
    free(buf);
}
END_TEST

START_TEST(test_recv_abort) {
    fill(10, 10, NULL);
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    snap_reader *rd = NULL;
    ck_assert_int_eq(snap_reader_open(FS, m.path, &rd), 0);
    const uint8_t *man;
    size_t manlen;
    snap_reader_manifest(rd, &man, &manlen);
    char recv_dir[4096];
    snprintf(recv_dir, sizeof recv_dir, "%s/recv", dir);
    snap_recv *rc = NULL;
    ck_assert_int_eq(snap_recv_begin(FS, recv_dir, man, manlen, &rc), 0);
    snap_recv_abort(rc);
    /* nothing installed and nothing left behind: the directory is empty */
    ck_assert_int_eq(rmdir(recv_dir), 0);
    snap_reader_close(rd);
}
END_TEST

START_TEST(test_gc_keep_last) {
    snap_meta m[4];
    for (int i = 0; i < 4; i++) {
        fill(5, 10, NULL);
        ck_assert_int_eq(snap_create(S, FS, snaps, &m[i]), 0);
    }
    char junk[8192];
    snprintf(junk, sizeof junk, "%s/tmp-123-4", snaps);
    ck_assert_int_eq(mkdir(junk, 0755), 0);
    snprintf(junk, sizeof junk, "%s/tmp-123-4/x", snaps);
    FILE *f = fopen(junk, "w");
    fclose(f);
    ck_assert_int_eq(snap_gc(FS, snaps, KV_SNAPSHOTS_KEEP_DEFAULT, NULL), 0);
    snap_meta *v = NULL;
    size_t n = 0;
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(v[0].path, m[2].path);
    ck_assert_str_eq(v[1].path, m[3].path);
    free(v);
    char **names = NULL;
    size_t nn = 0;
    ck_assert_int_eq(FS->ops->list(FS, snaps, &names, &nn), 0);
    ck_assert_uint_eq(nn, 2); /* tmp-* gone too */
    kv_fs_free_list(names, nn);
    ck_assert_int_eq(snap_gc(FS, snaps, 1, NULL), 0);
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(v[0].path, m[3].path);
    free(v);
}
END_TEST

/* When the newest snapshots fail their checks, gc keeps the newest valid
 * one rather than leave no valid snapshot at all. */
START_TEST(test_gc_keeps_newest_valid) {
    snap_meta m[3];
    for (int i = 0; i < 3; i++) {
        fill(5, 10, NULL);
        ck_assert_int_eq(snap_create(S, FS, snaps, &m[i]), 0);
    }
    char mf[8192];
    snprintf(mf, sizeof mf, "%s/%s", m[2].path, SNAP_MANIFEST_NAME);
    tu_flip(mf, 20); /* the newest one is now invalid */
    ck_assert_int_eq(snap_gc(FS, snaps, 1, NULL), 0);
    snap_meta *v = NULL;
    size_t n = 0;
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 2); /* the newest (kept by count) and m[1] (valid) */
    ck_assert_str_eq(v[0].path, m[1].path);
    ck_assert_str_eq(v[1].path, m[2].path);
    free(v);
    snap_meta latest;
    ck_assert_int_eq(snap_latest(FS, snaps, &latest), 0);
    ck_assert_str_eq(latest.path, m[1].path);
}
END_TEST

/* The posix file system, counting the bytes read through it. */
static uint64_t counted_read;
static int counting_pread(kv_file *f, void *buf, size_t len, uint64_t off, size_t *got) {
    int rv = kv_fs_posix()->ops->pread(f, buf, len, off, got);
    counted_read += rv == 0 ? *got : 0;
    return rv;
}

static uint64_t file_bytes(const char *path) {
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* The path of the MANIFEST-* file RocksDB's checkpoint wrote into snapshot
 * dir: a copy of its own, shared with no other snapshot nor the store
 * (its tables and OPTIONS file are hard links). */
static void rocksdb_manifest(const char *dir, char *out, size_t len) {
    char **names = NULL;
    size_t n = 0;
    ck_assert_int_eq(FS->ops->list(FS, dir, &names, &n), 0);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (strncmp(names[i], "MANIFEST-", 9) == 0)
            snprintf(out, len, "%s/%s", dir, names[i]);
    kv_fs_free_list(names, n);
    ck_assert_msg(out[0] != '\0', "no MANIFEST-* in %s", dir);
}

/* kvd cleans up after every snapshot it takes: gc trusts the one just made
 * (made) once its manifest reads and its files have their sizes, and reads
 * none of them, which are the whole state machine. A made one whose
 * manifest is damaged, or that snap_create found there already, or with a
 * file of another size, is not trusted: the newest that verifies stays. */
START_TEST(test_gc_trusts_the_snapshot_made) {
    struct kv_fs_ops ops = *kv_fs_posix()->ops;
    ops.pread = counting_pread;
    kv_fs counting = {.ops = &ops, .impl = kv_fs_posix()->impl};
    uint64_t seed = 7;
    snap_meta m[5];
    for (int i = 0; i < 3; i++) {
        fill(400, 1000, &seed); /* incompressible: the third snapshot is over 2 MiB */
        ck_assert_int_eq(snap_create(S, FS, snaps, &m[i]), 0);
    }
    char mf[8192];
    snprintf(mf, sizeof mf, "%s/%s", m[2].path, SNAP_MANIFEST_NAME);
    counted_read = 0;
    ck_assert_int_eq(snap_gc(&counting, snaps, 1, &m[2]), 0);
    ck_assert_msg(counted_read <= file_bytes(mf),
                  "gc read %" PRIu64 " bytes; the manifest of the snapshot made has %" PRIu64,
                  counted_read, file_bytes(mf));
    snap_meta *v = NULL;
    size_t n = 0;
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(v[0].path, m[2].path);
    free(v);
    ck_assert_int_eq(snap_verify(FS, m[2].path, NULL, NULL), 0);
    /* made, with its manifest damaged: gc verifies, and keeps m[3] */
    for (int i = 3; i < 5; i++) {
        fill(5, 10, NULL);
        ck_assert_int_eq(snap_create(S, FS, snaps, &m[i]), 0);
    }
    snprintf(mf, sizeof mf, "%s/%s", m[4].path, SNAP_MANIFEST_NAME);
    tu_flip(mf, 20);
    ck_assert_int_eq(snap_gc(FS, snaps, 1, &m[4]), 0);
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 2); /* m[4] (kept by count) and m[3] (the newest valid) */
    ck_assert_str_eq(v[0].path, m[3].path);
    ck_assert_str_eq(v[1].path, m[4].path);
    free(v);
    /* a snapshot that was there already (snap_create kept it) is no fresh
     * one: gc verifies, finds its RocksDB MANIFEST damaged (the same size:
     * the file sizes alone do not tell), and keeps m[3] too */
    char opt[8192];
    fill(5, 10, NULL);
    ck_assert_int_eq(snap_create(S, FS, snaps, &m[4]), 0);
    ck_assert(m[4].fresh);
    rocksdb_manifest(m[4].path, opt, sizeof opt);
    tu_flip(opt, 10);
    snap_meta again;
    ck_assert_int_eq(snap_create(S, FS, snaps, &again), 0); /* nothing applied since */
    ck_assert_str_eq(again.path, m[4].path);
    ck_assert(!again.fresh);
    ck_assert_int_eq(snap_gc(FS, snaps, 1, &again), 0);
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(v[0].path, m[3].path);
    ck_assert_str_eq(v[1].path, m[4].path);
    free(v);
    /* a fresh one with a file shorter than its manifest says: gc verifies */
    fill(5, 10, NULL);
    ck_assert_int_eq(snap_create(S, FS, snaps, &m[4]), 0);
    rocksdb_manifest(m[4].path, opt, sizeof opt);
    ck_assert_int_eq(truncate(opt, (off_t)file_bytes(opt) - 1), 0);
    ck_assert_int_eq(snap_gc(FS, snaps, 1, &m[4]), 0);
    ck_assert_int_eq(snap_list(FS, snaps, &v, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(v[0].path, m[3].path);
    ck_assert_str_eq(v[1].path, m[4].path);
    free(v);
}
END_TEST

/* The Raft log is the durability point: a prefix goes only once RocksDB
 * (flushed) or a snapshot holds its state. */
START_TEST(test_drop_bound_with_snapshot) {
    fill(10, 10, NULL);
    ck_assert_uint_eq(sm_log_drop_bound(S, 0), 0); /* all in the memtable */
    snap_meta m;
    ck_assert_int_eq(snap_create(S, FS, snaps, &m), 0);
    ck_assert_uint_eq(sm_log_drop_bound(S, m.index), 10);
    fill(10, 10, NULL); /* 11..20: not flushed */
    ck_assert_uint_eq(sm_log_drop_bound(S, m.index), 10);
    ck_assert_uint_eq(sm_applied_index(S), 20);
    ck_assert_int_eq(sm_flush(S), 0);
    ck_assert_uint_eq(sm_log_drop_bound(S, m.index), 20);
}
END_TEST

/* Applies PUT live-KEY = value-of-index for index in [from, to), one batch
 * each: the same entries give the same state whatever the batching. */
static void apply_range(sm *s, uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "live%05llu", (unsigned long long)(i % 5000));
        snprintf(v, sizeof v, "value-%llu-%0*d", (unsigned long long)i, 30, 7);
        ck_assert_int_eq(tu_apply(s, i, KV__COMMAND__OP__PUT, 0, 0, k, v, NULL, NULL), 0);
    }
}

typedef struct live_arg {
    const char *dir;
    snap_meta m;
    snap_timing t;
    uint64_t applied0; /* applied when the call began */
    int rc;
    _Atomic bool done;
} live_arg;

static void *live_thread(void *p) {
    live_arg *a = p;
    a->applied0 = sm_applied_index(S);
    a->rc = snap_create_live(S, FS, a->dir, &a->m, &a->t);
    atomic_store(&a->done, true);
    return NULL;
}

/* snap_create_live on another thread while this one goes on applying: the
 * snapshot is the state after exactly the entries up to its index (its
 * hash is that of a state machine that applied just those), and it holds
 * at least what was applied when the call began. */
START_TEST(test_create_live_while_applying) {
    uint64_t next = 1;
    apply_range(S, next, 3001);
    next = 3001;
    live_arg a = {.dir = snaps};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, live_thread, &a), 0);
    uint64_t during = 0;
    while (!atomic_load(&a.done) && during < 200000) {
        apply_range(S, next, next + 10);
        next += 10;
        during += 10;
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_uint_ge(a.m.index, a.applied0);
    ck_assert_uint_ge(a.applied0, 3000);
    ck_assert_uint_le(a.m.index, sm_applied_index(S));
    ck_assert_uint_ge(sm_durable_index(S), a.applied0);
    tu_problems p = {0};
    ck_assert_int_eq(snap_verify(FS, a.m.path, tu_problem, &p), 0);
    /* a reference that applied exactly 1..index */
    char ref_dir[4096];
    snprintf(ref_dir, sizeof ref_dir, "%s/ref", dir);
    sm *ref = tu_open(ref_dir, 0);
    apply_range(ref, 1, a.m.index + 1);
    uint64_t want = 0, got = 0;
    ck_assert_int_eq(sm_hash(ref, &want), 0);
    sm_close(ref);
    sm *t = NULL;
    ck_assert_int_eq(sm_open(a.m.path, NULL, &t), 0);
    ck_assert_uint_eq(sm_applied_index(t), a.m.index);
    ck_assert_int_eq(sm_hash(t, &got), 0);
    sm_close(t);
    ck_assert_uint_eq(got, want);
    printf("live snapshot at %llu: applied %llu when it began, %llu entries applied while it ran\n",
           (unsigned long long)a.m.index, (unsigned long long)a.applied0,
           (unsigned long long)during);
}
END_TEST

static const char *crash_at;
static bool crash_hook(void *arg, const char *point) {
    (void)arg;
    return strcmp(point, crash_at) == 0;
}

/* A crash at each step of snap_create_live (kvd's snapshot worker) leaves
 * the previous snapshot the newest valid one, and a tmp-* directory that
 * snap_gc removes; the next snapshot is taken as usual. */
START_TEST(test_create_live_crash_points) {
    fill(50, 20, NULL);
    snap_meta m0, m, latest;
    ck_assert_int_eq(snap_create_live(S, FS, snaps, &m0, NULL), 0);
    ck_assert_uint_eq(m0.index, 50);
    static const char *points[] = {"snapshot.checkpoint", "snapshot.manifest"};
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        fill(5, 20, NULL);
        crash_at = points[i];
        kv_crashpoint_set(crash_hook, NULL);
        ck_assert_int_eq(snap_create_live(S, FS, snaps, &m, NULL), KV_EIO);
        kv_crashpoint_set(NULL, NULL);
        ck_assert_int_eq(snap_latest(FS, snaps, &latest), 0);
        ck_assert_str_eq(latest.path, m0.path);
    }
    char **names = NULL;
    size_t n = 0;
    ck_assert_int_eq(FS->ops->list(FS, snaps, &names, &n), 0);
    ck_assert_uint_eq(n, 3); /* m0 and the two tmp-* */
    kv_fs_free_list(names, n);
    ck_assert_int_eq(snap_gc(FS, snaps, KV_SNAPSHOTS_KEEP_DEFAULT, NULL), 0);
    ck_assert_int_eq(FS->ops->list(FS, snaps, &names, &n), 0);
    ck_assert_uint_eq(n, 1);
    kv_fs_free_list(names, n);
    ck_assert_int_eq(snap_create_live(S, FS, snaps, &m, NULL), 0);
    ck_assert_uint_eq(m.index, 60);
    ck_assert_int_eq(snap_latest(FS, snaps, &latest), 0);
    ck_assert_str_eq(latest.path, m.path);
}
END_TEST

static Suite *snap_suite(void) {
    Suite *s = suite_create("snapshot");
    TCase *t = tcase_create("snapshot");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_create_verify_latest);
    tcase_add_test(t, test_corrupt_file_and_manifest);
    tcase_add_test(t, test_shared_tables_reuse_hashes);
    tcase_add_test(t, test_missing_file);
    tcase_add_test(t, test_restore);
    tcase_add_test(t, test_chunked_install);
    tcase_add_test(t, test_recv_abort);
    tcase_add_test(t, test_recv_durable_in_new_dir);
    tcase_add_test(t, test_recv_sync_error_final);
    tcase_add_test(t, test_manifest_size_overflow);
    tcase_add_test(t, test_gc_keep_last);
    tcase_add_test(t, test_gc_keeps_newest_valid);
    tcase_add_test(t, test_gc_trusts_the_snapshot_made);
    tcase_add_test(t, test_drop_bound_with_snapshot);
    tcase_add_test(t, test_create_live_while_applying);
    tcase_add_test(t, test_create_live_crash_points);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *r = srunner_create(snap_suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
