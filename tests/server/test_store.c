/* The node's storage start-up and snapshot install (src/server/store.h):
 * a crash at every step of an install, then the start-up path on what is
 * left; and the membership Raft restarts from.
 *
 * The log and the hard state live in the fake file layer (fs_fake.h, under
 * the same absolute path as the real temp dir), so whatever they did not
 * sync is lost at the crash; RocksDB and the snapshots use real files. */
#include "server/store.h"

#include "common/checksum.h"
#include "common/crashpoint.h"
#include "kv/errors.h"
#include "proto/kv.pb-c.h"
#include "raft/raft.h"
#include "server/server_int.h"
#include "storage/datadir.h"
#include "storage/fs_fake.h"
#include "storage/hardstate.h"
#include "test_sm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OP_PUT KV__COMMAND__OP__PUT
#define SNAP_INDEX 80u /* the leader's snapshot S */
#define SNAP_TERM 3u
#define OLD_LAST 100u /* the follower's old log: 1..10 term 1, 11..100 term 2 */
#define OLD_APPLIED 50u

/* ---- helpers ------------------------------------------------------------- */

/* Applies PUTs key<prefix><i> for i in [lo, hi] at term. */
static void put_range(sm *s, uint64_t lo, uint64_t hi, uint64_t term, const char *prefix) {
    tu_term = term;
    for (uint64_t i = lo; i <= hi; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "%s%llu", prefix, (unsigned long long)i);
        snprintf(val, sizeof val, "v%llu", (unsigned long long)i);
        ck_assert_int_eq(tu_apply(s, i, OP_PUT, 0, 0, key, val, NULL, NULL), 0);
    }
    tu_term = 1;
}

/* A membership entry of voters 1..n at (index, term). */
static void apply_members(sm *s, uint64_t index, uint64_t term, uint32_t n) {
    Kv__Member mem[8], *ptrs[8];
    char names[8][16];
    ck_assert_uint_le(n, 8);
    for (uint32_t i = 0; i < n; i++) {
        kv__member__init(&mem[i]);
        snprintf(names[i], sizeof names[i], "n%u", i + 1);
        mem[i].id = i + 1;
        mem[i].name = names[i];
        mem[i].address = "127.0.0.1:1";
        ptrs[i] = &mem[i];
    }
    Kv__Membership m = KV__MEMBERSHIP__INIT;
    m.members = ptrs;
    m.n_members = n;
    m.index = index;
    uint8_t buf[512];
    size_t len = kv__membership__pack(&m, buf);
    sm_entry e = {
        .index = index, .term = term, .type = SM_ENTRY_MEMBERSHIP, .payload = buf, .len = len};
    sm_reply r;
    ck_assert_int_eq(sm_apply(s, &e, 1, &r), 0);
    sm_replies_free(&r, 1);
}

/* Appends entries [lo, hi] of term to the log, durably. */
static void log_range(wal *w, uint64_t lo, uint64_t hi, uint64_t term) {
    for (uint64_t i = lo; i <= hi; i++) {
        uint8_t d = 'x';
        wal_entry e = {.index = i, .term = term, .type = RAFT_ENTRY_NORMAL, .len = 1, .data = &d};
        ck_assert_int_eq(wal_append_wait(w, &e, 1), 0);
    }
}

/* A fake fs holding data dir dir (every parent made and synced). */
static fsf *fake_datadir(const char *dir) {
    fsf *f = fsf_new(42);
    kv_fs *fs = fsf_fs(f);
    char path[1024] = "";
    const char *p = dir;
    while ((p = strchr(p + 1, '/')) != NULL) {
        snprintf(path, sizeof path, "%.*s", (int)(p - dir), dir);
        ck_assert_int_eq(fs->ops->mkdir(fs, path), 0);
    }
    ck_assert_int_eq(dd_init(fs, dir), 0);
    char parent[1024];
    for (snprintf(path, sizeof path, "%s", dir); strcmp(path, "/") != 0;) {
        kv_fs_dirname(path, parent, sizeof parent);
        ck_assert_int_eq(fs->ops->sync_dir(fs, parent), 0);
        snprintf(path, sizeof path, "%s", parent);
    }
    return f;
}

/* The stream of the snapshot at path (as the leader sends it), in a temp
 * file positioned at 0; *len its bytes. */
