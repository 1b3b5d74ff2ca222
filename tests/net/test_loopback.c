/*
 * The network layer on a real libuv loop over loopback TCP. The loop runs on
 * the test's thread; a "job" (a blocking client socket) runs on a second
 * thread and stops the loop when it is done, so the test then reads the
 * net's counters with nothing running. Each test case has its own port
 * (21000-21099). Random data prints its seed; KV_SEED replays it.
 */
#include "net/net.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "net/frame.h"

#include "net_test_client.h"
#include "net_test_loop.h"
#include "net_test_util.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define SINK_MAX 8

/* ---- (a) a request and its answer ---- */

static void job_requests(job *j) {
    int fd = cli_connect(j->port);
    JCHECK(j, fd >= 0);
    Kv__HelloReply *hr = cli_hello(fd, KV_WIRE_VERSION, "c1", "", "");
    JCHECK(j, hr != NULL);
    JCHECK(j, hr->code == 0 && strcmp(hr->node_name, "n1") == 0);
    JCHECK(j, strcmp(hr->cluster_id, "c1") == 0 && hr->version == KV_WIRE_VERSION);
    kv__hello_reply__free_unpacked(hr, NULL);
    /* Three pipelined requests, then one whose value (1 MiB) spans many
     * reads; answers match by id. */
    for (uint64_t id = 1; id <= 3; id++) {
        char key[16];
        snprintf(key, sizeof key, "key%llu", (unsigned long long)id);
        JCHECK(j, cli_put(fd, id, key, "v", 1));
    }
    JCHECK(j, cli_put(fd, 4, "big", big_value, KV_VALUE_BYTES_MAX));
    for (uint64_t id = 1; id <= 4; id++) {
        Kv__Response *r = cli_response(fd);
        JCHECK(j, r != NULL);
        JCHECK(j, r->id == id && r->code == 0);
        char key[16];
        snprintf(key, sizeof key, id < 4 ? "key%llu" : "big", (unsigned long long)id);
        JCHECK(j, nt_bytes_eq(r->value.data, r->value.len, key, strlen(key)));
        JCHECK(j, r->index == (id < 4 ? 1 : KV_VALUE_BYTES_MAX));
        kv__response__free_unpacked(r, NULL);
    }
    close(fd);
}

START_TEST(test_request_response) {
    fixture f;
    fixture_config(&f, 21000);
    fixture_open(&f);
    job j = {.port = 21000};
    run_job(&f, &j, job_requests);
    ck_assert_int_eq(f.requests_seen, 4);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.requests, 4);
    ck_assert_uint_eq(s.conns_accepted, 1);
    ck_assert_uint_eq(s.frames_bad, 0);
    ck_assert_uint_gt(s.bytes_in, KV_VALUE_BYTES_MAX);
    ck_assert_uint_gt(s.bytes_out, 0);
    fixture_close(&f);
}
END_TEST

/* ---- (b) bad frames close only their connection ---- */

static void send_raw_frame(int fd, uint8_t type, const void *payload, uint32_t len,
                           uint8_t header_xor_at, bool corrupt_payload) {
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    kv_frame_header_encode(hdr, type, payload, len);
    if (header_xor_at < KV_FRAME_HEADER_BYTES)
        hdr[header_xor_at] ^= 0x01;
    uint8_t *p = malloc(len + 1u);
    memcpy(p, payload, len);
    if (corrupt_payload)
        p[len / 2] ^= 0x80;
    cli_write(fd, hdr, sizeof hdr);
    cli_write(fd, p, len);
    free(p);
}

enum {
    POISON_RANDOM,
    POISON_FLIPPED,
    POISON_CHECKSUM,
    POISON_TYPE_BEFORE_HELLO,
    POISON_RAFT,
    POISON_UNDECODABLE,
    POISON_COUNT
};

