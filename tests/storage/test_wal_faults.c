/* WAL fault tests: crash loops, a corruption sweep, bad input, I/O errors.
 * Random parts print their seed; replay with KV_SEED=<seed>. */
#include "test_wal_util.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "storage/datadir.h"
#include "storage/wal.h"
#include "storage/wal_internal.h" /* to forge whole batches */

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static wal_options tiny(uint64_t segment_bytes) {
    wal_options o;
    wal_options_default(&o);
    o.segment_bytes = segment_bytes;
    return o;
}

/* ---- crash loops ---------------------------------------------------------- */

enum { CL_OPS_MAX = 64 };
enum cl_kind { CL_APPEND, CL_DROP, CL_RESET };

typedef struct cl_run {
    tu_op ops[CL_OPS_MAX]; /* in submission order; status 0: acknowledged */
    int kind[CL_OPS_MAX];
    int nops;
    tu_wait wait;
} cl_run;

/* One crash loop: how the machine dies, and the sizes that decide how
 * batches fall on pages. m: entries per append. */
typedef struct cl_config {
    enum fsf_crash_mode mode;
    size_t page_bytes;
    uint64_t segment_bytes;
    uint64_t m;
    int seeds; /* how many, unless KV_SEEDS says */
} cl_config;

static void cl_add(cl_run *r, int kind, uint64_t index, uint64_t n, uint64_t term) {
    ck_assert_int_lt(r->nops, CL_OPS_MAX);
    r->kind[r->nops] = kind;
    r->ops[r->nops++] = (tu_op){.index = index, .n = (size_t)n, .term = term};
}

/* The workload, m entries per append: appends (4 in flight, so batches
 * group several), segment rolls, a conflicting suffix across segments and
 * one inside the last batch, a dropped prefix, a reset, more conflicts
 * after it. No two appends of one term overlap, so (index, term) names
 * the append that wrote an entry. */
static void cl_plan(cl_run *r, uint64_t m) {
    r->nops = 0;
    for (uint64_t i = 1; i <= 12 * m; i += m)
        cl_add(r, CL_APPEND, i, m, 1);
    cl_add(r, CL_APPEND, 5 * m + 2, m, 2); /* drops 5m+2..12m */
    cl_add(r, CL_APPEND, 6 * m + 2, m, 2);
    cl_add(r, CL_APPEND, 7 * m + 2, m, 2);
    cl_add(r, CL_DROP, 2 * m, 0, 0);
    cl_add(r, CL_APPEND, 8 * m + 2, m, 3);
    cl_add(r, CL_APPEND, 9 * m + 2, m, 3);
    cl_add(r, CL_APPEND, 9 * m + 2 + m / 2, m, 4); /* inside the last batch */
    cl_add(r, CL_APPEND, 10 * m + 2 + m / 2, m, 4);
    cl_add(r, CL_RESET, 20 * m, 0, 5);
    cl_add(r, CL_APPEND, 20 * m + 1, m, 5);
    cl_add(r, CL_APPEND, 21 * m + 1, m, 5);
    cl_add(r, CL_APPEND, 21 * m + 1 + m / 2, m, 6);
    cl_add(r, CL_APPEND, 22 * m + 1 + m / 2, m, 6);
}

/* Runs the plan; once the file system died every call fails, which is
 * fine: the loop checks what a reopen finds. */
static void cl_workload(wal *w, cl_run *r, uint64_t m) {
    tu_wait_init(&r->wait);
    cl_plan(r, m);
    for (int k = 0; k < r->nops; k++) {
        tu_op *op = &r->ops[k];
        if (r->kind[k] == CL_APPEND) {
            (void)tu_submit(w, op, &r->wait);
            if (k % 4 == 3)
                tu_wait_all(&r->wait);
            continue;
        }
        tu_wait_all(&r->wait);
        op->submitted = true;
        op->status = r->kind[k] == CL_DROP ? wal_drop_prefix(w, op->index)
                                           : wal_reset(w, op->index, op->term);
    }
    tu_wait_all(&r->wait);
}

/* The append that wrote entry (i, term): the only one of that term
 * covering i. */
static int cl_writer(const cl_run *r, uint64_t i, uint64_t term) {
    for (int k = 0; k < r->nops; k++) {
        const tu_op *op = &r->ops[k];
        if (r->kind[k] == CL_APPEND && op->submitted && op->term == term && i >= op->index &&
            i < op->index + op->n)
            return k;
    }
    return -1;
}

/* Every entry present was submitted, is whole, and was not replaced by a
 * later acknowledged append or reset (a replaced suffix never comes back). */
