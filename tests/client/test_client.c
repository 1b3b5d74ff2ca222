/*
 * libkvclient against fake nodes (fake_server.h): argument checks, every
 * call, leader finding, retries with the same (client id, seq), the
 * outcomes a user sees when the cluster is away (UNAVAILABLE: never sent;
 * TIMEOUT: sent, outcome unknown), BUSY, sessions, the handshake, the
 * asynchronous form and kv_node_status. The operator calls are in
 * test_client_ops.c.
 */
#include "client_test_util.h"

#include "common/clock.h"
#include "proto/kv.pb-c.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- arguments, endpoints, nothing listening ----------------------------- */

START_TEST(test_bad_endpoints) {
    static const char *bad[] = {"",       ",",       "host",  "host:",    ":80",
                                "h:0",    "h:65536", "h:12a", "a:1,,b:2", "a:1,",
                                "::1:80", "[::1]",   "h:1 2", "[::1]80",  "h:123456"};
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 5000;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kv_client *c = (kv_client *)1;
        uint64_t t0 = kv_now_ns();
        ck_assert_msg(kv_client_open(&c, bad[i], &o) == KV_EINVAL, "\"%s\" accepted", bad[i]);
        ck_assert_ptr_null(c);
        ck_assert_uint_lt(kv_now_ns() - t0, 100 * MS); /* nothing connects */
    }
    kv_client *c = NULL;
    ck_assert_int_eq(kv_client_open(&c, NULL, &o), KV_EINVAL);
    ck_assert_int_eq(kv_client_open(NULL, "127.0.0.1:1", &o), KV_EINVAL);
}
END_TEST

/* kv_errstr names what was wrong: the limit, the endpoint, the file; a
 * later failure without detail leaves no stale one behind. */
START_TEST(test_errstr) {
    ck_assert_str_eq(kv_errstr(), "");
    fake_server *f = start(&(fake_config){0});
    kv_client *c = open_short(fake_addr(f), 300);
    char *big = calloc(1, KV_VALUE_BYTES_MAX + 1);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(kv_put(c, "k", 1, big, KV_VALUE_BYTES_MAX + 1), KV_ETOOBIG);
    ck_assert_str_eq(kv_errstr(), "value of 1048577 bytes is over KV_VALUE_BYTES_MAX (1048576)");
    void *v = NULL;
    size_t vlen = 0;
    ck_assert_int_eq(kv_get(c, big, KV_KEY_BYTES_MAX + 1, &v, &vlen), KV_ETOOBIG);
    ck_assert_str_eq(kv_errstr(), "key of 4097 bytes is over KV_KEY_BYTES_MAX (4096)");
    ck_assert_int_eq(kv_del(c, "", 0), KV_EINVAL);
    ck_assert_str_eq(kv_errstr(), "an empty key: a key is 1 to 4096 bytes");
    ck_assert_int_eq(kv_member_add(c, "n4", "localhost:27004"), KV_EINVAL);
    ck_assert_ptr_nonnull(strstr(kv_errstr(), "'localhost:27004': the host must be a numeric"));
    ck_assert_int_eq(kv_member_add(c, "bad name", "127.0.0.1:1"), KV_EINVAL);
    ck_assert_ptr_nonnull(strstr(kv_errstr(), "node name 'bad name'"));
    kv_client_close(c);
    fake_stop(f);
    free(big);

    kv_options *o = kv_options_new();
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(kv_options_set_connect_timeout_ms(o, 86400001), KV_EINVAL);
    ck_assert_int_eq(kv_options_set_timeout_ms(o, 300), 0);
    ck_assert_str_eq(kv_errstr(), "");
    ck_assert_int_eq(kv_options_set_token_file(o, "/nonexistent/token"), 0);
    c = (kv_client *)1;
    ck_assert_int_eq(kv_client_open_ex(&c, "127.0.0.1:1", o), KV_EMISSING);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(kv_errstr(), "token file /nonexistent/token: No such file or directory");
    ck_assert_int_eq(kv_options_set_token_file(o, NULL), 0);
    ck_assert_int_eq(kv_client_open_ex(&c, "127.0.0.1:1,h:0", o), KV_EINVAL);
    ck_assert_str_eq(kv_errstr(), "endpoint 'h:0' is not HOST:PORT (port 1 to 65535, IPv6 as "
                                  "[ADDRESS]:PORT)");
    ck_assert_int_eq(kv_client_open_ex(&c, "127.0.0.1:1", o), KV_EUNAVAILABLE);
    ck_assert_str_eq(kv_errstr(), ""); /* no detail: none left over */
    kv_options_free(o);
    ck_assert_str_eq(kv_version(), KV_VERSION_STRING);
}
END_TEST