static FILE *snapshot_stream(const char *path, uint64_t *len) {
    snap_reader *rd;
    ck_assert_int_eq(snap_reader_open(kv_fs_posix(), path, &rd), 0);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    const uint8_t *m;
    size_t mlen;
    snap_reader_manifest(rd, &m, &mlen);
    uint8_t hdr[16];
    kv_put_u32(hdr, (uint32_t)mlen);
    ck_assert_uint_eq(fwrite(hdr, 1, 4, f), 4);
    ck_assert_uint_eq(fwrite(m, 1, mlen, f), mlen);
    uint8_t *buf = malloc(KV_SNAPSHOT_CHUNK_BYTES);
    ck_assert_ptr_nonnull(buf);
    uint64_t chunks = snap_reader_chunks_count(rd);
    ck_assert_uint_ge(chunks, 3); /* install.receiving needs a stream cut after chunk 2 */
    for (uint64_t k = 0; k < chunks; k++) {
        size_t n;
        uint64_t x;
        ck_assert_int_eq(snap_reader_read(rd, k, buf, KV_SNAPSHOT_CHUNK_BYTES, &n, &x), 0);
        kv_put_u32(hdr, (uint32_t)k);
        kv_put_u32(hdr + 4, (uint32_t)n);
        kv_put_u64(hdr + 8, x);
        ck_assert_uint_eq(fwrite(hdr, 1, 16, f), 16);
        ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    }
    free(buf);
    snap_reader_close(rd);
    *len = (uint64_t)ftello(f);
    ck_assert_int_eq(fseeko(f, 0, SEEK_SET), 0);
    return f;
}

/* raft_new on what store_open found, as open_storage hands it over: 0 when
 * the node would start. *mem (may be NULL) gets raft's membership. */
static int raft_restarts(const store_start *ss, uint64_t term, raft_membership *mem) {
    raft_config rc;
    raft_config_init(&rc, 1);
    rc.hs.term = term;
    rc.applied = ss->applied;
    if (ss->has_snap) {
        rc.has_snapshot = true;
        rc.snapshot.index = ss->snap.index;
        rc.snapshot.term = ss->snap.term;
        if (ss->snap_members != NULL)
            server_members_to_raft(ss->snap_members, &rc.snapshot.membership);
    }
    raft_entry *re = calloc(ss->entries_count + 1, sizeof *re);
    ck_assert_ptr_nonnull(re);
    for (size_t i = 0; i < ss->entries_count; i++) {
        re[i].index = ss->entries[i].index;
        re[i].term = ss->entries[i].term;
        re[i].type = ss->entries[i].type;
        re[i].data = ss->entries[i].data;
        re[i].len = ss->entries[i].len;
    }
    rc.entries = re;
    rc.entries_count = ss->entries_count;
    raft *r = NULL;
    int rv = raft_new(&rc, &r);
    free(re);
    if (rv == 0 && mem != NULL)
        raft_membership_get(r, mem);
    raft_free(r);
    return rv;
}

/* ---- the leader's snapshot, made once ----------------------------------- */

static char src_dir[1024], src_snap[4096];
static uint64_t src_hash, old_hash;

/* S = (SNAP_INDEX, SNAP_TERM): entries 1..10 of term 1 as the follower has
 * them, 11..80 of term 3 that the follower never saw. */
static void leader_setup(void) {
    tu_tmpdir(src_dir);
    char db[4096], snaps[4096];
    snprintf(db, sizeof db, "%s/db", src_dir);
    snprintf(snaps, sizeof snaps, "%s/snap", src_dir);
    sm *s = tu_open(db, 0);
    apply_members(s, 1, 1, 3);
    put_range(s, 2, 10, 1, "k");
    put_range(s, 11, SNAP_INDEX, SNAP_TERM, "leader-");
    snap_meta m;
    ck_assert_int_eq(snap_create(s, kv_fs_posix(), snaps, &m), 0);
    ck_assert_uint_eq(m.index, SNAP_INDEX);
    ck_assert_uint_eq(m.term, SNAP_TERM);
    snprintf(src_snap, sizeof src_snap, "%s", m.path);
    ck_assert_int_eq(sm_hash(s, &src_hash), 0);
    sm_close(s);
}

static void leader_teardown(void) {
    tu_rmrf(src_dir);
}

/* ---- the follower ------------------------------------------------------- */

