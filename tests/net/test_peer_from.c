/*
 * A peer speaks only for itself (issue 10): a Raft message whose `from` is
 * not the node its connection's Hello named closes that connection, is
 * logged and counted (net_stats raft_from_bad, frames_bad), and no message
 * of that frame reaches Raft; the link then comes back and correct messages
 * flow again. Also: everything one Ready of a leader holds for a follower
 * (hundreds of thousands of entries) crosses net with nothing dropped.
 * Two nodes on one loop over loopback TCP, ports 21090-21091.
 */
#include "net/net.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "net_test_loop.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    net *n;
    uint64_t id;
    uint64_t msgs;    /* Raft messages received */
    uint64_t entries; /* their entries */
    uint64_t last_from;
} node;

static void on_request(void *ctx, net_conn *c, Kv__Request *req) {
    (void)ctx;
    (void)c;
    kv__request__free_unpacked(req, NULL);
    ck_abort_msg("no request expected");
}

static void on_raft(void *ctx, const char *from, const raft_msg *m) {
    node *nd = ctx;
    (void)from;
    nd->msgs++;
    nd->entries += m->entries_count;
    nd->last_from = m->from;
}

static void node_open(node *nd, uv_loop_t *loop, uint64_t id, const char *name, int port) {
    static char addrs[4][32];
    snprintf(addrs[id], sizeof addrs[id], "127.0.0.1:%d", port);
    memset(nd, 0, sizeof *nd);
    nd->id = id;
    net_config cfg;
    net_config_default(&cfg);
    cfg.loop = loop;
    cfg.listen_addr = addrs[id];
    cfg.node_name = name;
    cfg.cluster_id = "c1";
    cfg.ctx = nd;
    cfg.on_request = on_request;
    cfg.on_raft = on_raft;
    ck_assert_int_eq(net_open(&cfg, &nd->n), 0);
}

typedef struct wait_arg {
    node *a, *b;
    uint64_t msgs;
} wait_arg;

static bool connected(void *arg) {
    wait_arg *w = arg;
    return net_peer_connected(w->a->n, w->b->id);
}

static bool b_got(void *arg) {
    wait_arg *w = arg;
    return w->b->msgs >= w->msgs;
}

static bool a_lost_b(void *arg) {
    wait_arg *w = arg;
    return !net_peer_connected(w->a->n, w->b->id);
}

static net_stats stats(const node *nd) {
    net_stats s;
    net_get_stats(nd->n, &s);
    return s;
}

START_TEST(test_from_must_match_hello) {
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    static node a, b;
    node_open(&a, &loop, 1, "a", 21090);
    node_open(&b, &loop, 2, "b", 21091);
    ck_assert_int_eq(net_peer_add(a.n, 2, "b", "127.0.0.1:21091"), 0);
    ck_assert_int_eq(net_peer_add(b.n, 1, "a", "127.0.0.1:21090"), 0);
    ck_assert_int_eq(net_peer_add(b.n, 3, "c", "127.0.0.1:21099"), 0); /* known, never up */
    wait_arg w = {.a = &a, .b = &b};
    ck_assert(nt_run_until(&loop, connected, &w, 10000));

    raft_msg ok = {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 3};
    net_send_raft(a.n, &ok, 1);
    w.msgs = 1;
    ck_assert(nt_run_until(&loop, b_got, &w, 10000));
    ck_assert_uint_eq(b.last_from, 1);

    /* a speaks for node 3 (another known peer): b closes the connection; the
     * correct message before it in the same frame is not delivered either */
    raft_msg two[2] = {ok, ok};
    two[1].from = 3;
    net_send_raft(a.n, two, 2);
    ck_assert(nt_run_until(&loop, a_lost_b, &w, 10000));
    ck_assert_uint_eq(b.msgs, 1);
    ck_assert_uint_eq(stats(&b).raft_from_bad, 1);
    ck_assert_uint_ge(stats(&b).frames_bad, 1);
    ck_assert_uint_eq(stats(&b).raft_msgs_received, 1);

    /* the link comes back; correct messages flow again */
    ck_assert(nt_run_until(&loop, connected, &w, 10000));
    net_send_raft(a.n, &ok, 1);
    w.msgs = 2;
    ck_assert(nt_run_until(&loop, b_got, &w, 10000));
    ck_assert_uint_eq(stats(&b).raft_from_bad, 1);

    net_close(a.n);
    net_close(b.n);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* One Ready's APPENDs of 300,000 one-byte entries (the frame limit many
 * times over) reach the follower whole: nothing dropped as TOOBIG. */
START_TEST(test_big_ready_crosses_net) {
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    static node a, b;
    node_open(&a, &loop, 1, "a", 21092);
    node_open(&b, &loop, 2, "b", 21093);
    ck_assert_int_eq(net_peer_add(a.n, 2, "b", "127.0.0.1:21093"), 0);
    ck_assert_int_eq(net_peer_add(b.n, 1, "a", "127.0.0.1:21092"), 0);
    wait_arg w = {.a = &a, .b = &b};
    ck_assert(nt_run_until(&loop, connected, &w, 10000));

    raft *r = nt_leader();
    const size_t count = 300000;
    raft_buf *bufs = calloc(count, sizeof *bufs);
    for (size_t i = 0; i < count; i++)
        bufs[i] = (raft_buf){.data = "x", .len = 1};
    ck_assert_int_eq(raft_propose_batch(r, bufs, count, NULL), 0);
    free(bufs);
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    uint64_t appends = 0;
    for (size_t i = 0; i < rd.msgs_count; i++)
        appends += rd.msgs[i].type == RAFT_MSG_APPEND;
    ck_assert_uint_gt(appends, 1);
    net_send_raft(a.n, rd.msgs, rd.msgs_count);
    w.msgs = rd.msgs_count;
    raft_advance(r, &rd);
    ck_assert(nt_run_until(&loop, b_got, &w, 30000));
    ck_assert_uint_eq(b.entries, count);
    ck_assert_uint_eq(stats(&a).raft_msgs_dropped, 0);
    ck_assert_uint_eq(stats(&b).frames_toobig + stats(&b).frames_bad, 0);
    raft_free(r);
    net_close(a.n);
    net_close(b.n);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("net_peer_from");
    TCase *tc = tcase_create("peer_from");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_from_must_match_hello);
    tcase_add_test(tc, test_big_ready_crosses_net);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