START_TEST(test_nobody_listens) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 300;
    kv_client *c = NULL;
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_client_open(&c, "127.0.0.1:1", &o), KV_EUNAVAILABLE);
    uint64_t took = kv_now_ns() - t0;
    ck_assert_ptr_null(c);
    ck_assert_uint_ge(took, 250 * MS); /* it kept trying for its timeout */
    ck_assert_uint_lt(took, 1500 * MS);
    ck_assert_int_eq(kv_client_open(&c, "127.0.0.1:1,127.0.0.1:2", &o), KV_EUNAVAILABLE);
}
END_TEST

START_TEST(test_argument_limits) {
    fake_server *f = start(&(fake_config){0});
    kv_client *c = open_short(fake_addr(f), 300);
    char *big = calloc(1, KV_VALUE_BYTES_MAX + 1);
    memset(big, 'k', KV_VALUE_BYTES_MAX + 1);
    /* At the limits: accepted and stored. */
    ck_assert_int_eq(kv_put(c, big, KV_KEY_BYTES_MAX, "v", 1), 0);
    ck_assert_int_eq(kv_put(c, "big", 3, big, KV_VALUE_BYTES_MAX), 0);
    void *v;
    size_t vlen;
    ck_assert_int_eq(kv_get(c, "big", 3, &v, &vlen), 0);
    ck_assert_uint_eq(vlen, KV_VALUE_BYTES_MAX);
    ck_assert_int_eq(memcmp(v, big, vlen), 0);
    kv_free(v);
    uint64_t sent = fake_requests(f);
    fake_stop(f); /* no server from here on: checks are local */
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_put(c, big, KV_KEY_BYTES_MAX + 1, "v", 1), KV_ETOOBIG);
    ck_assert_int_eq(kv_put(c, "k", 1, big, KV_VALUE_BYTES_MAX + 1), KV_ETOOBIG);
    ck_assert_int_eq(kv_get(c, big, KV_KEY_BYTES_MAX + 1, &v, &vlen), KV_ETOOBIG);
    ck_assert_int_eq(kv_del(c, big, KV_KEY_BYTES_MAX + 1), KV_ETOOBIG);
    ck_assert_int_eq(kv_cas(c, "k", 1, big, KV_VALUE_BYTES_MAX + 1, "v", 1), KV_ETOOBIG);
    ck_assert_int_eq(kv_put_async(c, "k", 1, big, KV_VALUE_BYTES_MAX + 1, NULL, NULL), KV_ETOOBIG);
    kv_pair *pairs;
    size_t n;
    ck_assert_int_eq(kv_scan(c, big, KV_KEY_BYTES_MAX + 1, NULL, 0, 0, &pairs, &n, NULL),
                     KV_ETOOBIG);
    ck_assert_int_eq(kv_put(c, "", 0, "v", 1), KV_EINVAL);
    ck_assert_int_eq(kv_put(c, NULL, 0, "v", 1), KV_EINVAL);
    ck_assert_int_eq(kv_put(c, "k", 1, NULL, 5), KV_EINVAL);
    ck_assert_int_eq(kv_get(c, "k", 1, NULL, &vlen), KV_EINVAL);
    ck_assert_int_eq(kv_put(NULL, "k", 1, "v", 1), KV_EINVAL);
    ck_assert_uint_lt(kv_now_ns() - t0, 50 * MS); /* refused before any network */
    ck_assert_uint_eq(sent, 4);                   /* REGISTER, 2 puts, get */
    /* A valid write now finds nobody: never sent, UNAVAILABLE. */
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), KV_EUNAVAILABLE);
    ck_assert_int_eq(kv_get(c, "k", 1, &v, &vlen), KV_EUNAVAILABLE);
    kv_client_close(c);
    free(big);
}
END_TEST