static void cl_verify_present(wal *w, const cl_run *r, uint64_t seed) {
    uint64_t first = wal_first_index(w), last = wal_last_index(w), term = 0;
    ck_assert_int_eq(wal_term_at(w, first - 1, &term), 0);
    for (uint64_t i = first; i <= last; i++) {
        wal_entry *e = NULL;
        size_t n = 0;
        ck_assert_int_eq(wal_read(w, i, i + 1, 0, &e, &n), 0);
        ck_assert_msg(tu_entry_ok(&e[0]), "seed %" PRIu64 ": entry %" PRIu64 " damaged", seed, i);
        ck_assert_msg(e[0].term >= term, "seed %" PRIu64 ": entry %" PRIu64 " term goes down", seed,
                      i); /* no mix of an old suffix behind new entries */
        term = e[0].term;
        int k = cl_writer(r, i, e[0].term);
        ck_assert_msg(k >= 0,
                      "seed %" PRIu64 ": entry %" PRIu64 " term %" PRIu64 " never submitted", seed,
                      i, e[0].term);
        for (int j = k + 1; j < r->nops; j++) {
            const tu_op *op = &r->ops[j];
            bool replaces = r->kind[j] == CL_RESET || (r->kind[j] == CL_APPEND && op->index <= i);
            ck_assert_msg(!(replaces && op->status == 0),
                          "seed %" PRIu64 ": entry %" PRIu64 " term %" PRIu64
                          " came back after op %d replaced it",
                          seed, i, e[0].term, j);
        }
        wal_entries_free(e, n);
    }
}

/* Every acknowledged entry is present unless a later submission replaced
 * it or it was dropped as a prefix; an acknowledged reset holds. */
static void cl_verify_acked(wal *w, const cl_run *r, uint64_t seed) {
    uint64_t first = wal_first_index(w);
    for (int k = 0; k < r->nops; k++) {
        const tu_op *op = &r->ops[k];
        if (!op->submitted || op->status != 0)
            continue;
        uint64_t t = 0;
        if (r->kind[k] == CL_RESET) {
            ck_assert_uint_ge(first, op->index + 1);
            if (first == op->index + 1) {
                ck_assert_int_eq(wal_term_at(w, op->index, &t), 0);
                ck_assert_uint_eq(t, op->term);
            }
        }
        if (r->kind[k] != CL_APPEND)
            continue;
        uint64_t replaced = UINT64_MAX;
        for (int j = k + 1; j < r->nops; j++)
            if (r->kind[j] == CL_APPEND && r->ops[j].submitted && r->ops[j].index < replaced)
                replaced = r->ops[j].index;
        for (uint64_t i = op->index; i < op->index + op->n && i < replaced; i++) {
            if (i < first)
                continue; /* dropped as a prefix or by a reset: allowed */
            ck_assert_msg(wal_term_at(w, i, &t) == 0,
                          "seed %" PRIu64 ": acknowledged entry %" PRIu64 " lost", seed, i);
            ck_assert_uint_eq(t, op->term);
        }
    }
}

/* Crash point n of one seed: the machine dies at the nth mutating call,
 * then the log must open (TORN allowed, never CORRUPT) with everything
 * acknowledged. True when the workload ran to the end without dying. */
static bool cl_point(const cl_config *c, uint64_t seed, int n, int *torn_runs) {
    wal_options o;
    wal_options_default(&o);
    o.segment_bytes = c->segment_bytes;
    fsf *f = tu_fake_datadir(seed + (uint64_t)n);
    fsf_set_page_bytes(f, c->page_bytes);
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, &o, NULL, NULL, &w), 0);
    static cl_run r;
    fsf_die_at(f, (uint64_t)n);
    cl_workload(w, &r, c->m);
    bool completed = !fsf_dead(f);
    wal_close(w);
    fsf_crash(f, c->mode);
    tu_reports rep = {0};
    int rv = wal_open(fsf_fs(f), TU_DIR, &o, tu_collect, &rep, &w);
    ck_assert_msg(rv == 0, "seed=%" PRIu64 " N=%d: reopen %s: %s %s@%" PRIu64 " %s", seed, n,
                  kv_errword(rv), rep.n ? rep.word[0] : "", rep.n ? rep.file[0] : "",
                  rep.n ? rep.offset[0] : 0, rep.n ? rep.detail[0] : "");
    for (int i = 0; i < rep.n; i++)
        ck_assert_str_eq(rep.word[i], "TORN");
    *torn_runs += rep.n > 0;
    cl_verify_present(w, &r, seed);
    cl_verify_acked(w, &r, seed);
    wal_close(w);
    tu_reports after = {0};
    ck_assert_int_eq(wal_check(fsf_fs(f), TU_DIR, tu_collect, &after, NULL), 0);
    ck_assert_int_eq(after.n, 0); /* the torn tail was truncated */
    tu_wait_destroy(&r.wait);
    fsf_free(f);
    return completed;
}

/* For each seed (KV_SEED, then c->seeds - 1 more; KV_SEEDS=n overrides the
 * count, KV_SEED=<seed> KV_SEEDS=1 replays one),
 * crash at every mutating call N = 1, 2, ... until the workload completes. */
