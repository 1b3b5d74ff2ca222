/*
 * libkvclient's operator calls against fake nodes (fake_server.h): member
 * list/add/remove, transfer-leader, snapshot save (the file checked with
 * snapfile.h) and check.
 */
#include "client_test_util.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "proto/kv.pb-c.h"
#include "snapfile/snapfile.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- membership and operations ------------------------------------------------ */

/* fake_set_members(f, "n1=<a0>,n2=<a1>,...") from addresses (NULL: a port
 * nobody listens on), then extra (may be NULL) appended. */
static void set_members(fake_server *f, const char *const *addrs, size_t n, const char *extra) {
    char list[1024];
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%sn%zu=%s", i ? "," : "", i + 1,
                                addrs[i] ? addrs[i] : "127.0.0.1:1");
    if (extra != NULL)
        snprintf(list + len, sizeof list - len, ",%s", extra);
    fake_set_members(f, list);
}

START_TEST(test_member_list) {
    fake_server *l = start(&(fake_config){.name = "n1"});
    fake_server *fo = start(&(fake_config){.name = "n2", .follower = true, .leader_name = "n1"});
    const char *addrs[] = {fake_addr(l), fake_addr(fo), NULL};
    set_members(fo, addrs, 3, NULL);
    set_members(l, addrs, 3, "n4+=127.0.0.1:7204"); /* the leader knows more */
    kv_client *c = open_short(fake_addr(fo), 2000); /* only the follower is listed */
    kv_member *m = NULL;
    size_t n = 0;
    ck_assert_int_eq(kv_member_list(c, &m, &n), 0);
    ck_assert_uint_eq(n, 4); /* the leader's list */
    ck_assert_str_eq(m[0].name, "n1");
    ck_assert_str_eq(m[0].address, fake_addr(l));
    ck_assert(!m[0].learner && !m[0].joining);
    ck_assert_str_eq(m[1].address, fake_addr(fo));
    ck_assert_str_eq(m[3].name, "n4");
    ck_assert_str_eq(m[3].address, "127.0.0.1:7204");
    ck_assert(m[3].learner);
    ck_assert_uint_ne(m[3].id, 0);
    kv_free(m);
    ck_assert_uint_eq(fake_count(fo, KV__REQUEST__TYPE__STATUS), 1);
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__STATUS), 1);
    bool leader = false;
    ck_assert_str_eq(kv_client_endpoint(c, &leader), fake_addr(l)); /* it moved there */
    ck_assert(leader);
    ck_assert_int_eq(kv_member_list(c, &m, &n), 0); /* asked there at once */
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__STATUS), 2);
    kv_free(m);
    ck_assert_int_eq(kv_member_list(c, NULL, &n), KV_EINVAL);
    ck_assert_int_eq(kv_member_list(NULL, &m, &n), KV_EINVAL);
    ck_assert_ptr_null(m);
    kv_client_close(c);
    fake_stop(fo);
    fake_stop(l);

    /* Nobody knows a leader: UNAVAILABLE at the deadline. */
    fake_server *lone = start(&(fake_config){.name = "n2", .follower = true});
    c = open_short(fake_addr(lone), 300);
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_member_list(c, &m, &n), KV_EUNAVAILABLE);
    ck_assert_uint_ge(kv_now_ns() - t0, 250 * MS);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(n, 0);
    kv_client_close(c);
    fake_stop(lone);
}
END_TEST

