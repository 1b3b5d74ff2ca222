/* Raft unit tests: snapshots, compaction and chunked, resumable transfer. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "raft.h"
#include "tc.h"

#define CHUNK KV_SNAPSHOT_CHUNK_BYTES
#define SNAP_BYTES (2u * CHUNK + CHUNK / 2) /* three chunks, the last short */

/* Node 3 falls behind a compacted log; returns the snapshot index. */
static uint64_t lag_and_compact(tc *c) {
    tc_start(c, 3, 3, NULL, NULL);
    tc_elect(c, 1);
    tc_isolate(c, 3, true);
    tc_propose(c, 1, 30, 64);
    tc_settle(c);
    raft *r = c->n[1].r;
    ck_assert_uint_eq(c->n[1].applied, raft_last_index(r));
    tc_snapshot(c, 1, SNAP_BYTES);
    tc_snapshot(c, 2, SNAP_BYTES); /* same index, same bytes */
    ck_assert_int_eq(raft_compact(r, raft_snapshot_index(r)), 0);
    ck_assert_int_eq(raft_compact(c->n[2].r, raft_snapshot_index(r)), 0);
    ck_assert_uint_eq(raft_first_index(r), raft_snapshot_index(r) + 1);
    uint64_t t;
    ck_assert_int_eq(raft_log_term(r, 2, &t), KV_ECOMPACTED);
    return raft_snapshot_index(r);
}

static void check_caught_up(tc *c, uint64_t snap_index) {
    tc_node *f = &c->n[3], *l = &c->n[1];
    ck_assert_uint_eq(f->installed_index, snap_index);
    ck_assert_uint_eq(f->rcv_len, l->snap_len);
    ck_assert_int_eq(memcmp(f->rcv, l->snap, l->snap_len), 0);
    ck_assert_int_eq(f->chunks_stored, 3); /* no chunk stored twice */
    ck_assert_uint_eq(raft_first_index(f->r), snap_index + 1);
    ck_assert_uint_eq(f->applied, raft_commit_index(l->r));
    ck_assert(f->has_membership);
    ck_assert_uint_eq(f->membership.voters_count, 3);
}

static int chunk1_drops;
static bool drop_chunk1_once(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    if (m->type == RAFT_MSG_SNAPSHOT && m->snap_offset == CHUNK && chunk1_drops == 0) {
        chunk1_drops++;
        return true;
    }
    return false;
}

/* A lagging follower gets the snapshot in chunks; a lost chunk is resent
 * from the offset the follower acknowledged, after a timeout. */
START_TEST(test_snapshot_resumes_after_dropped_chunk) {
    tc c;
    uint64_t si = lag_and_compact(&c);
    chunk1_drops = 0;
    c.drop = drop_chunk1_once;
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 1);
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(c.n[1].r, 3, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_SNAPSHOT);
    ck_assert_uint_eq(p.snap_index, si);
    ck_assert_uint_eq(p.snap_offset, CHUNK); /* chunk 0 acknowledged, 1 lost */
    ck_assert_uint_eq(raft_snapshot_sending(c.n[1].r), si);
    ck_assert_int_eq(chunk1_drops, 1);
    ck_assert_int_eq(c.n[3].chunks_stored, 1);
    tc_tick_all(&c, 12); /* the chunk timeout (election_ticks) */
    check_caught_up(&c, si);
    ck_assert_uint_eq(c.sent[RAFT_MSG_SNAPSHOT], 5); /* 3 + chunks 1 and 2 again */
    ck_assert_int_eq(raft_progress(c.n[1].r, 3, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_REPLICATE);
    ck_assert_uint_eq(raft_snapshot_sending(c.n[1].r), 0);
    /* and replicates normally afterwards */
    tc_propose(&c, 1, 2, 10);
    tc_settle(&c);
    ck_assert_uint_eq(c.n[3].applied, raft_commit_index(c.n[1].r));
    tc_free(&c);
}
END_TEST