static void crash_loop(const cl_config *c) {
    int torn_runs = 0, seeds = tu_seeds(c->seeds);
    for (int k = 0; k < seeds; k++) {
        uint64_t seed = tu_seed() + 1000003u * (uint64_t)k;
        int n = 1;
        while (n < 5000 && !cl_point(c, seed, n, &torn_runs))
            n++;
        ck_assert_int_lt(n, 5000);
        ck_assert_int_gt(n, 30); /* the workload did many writes and syncs */
        fprintf(stderr,
                "crash loop mode %d page %zu segment %" PRIu64 " m %" PRIu64 " seed %" PRIu64
                ": %d crash points\n",
                (int)c->mode, c->page_bytes, c->segment_bytes, c->m, seed, n);
    }
    if (c->mode != FSF_CRASH_DROP)
        ck_assert_int_gt(torn_runs, 0); /* torn batches really happened */
    fprintf(stderr, "crash loop mode %d: %d runs with a torn batch\n", (int)c->mode, torn_runs);
}

START_TEST(test_crash_loop_drop) {
    crash_loop(&(cl_config){FSF_CRASH_DROP, 4096, 256, 3, 1});
}
END_TEST

START_TEST(test_crash_loop_torn) {
    crash_loop(&(cl_config){FSF_CRASH_TORN, 4096, 256, 3, 1});
}
END_TEST

/* Unsynced pages reach the disk in any subset (issue 10, item 2): tiny
 * segments with tiny pages, sector-sized pages, and real 4 KiB pages with
 * batches of several pages. */
START_TEST(test_crash_loop_pages_tiny) {
    crash_loop(&(cl_config){FSF_CRASH_PAGES, 64, 256, 3, 2});
}
END_TEST

START_TEST(test_crash_loop_pages_sector) {
    crash_loop(&(cl_config){FSF_CRASH_PAGES, 512, 2048, 8, 4});
}
END_TEST

START_TEST(test_crash_loop_pages_4k) {
    crash_loop(&(cl_config){FSF_CRASH_PAGES, 4096, 32768, 48, 4});
}
END_TEST

/* ---- corruption sweep ---------------------------------------------------- */

typedef struct rec_pos {
    uint64_t seg_off, end; /* of a batch; end: where the next one would start */
    uint64_t index, next;  /* its first index; the index after its last */
    char path[256];
    bool last_record; /* the last batch of the last segment */
} rec_pos;

/* Where each batch of a freshly written log lives (segments are
 * zero-filled after their batches). */
static int layout(fsf *f, rec_pos *pos, int max) {
    char **names = NULL;
    size_t count = 0;
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->list(fs, TU_DIR "/wal", &names, &count), 0);
    int n = 0;
    for (size_t s = 0; s < count; s++) {
        char path[256];
        snprintf(path, sizeof path, TU_DIR "/wal/%s", names[s]);
        void *buf = NULL;
        size_t size = 0;
        ck_assert_int_eq(kv_fs_read_all(fs, path, 1 << 20, &buf, &size), 0);
        const uint8_t *b = buf;
        for (uint64_t off = WAL_SEGMENT_HEADER_BYTES;
             off + WAL_BATCH_HEADER_BYTES <= size && kv_get_u64(b + off) != 0;) {
            ck_assert_int_lt(n, max);
            uint64_t end = off + WAL_BATCH_HEADER_BYTES + kv_get_u32(b + off + 36);
            uint64_t first = kv_get_u64(b + off + 24);
            pos[n] = (rec_pos){.seg_off = off,
                               .end = end,
                               .index = first,
                               .next = first + kv_get_u32(b + off + 32)};
            snprintf(pos[n].path, sizeof pos[n].path, "%s", path);
            n++;
            off = end;
        }
        free(buf);
    }
    kv_fs_free_list(names, count);
    pos[n - 1].last_record = true;
    return n;
}

static fsf *sweep_log(uint64_t seed, const wal_options *o) {
    fsf *f = tu_fake_datadir(seed);
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, o, NULL, NULL, &w), 0);
    wal_entry e[5];
    uint8_t bufs[5][TU_LEN_MAX];
    for (uint64_t i = 1; i <= 25; i += 5) {
        tu_entries(e, bufs, i, 5, 1);
        ck_assert_int_eq(wal_append_wait(w, e, 5), 0);
    }
    wal_close(w);
    return f;
}

/* Flips one byte at (path, off); expects a report at the batch holding it
 * (or the header, or the zeros after the batches: reported where the next
 * batch would start), classified TORN only for the last batch or the
 * zeros after it (wal.h rules 2-4). */
