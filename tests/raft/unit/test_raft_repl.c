/* Raft unit tests: replication, commitment, flow control, limits. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "raft.h"
#include "tc.h"

/* ---- restart state built by hand ---- */

typedef struct logspec {
    uint64_t term;      /* hard state term */
    uint64_t terms[64]; /* terms of entries 2.. (entry 1: bootstrap conf) */
    size_t count;
    raft_entry ents[64 + 1];
} logspec;

static unsigned char conf3[256];
static size_t conf3_len;

/* The bootstrap CONF entry for voters 1..3, as raft encodes it. */
static void make_conf3(void) {
    raft_config cfg;
    raft_config_init(&cfg, 9);
    cfg.bootstrap.voters_count = 3;
    for (int i = 0; i < 3; i++) {
        cfg.bootstrap.voters[i] = (uint64_t)i + 1;
    }
    raft *r;
    ck_assert_int_eq(raft_new(&cfg, &r), 0);
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    ck_assert_uint_eq(rd.entries_count, 1);
    ck_assert_int_eq(rd.entries[0].type, RAFT_ENTRY_CONF);
    conf3_len = rd.entries[0].len;
    memcpy(conf3, rd.entries[0].data, conf3_len);
    raft_advance(r, &rd);
    raft_free(r);
}

static void spec_tweak(raft_config *cfg, void *arg) {
    logspec *specs = arg;
    logspec *s = &specs[cfg->id];
    memset(&cfg->bootstrap, 0, sizeof(cfg->bootstrap));
    cfg->hs.term = s->term;
    cfg->hs.commit = 1;
    s->ents[0] = (raft_entry){
        .index = 1, .term = 1, .type = RAFT_ENTRY_CONF, .data = conf3, .len = conf3_len};
    for (size_t i = 0; i < s->count; i++) {
        s->ents[i + 1] = (raft_entry){.index = i + 2, .term = s->terms[i], .data = "d", .len = 1};
    }
    cfg->entries = s->ents;
    cfg->entries_count = s->count + 1;
    cfg->applied = 1;
}

static bool drop_appends(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    return m->type == RAFT_MSG_APPEND;
}

/* Paper §5.4.2 (Figure 8): a leader counts replicas only for entries of its
 * own term; an older entry commits with them. */
START_TEST(test_commit_only_current_term_by_counting) {
    make_conf3();
    static logspec specs[4];
    memset(specs, 0, sizeof(specs));
    for (int i = 1; i <= 3; i++) {
        specs[i].term = 1;
        specs[i].terms[0] = 1;
        specs[i].count = 1;
    }
    tc c;
    tc_start(&c, 3, 3, spec_tweak, specs);
    c.drop = drop_appends;
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    ck_assert_uint_eq(raft_term(r), 2);
    ck_assert_uint_eq(raft_last_index(r), 3); /* old entry 2 (term 1), no-op 3 (term 2) */
    ck_assert_uint_eq(raft_persisted_index(r), 3);
    ck_assert_uint_eq(raft_commit_index(r), 1);
    /* a majority (leader + node 2) has entry 2 of term 1: not committed */
    raft_msg ack = {.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 2};
    ck_assert_int_eq(raft_step(r, &ack), 0);
    ck_assert_uint_eq(raft_commit_index(r), 1);
    /* the no-op of term 2 on a majority commits both */
    ack.index = 3;
    ck_assert_int_eq(raft_step(r, &ack), 0);
    ck_assert_uint_eq(raft_commit_index(r), 3);
    tc_free(&c);
}
END_TEST

/* The leader sends entries before its own write is durable, and counts
 * itself toward the commit only once raft_persisted() says so. */
START_TEST(test_leader_counts_itself_only_when_durable) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    tc_isolate(&c, 3, true);
    raft *r = c.n[1].r;
    c.n[1].hold_persist = true;
    uint64_t idx;
    ck_assert_int_eq(raft_propose(r, "abc", 3, &idx), 0);
    tc_ready(&c, 1);
    ck_assert_uint_lt(raft_persisted_index(r), idx);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_APPEND, 1, 2), 1); /* sent in parallel */
    tc_settle(&c);                                              /* node 2 writes and acknowledges */
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(r, 2, &p), 0);
    ck_assert_uint_eq(p.match, idx);
    ck_assert_uint_lt(raft_commit_index(r), idx); /* 1 of 3 durable: no */
    tc_persist(&c, 1);
    ck_assert_uint_eq(raft_commit_index(r), idx);
    tc_settle(&c);
    ck_assert_uint_eq(c.n[1].applied, idx);
    ck_assert_uint_eq(c.n[2].applied, idx);
    tc_free(&c);
}
END_TEST