static int chunks_let;
static bool let_one_chunk(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    if (m->type == RAFT_MSG_SNAPSHOT && m->to == 3) {
        return chunks_let-- <= 0;
    }
    return false;
}

/* lag_and_compact, then node 3 back with one chunk of the snapshot let
 * through (the rest dropped while c.drop stays let_one_chunk). */
static uint64_t lag_and_one_chunk(tc *c) {
    uint64_t si = lag_and_compact(c);
    chunks_let = 1;
    c->drop = let_one_chunk;
    tc_isolate(c, 3, false);
    tc_tick_all(c, 1);
    ck_assert_int_eq(c->n[3].chunks_stored, 1);
    return si;
}

/* A transfer continues only with the node that began it: after a leader
 * change the new leader's snapshot (the same state, perhaps other bytes on a
 * real node) is received from offset 0, never spliced onto the old one. */
START_TEST(test_snapshot_starts_over_after_leader_change) {
    tc c;
    uint64_t si = lag_and_one_chunk(&c);
    c.drop = NULL;
    tc_isolate(&c, 1, true);
    for (int i = 0; i < 200 && tc_leader(&c) != 2; i++) {
        tc_tick_all(&c, 1);
    }
    ck_assert_uint_eq(tc_leader(&c), 2);
    tc_tick_all(&c, 3);
    /* node 2's snapshot has node 1's bytes here, yet it starts over */
    ck_assert_int_eq(memcmp(c.n[2].snap, c.n[1].snap, SNAP_BYTES), 0);
    tc_node *f = &c.n[3], *l = &c.n[2];
    ck_assert_uint_eq(f->installed_index, si);
    ck_assert_int_eq(memcmp(f->rcv, l->snap, l->snap_len), 0);
    ck_assert_int_eq(f->chunks_stored, 1 + 3); /* one from node 1, all three again from 2 */
    ck_assert_uint_eq(f->applied, raft_commit_index(l->r));
    tc_free(&c);
}
END_TEST

/* A reconnecting follower resumes where it was. */
START_TEST(test_snapshot_resumes_after_reconnect) {
    tc c;
    uint64_t si = lag_and_one_chunk(&c);
    tc_isolate(&c, 3, true);
    c.drop = NULL;
    tc_tick_all(&c, 25); /* resends into the void */
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 15);
    check_caught_up(&c, si);
    tc_free(&c);
}
END_TEST

/* The snapshot callback failing (the app deleted it) drops the transfer;
 * a newer snapshot is sent instead. */
START_TEST(test_snapshot_stale_restarts_with_newest) {
    tc c;
    lag_and_compact(&c);
    tc_node *l = &c.n[1];
    l->snap_index = 0; /* the callback now answers KV_ESTALE */
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 2);
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(l->r, 3, &p), 0);
    ck_assert_int_ne(p.state, RAFT_PROGRESS_SNAPSHOT);
    ck_assert_int_eq(c.n[3].chunks_stored, 0);
    tc_propose(&c, 1, 3, 10);
    tc_settle(&c);
    tc_snapshot(&c, 1, SNAP_BYTES); /* a newer one */
    tc_tick_all(&c, 5);
    ck_assert_uint_eq(c.n[3].installed_index, raft_snapshot_index(l->r));
    ck_assert_uint_eq(c.n[3].applied, raft_commit_index(l->r));
    tc_free(&c);
}
END_TEST

static bool drop_snapshots(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    return m->type == RAFT_MSG_SNAPSHOT;
}

/* The app's compaction as kvd's (server_snap.c): up to the floor, at most
 * to the snapshot. */
static void compact_as_kvd(raft *l) {
    uint64_t floor = raft_compact_floor(l), snap = raft_snapshot_index(l);
    ck_assert_int_eq(raft_compact(l, floor > 0 && floor - 1 < snap ? floor - 1 : snap), 0);
}

/* The leader takes a newer snapshot at its applied index while it still
 * sends the older one (kvd keeps serving the one in flight). */
