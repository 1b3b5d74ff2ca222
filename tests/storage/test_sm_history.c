/* Watch history (sm.h: sm_history_read, sm_history_oldest): what puts and
 * deletes leave, the prefix filter, reads split by bytes_max (also inside
 * one entry's record), trimming to history_revs and COMPACTED past it, and
 * the history surviving a reopen and a snapshot restore. */
#include "storage/sm_internal.h"
#include "storage/snapshot.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"
#include "test_sm_util.h"

#include <check.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[1024], db[4096];
static sm *S;

/* What a read gave: one line per event, "PUT key value rev create version"
 * or "DELETE key rev". */
typedef struct seen {
    char text[8192];
    size_t len;
    int count;
} seen;

static int collect(void *arg, const sm_event *e) {
    seen *s = arg;
    int n;
    if (e->type == SM_EVENT_PUT)
        n = snprintf(s->text + s->len, sizeof s->text - s->len, "PUT %.*s %.*s %llu %llu %llu\n",
                     (int)e->klen, (const char *)e->key, (int)e->vlen, (const char *)e->value,
                     (unsigned long long)e->rev, (unsigned long long)e->create_rev,
                     (unsigned long long)e->version);
    else
        n = snprintf(s->text + s->len, sizeof s->text - s->len, "DELETE %.*s %llu\n", (int)e->klen,
                     (const char *)e->key, (unsigned long long)e->rev);
    ck_assert(n > 0 && (size_t)n < sizeof s->text - s->len);
    ck_assert_uint_eq(e->mod_rev, e->rev); /* a PUT's record and a DELETE both name it */
    s->len += (size_t)n;
    s->count++;
    return 0;
}

/* Reads everything from rev on (prefix p) in steps of bytes_max; returns
 * the read's code, *out what was given, *next where it ended. */
static int read_all(uint64_t rev, const char *p, uint64_t bytes_max, seen *out,
                    sm_history_pos *next) {
    memset(out, 0, sizeof(*out));
    sm_history_pos pos = {.rev = rev};
    for (int step = 0; step < 1000; step++) {
        sm_history_pos before = pos;
        int rc = sm_history_read(S, &pos, p, strlen(p), bytes_max, collect, out);
        if (rc != 0)
            return rc;
        if (pos.rev == before.rev && pos.event == before.event)
            break; /* nothing more */
    }
    if (next != NULL)
        *next = pos;
    return 0;
}

static sm *open_with(const char *path, uint32_t history_revs) {
    sm_options o;
    sm_options_default(&o);
    o.history_revs = history_revs;
    sm *s = NULL;
    ck_assert_int_eq(sm_open(path, &o, &s), 0);
    return s;
}

static void setup(void) {
    tu_tmpdir(dir);
    snprintf(db, sizeof db, "%s/db", dir);
    S = open_with(db, 5);
    tu_term = 1;
}

static void teardown(void) {
    sm_close(S);
    S = NULL;
    tu_rmrf(dir);
}

static void put(uint64_t index, const char *k, const char *v) {
    ck_assert_int_eq(tu_apply(S, index, KV__COMMAND__OP__PUT, 0, 0, k, v, NULL, NULL), 0);
}
static void del(uint64_t index, const char *k) {
    ck_assert_int_eq(tu_apply(S, index, KV__COMMAND__OP__DELETE, 0, 0, k, NULL, NULL, NULL), 0);
}

static const char *const FOUR = "PUT a 1 1 1 1\n"
                                "PUT b 2 2 2 1\n"
                                "DELETE a 3\n"
                                "PUT a 3 4 4 1\n";

static void four_writes(void) {
    put(1, "a", "1");
    put(2, "b", "2");
    del(3, "a");
    put(4, "a", "3");
}

START_TEST(test_puts_and_deletes) {
    four_writes();
    ck_assert_uint_eq(sm_history_oldest(S), 1);
    seen s;
    sm_history_pos next;
    ck_assert_int_eq(read_all(1, "", 1u << 20, &s, &next), 0);
    ck_assert_str_eq(s.text, FOUR);
    ck_assert_uint_eq(next.rev, 5); /* everything applied was read */
    ck_assert_uint_eq(next.event, 0);
    /* from the middle; and from the future: nothing, the place kept */
    ck_assert_int_eq(read_all(3, "", 1u << 20, &s, &next), 0);
    ck_assert_str_eq(s.text, "DELETE a 3\nPUT a 3 4 4 1\n");
    ck_assert_int_eq(read_all(9, "", 1u << 20, &s, &next), 0);
    ck_assert_int_eq(s.count, 0);
    ck_assert_uint_eq(next.rev, 9);
    /* an entry that changed nothing (a NOOP) leaves no record, the read
     * still moves past it */
    sm_entry e = {.index = 5, .term = 1, .type = SM_ENTRY_NOOP};
    sm_reply r;
    ck_assert_int_eq(sm_apply(S, &e, 1, &r), 0);
    ck_assert_int_eq(read_all(5, "", 1u << 20, &s, &next), 0);
    ck_assert_int_eq(s.count, 0);
    ck_assert_uint_eq(next.rev, 6);
}
END_TEST