static void sweep_one(fsf **fp, const wal_options *o, const rec_pos *pos, int npos,
                      const char *path, uint64_t off, uint64_t seed) {
    const rec_pos *hit = NULL;
    for (int i = 0; i < npos; i++)
        if (strcmp(pos[i].path, path) == 0 && pos[i].seg_off <= off)
            hit = &pos[i];
    bool header = off < WAL_SEGMENT_HEADER_BYTES;
    bool in_tail = !header && off >= hit->end; /* the zero-filled space */
    uint64_t rep_off = header ? 0 : in_tail ? hit->end : hit->seg_off;
    uint64_t rep_index = header ? 0 : in_tail ? hit->next : hit->index;
    bool torn = !header && hit->last_record;
    ck_assert_int_eq(fsf_flip(*fp, path, off, 0x10), 0);
    tu_reports r = {0};
    int rv = wal_check(fsf_fs(*fp), TU_DIR, tu_collect, &r, NULL);
    ck_assert_msg(r.n == 1, "flip %s@%" PRIu64 ": %d reports", path, off, r.n);
    ck_assert_str_eq(r.file[0], path);
    if (header && off >= 8 && off < 12) {
        ck_assert_int_eq(rv, KV_EVERSION); /* the version field itself */
        ck_assert_str_eq(r.word[0], "VERSION");
    } else if (header) {
        ck_assert_int_eq(rv, KV_ECORRUPT);
        ck_assert_str_eq(r.word[0], "CORRUPT");
    } else {
        ck_assert_msg(strcmp(r.word[0], torn ? "TORN" : "CORRUPT") == 0, "flip %s@%" PRIu64 ": %s",
                      path, off, r.word[0]);
        ck_assert_int_eq(rv, torn ? 0 : KV_ECORRUPT);
        ck_assert_uint_eq(r.offset[0], rep_off);
        ck_assert_uint_eq(r.index[0], rep_index);
    }
    uint64_t size_before = 0, size_after = 0;
    ck_assert_int_eq(fsf_size(*fp, path, &size_before), 0);
    wal *w = NULL;
    rv = wal_open(fsf_fs(*fp), TU_DIR, o, NULL, NULL, &w);
    if (!torn) {
        ck_assert_int_ne(rv, 0);
        ck_assert_int_eq(fsf_size(*fp, path, &size_after), 0);
        ck_assert_uint_eq(size_after, size_before); /* nothing truncated */
        ck_assert_int_eq(fsf_flip(*fp, path, off, 0x10), 0);
        return;
    }
    ck_assert_int_eq(rv, 0);
    ck_assert_uint_eq(wal_last_index(w), rep_index - 1);
    wal_close(w);
    ck_assert_int_eq(fsf_size(*fp, path, &size_after), 0);
    ck_assert_uint_eq(size_after, rep_off);
    fsf_free(*fp);
    *fp = sweep_log(seed, o); /* the truncation changed the log: start again */
}

START_TEST(test_corruption_sweep) {
    uint64_t seed = tu_seed();
    wal_options o = tiny(400);
    fsf *f = sweep_log(seed, &o);
    rec_pos pos[64];
    int npos = layout(f, pos, 64);
    ck_assert_int_eq(pos[npos - 1].next, 26);
    char **names = NULL;
    size_t count = 0;
    ck_assert_int_eq(fsf_fs(f)->ops->list(fsf_fs(f), TU_DIR "/wal", &names, &count), 0);
    ck_assert_uint_ge(count, 3);
    int flips = 0;
    for (size_t s = 0; s < count; s++) {
        char path[256];
        snprintf(path, sizeof path, TU_DIR "/wal/%s", names[s]);
        uint64_t size = 0;
        ck_assert_int_eq(fsf_size(f, path, &size), 0);
        for (uint64_t off = 0; off < size; off++, flips++)
            sweep_one(&f, &o, pos, npos, path, off, seed);
    }
    kv_fs_free_list(names, count);
    ck_assert_int_gt(flips, 600);
    fsf_free(f);
}
END_TEST

/* Zero-filled space after the records (preallocation, etcd#11220) is
 * neither torn nor corrupt: no report, and appends go on after the last
 * record. */
START_TEST(test_zero_tail_is_clean) {
    uint64_t seed = tu_seed();
    wal_options o = tiny(4096);
    fsf *f = sweep_log(seed, &o);
    kv_fs *fs = fsf_fs(f);
    const char *path = TU_DIR "/wal/0000000000000001.wal";
    uint64_t size = 0;
    ck_assert_int_eq(fsf_size(f, path, &size), 0);
    kv_file *h = NULL;
    ck_assert_int_eq(fs->ops->open(fs, path, KV_FS_WRITE, &h), 0);
    static const uint8_t zeros[1000];
    ck_assert_int_eq(fs->ops->pwrite(h, zeros, sizeof zeros, size), 0);
    ck_assert_int_eq(fs->ops->sync(h), 0);
    fs->ops->close(h);
    tu_reports r = {0};
    ck_assert_int_eq(wal_check(fs, TU_DIR, tu_collect, &r, NULL), 0);
    ck_assert_int_eq(r.n, 0);
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fs, TU_DIR, &o, tu_collect, &r, &w), 0);
    ck_assert_int_eq(r.n, 0);
    ck_assert_uint_eq(wal_last_index(w), 25);
    wal_entry e[1];
    uint8_t bufs[1][TU_LEN_MAX];
    tu_entries(e, bufs, 26, 1, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 1), 0);
    wal_close(w);
    ck_assert_int_eq(wal_open(fs, TU_DIR, &o, tu_collect, &r, &w), 0);
    ck_assert_uint_eq(wal_last_index(w), 26);
    ck_assert_int_eq(r.n, 0);
    wal_close(w);
    fsf_free(f);
}
END_TEST