typedef struct follower {
    char dir[1024], db[4096], snaps[4096];
    fsf *f;
    wal *w;
    sm *s;
    hs *h;
} follower;

/* A follower in term 3 whose log (1..10 term 1, 11..100 term 2, from a
 * deposed leader) is longer than S and conflicts with it at S.index; its
 * state machine applied 1..50 (durably). */
static void follower_setup(follower *fo) {
    memset(fo, 0, sizeof *fo);
    tu_tmpdir(fo->dir);
    snprintf(fo->db, sizeof fo->db, "%s/db", fo->dir);
    snprintf(fo->snaps, sizeof fo->snaps, "%s/snap", fo->dir);
    fo->f = fake_datadir(fo->dir);
    kv_fs *fs = fsf_fs(fo->f);
    hs_state st = {.term = SNAP_TERM};
    ck_assert_int_eq(hs_load(fs, fo->dir, 0, NULL, NULL, &fo->h, &(hs_state){0}), 0);
    ck_assert_int_eq(hs_save(fo->h, &st), 0);
    ck_assert_int_eq(wal_open(fs, fo->dir, NULL, NULL, NULL, &fo->w), 0);
    log_range(fo->w, 1, 10, 1);
    log_range(fo->w, 11, OLD_LAST, 2);
    fo->s = tu_open(fo->db, 0);
    apply_members(fo->s, 1, 1, 3);
    put_range(fo->s, 2, 10, 1, "k");
    put_range(fo->s, 11, OLD_APPLIED, 2, "old-");
    ck_assert_int_eq(sm_flush(fo->s), 0);
    ck_assert_int_eq(sm_hash(fo->s, &old_hash), 0);
}

/* The machine dies: nothing more is written; what the fake fs did not sync
 * is lost (FSF_CRASH_DROP), or a random prefix of it survives, torn
 * (FSF_CRASH_TORN). */
static void follower_crash_mode(follower *fo, enum fsf_crash_mode mode) {
    kv_crashpoint_set(NULL, NULL);
    sm_close(fo->s); /* flushed already, or a fresh restore: writes nothing new */
    wal_close(fo->w);
    hs_close(fo->h);
    fo->s = NULL;
    fo->w = NULL;
    fo->h = NULL;
    fsf_crash(fo->f, mode);
}

static void follower_crash(follower *fo) {
    follower_crash_mode(fo, FSF_CRASH_DROP);
}

static void follower_free(follower *fo) {
    sm_close(fo->s);
    if (fo->w != NULL)
        wal_close(fo->w);
    if (fo->h != NULL)
        hs_close(fo->h);
    fsf_free(fo->f);
    tu_rmrf(fo->dir);
}

/* Restarts the follower through the start-up path and checks the
 * invariants of store.h. installed: S was durable before the crash. */
static void follower_restart_check(follower *fo, bool installed, const char *what) {
    kv_fs *fs = fsf_fs(fo->f);
    store_start ss;
    int rc = store_open(fs, kv_fs_posix(), fo->dir, NULL, &fo->w, &fo->s, &ss);
    ck_assert_msg(rc == 0, "%s: store_open: %s", what, kv_strerror(rc));
    /* as kvd does: the hard state after the log, checked against its term */
    hs_state st;
    uint64_t log_term = 0;
    ck_assert_int_eq(wal_term_at(fo->w, wal_last_index(fo->w), &log_term), 0);
    ck_assert_int_eq(hs_load(fs, fo->dir, log_term, NULL, NULL, &fo->h, &st), 0);
    ck_assert_uint_eq(st.term, SNAP_TERM);
    uint64_t h = 0;
    ck_assert_int_eq(sm_hash(fo->s, &h), 0);
    if (installed) {
        ck_assert_msg(ss.has_snap && ss.snap.index == SNAP_INDEX && ss.snap.term == SNAP_TERM,
                      "%s: snapshot not found", what);
        ck_assert_msg(h == src_hash, "%s: the state machine is not the snapshot's", what);
        uint64_t t = 0;
        ck_assert_int_eq(wal_term_at(fo->w, SNAP_INDEX, &t), 0);
        ck_assert_msg(t == SNAP_TERM, "%s: the log holds term %llu at S.index", what,
                      (unsigned long long)t);
        /* the old entries 81..100 of term 2 conflict with S: gone */
        ck_assert_msg(ss.last == SNAP_INDEX && ss.entries_count == 0,
                      "%s: the log still ends at %llu with %zu entries after S", what,
                      (unsigned long long)ss.last, ss.entries_count);
        ck_assert_uint_eq(ss.first, SNAP_INDEX + 1);
    } else {
        ck_assert_msg(h == old_hash, "%s: the state machine changed", what);
        ck_assert_uint_eq(ss.last, OLD_LAST);
        ck_assert_uint_eq(ss.applied, OLD_APPLIED);
    }
    for (size_t i = 0; i < ss.entries_count; i++)
        ck_assert_uint_ge(ss.entries[i].term, ss.has_snap ? ss.snap.term : 0);
    char stage[4200];
    snprintf(stage, sizeof stage, "%s.restore", fo->db);
    ck_assert_msg(access(stage, F_OK) != 0, "%s: %s is left behind", what, stage);
    rc = raft_restarts(&ss, st.term, NULL);
    ck_assert_msg(rc == 0, "%s: raft_new refuses the restart state: %s", what, kv_strerror(rc));
    store_start_free(&ss);
}