static void job_poison(job *j) {
    uint8_t junk[4096];
    for (int kind = 0; kind < POISON_COUNT; kind++) {
        int fd = kind == POISON_RANDOM || kind == POISON_TYPE_BEFORE_HELLO ? cli_connect(j->port)
                                                                           : cli_open(j->port);
        JCHECK(j, fd >= 0);
        nt_fill(&j->seed, junk, sizeof junk);
        switch (kind) {
        case POISON_RANDOM:
            JCHECK(j, cli_write(fd, junk, sizeof junk));
            break;
        case POISON_FLIPPED:
            send_raw_frame(fd, KV_FRAME_REQUEST, junk, 100, 9, false);
            break;
        case POISON_CHECKSUM:
            send_raw_frame(fd, KV_FRAME_REQUEST, junk, 100, 0xFF, true);
            break;
        case POISON_TYPE_BEFORE_HELLO:
            JCHECK(j, cli_put(fd, 1, "k", "v", 1));
            break;
        case POISON_RAFT: /* a client may not speak Raft */
            send_raw_frame(fd, KV_FRAME_RAFT, "", 0, 0xFF, false);
            break;
        case POISON_UNDECODABLE: /* a field tag of wire type 7 does not exist */
            send_raw_frame(fd, KV_FRAME_REQUEST, "\x0f\x0f\x0f\x0f", 4, 0xFF, false);
            break;
        }
        JCHECK(j, cli_closed(fd));
        close(fd);
        /* Everyone else is still served. */
        int ok = cli_open(j->port);
        JCHECK(j, ok >= 0);
        JCHECK(j, cli_roundtrip(ok, 7, "after"));
        close(ok);
    }
    /* A frame over the limit is refused by its header alone. */
    int fd = cli_open(j->port);
    JCHECK(j, fd >= 0);
    uint8_t hdr[KV_FRAME_HEADER_BYTES];
    kv_frame_header_encode(hdr, KV_FRAME_REQUEST, "", 0);
    kv_put_u32(hdr + 8, KV_FRAME_BYTES_MAX + 1);
    kv_put_u64(hdr + 24, kv_xxh3(hdr, 24));
    JCHECK(j, cli_write(fd, hdr, sizeof hdr));
    JCHECK(j, cli_closed(fd));
    close(fd);
}

START_TEST(test_bad_frames) {
    fixture f;
    fixture_config(&f, 21001);
    fixture_open(&f);
    job j = {.port = 21001, .seed = nt_seed("test_bad_frames")};
    run_job(&f, &j, job_poison);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.frames_bad, POISON_COUNT);
    ck_assert_uint_eq(s.frames_toobig, 1);
    ck_assert_uint_eq(s.requests, POISON_COUNT);
    ck_assert_uint_eq(s.conns_accepted, 2 * POISON_COUNT + 1);
    fixture_close(&f);
}
END_TEST

/* ---- (c) a truncated frame, then the client goes away ---- */

static void job_truncated(job *j) {
    /* Half a header; half a frame; a header without its payload. */
    for (int cut = 0; cut < 3; cut++) {
        int fd = cli_open(j->port);
        JCHECK(j, fd >= 0);
        Kv__Request q = KV__REQUEST__INIT;
        q.id = 1;
        q.key.data = big_value;
        q.key.len = 1000;
        uint8_t *buf;
        size_t len;
        JCHECK(j, kv_frame_pack(KV_FRAME_REQUEST, &q.base, &buf, &len) == 0);
        size_t sent = cut == 0   ? KV_FRAME_HEADER_BYTES / 2
                      : cut == 1 ? len / 2
                                 : KV_FRAME_HEADER_BYTES;
        bool ok = cli_write(fd, buf, sent);
        free(buf);
        JCHECK(j, ok);
        close(fd);
        int fd2 = cli_open(j->port);
        JCHECK(j, fd2 >= 0);
        JCHECK(j, cli_roundtrip(fd2, 2, "still"));
        close(fd2);
    }
}

START_TEST(test_truncated_frame) {
    fixture f;
    fixture_config(&f, 21002);
    fixture_open(&f);
    job j = {.port = 21002};
    run_job(&f, &j, job_truncated);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.frames_bad, 0);
    ck_assert_uint_eq(s.requests, 3);
    fixture_close(&f);
}
END_TEST