/* ---- the calls ------------------------------------------------------------ */

START_TEST(test_calls) {
    fake_server *f = start(&(fake_config){.name = "f1"});
    kv_client *c = open_short(fake_addr(f), 2000);
    void *v;
    size_t vlen;
    ck_assert_int_eq(kv_get(c, "a", 1, &v, &vlen), KV_ENOTFOUND);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(kv_put(c, "a", 1, "1", 1), 0);
    ck_assert_int_eq(kv_put(c, "ab", 2, "22", 2), 0);
    ck_assert_int_eq(kv_put(c, "b", 1, NULL, 0), 0); /* empty value */
    ck_assert_int_eq(kv_get(c, "a", 1, &v, &vlen), 0);
    ck_assert_uint_eq(vlen, 1);
    ck_assert_int_eq(memcmp(v, "1", 1), 0);
    kv_free(v);
    ck_assert_int_eq(kv_get(c, "b", 1, &v, &vlen), 0);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(vlen, 0);
    uint64_t idx = 0;
    ck_assert_int_eq(kv_get_stale(c, "ab", 2, &v, &vlen, &idx), 0);
    ck_assert_uint_eq(vlen, 2);
    ck_assert_uint_eq(idx, 3);
    kv_free(v);
    /* cas: absent, matching, mismatching with the current value */
    ck_assert_int_eq(kv_cas(c, "a", 1, NULL, 0, "x", 1), KV_ECOMPARE);
    ck_assert_int_eq(kv_cas(c, "c", 1, NULL, 0, "3", 1), 0);
    ck_assert_int_eq(kv_cas(c, "c", 1, "3", 1, "4", 1), 0);
    void *cur = (void *)1;
    size_t cur_len = 9;
    bool present = false;
    ck_assert_int_eq(kv_cas_ex(c, "c", 1, "3", 1, "5", 1, &cur, &cur_len, &present), KV_ECOMPARE);
    ck_assert(present);
    ck_assert_uint_eq(cur_len, 1);
    ck_assert_int_eq(memcmp(cur, "4", 1), 0);
    kv_free(cur);
    ck_assert_int_eq(kv_cas_ex(c, "zz", 2, "3", 1, "5", 1, &cur, &cur_len, &present), KV_ECOMPARE);
    ck_assert(!present);
    ck_assert_ptr_null(cur);
    /* del */
    ck_assert_int_eq(kv_del(c, "c", 1), 0);
    ck_assert_int_eq(kv_del(c, "c", 1), KV_ENOTFOUND);
    /* scan: prefix, start_after, limit, more */
    kv_pair *pairs;
    size_t n;
    bool more;
    ck_assert_int_eq(kv_scan(c, "a", 1, NULL, 0, 0, &pairs, &n, &more), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(!more);
    ck_assert_uint_eq(pairs[0].key_len, 1);
    ck_assert_int_eq(memcmp(pairs[1].key, "ab", 2), 0);
    ck_assert_int_eq(memcmp(pairs[1].value, "22", 2), 0);
    kv_pairs_free(pairs, n);
    ck_assert_int_eq(kv_scan(c, NULL, 0, "a", 1, 1, &pairs, &n, &more), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert(more);
    ck_assert_int_eq(memcmp(pairs[0].key, "ab", 2), 0);
    kv_pairs_free(pairs, n);
    /* every write went in one session, numbered 1, 2, 3... */
    ck_assert_uint_eq(fake_registers(f), 1);
    uint64_t seq = 0;
    fake_req q;
    for (uint64_t i = 0; fake_request(f, i, &q); i++) {
        if (q.type < KV__REQUEST__TYPE__PUT || q.type > KV__REQUEST__TYPE__CAS_ABSENT)
            continue;
        ck_assert_uint_eq(q.client_id, 100);
        ck_assert_uint_eq(q.seq, ++seq);
    }
    ck_assert_uint_eq(seq, 10);
    bool leader = false;
    ck_assert_str_eq(kv_client_endpoint(c, &leader), fake_addr(f));
    ck_assert(leader);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

START_TEST(test_node_status) {
    fake_server *f = start(&(fake_config){.name = "n7"});
    kv_client *c = open_short(fake_addr(f), 2000);
    ck_assert_int_eq(kv_put(c, "a", 1, "1", 1), 0);
    char *line = NULL;
    ck_assert_int_eq(kv_node_status(c, NULL, &line), 0);
    char want[256];
    snprintf(want, sizeof want,
             "name=n7 address=%s role=leader term=3 leader=n7 commit=1 applied=1 last=1 "
             "snapshot=0 version=0.1.0 cluster=fake-cluster unsafe_no_fsync=false",
             fake_addr(f));
    ck_assert_str_eq(line, want);
    kv_free(line);
    ck_assert_int_eq(kv_node_status(c, fake_addr(f), &line), 0); /* its own connection */
    ck_assert_str_eq(line, want);
    kv_free(line);
    ck_assert_int_eq(kv_node_status(c, "127.0.0.1:1", &line), KV_EUNAVAILABLE);
    ck_assert_ptr_null(line);
    ck_assert_int_eq(kv_node_status(c, "nonsense", &line), KV_EINVAL);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

/* ---- leader finding ------------------------------------------------------- */

START_TEST(test_redirect) {
    fake_server *l = start(&(fake_config){.name = "lead"});
    fake_server *fo = start(&(fake_config){.follower = true, .leader_address = fake_addr(l)});
    kv_client *c = open_short(fake_addr(fo), 2000); /* only the follower is listed */
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), 0);
    ck_assert_uint_eq(fake_applied(l), 1);
    ck_assert_uint_eq(fake_applied(fo), 0);
    bool leader = false;
    ck_assert_str_eq(kv_client_endpoint(c, &leader), fake_addr(l));
    ck_assert(leader);
    void *v;
    size_t vlen;
    ck_assert_int_eq(kv_get(c, "k", 1, &v, &vlen), 0);
    kv_free(v);
    kv_client_close(c);
    fake_stop(fo);
    fake_stop(l);
}
END_TEST

START_TEST(test_no_leader_known_next_endpoint) {
    fake_server *fo = start(&(fake_config){.follower = true});
    fake_server *l = start(&(fake_config){0});
    char eps[128];
    snprintf(eps, sizeof eps, "%s,%s", fake_addr(fo), fake_addr(l));
    kv_client *c = open_short(eps, 2000);
    ck_assert_str_eq(kv_client_endpoint(c, NULL), fake_addr(fo));
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), 0);
    ck_assert_uint_ge(kv_now_ns() - t0, 9 * MS); /* paused (10 ms) before the next one */
    ck_assert_uint_eq(fake_applied(l), 1);
    ck_assert_str_eq(kv_client_endpoint(c, NULL), fake_addr(l));
    kv_client_close(c);
    fake_stop(fo);
    fake_stop(l);
}
END_TEST