START_TEST(test_member_add_remove) {
    fake_server *l = start(&(fake_config){.name = "n1", .busy_changes = 3});
    fake_server *fo = start(&(fake_config){.follower = true, .leader_address = fake_addr(l)});
    const char *addrs[] = {fake_addr(l)};
    set_members(l, addrs, 1, NULL);
    kv_client *c = open_short(fake_addr(fo), 3000);
    ck_assert_int_eq(kv_member_add(c, "n2", "127.0.0.1:7202"), 0); /* redirect, 3 x BUSY */
    ck_assert_uint_eq(fake_count(fo, KV__REQUEST__TYPE__MEMBER_ADD), 1);
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__MEMBER_ADD), 4);
    char got[256], want[256];
    fake_members(l, got, sizeof got);
    snprintf(want, sizeof want, "n1=%s,n2+=127.0.0.1:7202", fake_addr(l));
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(kv_member_add(c, "n2", "127.0.0.1:7202"), KV_EEXIST);
    /* Bad arguments: refused before anything is sent. */
    uint64_t sent = fake_requests(l);
    char longname[80];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    static const char *bad_names[] = {"", "a b", "a,b", "a=b", "a\tb"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        ck_assert_int_eq(kv_member_add(c, bad_names[i], "127.0.0.1:7209"), KV_EINVAL);
    ck_assert_int_eq(kv_member_add(c, NULL, "127.0.0.1:7209"), KV_EINVAL);
    ck_assert_int_eq(kv_member_add(c, longname, "127.0.0.1:7209"), KV_EINVAL);
    ck_assert_int_eq(kv_member_add(c, "n9", NULL), KV_EINVAL);
    ck_assert_int_eq(kv_member_add(c, "n9", "nope"), KV_EINVAL);
    ck_assert_int_eq(kv_member_add(c, "n9", "h:0"), KV_EINVAL);
    ck_assert_int_eq(kv_member_add(NULL, "n9", "127.0.0.1:7209"), KV_EINVAL);
    ck_assert_int_eq(kv_member_remove(c, ""), KV_EINVAL);
    ck_assert_int_eq(kv_transfer_leader(c, NULL), KV_EINVAL);
    ck_assert_uint_eq(fake_requests(l), sent);
    ck_assert_int_eq(kv_member_remove(c, "n2"), 0);
    fake_members(l, got, sizeof got);
    snprintf(want, sizeof want, "n1=%s", fake_addr(l));
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(kv_member_remove(c, "n2"), KV_ENOTFOUND);
    kv_client_close(c);
    fake_stop(fo);
    fake_stop(l);

    /* Another change in progress for longer than the timeout: BUSY, after
     * retrying until the deadline. */
    fake_server *b = start(&(fake_config){.name = "n1", .busy_changes = UINT32_MAX});
    c = open_short(fake_addr(b), 300);
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_member_add(c, "n2", "127.0.0.1:7202"), KV_EBUSY);
    ck_assert_uint_ge(kv_now_ns() - t0, 250 * MS);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    ck_assert_uint_ge(fake_count(b, KV__REQUEST__TYPE__MEMBER_ADD), 3);
    ck_assert_int_eq(kv_member_remove(c, "n1"), KV_EBUSY);
    kv_client_close(c);
    fake_stop(b);
}
END_TEST

/* A change applied and its answer lost: the retry finds it done. */
START_TEST(test_member_change_answer_lost) {
    fake_server *l = start(&(fake_config){.name = "n1", .close_after_change = 1});
    fake_set_members(l, "n1=127.0.0.1:7201");
    kv_client *c = open_short(fake_addr(l), 2000);
    ck_assert_int_eq(kv_member_add(c, "n2", "127.0.0.1:7202"), 0); /* EEXIST on the retry */
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__MEMBER_ADD), 2);
    kv_client_close(c);
    fake_stop(l);

    fake_server *r = start(&(fake_config){.name = "n1", .close_after_change = 1});
    fake_set_members(r, "n1=127.0.0.1:7201,n2=127.0.0.1:7202");
    c = open_short(fake_addr(r), 2000);
    ck_assert_int_eq(kv_member_remove(c, "n2"), 0); /* NOTFOUND on the retry */
    ck_assert_uint_eq(fake_count(r, KV__REQUEST__TYPE__MEMBER_REMOVE), 2);
    kv_client_close(c);
    fake_stop(r);

    /* The same name at another address was not ours: EEXIST stays. */
    fake_server *x = start(&(fake_config){.name = "n1", .close_after_change = 1});
    fake_set_members(x, "n1=127.0.0.1:7201");
    c = open_short(fake_addr(x), 2000);
    ck_assert_int_eq(kv_member_add(c, "n3", "127.0.0.1:7203"), 0);
    ck_assert_int_eq(kv_member_add(c, "n3", "127.0.0.1:7299"), KV_EEXIST);
    kv_client_close(c);
    fake_stop(x);
}
END_TEST

/* A fake leader n1 (cfg) with a member n2 that is not there, and a client
 * of it with the given timeout. */
static fake_server *start_n1_of_two(fake_config cfg, uint32_t timeout_ms, kv_client **c) {
    fake_server *f = start(&cfg);
    const char *addrs[] = {fake_addr(f), NULL};
    set_members(f, addrs, 2, NULL);
    *c = open_short(fake_addr(f), timeout_ms);
    return f;
}