/* ---- (d) refused handshakes ---- */

static bool refused_with(int port, uint32_t version, const char *cluster, const char *token,
                         const char *name, int code) {
    int fd = cli_connect(port);
    if (fd < 0)
        return false;
    Kv__HelloReply *r = cli_hello(fd, version, cluster, token, name);
    bool ok = r != NULL && r->code == code && r->reason[0] != '\0' &&
              strcmp(r->node_name, "n1") == 0 && cli_closed(fd);
    if (r != NULL)
        kv__hello_reply__free_unpacked(r, NULL);
    close(fd);
    return ok;
}

static void job_refusals(job *j) {
    JCHECK(j, refused_with(j->port, KV_WIRE_VERSION, "other", "secret", "", KV_ECONFIG));
    JCHECK(j, refused_with(j->port, KV_WIRE_VERSION, "c1", "guess", "", KV_EAUTH));
    JCHECK(j, refused_with(j->port, KV_WIRE_VERSION, "", "", "", KV_EAUTH));
    JCHECK(j, refused_with(j->port, KV_WIRE_VERSION + 1, "c1", "secret", "", KV_EVERSION));
    JCHECK(j, refused_with(j->port, KV_WIRE_VERSION, "c1", "secret", "stranger", KV_ECONFIG));
    /* The right token and cluster id (or none) are served. */
    int fd = cli_connect(j->port);
    JCHECK(j, fd >= 0);
    Kv__HelloReply *r = cli_hello(fd, KV_WIRE_VERSION, "", "secret", "");
    JCHECK(j, r != NULL && r->code == 0);
    kv__hello_reply__free_unpacked(r, NULL);
    JCHECK(j, cli_roundtrip(fd, 1, "ok"));
    close(fd);
}

START_TEST(test_hello_refused) {
    fixture f;
    fixture_config(&f, 21003);
    f.cfg.token = "secret";
    fixture_open(&f);
    job j = {.port = 21003};
    run_job(&f, &j, job_refusals);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.hello_refused, 5);
    ck_assert_uint_eq(s.frames_bad, 0);
    ck_assert_uint_eq(s.requests, 1);
    fixture_close(&f);
}
END_TEST

/* ---- (e) two nodes exchange Raft messages ---- */

typedef struct node {
    net *n;
    uint64_t id;
    raft_msg got[SINK_MAX];
    char got_from[SINK_MAX][KV_NODE_NAME_BYTES_MAX + 1];
    int got_count;
} node;

static void node_on_raft(void *ctx, const char *from, const raft_msg *m) {
    node *nd = ctx;
    ck_assert_int_lt(nd->got_count, SINK_MAX);
    ck_assert_uint_eq(m->to, nd->id);
    ck_assert_int_eq(raft_msg_copy(&nd->got[nd->got_count], m), 0);
    snprintf(nd->got_from[nd->got_count], sizeof nd->got_from[0], "%s", from);
    nd->got_count++;
}

static void node_open(node *nd, uv_loop_t *loop, uint64_t id, const char *name, int port,
                      const char *cluster) {
    static char addrs[4][32];
    snprintf(addrs[id], sizeof addrs[id], "127.0.0.1:%d", port);
    nd->id = id;
    net_config cfg;
    net_config_default(&cfg);
    cfg.loop = loop;
    cfg.listen_addr = addrs[id];
    cfg.node_name = name;
    cfg.cluster_id = cluster;
    cfg.ctx = nd;
    cfg.on_request = on_request;
    cfg.on_raft = node_on_raft;
    ck_assert_int_eq(net_open(&cfg, &nd->n), 0);
}

static void node_forget(node *nd) {
    for (int i = 0; i < nd->got_count; i++)
        raft_msg_free(&nd->got[i]);
    nd->got_count = 0;
}

typedef struct wait_arg {
    node *a, *b;
    int count;
} wait_arg;

static bool both_connected(void *arg) {
    wait_arg *w = arg;
    return net_peer_connected(w->a->n, w->b->id) && net_peer_connected(w->b->n, w->a->id);
}