/* ---- retries and outcomes --------------------------------------------------- */

START_TEST(test_close_mid_request) {
    fake_server *f = start(&(fake_config){.close_after_apply = 2});
    kv_client *c = open_short(fake_addr(f), 2000);
    ck_assert_int_eq(kv_put(c, "a", 1, "1", 1), 0);
    ck_assert_int_eq(kv_put(c, "b", 1, "2", 1), 0); /* applied, then the node hung up */
    ck_assert_uint_eq(fake_applied(f), 2);          /* once */
    ck_assert_uint_eq(fake_duplicates(f), 1);       /* the retry got the stored reply */
    /* the retry carried the same (client id, seq) */
    fake_req q, last = {0}, prev = {0};
    for (uint64_t i = 0; fake_request(f, i, &q); i++)
        if (q.type == KV__REQUEST__TYPE__PUT) {
            prev = last;
            last = q;
        }
    ck_assert_str_eq(last.key, "b");
    ck_assert_str_eq(prev.key, "b");
    ck_assert_uint_eq(last.seq, prev.seq);
    ck_assert_uint_eq(last.client_id, prev.client_id);
    ck_assert_uint_eq(fake_hellos(f), 2);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

START_TEST(test_cluster_away) {
    /* A node that takes requests and never answers: a write's outcome is
     * unknown (TIMEOUT), a read is UNAVAILABLE. */
    fake_server *f = start(&(fake_config){.black_hole = true});
    kv_client *c = open_short(fake_addr(f), 300);
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), KV_EUNAVAILABLE); /* REGISTER unanswered */
    ck_assert_uint_lt(kv_now_ns() - t0, 1000 * MS);
    kv_client_close(c);
    fake_stop(f);

    /* With a session registered first, the write itself goes out. */
    fake_server *g = start(&(fake_config){0});
    c = open_short(fake_addr(g), 300);
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), 0);
    fake_stop(g);
    /* A connection that answered less than KVC_ALIVE_TRUST_MS (1 ms) ago is
     * used without a check (no system call); one idle for longer is checked
     * first, so the write is never sent into the closed connection. */
    usleep(20 * 1000);
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), KV_EUNAVAILABLE); /* never sent */
    kv_client_close(c);

    /* Every node says NOTLEADER and knows no leader: not applied. */
    fake_server *fo = start(&(fake_config){.follower = true});
    c = open_short(fake_addr(fo), 300);
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), KV_EUNAVAILABLE);
    void *v;
    size_t vlen;
    ck_assert_int_eq(kv_get(c, "k", 1, &v, &vlen), KV_EUNAVAILABLE);
    kv_client_close(c);
    fake_stop(fo);
    fake_server *un = start(&(fake_config){.unavailable = true});
    c = open_short(fake_addr(un), 300);
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), KV_EUNAVAILABLE);
    kv_client_close(c);
    fake_stop(un);
}
END_TEST