/* Issue 10, item 2 (regression): pages written since the last fdatasync
 * reach the disk in any order, so a power cut can keep a later page of the
 * batch in flight and lose an earlier one (here it reads as zeros, as
 * preallocated space does). The batch was never acknowledged: the log must
 * open, report TORN where that batch starts, and keep what was synced.
 * Before the batch format (format 1) this was CORRUPT and the node stopped. */
START_TEST(test_zero_page_in_unsynced_batch_is_torn) {
    fsf *f = tu_fake_datadir(tu_seed());
    kv_fs *fs = fsf_fs(f);
    const char *path = TU_DIR "/wal/0000000000000001.wal";
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fs, TU_DIR, NULL, NULL, NULL, &w), 0);
    wal_entry e[48];
    uint8_t bufs[5][TU_LEN_MAX];
    tu_entries(e, bufs, 1, 5, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 5), 0); /* synced: must survive */
    uint64_t end_synced = tu_data_end(f, path);
    static uint8_t big[48][300];
    for (int i = 0; i < 48; i++) {
        memset(big[i], 'a' + i % 26, sizeof big[i]);
        e[i] = (wal_entry){.index = 6 + (uint64_t)i, .term = 1, .len = 300, .data = big[i]};
    }
    fsf_fail_sync(f, 1); /* one write of 48 records, never synced */
    ck_assert_int_eq(wal_append_wait(w, e, 48), KV_EIO);
    wal_close(w);
    uint64_t end_written = tu_data_end(f, path);
    ck_assert_uint_gt(end_written, end_synced + 3 * 4096);
    /* The power cut kept every page of that write but the second. */
    uint64_t lost = (end_synced / 4096 + 1) * 4096;
    ck_assert_uint_lt(lost + 4096, end_written);
    tu_zero(f, path, lost, 4096);
    tu_reports r = {0};
    int rv = wal_open(fs, TU_DIR, NULL, tu_collect, &r, &w);
    ck_assert_msg(rv == 0, "wal_open: %s; %s %s@%" PRIu64 ": %s", kv_errword(rv),
                  r.n ? r.word[0] : "", r.n ? r.file[0] : "", r.n ? r.offset[0] : 0,
                  r.n ? r.detail[0] : "");
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "TORN");
    ck_assert_str_eq(r.file[0], path);
    ck_assert_uint_eq(r.offset[0], end_synced);
    ck_assert_uint_eq(r.index[0], 6);
    ck_assert_uint_eq(wal_last_index(w), 5);
    tu_entries(e, bufs, 6, 2, 2);
    ck_assert_int_eq(wal_append_wait(w, e, 2), 0);
    wal_close(w);
    tu_reports after = {0};
    ck_assert_int_eq(wal_check(fs, TU_DIR, tu_collect, &after, NULL), 0);
    ck_assert_int_eq(after.n, 0);
    fsf_free(f);
}
END_TEST

/* Three batches (appends of 4, 3 and 5 entries) in one segment; pos gets
 * where each batch starts and ends. */
static fsf *three_batches(rec_pos pos[4], int *npos) {
    wal_options o = tiny(8192);
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, &o, NULL, NULL, &w), 0);
    wal_entry e[5];
    uint8_t bufs[5][TU_LEN_MAX];
    tu_entries(e, bufs, 1, 4, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 4), 0);
    tu_entries(e, bufs, 5, 3, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 3), 0);
    tu_entries(e, bufs, 8, 5, 2);
    ck_assert_int_eq(wal_append_wait(w, e, 5), 0);
    wal_close(w);
    *npos = layout(f, pos, 4);
    ck_assert_int_eq(*npos, 3);
    ck_assert_uint_eq(pos[2].next, 13);
    return f;
}

/* wal.h rules 2-3: a flipped byte in a batch with a valid batch after it
 * is CORRUPT (file, offset of the batch, its first index; nothing cut);
 * in the last batch it is TORN, cut off, and the log opens. */