/* A follower acknowledges only what it reported durable. */
START_TEST(test_follower_acks_only_durable) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    c.n[2].hold_persist = true;
    c.n[3].hold_persist = true;
    uint64_t idx;
    ck_assert_int_eq(raft_propose(c.n[1].r, "abc", 3, &idx), 0);
    tc_settle(&c);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_APPEND_RESP, 2, 1), 0);
    ck_assert_uint_lt(raft_commit_index(c.n[1].r), idx);
    tc_persist(&c, 2);
    tc_settle(&c);
    ck_assert_uint_eq(raft_commit_index(c.n[1].r), idx);
    tc_free(&c);
}
END_TEST

static int rejects;
static bool count_rejects(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    rejects += m->type == RAFT_MSG_APPEND_RESP && m->reject;
    return false;
}

/* Fast backtracking: a follower with 50 entries of an old term past the
 * divergence point costs one rejection, not one per entry. */
START_TEST(test_reject_hint_backtracks_by_term) {
    make_conf3();
    static logspec specs[4];
    memset(specs, 0, sizeof(specs));
    for (int i = 1; i <= 3; i += 2) {
        specs[i].term = 3;
        specs[i].count = 5;
        for (int k = 0; k < 5; k++) {
            specs[i].terms[k] = 3;
        }
    }
    specs[2].term = 2;
    specs[2].count = 50;
    for (int k = 0; k < 50; k++) {
        specs[2].terms[k] = 2;
    }
    tc c;
    tc_start(&c, 3, 3, spec_tweak, specs);
    rejects = 0;
    c.drop = count_rejects;
    tc_elect(&c, 1);
    ck_assert_int_eq(rejects, 1);
    raft *l = c.n[1].r, *f = c.n[2].r;
    ck_assert_uint_eq(raft_last_index(f), raft_last_index(l));
    for (uint64_t i = 1; i <= raft_last_index(l); i++) {
        uint64_t a, b;
        ck_assert_int_eq(raft_log_term(l, i, &a), 0);
        ck_assert_int_eq(raft_log_term(f, i, &b), 0);
        ck_assert_uint_eq(a, b);
    }
    ck_assert_uint_eq(raft_commit_index(f), raft_last_index(l));
    tc_free(&c);
}
END_TEST

static void small_window(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->max_inflight_msgs = 4;
    cfg->max_msg_bytes = 100;
}

/* Flow control: at most max_inflight_msgs appends of at most max_msg_bytes
 * are in flight to a follower; acknowledgements open the window again. */
START_TEST(test_inflight_limit) {
    tc c;
    tc_start(&c, 3, 3, small_window, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(r, 2, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_REPLICATE);
    tc_propose(&c, 1, 20, 100);
    tc_ready(&c, 1);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_APPEND, 1, 2), 4);
    for (size_t i = 0; i < c.q_count; i++) {
        if (c.q[i].type == RAFT_MSG_APPEND) {
            ck_assert_uint_eq(c.q[i].entries_count, 1); /* 100 bytes each */
        }
    }
    ck_assert_int_eq(raft_progress(r, 2, &p), 0);
    ck_assert_uint_eq(p.inflight, 4);
    tc_settle(&c);
    ck_assert_uint_eq(raft_commit_index(r), raft_last_index(r));
    ck_assert_uint_eq(c.n[2].applied_normal, 20);
    tc_free(&c);
}
END_TEST

/* One message carries many small entries (batching up to max_msg_bytes). */
START_TEST(test_batching_into_one_message) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    tc_propose(&c, 1, 50, 10);
    tc_ready(&c, 1);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_APPEND, 1, 2), 1);
    ck_assert_uint_eq(c.q[0].entries_count, 50);
    tc_settle(&c);
    ck_assert_uint_eq(c.n[3].applied_normal, 50);
    tc_free(&c);
}
END_TEST