/* A sent write whose answer never comes: TIMEOUT. The session must exist
 * first, so one fake answers REGISTER and the put, then stops answering. */
START_TEST(test_timeout_after_send) {
    fake_server *f = start(&(fake_config){.close_after_apply = 0});
    fake_server *bh = start(&(fake_config){.black_hole = true});
    char eps[128];
    snprintf(eps, sizeof eps, "%s,%s", fake_addr(f), fake_addr(bh));
    kv_client *c = open_short(eps, 500);
    ck_assert_int_eq(kv_put(c, "a", 1, "1", 1), 0);
    fake_stop(f); /* the client moves to the black hole */
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_put(c, "b", 1, "2", 1), KV_ETIMEOUT);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    void *v;
    size_t vlen;
    ck_assert_int_eq(kv_get(c, "b", 1, &v, &vlen), KV_EUNAVAILABLE);
    ck_assert_uint_ge(fake_requests(bh), 2); /* it was sent */
    kv_client_close(c);
    fake_stop(bh);

    /* NOTLEADER "outcome unknown" after the write was proposed: TIMEOUT. */
    fake_server *g = start(&(fake_config){0});
    fake_server *lost =
        start(&(fake_config){.follower = true,
                             .notleader_detail = "leadership lost; outcome unknown, retry",
                             .notleader_unknown = true});
    snprintf(eps, sizeof eps, "%s,%s", fake_addr(g), fake_addr(lost));
    c = open_short(eps, 500);
    ck_assert_int_eq(kv_put(c, "a", 1, "1", 1), 0);
    fake_stop(g);
    ck_assert_int_eq(kv_put(c, "b", 1, "2", 1), KV_ETIMEOUT);
    kv_client_close(c);
    fake_stop(lost);
}
END_TEST

START_TEST(test_busy) {
    fake_server *f = start(&(fake_config){.busy_writes = 3});
    kv_client *c = open_short(fake_addr(f), 2000);
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), 0); /* after three BUSY */
    ck_assert_uint_eq(fake_applied(f), 1);
    kv_client_close(c);
    fake_stop(f);
    fake_server *g = start(&(fake_config){.busy_forever = true});
    c = open_short(fake_addr(g), 300);
    uint64_t t0 = kv_now_ns();
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), KV_EBUSY);
    ck_assert_uint_ge(kv_now_ns() - t0, 250 * MS); /* retried until the deadline */
    ck_assert_uint_eq(fake_applied(g), 0);
    kv_client_close(c);
    fake_stop(g);
}
END_TEST

