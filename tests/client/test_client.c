/*
 * libkvclient against fake nodes (fake_server.h): argument checks, every
 * call, leader finding, retries with the same (client id, seq), the
 * outcomes a user sees when the cluster is away (UNAVAILABLE: never sent;
 * TIMEOUT: sent, outcome unknown), BUSY, sessions, the handshake, the
 * asynchronous form and kv_node_status; membership and operations (member
 * list/add/remove, transfer-leader, snapshot save, check).
 */
#include "fake_server.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "kv/client.h"
#include "proto/kv.pb-c.h"
#include "storage/snapfile.h"

#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000ull

static kv_client *open_short(const char *eps, uint32_t timeout_ms) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = timeout_ms;
    o.connect_timeout_ms = 200;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, eps, &o);
    ck_assert_msg(rc == 0, "open %s: %s", eps, kv_errword(rc));
    return c;
}

static fake_server *start(const fake_config *cfg) {
    fake_server *f = fake_start(cfg);
    ck_assert_ptr_nonnull(f);
    return f;
}

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
    ck_assert_uint_ge(kv_now_ns() - t0, 40 * MS); /* paused before the next one */
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

START_TEST(test_transfer_leader) {
    fake_server *l = start(&(fake_config){.name = "n1", .transfer_after = 3});
    const char *addrs[] = {fake_addr(l), NULL};
    set_members(l, addrs, 2, NULL);
    kv_client *c = open_short(fake_addr(l), 3000);
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
    fake_server *n = start(&(fake_config){.name = "n1", .transfer_never = true});
    const char *addrs2[] = {fake_addr(n), NULL};
    set_members(n, addrs2, 2, NULL);
    c = open_short(fake_addr(n), 400);
    t0 = kv_now_ns();
    ck_assert_int_eq(kv_transfer_leader(c, "n2"), KV_ETIMEOUT);
    ck_assert_uint_ge(kv_now_ns() - t0, 350 * MS);
    ck_assert_uint_lt(kv_now_ns() - t0, 1500 * MS);
    ck_assert_uint_ge(fake_count(n, KV__REQUEST__TYPE__STATUS), 3);
    kv_client_close(c);
    fake_stop(n);
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

int main(void) {
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_bad_endpoints);
    tcase_add_test(tc, test_nobody_listens);
    tcase_add_test(tc, test_argument_limits);
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
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