static void msg_limit_1000(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->max_msg_bytes = 1000;
}

/* An APPEND holds entries up to max_msg_bytes, each counted as its payload
 * plus KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES (what it costs in a frame): at the
 * limit exactly 10 entries of 1000 / 10 bytes go together, one byte more
 * each and only 9 do; empty entries count too. */
START_TEST(test_msg_bytes_count_wire_overhead) {
    const size_t at = 1000 / 10 - KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES;
    const size_t lens[3] = {at, at + 1, 0};
    const size_t per_msg[3] = {10, 9, 1000 / KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES};
    for (int k = 0; k < 3; k++) {
        tc c;
        tc_start(&c, 3, 3, msg_limit_1000, NULL);
        tc_elect(&c, 1);
        tc_propose(&c, 1, 30, lens[k]);
        tc_ready(&c, 1);
        ck_assert_uint_gt(tc_queued(&c, RAFT_MSG_APPEND, 1, 2), 1);
        int first = 0;
        for (size_t i = 0; i < c.q_count; i++) {
            if (c.q[i].type == RAFT_MSG_APPEND && c.q[i].to == 2 && c.q[i].index == 2) {
                ck_assert_uint_eq(c.q[i].entries_count, per_msg[k]);
                first++;
            }
        }
        ck_assert_int_eq(first, 1);
        tc_settle(&c);
        ck_assert_uint_eq(c.n[2].applied_normal, 30);
        tc_free(&c);
    }
    /* past KV_RAFT_MSG_BYTES_MAX an APPEND could outgrow a frame */
    raft_config cfg;
    raft_config_init(&cfg, 1);
    raft *r;
    cfg.max_msg_bytes = KV_RAFT_MSG_BYTES_MAX + 1;
    ck_assert_int_eq(raft_new(&cfg, &r), KV_EINVAL);
    cfg.max_msg_bytes = KV_RAFT_MSG_BYTES_MAX;
    cfg.max_entry_bytes = KV_ENTRY_BYTES_MAX + 1;
    ck_assert_int_eq(raft_new(&cfg, &r), KV_EINVAL);
}
END_TEST

static void small_limits(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->max_uncommitted_bytes = 1000;
    cfg->max_entry_bytes = 700;
}

/* Uncommitted bytes past the limit: KV_EBUSY and nothing kept; at the limit
 * accepted. An entry past max_entry_bytes: KV_ETOOBIG. */
START_TEST(test_uncommitted_limit) {
    tc c;
    tc_start(&c, 3, 3, small_limits, NULL);
    tc_elect(&c, 1);
    tc_isolate(&c, 2, true);
    tc_isolate(&c, 3, true);
    raft *r = c.n[1].r;
    static char buf[1000];
    ck_assert_int_eq(raft_propose(r, buf, 701, NULL), KV_ETOOBIG);
    ck_assert_int_eq(raft_propose(r, buf, 700, NULL), 0);
    ck_assert_int_eq(raft_propose(r, buf, 600, NULL), KV_EBUSY);
    uint64_t last = raft_last_index(r);
    ck_assert_int_eq(raft_propose(r, buf, 300, NULL), 0); /* exactly 1000 */
    ck_assert_uint_eq(raft_uncommitted_bytes(r), 1000);
    ck_assert_int_eq(raft_propose(r, buf, 1, NULL), KV_EBUSY);
    ck_assert_uint_eq(raft_last_index(r), last + 1);
    tc_settle(&c);
    tc_isolate(&c, 2, false);
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 2);
    ck_assert_uint_eq(raft_commit_index(r), raft_last_index(r));
    ck_assert_uint_eq(raft_uncommitted_bytes(r), 0);
    ck_assert_int_eq(raft_propose(r, buf, 600, NULL), 0);
    tc_free(&c);
}
END_TEST

/* A lost append is recovered through the heartbeat path. */
START_TEST(test_lost_appends_recovered) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    tc_propose(&c, 1, 5, 10);
    tc_ready(&c, 1);
    tc_drop_queued(&c, RAFT_MSG_APPEND, 1, 2);
    tc_settle(&c);
    tc_propose(&c, 1, 5, 10);
    tc_settle(&c);
    tc_tick_all(&c, 3);
    ck_assert_uint_eq(c.n[2].applied_normal, 10);
    tc_free(&c);
}
END_TEST