/* ---- the crash-point loop ------------------------------------------------- */

static const char *armed;
static bool fired;

static bool crash_hook(void *arg, const char *point) {
    (void)arg;
    if (armed == NULL || strcmp(point, armed) != 0)
        return false;
    fired = true;
    return true;
}

/* Every named step of store_install (store.h), in order; the durable
 * snapshot exists from install.received on. */
static const struct {
    const char *point;
    bool installed;
} points[] = {
    {"install.receiving", false}, {"install.received", true}, {"restore.staged", true},
    {"restore.swapped", true},    {"install.restored", true}, {"install.reset", true},
};

START_TEST(test_install_crash_points) {
    leader_setup();
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
        follower fo;
        follower_setup(&fo);
        uint64_t len;
        FILE *stream = snapshot_stream(src_snap, &len);
        armed = points[i].point;
        fired = false;
        kv_crashpoint_set(crash_hook, NULL);
        snap_meta sn;
        int rc = store_install(kv_fs_posix(), fo.snaps, fo.w, &fo.s, fo.db, stream, len, SNAP_INDEX,
                               SNAP_TERM, &sn);
        ck_assert_msg(fired && rc == KV_EIO, "%s: did not crash there (%d)", armed, rc);
        fclose(stream);
        follower_crash(&fo);
        follower_restart_check(&fo, points[i].installed, armed);
        follower_free(&fo);
    }
    leader_teardown();
}
END_TEST

/* The machine dies at the Nth mutating call of the fake fs during the
 * install (inside wal_reset: its new segment, its sync, the old segments'
 * removal), for N = 1, 2, ... until an install runs through; what was not
 * synced is dropped, or survives torn (the fake's seed decides how). */
START_TEST(test_install_dies_in_log_reset) {
    leader_setup();
    static const enum fsf_crash_mode modes[] = {FSF_CRASH_DROP, FSF_CRASH_TORN};
    for (size_t m = 0; m < 2; m++) {
        bool done = false;
        uint64_t deaths = 0;
        for (uint64_t n = 1; n < 200 && !done; n++) {
            follower fo;
            follower_setup(&fo);
            uint64_t len;
            FILE *stream = snapshot_stream(src_snap, &len);
            fsf_die_at(fo.f, n);
            snap_meta sn;
            int rc = store_install(kv_fs_posix(), fo.snaps, fo.w, &fo.s, fo.db, stream, len,
                                   SNAP_INDEX, SNAP_TERM, &sn);
            done = !fsf_dead(fo.f);
            deaths += !done;
            ck_assert_msg(done ? rc == 0 : rc != 0, "die at %llu: install %d",
                          (unsigned long long)n, rc);
            fclose(stream);
            follower_crash_mode(&fo, modes[m]);
            char what[64];
            snprintf(what, sizeof what, "die at fake fs call %llu (%s)", (unsigned long long)n,
                     m == 0 ? "drop" : "torn");
            follower_restart_check(&fo, true, what);
            follower_free(&fo);
        }
        ck_assert(done);
        /* the reset's segment write, its sync, the rename, the directory
         * sync and the old segments' removal: several steps died in */
        ck_assert_uint_ge(deaths, 3);
        printf("test_install_dies_in_log_reset: %llu crash points (%s)\n",
               (unsigned long long)deaths, m == 0 ? "drop" : "torn");
    }
    leader_teardown();
}
END_TEST

