/*
 * Unit tests of lossyfs's model (lfs.h): what a crash keeps and drops, one
 * rule per test, then random operations against a plain reference that
 * copies whole files (no dirty ranges) and whole directories. Random tests
 * print their seed; LFS_SEED=<n> replays one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lfs.h"

static lfs *FS;

static void setup(void) {
    FS = lfs_new();
    ck_assert_ptr_nonnull(FS);
}

static void teardown(void) {
    lfs_free(FS);
}

/* Writes s at off of path (created if missing), fsyncs when sync. */
static void put(const char *path, uint64_t off, const char *s, bool sync) {
    lfs_node *h;
    ck_assert_int_eq(lfs_open(FS, path, true, false, 0644, &h), 0);
    ck_assert_int_eq(lfs_write(FS, h, s, strlen(s), off), (ssize_t)strlen(s));
    if (sync)
        ck_assert_int_eq(lfs_fsync(FS, h), 0);
    lfs_release(FS, h);
}

/* The whole file as a string ("<missing>" when absent). */
static const char *get(const char *path) {
    static char buf[4096];
    lfs_node *h;
    if (lfs_open(FS, path, false, false, 0, &h) != 0)
        return "<missing>";
    ssize_t n = lfs_read(FS, h, buf, sizeof buf - 1, 0);
    lfs_release(FS, h);
    ck_assert_int_ge(n, 0);
    buf[n] = 0;
    return buf;
}

static void fsync_path(const char *path) {
    lfs_node *h;
    ck_assert_int_eq(lfs_open(FS, path, false, false, 0, &h), 0);
    ck_assert_int_eq(lfs_fsync(FS, h), 0);
    lfs_release(FS, h);
}

START_TEST(test_unsynced_write_is_lost) {
    put("/a", 0, "hello", false);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_str_eq(get("/a"), "hello");
    lfs_crash(FS);
    ck_assert_str_eq(get("/a"), ""); /* the entry was synced, the bytes not */
}
END_TEST