static bool b_got(void *arg) {
    wait_arg *w = arg;
    return w->b->got_count >= w->count;
}

static bool a_lost_b(void *arg) {
    wait_arg *w = arg;
    return !net_peer_connected(w->a->n, w->b->id);
}

static bool never(void *arg) {
    (void)arg;
    return false;
}

START_TEST(test_peers_exchange_raft) {
    uint64_t seed = nt_seed("test_peers_exchange_raft");
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    static node a, b, c;
    node_open(&a, &loop, 1, "a", 21004, "c1");
    node_open(&b, &loop, 2, "b", 21005, "c1");
    node_open(&c, &loop, 3, "c", 21006, "other");
    ck_assert_int_eq(net_peer_add(a.n, 2, "b", "127.0.0.1:21005"), 0);
    ck_assert_int_eq(net_peer_add(b.n, 1, "a", "localhost:21004"), 0);
    ck_assert_int_eq(net_peer_add(c.n, 2, "b", "127.0.0.1:21005"), 0);
    ck_assert_int_eq(net_peer_add(a.n, 0, "z", "127.0.0.1:1"), KV_EINVAL);
    ck_assert_int_eq(net_peer_add(a.n, 5, "a", "127.0.0.1:1"), KV_EINVAL); /* itself */
    ck_assert_int_eq(net_peer_add(a.n, 5, "b", "127.0.0.1:1"), KV_EINVAL); /* b is 2 */
    ck_assert_int_eq(net_peer_add(a.n, 5, "e", "nohost"), KV_EINVAL);
    wait_arg w = {.a = &a, .b = &b};
    ck_assert(nt_run_until(&loop, both_connected, &w, 10000));

    static uint8_t chunk[200000], data[3][900000];
    nt_fill(&seed, chunk, sizeof chunk);
    nt_fill(&seed, data, sizeof data);
    raft_entry ents[3] = {
        {.index = 11, .term = 3, .type = RAFT_ENTRY_NORMAL, .data = "put", .len = 3},
        {.index = 12, .term = 3, .type = RAFT_ENTRY_NOOP},
        {.index = 13, .term = 3, .type = RAFT_ENTRY_CONF, .data = "\x01\x02", .len = 2},
    };
    raft_msg msgs[4] = {
        {.type = RAFT_MSG_APPEND,
         .from = 1,
         .to = 2,
         .term = 3,
         .log_term = 2,
         .index = 10,
         .commit = 9,
         .entries = ents,
         .entries_count = 3},
        {.type = RAFT_MSG_SNAPSHOT,
         .from = 1,
         .to = 2,
         .term = 3,
         .snap = {.index = 9,
                  .term = 2,
                  .membership =
                      {.voters_count = 2, .learners_count = 1, .voters = {1, 2}, .learners = {3}}},
         .snap_offset = 4096,
         .snap_total = 300000,
         .snap_data = chunk,
         .snap_len = sizeof chunk,
         .snap_last = true},
        {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 7, .term = 3}, /* nobody */
        {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 1, .term = 3}, /* itself */
    };
    net_send_raft(a.n, msgs, 4);
    w.count = 2;
    ck_assert(nt_run_until(&loop, b_got, &w, 10000));
    ck_assert(nt_msg_eq(&b.got[0], &msgs[0]) && nt_msg_eq(&b.got[1], &msgs[1]));
    ck_assert_str_eq(b.got_from[0], "a");
    net_stats sa, sb;
    net_get_stats(a.n, &sa);
    net_get_stats(b.n, &sb);
    ck_assert_uint_eq(sa.raft_msgs_sent, 2);
    ck_assert_uint_eq(sa.raft_msgs_dropped, 2);
    ck_assert_uint_eq(sb.raft_msgs_received, 2);
    node_forget(&b);

    /* Three appends of 900 KB go in more than one frame, all arrive. */
    raft_entry big[3];
    raft_msg appends[3];
    for (int i = 0; i < 3; i++) {
        big[i] = (raft_entry){
            .index = 20 + (uint64_t)i, .term = 3, .data = data[i], .len = sizeof data[i]};
        appends[i] = (raft_msg){.type = RAFT_MSG_APPEND,
                                .from = 1,
                                .to = 2,
                                .term = 3,
                                .index = 19 + (uint64_t)i,
                                .entries = &big[i],
                                .entries_count = 1};
    }
    net_send_raft(a.n, appends, 3);
    w.count = 3;
    ck_assert(nt_run_until(&loop, b_got, &w, 10000));
    for (int i = 0; i < 3; i++)
        ck_assert(nt_msg_eq(&b.got[i], &appends[i]));
    node_forget(&b);

    /* c is of another cluster: b refuses it, c keeps backing off. */
    net_get_stats(b.n, &sb);
    ck_assert_uint_ge(sb.hello_refused, 1);
    ck_assert(!net_peer_connected(c.n, 2));

    /* b goes away: a's link goes down, sends are dropped; b comes back on
     * the same port and the links come back up by themselves. */
    net_close(b.n);
    ck_assert(nt_run_until(&loop, a_lost_b, &w, 10000));
    net_get_stats(a.n, &sa);
    net_send_raft(a.n, msgs, 1);
    net_stats sa2;
    net_get_stats(a.n, &sa2);
    ck_assert_uint_eq(sa2.raft_msgs_dropped, sa.raft_msgs_dropped + 1);
    nt_run_until(&loop, never, NULL, 300); /* a backs off a few times */
    node_open(&b, &loop, 2, "b", 21005, "c1");
    ck_assert_int_eq(net_peer_add(b.n, 1, "a", "127.0.0.1:21004"), 0);
    ck_assert(nt_run_until(&loop, both_connected, &w, 10000));
    raft_msg back = {.type = RAFT_MSG_VOTE_RESP, .from = 1, .to = 2, .term = 4, .reject = true};
    net_send_raft(a.n, &back, 1);
    w.count = 1;
    ck_assert(nt_run_until(&loop, b_got, &w, 10000));
    ck_assert(nt_msg_eq(&b.got[0], &back));
    node_forget(&b);

    /* A removed peer's link closes and its Hellos are refused. */
    net_peer_remove(b.n, 1);
    ck_assert(nt_run_until(&loop, a_lost_b, &w, 10000));
    nt_run_until(&loop, never, NULL, 300);
    ck_assert(!net_peer_connected(a.n, 2));

    net_close(a.n);
    net_close(b.n);
    net_close(c.n);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* ---- (f) the in-flight limit ---- */

static void job_three_requests(job *j) {
    j->fd = cli_open(j->port);
    JCHECK(j, j->fd >= 0);
    for (uint64_t id = 1; id <= 3; id++)
        JCHECK(j, cli_put(j->fd, id, "k", "v", 1));
    Kv__Response *r = cli_response(j->fd);
    JCHECK(j, r != NULL);
    JCHECK(j, r->id == 3 && r->code == KV_EBUSY && strstr(r->detail, "in flight") != NULL);
    kv__response__free_unpacked(r, NULL);
}

static void job_two_answers_then_more(job *j) {
    for (uint64_t id = 1; id <= 2; id++) {
        Kv__Response *r = cli_response(j->fd);
        JCHECK(j, r != NULL);
        JCHECK(j, r->id == id && r->code == 0);
        kv__response__free_unpacked(r, NULL);
    }
    JCHECK(j, cli_roundtrip(j->fd, 4, "room again"));
    close(j->fd);
}

START_TEST(test_inflight_limit) {
    fixture f;
    fixture_config(&f, 21007);
    f.cfg.conn_inflight_max = 2;
    fixture_open(&f);
    f.hold = true;
    job j = {.port = 21007};
    run_job(&f, &j, job_three_requests);
    ck_assert_int_eq(f.held_count, 2);
    net_stats s = stats(&f);
    ck_assert_uint_eq(s.busy_inflight, 1);
    ck_assert_uint_eq(s.requests, 3);
    /* Answered later (after "commit"), with the references kept. */
    for (int i = 0; i < 2; i++) {
        Kv__Response r = KV__RESPONSE__INIT;
        r.id = f.held[i]->id;
        ck_assert(!net_conn_closed(f.held_conn[i]));
        ck_assert_int_eq(net_reply(f.held_conn[i], &r), 0);
        net_conn_unref(f.held_conn[i]);
        kv__request__free_unpacked(f.held[i], NULL);
    }
    f.held_count = 0;
    f.hold = false;
    run_job(&f, &j, job_two_answers_then_more);
    fixture_close(&f);
}
END_TEST

/* ---- (g) answers to connections that are gone ---- */

static void job_ask_and_leave(job *j) {
    int fd = cli_open(j->port);
    JCHECK(j, fd >= 0);
    JCHECK(j, cli_put(fd, 1, "k", "v", 1));
    close(fd);
}

static void job_ask_and_stay(job *j) {
    j->fd = cli_open(j->port);
    JCHECK(j, j->fd >= 0);
    JCHECK(j, cli_put(j->fd, 2, "k", "v", 1));
}

static bool held_and_closed(void *arg) {
    fixture *f = arg;
    return f->held_count == 1 && stats(f).conns_open == 0;
}

static bool held_two(void *arg) {
    return ((fixture *)arg)->held_count == 2;
}

START_TEST(test_reply_after_close) {
    fixture f;
    fixture_config(&f, 21008);
    fixture_open(&f);
    f.hold = true;
    job j = {.port = 21008};
    run_job(&f, &j, job_ask_and_leave);
    ck_assert(nt_run_until(&f.loop, held_and_closed, &f, 10000));
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = 1;
    ck_assert(net_conn_closed(f.held_conn[0]));
    ck_assert_int_eq(net_reply(f.held_conn[0], &r), KV_ECLOSED);
    /* One held past net_close itself. */
    run_job(&f, &j, job_ask_and_stay);
    ck_assert(nt_run_until(&f.loop, held_two, &f, 10000));
    ck_assert_str_eq(net_conn_peer_addr(f.held_conn[1]), net_conn_peer_addr(f.held_conn[1]));
    ck_assert_ptr_nonnull(strstr(net_conn_peer_addr(f.held_conn[1]), "127.0.0.1:"));
    net_close(f.n);
    f.n = NULL;
    ck_assert(net_conn_closed(f.held_conn[1]));
    r.id = 2;
    ck_assert_int_eq(net_reply(f.held_conn[1], &r), KV_ECLOSED);
    close(j.fd);
    fixture_close(&f); /* unrefs both: freed now */
}
END_TEST

/* ---- net_open's errors ---- */

START_TEST(test_open_errors) {
    fixture f;
    fixture_config(&f, 21012);
    fixture_open(&f);
    net *other;
    ck_assert_int_eq(net_open(&f.cfg, &other), KV_EEXIST);
    net_config bad = f.cfg;
    const char *addrs[] = {"127.0.0.1",  "127.0.0.1:",      "127.0.0.1:99999", "::1:21013",
                           "[::1:21013", "300.0.0.1:21013", "127.0.0.1:21x"};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        bad.listen_addr = addrs[i];
        ck_assert_msg(net_open(&bad, &other) == KV_EINVAL, "%s accepted", addrs[i]);
    }
    bad.listen_addr = "127.0.0.1:21013";
    bad.conns_max = 0;
    ck_assert_int_eq(net_open(&bad, &other), KV_EINVAL);
    /* IPv6 loopback, where the host has it. */
    bad = f.cfg;
    bad.listen_addr = "[::1]:21013";
    int rc = net_open(&bad, &other);
    ck_assert(rc == 0 || rc == KV_EINVAL || rc == KV_EIO);
    if (rc == 0)
        net_close(other);
    fixture_close(&f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("net_loopback");
    TCase *tc = tcase_create("loopback");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_request_response);
    tcase_add_test(tc, test_bad_frames);
    tcase_add_test(tc, test_truncated_frame);
    tcase_add_test(tc, test_hello_refused);
    tcase_add_test(tc, test_peers_exchange_raft);
    tcase_add_test(tc, test_inflight_limit);
    tcase_add_test(tc, test_reply_after_close);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