START_TEST(test_prefix_filter) {
    put(1, "x/1", "a");
    put(2, "y/1", "b");
    put(3, "x/2", "c");
    put(4, "x", "d"); /* shorter than the prefix */
    del(5, "y/1");
    seen s;
    ck_assert_int_eq(read_all(1, "x/", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, "PUT x/1 a 1 1 1\nPUT x/2 c 3 3 1\n");
    ck_assert_int_eq(read_all(1, "y", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, "PUT y/1 b 2 2 1\nDELETE y/1 5\n");
    ck_assert_int_eq(read_all(1, "z", 1u << 20, &s, NULL), 0);
    ck_assert_int_eq(s.count, 0);
}
END_TEST

/* bytes_max 1: one event per call, and the same events in the same order. */
START_TEST(test_read_in_steps) {
    four_writes();
    seen s;
    sm_history_pos pos = {.rev = 1};
    memset(&s, 0, sizeof s);
    for (int i = 1; i <= 4; i++) {
        ck_assert_int_eq(sm_history_read(S, &pos, "", 0, 1, collect, &s), 0);
        ck_assert_int_eq(s.count, i);
        /* through pos.rev - 1 everything was given */
        ck_assert_uint_eq(pos.rev, (uint64_t)i + 1);
    }
    ck_assert_str_eq(s.text, FOUR);
}
END_TEST

/* A record of three events (as a transaction or a prefix delete leaves),
 * written raw at revision 2: a read split inside it resumes at the right
 * event. */
START_TEST(test_split_inside_a_record) {
    put(1, "p/0", "z");
    sm_close(S);
    Kv__KeyValue kv[3];
    Kv__WatchEvent ev[3];
    Kv__WatchEvent *ptrs[3];
    const char *keys[3] = {"p/1", "q/1", "p/2"};
    for (int i = 0; i < 3; i++) {
        kv__key_value__init(&kv[i]);
        kv[i].key.data = (uint8_t *)keys[i];
        kv[i].key.len = 3;
        kv[i].value.data = (uint8_t *)"v";
        kv[i].value.len = 1;
        kv[i].mod_rev = kv[i].create_rev = 2;
        kv[i].version = 1;
        kv__watch_event__init(&ev[i]);
        ev[i].kv = &kv[i];
        ptrs[i] = &ev[i];
    }
    Kv__HistoryRecord rec = KV__HISTORY_RECORD__INIT;
    rec.events = ptrs;
    rec.n_events = 3;
    uint8_t buf[256];
    size_t len = kv__history_record__pack(&rec, buf);
    rocksdb_column_family_handle_t *hcf;
    rocksdb_t *raw = tu_raw_open(db, &hcf);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    uint8_t hk[9];
    sm__history_key(hk, 2);
    rocksdb_writebatch_put_cf(wb, hcf, (char *)hk, 9, (char *)buf, len);
    uint8_t idx[8];
    kv_put_u64(idx, 2);
    rocksdb_writebatch_put(wb, SM_META_APPLIED_INDEX, strlen(SM_META_APPLIED_INDEX), (char *)idx,
                           8);
    tu_raw_write(raw, wb);
    tu_raw_close(raw, hcf);
    S = open_with(db, 5);
    seen s;
    memset(&s, 0, sizeof s);
    sm_history_pos pos = {.rev = 1};
    ck_assert_int_eq(sm_history_read(S, &pos, "p/", 2, 1, collect, &s), 0);
    ck_assert_uint_eq(pos.rev, 2); /* p/0 given, revision 1 done */
    ck_assert_int_eq(sm_history_read(S, &pos, "p/", 2, 1, collect, &s), 0);
    ck_assert_uint_eq(pos.rev, 2);   /* p/1 given, inside revision 2 */
    ck_assert_uint_eq(pos.event, 2); /* q/1 passed over too */
    ck_assert_int_eq(sm_history_read(S, &pos, "p/", 2, 1, collect, &s), 0);
    ck_assert_uint_eq(pos.rev, 3); /* q/1 skipped, p/2 given: done */
    ck_assert_str_eq(s.text, "PUT p/0 z 1 1 1\nPUT p/1 v 2 2 1\nPUT p/2 v 2 2 1\n");
}
END_TEST

/* history_revs 5: after 12 writes revisions 8..12 are served; older is
 * COMPACTED, and older records not yet trimmed (sm_keys.c trims lazily) are
 * never given. */
START_TEST(test_trim_and_compacted) {
    char k[16];
    for (uint64_t i = 1; i <= 12; i++) {
        snprintf(k, sizeof k, "k%02llu", (unsigned long long)i);
        put(i, k, "v");
    }
    ck_assert_uint_eq(sm_history_oldest(S), 8);
    seen s;
    ck_assert_int_eq(read_all(7, "", 1u << 20, &s, NULL), KV_ECOMPACTED);
    ck_assert_int_eq(read_all(1, "", 1u << 20, &s, NULL), KV_ECOMPACTED);
    ck_assert_int_eq(read_all(8, "", 1u << 20, &s, NULL), 0);
    ck_assert_int_eq(s.count, 5);
    ck_assert(strncmp(s.text, "PUT k08 v 8 8 1\n", 16) == 0);
}
END_TEST

/* The NOSPACE alarm drops this node's history up to the applied index: a
 * watch from before is refused, never given less, also after a reopen;
 * what is written afterwards is kept as usual. */
START_TEST(test_drop) {
    four_writes();
    ck_assert_int_eq(sm_history_drop(S), 0);
    ck_assert_uint_eq(sm_history_oldest(S), 5);
    seen s;
    ck_assert_int_eq(read_all(1, "", 1u << 20, &s, NULL), KV_ECOMPACTED);
    ck_assert_int_eq(read_all(4, "", 1u << 20, &s, NULL), KV_ECOMPACTED);
    put(5, "c", "5");
    sm_close(S);
    S = open_with(db, 5);
    ck_assert_uint_eq(sm_history_oldest(S), 5);
    ck_assert_int_eq(read_all(4, "", 1u << 20, &s, NULL), KV_ECOMPACTED);
    ck_assert_int_eq(read_all(5, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, "PUT c 5 5 5 1\n");
    ck_assert_int_eq(sm_history_drop(S), 0); /* again: from 6 */
    ck_assert_uint_eq(sm_history_oldest(S), 6);
    for (uint64_t i = 6; i <= 12; i++)
        put(i, "d", "x"); /* the count of kept revisions moves past the drop */
    ck_assert_uint_eq(sm_history_oldest(S), 8);
}
END_TEST

START_TEST(test_survives_reopen_and_restore) {
    four_writes();
    char snaps[4096];
    snprintf(snaps, sizeof snaps, "%s/snap", dir);
    snap_meta m;
    ck_assert_int_eq(snap_create(S, kv_fs_posix(), snaps, &m), 0);
    sm_close(S);
    S = open_with(db, 5);
    seen s;
    ck_assert_int_eq(read_all(1, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, FOUR);
    put(5, "c", "5");
    put(6, "c", "6");
    ck_assert_uint_eq(sm_history_oldest(S), 2);
    ck_assert_int_eq(snap_restore(&S, db, m.path), 0);
    ck_assert_uint_eq(sm_applied_index(S), 4);
    ck_assert_uint_eq(sm_history_oldest(S), 1);
    ck_assert_int_eq(read_all(1, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, FOUR); /* the snapshot's history, not the later one */
}
END_TEST

/* The four writes, the state machine closed, and its db opened raw. */
static rocksdb_t *four_writes_raw(rocksdb_column_family_handle_t **hcf) {
    four_writes();
    sm_close(S);
    S = NULL;
    return tu_raw_open(db, hcf);
}

/* Stores format in the db that raw holds (closed after), with what wb holds,
 * then opens it with this build, which migrates it: a watch from revision 1
 * still gives the four writes. */
static void migrate_from(rocksdb_t *raw, rocksdb_column_family_handle_t *hcf,
                         rocksdb_writebatch_t *wb, uint64_t format) {
    uint8_t f[8];
    kv_put_u64(f, format);
    rocksdb_writebatch_put(wb, SM_META_FORMAT, strlen(SM_META_FORMAT), (char *)f, 8);
    tu_raw_write(raw, wb);
    tu_raw_close(raw, hcf);
    S = open_with(db, 5); /* migrates */
    seen s;
    ck_assert_int_eq(read_all(1, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, FOUR);
}

/* A format 3 db kept the history in the default column family: the first
 * open of this build moves it to its own family, and watches go on from
 * revision 1 as before. */
START_TEST(test_migrate_v3) {
    /* back to format 3: the records in the default family */
    rocksdb_column_family_handle_t *hcf;
    rocksdb_t *raw = four_writes_raw(&hcf);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(raw, ro, hcf);
    int records = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen), *v = rocksdb_iter_value(it, &vlen);
        if (k[0] == SM_PREFIX_HISTORY) {
            rocksdb_writebatch_put(wb, k, klen, v, vlen);
            records++;
        }
        rocksdb_writebatch_delete_cf(wb, hcf, k, klen);
    }
    rocksdb_iter_destroy(it);
    ck_assert_int_eq(records, 4);
    migrate_from(raw, hcf, wb, SM_FORMAT_V3);
    /* none left in the default family, and the next write goes on */
    it = rocksdb_create_iterator(S->db, ro);
    char h = SM_PREFIX_HISTORY;
    rocksdb_iter_seek(it, &h, 1);
    ck_assert(!rocksdb_iter_valid(it) || rocksdb_iter_key(it, &(size_t){0})[0] != h);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    put(5, "c", "5");
    seen s;
    ck_assert_int_eq(read_all(4, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, "PUT a 3 4 4 1\nPUT c 5 5 5 1\n");
}
END_TEST

/* A format 4 db (the sessions in 's' records only, no session log) opens
 * as format 5 with its history whole: the last entry's record included,
 * which only formats before 4 get an empty one at (nothing of theirs was
 * written there). */
START_TEST(test_migrate_v4) {
    rocksdb_column_family_handle_t *hcf;
    rocksdb_t *raw = four_writes_raw(&hcf);
    migrate_from(raw, hcf, rocksdb_writebatch_create(), SM_FORMAT_V4);
    uint64_t format = 0;
    ck_assert_int_eq(sm__meta_u64(S, S->db, S->ro, SM_META_FORMAT, &format), 0);
    ck_assert_uint_eq(format, SM_FORMAT);
}
END_TEST

/* A crash between sm_flush's flush of the keys and of the history leaves
 * the history written through less than the applied index: the open drops
 * the history before it, so a watch from there gets COMPACTED instead of a
 * stream with a gap. Made here by deleting the last two records, as if the
 * history had been flushed after entry 2 only. */
START_TEST(test_history_behind_dropped) {
    four_writes();
    sm_close(S);
    S = NULL;
    rocksdb_column_family_handle_t *hcf;
    rocksdb_t *raw = tu_raw_open(db, &hcf);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (uint64_t rev = 3; rev <= 4; rev++) {
        uint8_t hk[9];
        sm__history_key(hk, rev);
        rocksdb_writebatch_delete_cf(wb, hcf, (char *)hk, 9);
    }
    tu_raw_write(raw, wb);
    tu_raw_close(raw, hcf);
    S = open_with(db, 5);
    ck_assert_uint_eq(sm_applied_index(S), 4);
    ck_assert_uint_eq(sm_history_oldest(S), 5);
    seen s;
    ck_assert_int_eq(read_all(3, "", 1u << 20, &s, NULL), KV_ECOMPACTED);
    put(5, "c", "5");
    ck_assert_int_eq(read_all(5, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, "PUT c 5 5 5 1\n");
    sm_close(S); /* and it holds: no second drop at the next open */
    S = open_with(db, 5);
    ck_assert_uint_eq(sm_history_oldest(S), 5);
    ck_assert_int_eq(read_all(5, "", 1u << 20, &s, NULL), 0);
    ck_assert_str_eq(s.text, "PUT c 5 5 5 1\n");
}
END_TEST

START_TEST(test_bad_arguments) {
    seen s;
    memset(&s, 0, sizeof s);
    sm_history_pos pos = {.rev = 0};
    ck_assert_int_eq(sm_history_read(S, &pos, "", 0, 100, collect, &s), KV_EINVAL);
    pos.rev = 1;
    ck_assert_int_eq(sm_history_read(S, &pos, "", 0, 0, collect, &s), KV_EINVAL);
    static char big[KV_KEY_BYTES_MAX + 1];
    ck_assert_int_eq(sm_history_read(S, &pos, big, sizeof big, 100, collect, &s), KV_EINVAL);
    sm_options o;
    sm_options_default(&o);
    ck_assert_uint_eq(o.history_revs, KV_WATCH_HISTORY_REVS);
    o.history_revs = KV_WATCH_HISTORY_REVS + 1;
    sm *x = NULL;
    char other[4096];
    snprintf(other, sizeof other, "%s/other", dir);
    ck_assert_int_eq(sm_open(other, &o, &x), KV_EINVAL);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("sm_history");
    TCase *t = tcase_create("history");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_puts_and_deletes);
    tcase_add_test(t, test_prefix_filter);
    tcase_add_test(t, test_read_in_steps);
    tcase_add_test(t, test_split_inside_a_record);
    tcase_add_test(t, test_trim_and_compacted);
    tcase_add_test(t, test_drop);
    tcase_add_test(t, test_survives_reopen_and_restore);
    tcase_add_test(t, test_migrate_v3);
    tcase_add_test(t, test_migrate_v4);
    tcase_add_test(t, test_history_behind_dropped);
    tcase_add_test(t, test_bad_arguments);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