START_TEST(test_synced_write_survives_later_ones_do_not) {
    put("/a", 0, "hello", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    put("/a", 5, " world", false);
    put("/a", 0, "J", false);
    ck_assert_str_eq(get("/a"), "Jello world");
    lfs_crash(FS);
    ck_assert_str_eq(get("/a"), "hello");
    struct stat st;
    ck_assert_int_eq(lfs_getattr(FS, "/a", &st), 0);
    ck_assert_int_eq(st.st_size, 5);
}
END_TEST

START_TEST(test_unsynced_truncate_comes_back) {
    put("/a", 0, "0123456789", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_int_eq(lfs_truncate(FS, "/a", 3), 0);
    put("/a", 3, "xy", false);
    ck_assert_str_eq(get("/a"), "012xy");
    lfs_crash(FS);
    ck_assert_str_eq(get("/a"), "0123456789");
}
END_TEST

START_TEST(test_synced_truncate_then_growth) {
    put("/a", 0, "0123456789", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_int_eq(lfs_truncate(FS, "/a", 2), 0);
    ck_assert_int_eq(lfs_truncate(FS, "/a", 4), 0); /* zero-filled */
    fsync_path("/a");
    lfs_crash(FS);
    ck_assert_int_eq(memcmp(get("/a"), "01\0\0", 2), 0);
    struct stat st;
    ck_assert_int_eq(lfs_getattr(FS, "/a", &st), 0);
    ck_assert_int_eq(st.st_size, 4);
}
END_TEST

START_TEST(test_created_file_needs_directory_sync) {
    put("/a", 0, "data", true); /* file synced, its entry not */
    lfs_crash(FS);
    ck_assert_str_eq(get("/a"), "<missing>");
    ck_assert_uint_eq(lfs_get_stats(FS).nodes, 1); /* only the root is left */
}
END_TEST

START_TEST(test_rename_reverts_without_directory_sync) {
    put("/tmp", 0, "new", true);
    put("/cur", 0, "old", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_int_eq(lfs_rename(FS, "/tmp", "/cur", 0), 0);
    ck_assert_str_eq(get("/cur"), "new");
    ck_assert_str_eq(get("/tmp"), "<missing>");
    lfs_crash(FS);
    ck_assert_str_eq(get("/cur"), "old");
    ck_assert_str_eq(get("/tmp"), "new");
    ck_assert_int_eq(lfs_rename(FS, "/tmp", "/cur", 0), 0);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    lfs_crash(FS);
    ck_assert_str_eq(get("/cur"), "new");
    ck_assert_str_eq(get("/tmp"), "<missing>");
}
END_TEST

START_TEST(test_rename_across_directories_each_dir_on_its_own) {
    ck_assert_int_eq(lfs_mkdir(FS, "/d", 0755), 0);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    put("/f", 0, "x", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_int_eq(lfs_rename(FS, "/f", "/d/f", 0), 0);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/d"), 0); /* the target only */
    lfs_crash(FS);
    ck_assert_str_eq(get("/f"), "x"); /* both names: a crash between two syncs */
    ck_assert_str_eq(get("/d/f"), "x");
}
END_TEST

START_TEST(test_unlink_reverts_without_directory_sync) {
    put("/a", 0, "keep", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_int_eq(lfs_unlink(FS, "/a"), 0);
    ck_assert_str_eq(get("/a"), "<missing>");
    lfs_crash(FS);
    ck_assert_str_eq(get("/a"), "keep");
    ck_assert_int_eq(lfs_unlink(FS, "/a"), 0);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    lfs_crash(FS);
    ck_assert_str_eq(get("/a"), "<missing>");
}
END_TEST

START_TEST(test_link_and_mkdir_need_directory_sync) {
    put("/a", 0, "A", true);
    ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
    ck_assert_int_eq(lfs_link(FS, "/a", "/b"), 0);
    ck_assert_int_eq(lfs_mkdir(FS, "/d", 0755), 0);
    struct stat st;
    ck_assert_int_eq(lfs_getattr(FS, "/a", &st), 0);
    ck_assert_int_eq(st.st_nlink, 2);
    lfs_crash(FS);
    ck_assert_str_eq(get("/b"), "<missing>");
    ck_assert_int_eq(lfs_getattr(FS, "/d", &st), -ENOENT);
    ck_assert_int_eq(lfs_getattr(FS, "/a", &st), 0);
    ck_assert_int_eq(st.st_nlink, 1);
}
END_TEST

START_TEST(test_open_handle_survives_unlink_and_crash) {
    lfs_node *h;
    ck_assert_int_eq(lfs_open(FS, "/a", true, false, 0644, &h), 0);
    ck_assert_int_eq(lfs_unlink(FS, "/a"), 0);
    ck_assert_int_eq(lfs_write(FS, h, "zz", 2, 0), 2);
    lfs_crash(FS);
    char b[4];
    ck_assert_int_eq(lfs_read(FS, h, b, sizeof b, 0), 0); /* bytes were never synced */
    lfs_release(FS, h);
    ck_assert_uint_eq(lfs_get_stats(FS).nodes, 1);
}
END_TEST

START_TEST(test_errors) {
    lfs_node *h;
    ck_assert_int_eq(lfs_open(FS, "/nope/a", true, false, 0644, &h), -ENOENT);
    put("/a", 0, "x", false);
    ck_assert_int_eq(lfs_open(FS, "/a", true, true, 0644, &h), -EEXIST);
    ck_assert_int_eq(lfs_mkdir(FS, "/a/b", 0755), -ENOTDIR);
    ck_assert_int_eq(lfs_mkdir(FS, "/d", 0755), 0);
    put("/d/x", 0, "x", false);
    ck_assert_int_eq(lfs_rmdir(FS, "/d"), -ENOTEMPTY);
    ck_assert_int_eq(lfs_unlink(FS, "/d"), -EISDIR);
    ck_assert_int_eq(lfs_rename(FS, "/d", "/d/e", 0), -EINVAL);
    ck_assert_int_eq(lfs_rename(FS, "/a", "/d/x", RENAME_NOREPLACE), -EEXIST);
    ck_assert_int_eq(lfs_truncate(FS, "/a", LFS_FILE_BYTES_MAX + 1), -EFBIG);
}
END_TEST

/* A torn crash keeps, per file, a prefix of its unsynced writes in order
 * (the last kept maybe cut, garbage after the cut), and what it keeps is
 * durable from then on. */
START_TEST(test_torn_crash_keeps_a_prefix) {
    const char *want = "aaaabbbbcccc";
    bool seen[4] = {false};
    for (uint64_t seed = 1; seed <= 64; seed++) {
        lfs_free(FS);
        FS = lfs_new();
        put("/f", 0, "", true);
        ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
        put("/f", 0, "aaaa", false);
        put("/f", 4, "bbbb", false);
        put("/f", 8, "cccc", false);
        lfs_crash_mode(FS, true, seed);
        struct stat st;
        ck_assert_int_eq(lfs_getattr(FS, "/f", &st), 0);
        ck_assert_int_eq(st.st_size % 4, 0);
        size_t size = (size_t)st.st_size;
        char got[16];
        memcpy(got, get("/f"), size);
        if (size >= 4) /* only the last write kept may be torn */
            ck_assert_int_eq(memcmp(got, want, size - 4), 0);
        seen[size / 4] = true;
        lfs_crash_mode(FS, true, seed + 1000); /* nothing unsynced now: all kept */
        ck_assert_int_eq(lfs_getattr(FS, "/f", &st), 0);
        ck_assert_int_eq((size_t)st.st_size, size);
        ck_assert_int_eq(memcmp(get("/f"), got, size), 0);
    }
    ck_assert(seen[0] && seen[1] && seen[2] && seen[3]);
}
END_TEST

/* ---- random operations against a plain reference ------------------------- */

#define R_FILES 4
#define R_BYTES 256

/* The reference: files in the root only, by slot; whole copies. */
typedef struct ref_name {
    int id; /* node identity, -1: no such name */
    int durable_id;
} ref_name;

typedef struct ref_node {
    uint8_t cur[R_BYTES], dur[R_BYTES];
    int cur_size, dur_size;
} ref_node;

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct ref {
    ref_name names[R_FILES];
    ref_node nodes[64];
    int nodes_count;
} ref;

static void ref_check(const ref *r, uint64_t seed, int step) {
    for (int f = 0; f < R_FILES; f++) {
        char path[16];
        snprintf(path, sizeof path, "/f%d", f);
        struct stat st;
        int rc = lfs_getattr(FS, path, &st);
        if (r->names[f].id < 0) {
            ck_assert_msg(rc == -ENOENT, "seed %" PRIu64 " step %d: %s exists", seed, step, path);
            continue;
        }
        const ref_node *n = &r->nodes[r->names[f].id];
        ck_assert_msg(rc == 0 && st.st_size == n->cur_size, "seed %" PRIu64 " step %d: %s size",
                      seed, step, path);
        lfs_node *h;
        uint8_t buf[R_BYTES];
        ck_assert_int_eq(lfs_open(FS, path, false, false, 0, &h), 0);
        ck_assert_int_eq(lfs_read(FS, h, buf, sizeof buf, 0), n->cur_size);
        lfs_release(FS, h);
        ck_assert_msg(memcmp(buf, n->cur, (size_t)n->cur_size) == 0,
                      "seed %" PRIu64 " step %d: %s bytes", seed, step, path);
    }
}

static void ref_write(ref_node *n, const char *path, uint64_t *s) {
    int off = (int)(rng_next(s) % (R_BYTES / 2)), len = 1 + (int)(rng_next(s) % 64);
    uint8_t b[64];
    lfs_node *h;
    for (int i = 0; i < len; i++)
        b[i] = (uint8_t)rng_next(s);
    ck_assert_int_eq(lfs_open(FS, path, false, false, 0, &h), 0);
    ck_assert_int_eq(lfs_write(FS, h, b, (size_t)len, (uint64_t)off), len);
    lfs_release(FS, h);
    if (off > n->cur_size)
        memset(n->cur + n->cur_size, 0, (size_t)(off - n->cur_size));
    memcpy(n->cur + off, b, (size_t)len);
    n->cur_size = off + len > n->cur_size ? off + len : n->cur_size;
}

static void ref_step(ref *r, uint64_t *s) {
    int f = (int)(rng_next(s) % R_FILES), g = (int)(rng_next(s) % R_FILES);
    char path[16], other[16];
    snprintf(path, sizeof path, "/f%d", f);
    snprintf(other, sizeof other, "/f%d", g);
    int id = r->names[f].id;
    ref_node *n = id >= 0 ? &r->nodes[id] : NULL;
    lfs_node *h;
    switch (rng_next(s) % 8) {
    case 0: /* create */
        if (id < 0 && r->nodes_count < 64) {
            ck_assert_int_eq(lfs_open(FS, path, true, true, 0644, &h), 0);
            lfs_release(FS, h);
            r->names[f].id = r->nodes_count++;
            memset(&r->nodes[r->names[f].id], 0, sizeof(ref_node));
        }
        break;
    case 1:
    case 2: /* write */
        if (n != NULL)
            ref_write(n, path, s);
        break;
    case 3: /* truncate */
        if (n != NULL) {
            int size = (int)(rng_next(s) % R_BYTES);
            ck_assert_int_eq(lfs_truncate(FS, path, (uint64_t)size), 0);
            if (size > n->cur_size)
                memset(n->cur + n->cur_size, 0, (size_t)(size - n->cur_size));
            n->cur_size = size;
        }
        break;
    case 4: /* fsync */
        if (n != NULL) {
            fsync_path(path);
            memcpy(n->dur, n->cur, R_BYTES);
            n->dur_size = n->cur_size;
        }
        break;
    case 5: /* fsync the directory */
        ck_assert_int_eq(lfs_fsyncdir(FS, "/"), 0);
        for (int i = 0; i < R_FILES; i++)
            r->names[i].durable_id = r->names[i].id;
        break;
    case 6: /* rename or unlink */
        if (id >= 0 && f != g) {
            ck_assert_int_eq(lfs_rename(FS, path, other, 0), 0);
            r->names[g].id = id;
            r->names[f].id = -1;
        } else if (id >= 0) {
            ck_assert_int_eq(lfs_unlink(FS, path), 0);
            r->names[f].id = -1;
        }
        break;
    case 7: /* crash */
        if (rng_next(s) % 3 == 0) {
            lfs_crash(FS);
            for (int i = 0; i < r->nodes_count; i++) {
                memcpy(r->nodes[i].cur, r->nodes[i].dur, R_BYTES);
                r->nodes[i].cur_size = r->nodes[i].dur_size;
            }
            for (int i = 0; i < R_FILES; i++)
                r->names[i].id = r->names[i].durable_id;
        }
        break;
    }
}

START_TEST(test_random_against_reference) {
    const char *env = getenv("LFS_SEED");
    uint64_t base = env != NULL ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_lossyfs: seed=%" PRIu64 " (replay: LFS_SEED=%" PRIu64 ")\n", base, base);
    for (uint64_t k = 0; k < 100; k++) {
        lfs_free(FS);
        FS = lfs_new();
        ref r;
        memset(&r, 0, sizeof r);
        for (int i = 0; i < R_FILES; i++)
            r.names[i].id = r.names[i].durable_id = -1;
        uint64_t s = base + k;
        for (int step = 0; step < 300; step++) {
            ref_step(&r, &s);
            ref_check(&r, base + k, step);
        }
    }
}
END_TEST

int main(void) {
    Suite *su = suite_create("lossyfs");
    TCase *tc = tcase_create("model");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_unsynced_write_is_lost);
    tcase_add_test(tc, test_synced_write_survives_later_ones_do_not);
    tcase_add_test(tc, test_unsynced_truncate_comes_back);
    tcase_add_test(tc, test_synced_truncate_then_growth);
    tcase_add_test(tc, test_created_file_needs_directory_sync);
    tcase_add_test(tc, test_rename_reverts_without_directory_sync);
    tcase_add_test(tc, test_rename_across_directories_each_dir_on_its_own);
    tcase_add_test(tc, test_unlink_reverts_without_directory_sync);
    tcase_add_test(tc, test_link_and_mkdir_need_directory_sync);
    tcase_add_test(tc, test_open_handle_survives_unlink_and_crash);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_torn_crash_keeps_a_prefix);
    tcase_add_test(tc, test_random_against_reference);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