START_TEST(test_flip_synced_batch_corrupt_last_torn) {
    rec_pos pos[4];
    int npos = 0;
    fsf *f = three_batches(pos, &npos);
    kv_fs *fs = fsf_fs(f);
    const char *path = pos[1].path;
    ck_assert_int_eq(fsf_flip(f, path, pos[1].seg_off + 70, 0x01), 0);
    tu_reports r = {0};
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fs, TU_DIR, NULL, tu_collect, &r, &w), KV_ECORRUPT);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "CORRUPT");
    ck_assert_str_eq(r.file[0], path);
    ck_assert_uint_eq(r.offset[0], pos[1].seg_off);
    ck_assert_uint_eq(r.index[0], 5);
    ck_assert_str_eq(r.detail[0], "batch payload checksum mismatch");
    ck_assert_uint_eq(tu_data_end(f, path), pos[2].end); /* nothing truncated */
    ck_assert_int_eq(fsf_flip(f, path, pos[1].seg_off + 70, 0x01), 0);
    ck_assert_int_eq(fsf_flip(f, path, pos[2].seg_off + 20, 0x01), 0); /* the last batch's header */
    tu_reports t = {0};
    ck_assert_int_eq(wal_open(fs, TU_DIR, NULL, tu_collect, &t, &w), 0);
    ck_assert_int_eq(t.n, 1);
    ck_assert_str_eq(t.word[0], "TORN");
    ck_assert_uint_eq(t.offset[0], pos[2].seg_off);
    ck_assert_uint_eq(t.index[0], 8);
    ck_assert_uint_eq(wal_last_index(w), 7);
    wal_close(w);
    ck_assert_int_eq(wal_check(fs, TU_DIR, NULL, NULL, NULL), 0);
    fsf_free(f);
}
END_TEST

/* Appends raw bytes at the end of the data of path, durably. */
static void put_at_end(fsf *f, const char *path, uint64_t off, const void *buf, size_t len) {
    kv_fs *fs = fsf_fs(f);
    kv_file *h = NULL;
    ck_assert_int_eq(fs->ops->open(fs, path, KV_FS_WRITE, &h), 0);
    ck_assert_int_eq(fs->ops->pwrite(h, buf, len, off), 0);
    ck_assert_int_eq(fs->ops->sync(h), 0);
    fs->ops->close(h);
}

/* wal.h rule 4: a batch whose checksums hold was written whole; at the
 * wrong place it is CORRUPT even as the last batch (a replayed or stale
 * copy is never torn). */
START_TEST(test_whole_batch_out_of_place_is_corrupt) {
    rec_pos pos[4];
    int npos = 0;
    fsf *f = three_batches(pos, &npos);
    void *buf = NULL;
    size_t size = 0;
    ck_assert_int_eq(kv_fs_read_all(fsf_fs(f), pos[0].path, 1 << 20, &buf, &size), 0);
    put_at_end(f, pos[0].path, pos[2].end, (uint8_t *)buf + pos[0].seg_off,
               pos[0].end - pos[0].seg_off); /* batch 1..4 again */
    free(buf);
    tu_reports r = {0};
    ck_assert_int_eq(wal_check(fsf_fs(f), TU_DIR, tu_collect, &r, NULL), KV_ECORRUPT);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "CORRUPT");
    ck_assert_uint_eq(r.offset[0], pos[2].end);
    ck_assert_uint_eq(r.index[0], 13);
    ck_assert_str_eq(r.detail[0], "batch starts at an unexpected index");
    fsf_free(f);
}
END_TEST

/* wal.h rule 5: terms never decrease. A whole batch whose record carries a
 * lower term is CORRUPT (file, offset of the record, its index), and
 * wal_append refuses to write one. */
START_TEST(test_term_decrease) {
    rec_pos pos[4];
    int npos = 0;
    fsf *f = three_batches(pos, &npos); /* 8..12 have term 2 */
    uint8_t batch[WAL_BATCH_HEADER_BYTES + KV_WAL_RECORD_HEADER_BYTES + 4];
    wal_entry e = {.index = 13, .term = 1, .len = 4, .data = (uint8_t *)"abcd"};
    wal__rec_encode(batch + WAL_BATCH_HEADER_BYTES, &e);
    wal_batch b = {.seq = 1,
                   .first = 13,
                   .count = 1,
                   .payload_bytes = KV_WAL_RECORD_HEADER_BYTES + 4,
                   .payload_xxh3 =
                       kv_xxh3(batch + WAL_BATCH_HEADER_BYTES, KV_WAL_RECORD_HEADER_BYTES + 4)};
    wal__batch_encode(batch, &b);
    put_at_end(f, pos[0].path, pos[2].end, batch, sizeof batch);
    tu_reports r = {0};
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, tu_collect, &r, &w), KV_ECORRUPT);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "CORRUPT");
    ck_assert_uint_eq(r.offset[0], pos[2].end + WAL_BATCH_HEADER_BYTES);
    ck_assert_uint_eq(r.index[0], 13);
    ck_assert_str_eq(r.detail[0], "record term below the term before it");
    uint8_t zeros[sizeof batch] = {0};
    put_at_end(f, pos[0].path, pos[2].end, zeros, sizeof zeros);
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    wal_entry v[3];
    uint8_t bufs[3][TU_LEN_MAX];
    tu_entries(v, bufs, 13, 1, 1);
    ck_assert_int_eq(wal_append_wait(w, v, 1), KV_EINVAL); /* below term 2 */
    tu_entries(v, bufs, 13, 3, 3);
    v[2].term = 2;
    ck_assert_int_eq(wal_append_wait(w, v, 3), KV_EINVAL); /* decreasing within */
    ck_assert_uint_eq(wal_last_index(w), 12);
    tu_entries(v, bufs, 10, 1, 2); /* a conflict at the same term is fine */
    ck_assert_int_eq(wal_append_wait(w, v, 1), 0);
    ck_assert_uint_eq(wal_last_index(w), 10);
    wal_close(w);
    ck_assert_int_eq(wal_check(fsf_fs(f), TU_DIR, NULL, NULL, NULL), 0);
    fsf_free(f);
}
END_TEST