START_TEST(test_transfer_leader) {
    kv_client *c;
    fake_server *l = start_n1_of_two((fake_config){.name = "n1", .transfer_after = 3}, 3000, &c);
    ck_assert_int_eq(kv_transfer_leader(c, "n7"), KV_ENOTFOUND);
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_transfer_leader(c, "n2"), 0);
    ck_assert_uint_ge(kv_now_ns() - t0, 150 * MS); /* polled 4 times, 50 ms apart */
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__TRANSFER_LEADER), 2);
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__STATUS), 4); /* the 4th names n2 */
    bool leader = true;
    ck_assert_str_eq(kv_client_endpoint(c, &leader), fake_addr(l));
    ck_assert(!leader);
    kv_client_close(c);
    fake_stop(l);

    /* It never happens: TIMEOUT at the deadline. */
    fake_server *n = start_n1_of_two((fake_config){.name = "n1", .transfer_never = true}, 400, &c);
    t0 = kv_now_ns();
    ck_assert_int_eq(kv_transfer_leader(c, "n2"), KV_ETIMEOUT);
    ck_assert_uint_ge(kv_now_ns() - t0, 350 * MS);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    ck_assert_uint_ge(fake_count(n, KV__REQUEST__TYPE__STATUS), 3);
    kv_client_close(c);
    fake_stop(n);

    /* The leader gave it up (raft does after an election timeout): TIMEOUT
     * at the first STATUS that shows it, saying so. */
    fake_server *g =
        start_n1_of_two((fake_config){.name = "n1", .transfer_given_up = true}, 3000, &c);
    t0 = kv_now_ns();
    ck_assert_int_eq(kv_transfer_leader(c, "n2"), KV_ETIMEOUT);
    ck_assert_uint_lt(kv_now_ns() - t0, 1000 * MS);
    ck_assert_uint_eq(fake_count(g, KV__REQUEST__TYPE__STATUS), 1);
    ck_assert_ptr_nonnull(strstr(kv_errstr(), "n1 gave the transfer up: n2 did not take over"));
    kv_client_close(c);
    fake_stop(g);
}
END_TEST

static int walk_manifest(void *arg, const uint8_t *m, size_t len) {
    (void)arg;
    return len > 0 && memcmp(m, "fake manifest", 13) == 0 ? 0 : KV_ECORRUPT;
}

static int walk_chunk(void *arg, uint32_t k, const uint8_t *d, uint32_t len, uint64_t x) {
    uint32_t *chunks = arg;
    if (k != (*chunks)++ || kv_xxh3(d, len) != x)
        return KV_ECORRUPT;
    return 0;
}

/* The file at path holds the stream of generation gen of f, checked as
 * `kvcli snapshot verify` would: header, stream, trailer. */
static void check_snapfile(const char *path, fake_server *f, uint32_t gen, uint64_t saved_index) {
    uint64_t len, index, term;
    uint8_t *want = fake_snapshot(f, gen, &len, &index, &term);
    ck_assert_uint_eq(saved_index, index);
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    uint8_t *buf = malloc(len + 1024);
    size_t got = fread(buf, 1, len + 1024, fp);
    ck_assert_uint_eq(got, SNAPFILE_HEADER_BYTES + len + 8);
    snapfile_info info;
    ck_assert_int_eq(snapfile_header_decode(buf, &info), 0);
    ck_assert_uint_eq(info.index, index);
    ck_assert_uint_eq(info.term, term);
    ck_assert_uint_eq(info.stream_len, len);
    ck_assert_int_eq(memcmp(buf + SNAPFILE_HEADER_BYTES, want, len), 0);
    ck_assert_uint_eq(kv_get_u64(buf + SNAPFILE_HEADER_BYTES + len),
                      kv_xxh3(buf + SNAPFILE_HEADER_BYTES, len));
    uint32_t chunks = 0;
    ck_assert_int_eq(fseek(fp, SNAPFILE_HEADER_BYTES, SEEK_SET), 0);
    ck_assert_int_eq(snapstream_walk(fp, len, walk_manifest, walk_chunk, &chunks, NULL), 0);
    ck_assert_uint_gt(chunks, 1);
    fclose(fp);
    free(buf);
    free(want);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ck_assert_int_ne(access(tmp, F_OK), 0); /* renamed away */
}