static void snapshot_keep_serving(raft *l) {
    uint64_t a = raft_applied_index(l), t;
    ck_assert_int_eq(raft_log_term(l, a, &t), 0);
    ck_assert_int_eq(raft_snapshot_done(l, a, t), 0);
}

/* Five more entries through the leader, node 1, then its snapshot and
 * compaction as kvd's. */
static void five_more_and_compact(tc *c) {
    raft *l = c->n[1].r;
    tc_propose(c, 1, 5, 64);
    tc_settle(c);
    snapshot_keep_serving(l);
    compact_as_kvd(l);
}

/* A follower receiving a snapshot holds the leader's log from that
 * snapshot on, so once it has installed it, it catches up from the log.
 * Compacted past it under load, it was sent snapshot after snapshot and
 * never caught up: kv-jepsen seed 545939767953 ("n3 did not become a
 * voter within 30 s", a learner installing a snapshot a second). */
START_TEST(test_snapshot_receiver_holds_the_log) {
    tc c;
    uint64_t si = lag_and_one_chunk(&c);
    raft *l = c.n[1].r;
    /* silent for three election timeouts (kvd restores on its loop: a
     * second or more under load) */
    tc_isolate(&c, 3, true);
    tc_tick_all(&c, 30);
    tc_propose(&c, 1, 20, 64);
    tc_settle(&c);
    ck_assert_uint_gt(raft_applied_index(l), si + 19);
    snapshot_keep_serving(l);
    compact_as_kvd(l);
    ck_assert_uint_le(raft_first_index(l), si + 1);
    c.drop = NULL;
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 15); /* the chunk timeout resends chunk 1 */
    check_caught_up(&c, si);
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(l, 3, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_REPLICATE);
    /* once it replicates, its match is the floor: the leader keeps only the
     * last entry, which every follower has */
    five_more_and_compact(&c);
    ck_assert_uint_eq(raft_first_index(l), raft_applied_index(l));
    /* one replicating holds the floor while heard from in the current
     * window only (a stopped follower gets a snapshot as before) */
    tc_isolate(&c, 3, true);
    five_more_and_compact(&c);
    ck_assert_uint_eq(raft_first_index(l), raft_applied_index(l) - 5); /* node 3's match */
    tc_tick_all(&c, 20);
    five_more_and_compact(&c);
    ck_assert_uint_eq(raft_first_index(l), raft_applied_index(l));
    tc_free(&c);
}
END_TEST

static void keep_1000_bytes(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->max_kept_bytes = 1000;
}

/* The log kept for a follower behind is bounded (cfg.max_kept_bytes): past
 * it the floor leaves the follower behind, which gets a snapshot. */
START_TEST(test_compact_floor_bounded) {
    tc c;
    tc_start(&c, 3, 3, keep_1000_bytes, NULL);
    tc_elect(&c, 1);
    raft *l = c.n[1].r;
    tc_propose(&c, 1, 5, 64);
    tc_settle(&c);
    uint64_t behind = raft_applied_index(l);
    c.n[3].hold_persist = true; /* answers heartbeats, acknowledges no entry */
    tc_propose(&c, 1, 10, 64);
    tc_settle(&c);
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(l, 3, &p), 0);
    ck_assert(p.recent_active);
    ck_assert_uint_eq(p.match, behind);
    ck_assert_uint_eq(raft_compact_floor(l), behind); /* 640 bytes: kept */
    tc_propose(&c, 1, 30, 64);
    tc_settle(&c);
    /* 15 entries of 64 bytes fit in 1000 */
    ck_assert_uint_eq(raft_compact_floor(l), raft_applied_index(l) - 14);
    tc_free(&c);
}
END_TEST

/* A follower that already has what a snapshot covers refuses it with its
 * durable committed index; the leader then does not resend at once (a
 * refusal storm filled memory in raft-sim seed 1024). */