/* ---- bad input ------------------------------------------------------------ */

START_TEST(test_missing_segment) {
    wal_options o = tiny(300);
    fsf *f = sweep_log(tu_seed(), &o);
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->unlink(fs, TU_DIR "/wal/0000000000000002.wal"), 0);
    tu_reports r = {0};
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fs, TU_DIR, &o, tu_collect, &r, &w), KV_ECORRUPT);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "MISSING");
    ck_assert_str_eq(r.file[0], TU_DIR "/wal/0000000000000002.wal");
    fsf_free(f);
}
END_TEST

START_TEST(test_empty_segment) {
    wal_options o = tiny(300);
    fsf *f = sweep_log(tu_seed(), &o);
    kv_fs *fs = fsf_fs(f);
    kv_file *h = NULL;
    ck_assert_int_eq(fs->ops->open(fs, TU_DIR "/wal/0000000000000003.wal", KV_FS_WRITE, &h), 0);
    ck_assert_int_eq(fs->ops->truncate(h, 0), 0);
    fs->ops->close(h);
    tu_reports r = {0};
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fs, TU_DIR, &o, tu_collect, &r, &w), KV_ECORRUPT);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "CORRUPT");
    ck_assert_str_eq(r.file[0], TU_DIR "/wal/0000000000000003.wal");
    ck_assert_str_eq(r.detail[0], "empty segment file");
    fsf_free(f);
}
END_TEST

START_TEST(test_segment_other_version) {
    wal_options o = tiny(300);
    fsf *f = sweep_log(tu_seed(), &o);
    /* 2 -> 1: a segment of the format before batches */
    ck_assert_int_eq(fsf_flip(f, TU_DIR "/wal/0000000000000001.wal", 8, 0x03), 0);
    tu_reports r = {0};
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, &o, tu_collect, &r, &w), KV_EVERSION);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "VERSION");
    ck_assert_str_eq(r.file[0], TU_DIR "/wal/0000000000000001.wal");
    ck_assert_ptr_nonnull(strstr(r.detail[0], "version 1"));
    fsf_free(f);
}
END_TEST

START_TEST(test_no_wal_dir) {
    fsf *f = fsf_new(tu_seed());
    ck_assert_int_eq(fsf_fs(f)->ops->mkdir(fsf_fs(f), TU_DIR), 0);
    tu_reports r = {0};
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, tu_collect, &r, &w), KV_EMISSING);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "MISSING");
    ck_assert_str_eq(r.file[0], TU_DIR "/wal");
    fsf_free(f);
}
END_TEST

START_TEST(test_readonly_wal_dir) {
    fsf *f = tu_fake_datadir(tu_seed());
    ck_assert_int_eq(fsf_set_readonly(f, TU_DIR "/wal", true), 0);
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), KV_EPERM);
    fsf_free(f);
}
END_TEST

/* ---- I/O errors ----------------------------------------------------------- */

/* wal_append_now, then waits for its callback: its status, or the call's
 * error. On an idle log with a fast disk the callback runs on this thread
 * before the call returns; after a slow sync (ASan on a busy machine) it
 * runs on the log's thread, and the same statuses must come. */
static int append_now_wait(wal *w, const wal_entry *e, size_t n) {
    tu_wait t;
    tu_wait_init(&t);
    t.pending = 1; /* before the call: the callback may run inside it */
    tu_op op = {.wait = &t, .status = 1};
    int rv = wal_append_now(w, e, n, tu_op_done, &op);
    if (rv == 0)
        tu_wait_all(&t);
    tu_wait_destroy(&t);
    return rv != 0 ? rv : op.status;
}

typedef int (*append_wait_fn)(wal *w, const wal_entry *e, size_t n);

static void io_error_case(void (*arm)(fsf *, uint64_t), append_wait_fn append) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    wal_entry e[4];
    uint8_t bufs[4][TU_LEN_MAX];
    tu_entries(e, bufs, 1, 2, 1);
    ck_assert_int_eq(append(w, e, 2), 0);
    arm(f, 1);
    tu_entries(e, bufs, 3, 2, 1);
    ck_assert_int_eq(append(w, e, 2), KV_EIO);
    ck_assert_uint_eq(wal_last_index(w), 2);
    tu_entries(e, bufs, 3, 2, 1);
    ck_assert_int_eq(append(w, e, 2), KV_EIO); /* refused from now on */
    ck_assert_int_eq(wal_reset(w, 10, 1), KV_EIO);
    wal_close(w);
    fsf_crash(f, FSF_CRASH_DROP);
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    ck_assert_uint_eq(wal_last_index(w), 2); /* what was acknowledged */
    wal_close(w);
    fsf_free(f);
}