static char snapdir[64];

static const char *snap_path(const char *name) {
    static char p[128];
    if (snapdir[0] == '\0') {
        snprintf(snapdir, sizeof snapdir, "/tmp/kvclient-snap.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(snapdir));
    }
    snprintf(p, sizeof p, "%s/%s", snapdir, name);
    return p;
}

static void snap_cleanup(const char *path) {
    unlink(path);
    rmdir(snapdir);
    snapdir[0] = '\0';
}

START_TEST(test_snapshot_save) {
    fake_server *l = start(&(fake_config){.name = "n1"});
    const char *addrs[] = {fake_addr(l)};
    set_members(l, addrs, 1, NULL);
    kv_client *c = open_short(fake_addr(l), 3000);
    const char *path = snap_path("snap.kvs");
    uint64_t idx = 0;
    ck_assert_int_eq(kv_snapshot_save(c, path, &idx), 0);
    check_snapfile(path, l, 1, idx);
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__SNAPSHOT_READ), 3); /* 2.5 MiB, 1 MiB each */
    ck_assert_int_eq(kv_snapshot_save(c, path, NULL), 0);                  /* over the old one */
    check_snapfile(path, l, 2, 70);
    ck_assert_int_eq(kv_snapshot_save(c, "/nonexistent/dir/snap", &idx), KV_EMISSING);
    ck_assert_int_eq(kv_snapshot_save(c, NULL, &idx), KV_EINVAL);
    ck_assert_int_eq(kv_snapshot_save(NULL, path, &idx), KV_EINVAL);
    kv_client_close(c);
    fake_stop(l);
    snap_cleanup(path);
}
END_TEST

START_TEST(test_snapshot_stale_restarts) {
    /* The second read finds the snapshot gone: a fresh one, from offset 0. */
    fake_server *l = start(&(fake_config){.name = "n1", .snap_stale_at = 2, .snap_piece = 200000});
    const char *addrs[] = {fake_addr(l)};
    set_members(l, addrs, 1, NULL);
    kv_client *c = open_short(fake_addr(l), 3000);
    const char *path = snap_path("snap.kvs");
    uint64_t idx = 0;
    ck_assert_int_eq(kv_snapshot_save(c, path, &idx), 0);
    check_snapfile(path, l, 2, idx);
    uint64_t len, index, term;
    free(fake_snapshot(l, 2, &len, &index, &term));
    uint64_t pieces = (len + 199999) / 200000;
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__SNAPSHOT_READ), 2 + pieces);
    kv_client_close(c);
    fake_stop(l);
    snap_cleanup(path);
}
END_TEST

START_TEST(test_snapshot_reconnect) {
    /* The connection drops midway, the leader is the same: it goes on
     * where it was, same snapshot. */
    fake_server *l = start(&(fake_config){.name = "n1", .snap_close_at = 2});
    const char *addrs[] = {fake_addr(l), NULL};
    set_members(l, addrs, 2, NULL);
    kv_client *c = open_short(fake_addr(l), 3000);
    const char *path = snap_path("snap.kvs");
    uint64_t idx = 0;
    ck_assert_int_eq(kv_snapshot_save(c, path, &idx), 0);
    check_snapfile(path, l, 1, idx);
    ck_assert_uint_eq(fake_count(l, KV__REQUEST__TYPE__SNAPSHOT_READ), 4);
    kv_client_close(c);
    fake_stop(l);
    snap_cleanup(path);

    /* ... the leader changed: from the new leader, afresh. */
    fake_server *l1 =
        start(&(fake_config){.name = "n1", .snap_close_at = 2, .snap_then_leader = "n2"});
    fake_server *l2 = start(&(fake_config){.name = "n2"});
    const char *both[] = {fake_addr(l1), fake_addr(l2)};
    set_members(l1, both, 2, NULL);
    set_members(l2, both, 2, NULL);
    c = open_short(fake_addr(l1), 3000);
    path = snap_path("snap2.kvs");
    ck_assert_int_eq(kv_snapshot_save(c, path, &idx), 0);
    check_snapfile(path, l2, 1, idx); /* n2's stream, not a mix */
    ck_assert_uint_eq(fake_count(l1, KV__REQUEST__TYPE__SNAPSHOT_READ), 2);
    ck_assert_uint_eq(fake_count(l2, KV__REQUEST__TYPE__SNAPSHOT_READ), 3);
    kv_client_close(c);
    fake_stop(l1);
    fake_stop(l2);
    snap_cleanup(path);
}
END_TEST