START_TEST(test_snapshot_refused_no_storm) {
    tc c;
    uint64_t si = lag_and_compact(&c);
    c.drop = drop_snapshots;
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 1);
    raft *l = c.n[1].r;
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(l, 3, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_SNAPSHOT);
    uint64_t sent = c.sent[RAFT_MSG_SNAPSHOT];
    raft_msg no = {.type = RAFT_MSG_SNAPSHOT_RESP,
                   .from = 3,
                   .to = 1,
                   .term = raft_term(l),
                   .reject = true,
                   .index = 2};
    no.snap.index = si;
    ck_assert_int_eq(raft_log_term(l, si, &no.snap.term), 0);
    ck_assert_int_eq(raft_step(l, &no), 0);
    tc_ready(&c, 1);
    ck_assert_uint_eq(c.sent[RAFT_MSG_SNAPSHOT], sent);
    ck_assert_int_eq(raft_progress(l, 3, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_PROBE);
    ck_assert_uint_eq(p.match, 2);
    /* the follower side: a snapshot not newer than its commit is refused */
    raft *f = c.n[2].r;
    raft_msg snap = {.type = RAFT_MSG_SNAPSHOT,
                     .from = 1,
                     .to = 2,
                     .term = raft_term(f),
                     .snap_total = 10,
                     .snap_len = 0};
    snap.snap.index = raft_commit_index(f) - 1;
    snap.snap.term = 1;
    snap.snap.membership = (raft_membership){.voters_count = 3, .voters = {1, 2, 3}};
    tc_settle(&c);
    c.drop = NULL;
    ck_assert_int_eq(raft_step(f, &snap), 0);
    tc_ready(&c, 2);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_SNAPSHOT_RESP, 2, 1), 1);
    ck_assert(c.q[c.q_count - 1].reject);
    ck_assert_uint_eq(c.q[c.q_count - 1].index, raft_commit_index(f));
    tc_free(&c);
}
END_TEST

/* A follower whose log holds the snapshot's last entry keeps its log: no
 * install, which would drop entries it may have acknowledged (paper §7;
 * raft-sim finding F1), whether the entries came before the chunk or
 * between the last chunk and the install. */
START_TEST(test_snapshot_not_installed_over_matching_log) {
    for (int before = 0; before <= 1; before++) {
        raft_config cfg;
        raft_config_init(&cfg, 2);
        cfg.bootstrap.voters_count = 3;
        for (int i = 0; i < 3; i++) {
            cfg.bootstrap.voters[i] = (uint64_t)i + 1;
        }
        raft *f;
        ck_assert_int_eq(raft_new(&cfg, &f), 0);
        raft_entry e[4];
        for (int i = 0; i < 4; i++) {
            e[i] = (raft_entry){.index = (uint64_t)i + 2, .term = 2, .data = "x", .len = 1};
        }
        raft_msg app = {.type = RAFT_MSG_APPEND,
                        .from = 1,
                        .to = 2,
                        .term = 2,
                        .index = 1,
                        .log_term = 1,
                        .entries = e,
                        .entries_count = 4,
                        .commit = 1};
        raft_msg snap = {.type = RAFT_MSG_SNAPSHOT,
                         .from = 1,
                         .to = 2,
                         .term = 2,
                         .snap_total = 3,
                         .snap_len = 3,
                         .snap_data = "abc",
                         .snap_last = true};
        snap.snap.index = 4;
        snap.snap.term = 2;
        snap.snap.membership = cfg.bootstrap;
        struct raft_ready rd;
        if (before) {
            ck_assert_int_eq(raft_step(f, &app), 0);
        }
        ck_assert_int_eq(raft_step(f, &snap), 0);
        ck_assert_int_eq(raft_ready(f, &rd), 0);
        ck_assert(rd.has_chunk == !before);
        raft_advance(f, &rd);
        if (!before) {
            ck_assert_int_eq(raft_step(f, &app), 0); /* install now pending */
        }
        ck_assert_int_eq(raft_ready(f, &rd), 0);
        ck_assert(!rd.has_snapshot);
        raft_advance(f, &rd);
        ck_assert_uint_eq(raft_last_index(f), 5);
        ck_assert_uint_eq(raft_commit_index(f), 4);
        ck_assert_uint_eq(raft_first_index(f), 1);
        raft_free(f);
    }
}
END_TEST