/* A follower whose log ENDS before S (it fell behind) and crashed after S
 * became durable: the start-up restores and resets. */
START_TEST(test_startup_log_shorter_than_snapshot) {
    leader_setup();
    follower fo;
    follower_setup(&fo);
    uint64_t len;
    FILE *stream = snapshot_stream(src_snap, &len);
    snap_meta sn;
    ck_assert_int_eq(store_receive(kv_fs_posix(), fo.snaps, stream, len, &sn), 0);
    fclose(stream);
    follower_crash(&fo);
    /* cut the log back to 60: a new log of 1..60 */
    kv_fs *fs = fsf_fs(fo.f);
    ck_assert_int_eq(wal_open(fs, fo.dir, NULL, NULL, NULL, &fo.w), 0);
    uint8_t d = 'y';
    wal_entry e = {.index = 60, .term = 2, .type = RAFT_ENTRY_NORMAL, .len = 1, .data = &d};
    ck_assert_int_eq(wal_append_wait(fo.w, &e, 1), 0); /* drops 61..100 */
    ck_assert_uint_eq(wal_last_index(fo.w), 60);
    wal_close(fo.w);
    fo.w = NULL;
    follower_restart_check(&fo, true, "log shorter than S");
    follower_free(&fo);
    leader_teardown();
}
END_TEST

/* ---- membership on restart ---------------------------------------------- */

/* S taken at 80 with voters 1..3; a membership entry at 90 (voters 1..4)
 * applied after it. Raft must restart from S's membership and replay the
 * log after it, not from the state machine's newer one. */
START_TEST(test_restart_membership_is_the_snapshots) {
    char dir[1024], db[4096], snaps[4096];
    tu_tmpdir(dir);
    snprintf(db, sizeof db, "%s/db", dir);
    snprintf(snaps, sizeof snaps, "%s/snap", dir);
    fsf *f = fake_datadir(dir);
    kv_fs *fs = fsf_fs(f);
    wal *w;
    ck_assert_int_eq(wal_open(fs, dir, NULL, NULL, NULL, &w), 0);
    log_range(w, 1, 100, 1);
    sm *s = tu_open(db, 0);
    apply_members(s, 1, 1, 3);
    put_range(s, 2, SNAP_INDEX, 1, "k");
    snap_meta m;
    ck_assert_int_eq(snap_create(s, kv_fs_posix(), snaps, &m), 0);
    put_range(s, SNAP_INDEX + 1, 89, 1, "k");
    apply_members(s, 90, 1, 4);
    put_range(s, 91, 100, 1, "k");
    sm_close(s);
    wal_close(w);

    Kv__Membership *sm_mem = NULL; /* the snapshot's own, read directly */
    ck_assert_int_eq(snap_membership(kv_fs_posix(), m.path, &sm_mem), 0);
    ck_assert_uint_eq(sm_mem->n_members, 3);
    kv__membership__free_unpacked(sm_mem, NULL);

    store_start ss;
    ck_assert_int_eq(store_open(fs, kv_fs_posix(), dir, NULL, &w, &s, &ss), 0);
    ck_assert(ss.has_snap);
    ck_assert_uint_eq(ss.snap.index, SNAP_INDEX);
    ck_assert_uint_eq(ss.applied, 100);
    ck_assert_ptr_nonnull(ss.snap_members);
    ck_assert_msg(ss.snap_members->n_members == 3,
                  "raft would restart from %zu members (the state machine's), not S's 3",
                  ss.snap_members->n_members);
    raft_membership rm;
    ck_assert_int_eq(raft_restarts(&ss, 1, &rm), 0);
    ck_assert_uint_eq(rm.voters_count, 3);
    store_start_free(&ss);
    sm_close(s);
    wal_close(w);
    fsf_free(f);
    tu_rmrf(dir);
}
END_TEST

int main(void) {
    Suite *su = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_install_crash_points);
    tcase_add_test(tc, test_install_dies_in_log_reset);
    tcase_add_test(tc, test_startup_log_shorter_than_snapshot);
    tcase_add_test(tc, test_restart_membership_is_the_snapshots);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