START_TEST(test_snapshot_no_leader) {
    fake_server *l = start(&(fake_config){.name = "n1", .snap_close_at = 1});
    const char *addrs[] = {fake_addr(l)};
    set_members(l, addrs, 1, NULL);
    kv_client *c = open_short(fake_addr(l), 500);
    const char *path = snap_path("snap.kvs");
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fake_stop(l); /* nobody: UNAVAILABLE, nothing left behind */
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_snapshot_save(c, path, NULL), KV_EUNAVAILABLE);
    ck_assert_uint_lt(kv_now_ns() - t0, 2000 * MS);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    kv_client_close(c);
    snap_cleanup(path);
}
END_TEST

START_TEST(test_check) {
    fake_server *n1 = start(&(fake_config){.name = "n1", .hash = 0xabc});
    fake_server *n2 =
        start(&(fake_config){.name = "n2", .follower = true, .leader_name = "n1", .hash = 0xabc});
    fake_server *n3 =
        start(&(fake_config){.name = "n3", .follower = true, .leader_name = "n1", .hash = 0xdef});
    const char *addrs[] = {fake_addr(n1), fake_addr(n2), fake_addr(n3)};
    set_members(n1, addrs, 3, NULL);
    set_members(n2, addrs, 3, NULL);
    set_members(n3, addrs, 3, NULL);
    kv_client *c = open_short(fake_addr(n2), 2000);
    uint64_t idx = 0;
    kv_check_node *nodes = NULL;
    size_t n = 0;
    ck_assert_int_eq(kv_check(c, &idx, &nodes, &n), KV_ECORRUPT);
    ck_assert_uint_eq(idx, fake_checkpoint(n1));
    ck_assert_uint_ne(idx, 0);
    ck_assert_uint_eq(fake_hash_index(n1), idx);
    ck_assert_uint_eq(fake_hash_index(n2), idx);
    ck_assert_uint_eq(fake_hash_index(n3), idx);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(nodes[0].name, "n1");
    ck_assert_str_eq(nodes[0].address, fake_addr(n1));
    ck_assert_int_eq(nodes[0].status, 0);
    ck_assert_uint_eq(nodes[0].hash, 0xabc);
    ck_assert_int_eq(nodes[1].status, 0);
    ck_assert_str_eq(nodes[2].name, "n3");
    ck_assert_int_eq(nodes[2].status, KV_ECORRUPT); /* the one that differs */
    ck_assert_uint_eq(nodes[2].hash, 0xdef);
    kv_free(nodes);
    ck_assert_int_eq(kv_check(c, &idx, NULL, &n), KV_EINVAL);
    kv_client_close(c);
    fake_stop(n1);
    fake_stop(n2);
    fake_stop(n3);
}
END_TEST