START_TEST(test_snapshot_done_checks) {
    tc c;
    tc_start(&c, 1, 1, NULL, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    ck_assert_int_eq(raft_compact(r, 1), KV_EINVAL); /* no snapshot yet */
    uint64_t a = raft_applied_index(r), t;
    ck_assert_int_eq(raft_log_term(r, a, &t), 0);
    ck_assert_int_eq(raft_snapshot_done(r, a + 1, t), KV_EINVAL); /* not applied */
    ck_assert_int_eq(raft_snapshot_done(r, a, t + 1), KV_EINVAL); /* wrong term */
    ck_assert_int_eq(raft_snapshot_done(r, a, t), 0);
    ck_assert_int_eq(raft_snapshot_done(r, a, t), KV_ESTALE);
    ck_assert_int_eq(raft_compact(r, a + 100), 0); /* clamped */
    ck_assert_uint_eq(raft_first_index(r), a + 1);
    tc_propose(&c, 1, 1, 5);
    tc_settle(&c);
    ck_assert_uint_eq(raft_commit_index(r), a + 1);
    tc_free(&c);
}
END_TEST

/* A restarted node takes its snapshot and log back. */
START_TEST(test_restart_from_snapshot) {
    raft_config cfg;
    raft_config_init(&cfg, 1);
    cfg.has_snapshot = true;
    cfg.snapshot.index = 10;
    cfg.snapshot.term = 3;
    cfg.snapshot.membership.voters_count = 1;
    cfg.snapshot.membership.voters[0] = 1;
    raft_entry e[2] = {{.index = 11, .term = 3, .data = "a", .len = 1},
                       {.index = 12, .term = 4, .data = "b", .len = 1}};
    cfg.entries = e;
    cfg.entries_count = 2;
    cfg.hs = (raft_hard_state){.term = 4, .vote = 1, .commit = 11};
    cfg.applied = 10;
    raft *r;
    ck_assert_int_eq(raft_new(&cfg, &r), 0);
    ck_assert_uint_eq(raft_first_index(r), 11);
    ck_assert_uint_eq(raft_last_index(r), 12);
    ck_assert_uint_eq(raft_commit_index(r), 11);
    ck_assert_uint_eq(raft_term(r), 4);
    ck_assert(raft_has_ready(r)); /* entry 11 to apply */
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    ck_assert(!rd.hs_changed);
    ck_assert_uint_eq(rd.entries_count, 0);
    ck_assert_uint_eq(rd.committed_count, 1);
    ck_assert_uint_eq(rd.committed[0].index, 11);
    raft_advance(r, &rd);
    raft_free(r);
    e[1].index = 14; /* a gap */
    ck_assert_int_eq(raft_new(&cfg, &r), KV_EINVAL);
}
END_TEST

Suite *snap_suite(void) {
    Suite *s = suite_create("raft_snap");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_snapshot_resumes_after_dropped_chunk);
    tcase_add_test(t, test_snapshot_starts_over_after_leader_change);
    tcase_add_test(t, test_snapshot_resumes_after_reconnect);
    tcase_add_test(t, test_snapshot_stale_restarts_with_newest);
    tcase_add_test(t, test_snapshot_receiver_holds_the_log);
    tcase_add_test(t, test_compact_floor_bounded);
    tcase_add_test(t, test_snapshot_refused_no_storm);
    tcase_add_test(t, test_snapshot_not_installed_over_matching_log);
    tcase_add_test(t, test_snapshot_done_checks);
    tcase_add_test(t, test_restart_from_snapshot);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(snap_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