START_TEST(test_sync_error) {
    io_error_case(fsf_fail_sync, wal_append_wait);
}
END_TEST

START_TEST(test_write_error) {
    io_error_case(fsf_fail_write, wal_append_wait);
}
END_TEST

START_TEST(test_short_write) {
    io_error_case(fsf_short_write, wal_append_wait);
}
END_TEST

/* The same on the caller's thread (wal_append_now: a follower's loop). */
START_TEST(test_sync_error_now) {
    io_error_case(fsf_fail_sync, append_now_wait);
}
END_TEST

START_TEST(test_write_error_now) {
    io_error_case(fsf_fail_write, append_now_wait);
}
END_TEST

/* Every append pending when the sync fails gets KV_EIO. */
START_TEST(test_sync_error_fails_pending) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    tu_gate g;
    tu_gate_init(&g);
    fsf_set_sync_hook(f, tu_gate_hook, &g);
    fsf_fail_sync(f, 1);
    static tu_op ops[20];
    tu_wait t;
    tu_wait_init(&t);
    for (int i = 0; i < 20; i++) {
        ops[i] = (tu_op){.index = (uint64_t)i + 1, .n = 1, .term = 1};
        ck_assert_int_eq(tu_submit(w, &ops[i], &t), 0);
    }
    tu_gate_open(&g);
    tu_wait_all(&t);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(ops[i].status, KV_EIO);
    ck_assert_uint_eq(wal_last_index(w), 0);
    wal_close(w);
    tu_wait_destroy(&t);
    fsf_free(f);
}
END_TEST

/* A process that dies with records written but not synced (here: their
 * sync failed, the appends got KV_EIO) restarts on the same page cache: the
 * scan finds those records and the reopened log reports them as its own.
 * They must then survive a power loss (wal_open syncs what it found). */
START_TEST(test_reopen_makes_found_records_durable) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    wal_entry e[4];
    uint8_t bufs[4][TU_LEN_MAX];
    tu_entries(e, bufs, 1, 2, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 2), 0);
    fsf_fail_sync(f, 1);
    tu_entries(e, bufs, 3, 2, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 2), KV_EIO);
    wal_close(w); /* the process dies; the machine does not */
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    uint64_t seen = wal_last_index(w);
    ck_assert_uint_eq(seen, 4); /* the page cache held 3..4 */
    wal_close(w);
    fsf_crash(f, FSF_CRASH_DROP);
    ck_assert_int_eq(wal_open(fsf_fs(f), TU_DIR, NULL, NULL, NULL, &w), 0);
    ck_assert_uint_eq(wal_last_index(w), seen); /* what the last run relied on */
    wal_entry *out = NULL;
    size_t n = 0;
    ck_assert_int_eq(wal_read(w, 3, 5, UINT64_MAX, &out, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(tu_entry_ok(&out[0]) && tu_entry_ok(&out[1]));
    wal_entries_free(out, n);
    wal_close(w);
    fsf_free(f);
}
END_TEST

int main(void) {
    tu_seed();
    kv_log_set_level(KV_LOG_ERROR);
    Suite *s = suite_create("wal_faults");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_crash_loop_drop);
    tcase_add_test(tc, test_crash_loop_torn);
    tcase_add_test(tc, test_crash_loop_pages_tiny);
    tcase_add_test(tc, test_crash_loop_pages_sector);
    tcase_add_test(tc, test_crash_loop_pages_4k);
    tcase_add_test(tc, test_corruption_sweep);
    tcase_add_test(tc, test_zero_tail_is_clean);
    tcase_add_test(tc, test_zero_page_in_unsynced_batch_is_torn);
    tcase_add_test(tc, test_flip_synced_batch_corrupt_last_torn);
    tcase_add_test(tc, test_whole_batch_out_of_place_is_corrupt);
    tcase_add_test(tc, test_term_decrease);
    tcase_add_test(tc, test_missing_segment);
    tcase_add_test(tc, test_empty_segment);
    tcase_add_test(tc, test_segment_other_version);
    tcase_add_test(tc, test_no_wal_dir);
    tcase_add_test(tc, test_readonly_wal_dir);
    tcase_add_test(tc, test_sync_error);
    tcase_add_test(tc, test_write_error);
    tcase_add_test(tc, test_short_write);
    tcase_add_test(tc, test_sync_error_now);
    tcase_add_test(tc, test_write_error_now);
    tcase_add_test(tc, test_sync_error_fails_pending);
    tcase_add_test(tc, test_reopen_makes_found_records_durable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