/* Follower 2 with durable entries 1 (conf) and 2..3 of term 1, restarted
 * from hs and the given log (term-1 data "old"). */
static raft *follower_from(raft_hard_state hs, const raft_entry *ents, size_t n) {
    raft_config cfg;
    raft_config_init(&cfg, 2);
    cfg.hs = hs;
    cfg.entries = ents;
    cfg.entries_count = n;
    cfg.applied = 1;
    raft *r = NULL;
    ck_assert_int_eq(raft_new(&cfg, &r), 0);
    return r;
}

/* raft.h step 1 lets the app write rd.hs (commit only changed) before the
 * Ready's entries. A crash between must not make the OLD entries that the
 * Ready replaces committed on restart: rd.hs.commit stays within what was
 * durable before. */
START_TEST(test_hs_commit_never_covers_unwritten_entries) {
    make_conf3();
    raft_entry old[3] = {
        {.index = 1, .term = 1, .type = RAFT_ENTRY_CONF, .data = conf3, .len = conf3_len},
        {.index = 2, .term = 1, .data = "old", .len = 3},
        {.index = 3, .term = 1, .data = "old", .len = 3},
    };
    raft *r = follower_from((raft_hard_state){.term = 1, .commit = 1}, old, 3);
    /* the leader of term 2 replaces 2..3 and says both are committed */
    raft_entry neu[2] = {{.index = 2, .term = 2, .data = "new", .len = 3},
                         {.index = 3, .term = 2, .data = "new", .len = 3}};
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = 2,
                  .index = 1,
                  .log_term = 1,
                  .entries = neu,
                  .entries_count = 2,
                  .commit = 3};
    ck_assert_int_eq(raft_step(r, &m), 0);
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    ck_assert_uint_eq(rd.entries_count, 2);
    raft_hard_state hs = rd.hs; /* written first; the crash comes before the entries */
    raft_advance(r, &rd);
    raft_free(r);
    r = follower_from(hs, old, 3);
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    for (size_t i = 0; i < rd.committed_count; i++) {
        ck_assert_uint_ne(rd.committed[i].term, 1); /* never applies "old" 2..3 */
    }
    raft_advance(r, &rd);
    raft_free(r);
    ck_assert_uint_le(hs.commit, 1);
}
END_TEST

START_TEST(test_msg_copy) {
    raft_entry e[2] = {{.index = 5, .term = 2, .data = "hello", .len = 5},
                       {.index = 6, .term = 2, .type = RAFT_ENTRY_NOOP}};
    char chunk[3] = {1, 2, 3};
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = 2,
                  .index = 4,
                  .entries = e,
                  .entries_count = 2,
                  .snap_data = chunk,
                  .snap_len = 3};
    raft_msg c;
    ck_assert_int_eq(raft_msg_copy(&c, &m), 0);
    ck_assert_ptr_ne(c.entries, e);
    ck_assert_uint_eq(c.entries[0].len, 5);
    ck_assert_int_eq(memcmp(c.entries[0].data, "hello", 5), 0);
    ck_assert_ptr_null(c.entries[1].data);
    ck_assert_int_eq(memcmp(c.snap_data, chunk, 3), 0);
    raft_msg_free(&c);
    ck_assert_ptr_null(c.entries);
}
END_TEST

Suite *repl_suite(void) {
    Suite *s = suite_create("raft_repl");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_commit_only_current_term_by_counting);
    tcase_add_test(t, test_leader_counts_itself_only_when_durable);
    tcase_add_test(t, test_follower_acks_only_durable);
    tcase_add_test(t, test_reject_hint_backtracks_by_term);
    tcase_add_test(t, test_inflight_limit);
    tcase_add_test(t, test_batching_into_one_message);
    tcase_add_test(t, test_msg_bytes_count_wire_overhead);
    tcase_add_test(t, test_uncommitted_limit);
    tcase_add_test(t, test_lost_appends_recovered);
    tcase_add_test(t, test_msg_copy);
    tcase_add_test(t, test_hs_commit_never_covers_unwritten_entries);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(repl_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