START_TEST(test_check_retry_and_missing) {
    /* n2 cannot know the first check point's hash: a second check point.
     * A joining node is no member: not asked. */
    fake_server *n1 = start(&(fake_config){.name = "n1", .hash = 7});
    fake_server *n2 = start(&(fake_config){.name = "n2", .hash = 7, .hash_notfound = 1});
    const char *addrs[] = {fake_addr(n1), fake_addr(n2)};
    set_members(n1, addrs, 2, "n9?=127.0.0.1:1");
    kv_client *c = open_short(fake_addr(n1), 2000);
    uint64_t idx = 0;
    kv_check_node *nodes = NULL;
    size_t n = 0;
    ck_assert_int_eq(kv_check(c, &idx, &nodes, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(fake_count(n1, KV__REQUEST__TYPE__CHECK_POINT), 2);
    ck_assert_uint_eq(idx, fake_checkpoint(n1));
    ck_assert_int_eq(nodes[1].status, 0);
    ck_assert_uint_eq(nodes[1].hash, 7);
    kv_free(nodes);
    kv_client_close(c);
    fake_stop(n2);

    /* One member down, one that never answers: UNAVAILABLE, each says why. */
    fake_server *silent = start(&(fake_config){.name = "n2", .hash = 7, .hash_silent = true});
    const char *addrs2[] = {fake_addr(n1), fake_addr(silent), NULL};
    set_members(n1, addrs2, 3, NULL);
    c = open_short(fake_addr(n1), 500);
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_check(c, &idx, &nodes, &n), KV_EUNAVAILABLE);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(nodes[0].status, 0);
    ck_assert_int_eq(nodes[1].status, KV_ETIMEOUT);
    ck_assert_int_eq(nodes[2].status, KV_EUNAVAILABLE);
    kv_free(nodes);
    kv_client_close(c);
    fake_stop(silent);
    fake_stop(n1);
}
END_TEST

/* Side connections (HASH, SNAPSHOT_READ) say Hello with the token and the
 * cluster id too. */
START_TEST(test_ops_token) {
    fake_server *l = start(&(fake_config){.name = "n1", .token = "s3cret", .hash = 5});
    const char *addrs[] = {fake_addr(l)};
    set_members(l, addrs, 1, NULL);
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 2000;
    o.token = "s3cret";
    kv_client *c = NULL;
    ck_assert_int_eq(kv_client_open(&c, fake_addr(l), &o), 0);
    uint64_t h0 = fake_hellos(l);
    uint64_t idx;
    kv_check_node *nodes;
    size_t n;
    ck_assert_int_eq(kv_check(c, &idx, &nodes, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(nodes[0].hash, 5);
    kv_free(nodes);
    const char *path = snap_path("snap.kvs");
    ck_assert_int_eq(kv_snapshot_save(c, path, &idx), 0);
    check_snapfile(path, l, 1, idx);
    ck_assert_uint_eq(fake_hellos(l), h0 + 2); /* one each, both accepted */
    char id[64];
    ck_assert(fake_hello_cluster(l, h0 + 1, id, sizeof id));
    ck_assert_str_eq(id, "fake-cluster");
    kv_client_close(c);
    fake_stop(l);
    snap_cleanup(path);
}
END_TEST

/* ---- leases ------------------------------------------------------------------------ */

/* A grant whose answer was lost (the fake closes after applying it) is
 * retried in its session: the duplicate's stored reply gives the same id
 * (its index), and nothing is granted twice. Keepalive and list read the
 * leases; an unknown lease is NOTFOUND. */
START_TEST(test_lease_calls) {
    fake_server *f = start(&(fake_config){.close_after_apply = 1});
    kv_client *c = open_short(fake_addr(f), 3000);
    uint64_t id = 0;
    ck_assert_int_eq(kv_lease_grant(c, 9, &id), 0);
    ck_assert_uint_eq(id, 500);
    ck_assert_uint_eq(fake_applied(f), 1);
    ck_assert_uint_eq(fake_duplicates(f), 1);
    int64_t left = 0;
    ck_assert_int_eq(kv_lease_keepalive(c, id, &left), 0);
    ck_assert_int_eq(left, 9);
    ck_assert_int_eq(kv_lease_keepalive(c, 77, &left), KV_ENOTFOUND);
    ck_assert_int_eq(left, -1);
    kv_lease *ls = NULL;
    size_t n = 0;
    ck_assert_int_eq(kv_lease_list(c, &ls, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(ls[0].id, 500);
    kv_free(ls);
    /* arguments refused before anything is sent */
    uint64_t before = fake_requests(f);
    ck_assert_int_eq(kv_lease_grant(c, 0, &id), KV_EINVAL);
    ck_assert_int_eq(kv_lease_grant(c, KV_LEASE_TTL_MAX + 1, &id), KV_EINVAL);
    ck_assert_int_eq(kv_lease_revoke(c, 0), KV_EINVAL);
    ck_assert_int_eq(kv_lease_keepalive(c, 0, NULL), KV_EINVAL);
    ck_assert_uint_eq(fake_requests(f), before);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("client_ops");
    TCase *tc = tcase_create("client_ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_member_list);
    tcase_add_test(tc, test_member_add_remove);
    tcase_add_test(tc, test_member_change_answer_lost);
    tcase_add_test(tc, test_transfer_leader);
    tcase_add_test(tc, test_snapshot_save);
    tcase_add_test(tc, test_snapshot_stale_restarts);
    tcase_add_test(tc, test_snapshot_reconnect);
    tcase_add_test(tc, test_snapshot_no_leader);
    tcase_add_test(tc, test_check);
    tcase_add_test(tc, test_check_retry_and_missing);
    tcase_add_test(tc, test_ops_token);
    tcase_add_test(tc, test_lease_calls);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