START_TEST(test_session_expired) {
    fake_server *f = start(&(fake_config){.expire_session_once = true});
    kv_client *c = open_short(fake_addr(f), 2000);
    ck_assert_int_eq(kv_put(c, "a", 1, "1", 1), 0); /* expired, registered again */
    ck_assert_int_eq(kv_put(c, "b", 1, "2", 1), 0);
    ck_assert_uint_eq(fake_registers(f), 2);
    ck_assert_uint_eq(fake_applied(f), 2);
    fake_req q, last = {0};
    for (uint64_t i = 0; fake_request(f, i, &q); i++)
        if (q.type == KV__REQUEST__TYPE__PUT)
            last = q;
    ck_assert_uint_eq(last.client_id, 101); /* the new session */
    ck_assert_uint_eq(last.seq, 2);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

/* ---- handshake --------------------------------------------------------------- */

START_TEST(test_handshake) {
    fake_server *f = start(&(fake_config){.token = "s3cret"});
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 1000;
    kv_client *c = NULL;
    ck_assert_int_eq(kv_client_open(&c, fake_addr(f), &o), KV_EAUTH);
    o.token = "wrong";
    ck_assert_int_eq(kv_client_open(&c, fake_addr(f), &o), KV_EAUTH);
    o.token = NULL;
    char path[] = "/tmp/kvclient-token.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "s3cret\nsecond line\n", 19), 19);
    close(fd);
    o.token_file = path;
    ck_assert_int_eq(kv_client_open(&c, fake_addr(f), &o), 0);
    ck_assert_int_eq(kv_put(c, "k", 1, "v", 1), 0);
    kv_client_close(c);
    unlink(path);
    o.token_file = "/nonexistent/token";
    ck_assert_int_eq(kv_client_open(&c, fake_addr(f), &o), KV_EMISSING);
    o.token_file = NULL;
    o.token = "s3cret";
    /* The cluster id of the first reply goes in every later Hello. */
    uint64_t h0 = fake_hellos(f);
    ck_assert_int_eq(kv_client_open(&c, fake_addr(f), &o), 0);
    char *line = NULL;
    ck_assert_int_eq(kv_node_status(c, fake_addr(f), &line), 0); /* a second connection */
    kv_free(line);
    char id[64];
    ck_assert(fake_hello_cluster(f, h0, id, sizeof id));
    ck_assert_str_eq(id, "");
    ck_assert(fake_hello_cluster(f, h0 + 1, id, sizeof id));
    ck_assert_str_eq(id, "fake-cluster");
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

/* ---- asynchronous form --------------------------------------------------------- */

typedef struct async_state {
    int done, failed, first_error;
    char got[16];
    size_t got_len;
} async_state;

static void on_done(void *arg, int status, const void *value, size_t len) {
    async_state *st = arg;
    st->done++;
    if (status != 0) {
        st->failed++;
        if (st->first_error == 0 || status != KV_ETIMEOUT)
            st->first_error = status; /* anything but TIMEOUT is kept */
    }
    if (value != NULL && len < sizeof st->got) {
        memcpy(st->got, value, len);
        st->got_len = len;
    }
}

/* Puts n keys k0..k(n-1) keeping depth in flight; returns failures. */
static void async_puts(kv_client *c, int n, int depth, async_state *st) {
    int queued = 0;
    uint64_t t0 = kv_now_ns();
    while (st->done < n) {
        while (queued < n && (int)kv_client_inflight(c) < depth) {
            char key[32];
            int len = snprintf(key, sizeof key, "k%d", queued);
            ck_assert_int_eq(kv_put_async(c, key, (size_t)len, key, (size_t)len, on_done, st), 0);
            queued++;
        }
        ck_assert_int_ge(kv_client_poll(c, 100), 0);
        ck_assert_uint_lt(kv_now_ns() - t0, 10000 * MS);
    }
    ck_assert_uint_eq(kv_client_inflight(c), 0);
}

START_TEST(test_async) {
    fake_server *f = start(&(fake_config){0});
    kv_client *c = open_short(fake_addr(f), 2000);
    async_state st = {0};
    async_puts(c, 2000, 64, &st);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_uint_eq(fake_applied(f), 2000);
    async_state g = {0};
    ck_assert_int_eq(kv_get_async(c, "k1999", 5, on_done, &g), 0);
    ck_assert_int_eq(kv_get_async(c, "nope", 4, on_done, &g), 0);
    while (g.done < 2)
        ck_assert_int_ge(kv_client_poll(c, 1000), 0);
    ck_assert_int_eq(g.failed, 1);
    ck_assert_int_eq(g.first_error, KV_ENOTFOUND);
    ck_assert_uint_eq(g.got_len, 5);
    ck_assert_int_eq(memcmp(g.got, "k1999", 5), 0);
    /* limits: max in flight, a synchronous call while some wait */
    kv_client_set_max_inflight(c, 2);
    async_state h = {0};
    ck_assert_int_eq(kv_put_async(c, "x", 1, "1", 1, on_done, &h), 0);
    ck_assert_int_eq(kv_put_async(c, "y", 1, "1", 1, on_done, &h), 0);
    ck_assert_int_eq(kv_put_async(c, "z", 1, "1", 1, on_done, &h), KV_EBUSY);
    ck_assert_int_eq(kv_put(c, "w", 1, "1", 1), KV_EBUSY);
    while (h.done < 2)
        ck_assert_int_ge(kv_client_poll(c, 1000), 0);
    ck_assert_int_eq(h.failed, 0);
    ck_assert_int_eq(kv_put(c, "w", 1, "1", 1), 0);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

START_TEST(test_async_redirect_and_close) {
    /* Pipelined writes: first to a follower (redirect), then the leader
     * hangs up right after applying the 500th, with more on the wire. All
     * are resent with the same numbers and every write is applied exactly
     * once. The node's reset may take with it answers it had sent (the
     * 497th...): those writes are resent, and as the session keeps only its
     * last reply, they come back "superseded": TIMEOUT, outcome unknown,
     * never a failure. */
    fake_server *l = start(&(fake_config){.close_after_apply = 500});
    fake_server *fo = start(&(fake_config){.follower = true, .leader_address = fake_addr(l)});
    kv_client *c = open_short(fake_addr(fo), 3000);
    async_state st = {0};
    async_puts(c, 1500, 128, &st);
    ck_assert_msg(st.failed == 0 || st.first_error == KV_ETIMEOUT, "%d failed, first %s", st.failed,
                  kv_errword(st.first_error));
    ck_assert_int_le(st.failed, 128);
    ck_assert_uint_eq(fake_applied(l), 1500);
    for (int i = 0; i < 1500; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        size_t len = 0;
        void *v = fake_value(l, key, &len);
        ck_assert_ptr_nonnull(v);
        ck_assert_uint_eq(len, strlen(key));
        free(v);
    }
    kv_client_close(c);
    fake_stop(fo);
    fake_stop(l);
}
END_TEST

START_TEST(test_async_unavailable) {
    fake_server *f = start(&(fake_config){0});
    kv_client *c = open_short(fake_addr(f), 300);
    fake_stop(f);
    async_state st = {0};
    ck_assert_int_eq(kv_put_async(c, "a", 1, "1", 1, on_done, &st), 0);
    ck_assert_int_eq(kv_get_async(c, "a", 1, on_done, &st), 0);
    uint64_t t0 = kv_now_ns();
    while (st.done < 2)
        ck_assert_int_ge(kv_client_poll(c, 100), 0);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    ck_assert_int_eq(st.failed, 2);
    ck_assert_int_eq(st.first_error, KV_EUNAVAILABLE);
    kv_client_close(c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_bad_endpoints);
    tcase_add_test(tc, test_nobody_listens);
    tcase_add_test(tc, test_argument_limits);
    tcase_add_test(tc, test_errstr);
    tcase_add_test(tc, test_calls);
    tcase_add_test(tc, test_node_status);
    tcase_add_test(tc, test_redirect);
    tcase_add_test(tc, test_no_leader_known_next_endpoint);
    tcase_add_test(tc, test_close_mid_request);
    tcase_add_test(tc, test_cluster_away);
    tcase_add_test(tc, test_timeout_after_send);
    tcase_add_test(tc, test_busy);
    tcase_add_test(tc, test_session_expired);
    tcase_add_test(tc, test_handshake);
    tcase_add_test(tc, test_async);
    tcase_add_test(tc, test_async_redirect_and_close);
    tcase_add_test(tc, test_async_unavailable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
