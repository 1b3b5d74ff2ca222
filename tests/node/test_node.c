/*
 * Unit tests of src/node (node.h): the Ready loop's order and answers, with a
 * fake half of node_io.
 *
 * The fake, and the checks it makes as the node calls it (so every test
 * makes them): node_fake.h.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "node/node.h"

#include "node_fake.h"

/* ---- the tests ------------------------------------------------------------------- */

/* Term and vote are on disk before any message that carries them leaves:
 * the candidate's VOTE requests and the voters' grants (the fake's send
 * checks each message against the fake disk). */
START_TEST(test_hard_state_durable_before_send) {
    fk_cluster *c = fk_new(3, false, true);
    ck_assert_int_eq(raft_campaign(node_raft(c->n[1].nd)), 0);
    fk_run(c, 1);
    ck_assert_uint_eq(c->n[1].hs.term, 2);
    ck_assert_uint_eq(c->n[1].hs.vote, 1);
    ck_assert_uint_eq(c->net_count, 2); /* a VOTE to each peer, checked at send */
    ck_assert_int_eq(c->net[0].type, RAFT_MSG_VOTE);
    fk_deliver_all(c);
    ck_assert_uint_eq(fk_leader(c), 1);
    for (uint32_t id = 2; id <= 3; id++) {
        ck_assert_uint_eq(c->n[id].hs.term, 2);
        ck_assert_uint_eq(c->n[id].hs.vote, 1); /* the grant was sent after this */
        ck_assert_uint_ge(c->n[id].hs_saves, 1);
        ck_assert_uint_ge(c->n[id].msgs_sent, 1);
    }
    /* with PreVote too: a new term's messages only after its hard state */
    fk_cluster *p = fk_new(3, true, true);
    fk_elect(p, 2);
    ck_assert_uint_eq(p->n[2].hs.vote, 2);
    fk_free(p);
    fk_free(c);
}
END_TEST

/* A write is answered only once its entry is applied, in index order,
 * exactly once (the fake checks each answer against its state machine). */
START_TEST(test_write_answered_after_apply) {
    fk_cluster *c = fk_new(1, true, true);
    fk_elect(c, 1);
    c->n[1].manual_sync = true;
    ck_assert_int_eq(fk_propose(c, 1, "a"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "b"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "c"), 0);
    ck_assert(!c->writes[0].answered && !c->writes[1].answered && !c->writes[2].answered);
    ck_assert_uint_lt(c->n[1].applied, c->writes[0].index);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 3);
    fk_sync(c, 1); /* durable: commits, applies, answers */
    for (size_t i = 0; i < 3; i++) {
        ck_assert(c->writes[i].answered);
        ck_assert_int_eq(c->writes[i].code, 0);
    }
    ck_assert_uint_eq(c->n[1].applied, c->writes[2].index);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 0);
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 0);
    fk_free(c);

    /* three nodes: not before a quorum has it and the leader applied it */
    c = fk_new(3, true, true);
    fk_elect(c, 1);
    ck_assert_int_eq(fk_propose(c, 1, "x"), 0);
    ck_assert(!c->writes[0].answered);
    fk_deliver_all(c);
    ck_assert(c->writes[0].answered);
    ck_assert_int_eq(c->writes[0].code, 0);
    fk_free(c);
}
END_TEST

/* The isolated leader's write is replaced by the next leader's entries: its
 * client hears "outcome unknown" (NOTLEADER), never "done". */
START_TEST(test_replaced_write_outcome_unknown) {
    fk_cluster *c = fk_new(3, false, false);
    fk_elect(c, 1);
    fk_isolate(c, 1, true);
    ck_assert_int_eq(fk_propose(c, 1, "x"), 0);
    uint64_t x_index = c->writes[0].index;
    fk_deliver_all(c); /* lost */
    fk_elect(c, 2);
    ck_assert_int_eq(fk_propose(c, 2, "y"), 0);
    fk_deliver_all(c);
    ck_assert(c->writes[1].answered && c->writes[1].code == 0);
    ck_assert(node_is_leader(c->n[1].nd)); /* 1 has heard nothing yet */
    ck_assert(!c->writes[0].answered);
    fk_isolate(c, 1, false);
    fk_tick_all(c, 3);
    ck_assert(c->writes[0].answered);
    ck_assert_int_eq(c->writes[0].code, KV_ENOTLEADER);
    ck_assert_uint_ge(c->n[1].applied, x_index);
    ck_assert_uint_ne(c->n[1].sm[x_index - 1].term, c->writes[0].term); /* replaced */
    fk_check_acked(c);
    fk_free(c);
}
END_TEST

/* A leader that steps down answers every write and read it was waiting on
 * NOTLEADER, and accepts no more. */
START_TEST(test_step_down_fails_pending) {
    fk_cluster *c = fk_new(3, true, true);
    fk_elect(c, 1);
    fk_isolate(c, 1, true);
    ck_assert_int_eq(fk_propose(c, 1, "p1"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "p2"), 0);
    size_t r1, r2;
    ck_assert_int_eq(fk_ask_read(c, 1, &r1), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &r2), 0);
    fk_deliver_all(c);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 2);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 2);
    for (uint32_t t = 0; t < 40 && node_is_leader(c->n[1].nd); t++) {
        node_tick(c->n[1].nd); /* CheckQuorum: no majority heard */
        fk_run(c, 1);
        fk_deliver_all(c);
    }
    ck_assert(!node_is_leader(c->n[1].nd));
    ck_assert(c->writes[0].answered && c->writes[0].code == KV_ENOTLEADER);
    ck_assert(c->writes[1].answered && c->writes[1].code == KV_ENOTLEADER);
    ck_assert(c->reads[r1].answered && c->reads[r1].code == KV_ENOTLEADER);
    ck_assert(c->reads[r2].answered && c->reads[r2].code == KV_ENOTLEADER);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 0);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 0);
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 0);
    ck_assert_int_eq(fk_propose(c, 1, "p3"), KV_ENOTLEADER);
    ck_assert_int_eq(fk_ask_read(c, 1, &r1), KV_ENOTLEADER);
    fk_free(c);
}
END_TEST

/* Leader 1's disk is slow: a quorum of followers commits its write, so the
 * read's index covers it, but the leader has not applied it. The read is
 * confirmed and must wait for the apply. Returns the read's slot. */
static size_t fk_read_behind_apply(fk_cluster *c, const char *data) {
    c->n[1].manual_sync = true;
    ck_assert_int_eq(fk_propose(c, 1, data), 0);
    const fk_write *w = &c->writes[c->writes_count - 1];
    fk_deliver_all(c);
    ck_assert_uint_ge(raft_commit_index(node_raft(c->n[1].nd)), w->index);
    ck_assert_uint_lt(c->n[1].applied, w->index);
    size_t slot;
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    fk_deliver_all(c); /* the heartbeat round confirms it */
    ck_assert_uint_eq(raft_read_pending(node_raft(c->n[1].nd)), 0);
    ck_assert(!c->reads[slot].answered);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 1);
    return slot;
}

/* Reads: served only once the applied index covers the read index; a read
 * confirmed in a term the node then leaves is answered NOTLEADER, never
 * served; the next leader's reads cover everything acknowledged before. */
START_TEST(test_reads_apply_and_term_change) {
    fk_cluster *c = fk_new(3, false, true);
    fk_elect(c, 1);
    ck_assert_int_eq(fk_propose(c, 1, "a"), 0);
    fk_tick_all(c, 2);
    size_t r1 = fk_read_behind_apply(c, "b");
    fk_sync(c, 1);
    ck_assert(c->reads[r1].answered && c->reads[r1].code == 0);
    ck_assert_uint_ge(c->reads[r1].index, c->writes[1].index);
    ck_assert(c->writes[1].answered && c->writes[1].code == 0);

    /* the same, then a new term before the apply */
    size_t r2 = fk_read_behind_apply(c, "c");
    uint64_t term = raft_term(node_raft(c->n[1].nd));
    fk_isolate(c, 1, true); /* 2 and 3 elect a leader of a later term */
    for (uint32_t t = 0; t < 100 && fk_leader(c) == 1; t++) {
        for (uint64_t id = 2; id <= 3; id++) {
            node_tick(c->n[id].nd);
            fk_run(c, id);
        }
        fk_deliver_all(c);
    }
    ck_assert_uint_ne(fk_leader(c), 1);
    ck_assert(node_is_leader(c->n[1].nd)); /* 1 has heard nothing yet */
    ck_assert(!c->reads[r2].answered);
    fk_isolate(c, 1, false);
    fk_tick_all(c, 2);
    ck_assert_uint_gt(raft_term(node_raft(c->n[1].nd)), term);
    ck_assert(c->reads[r2].answered);
    ck_assert_int_eq(c->reads[r2].code, KV_ENOTLEADER);
    fk_sync(c, 1);
    fk_tick_all(c, 3);
    ck_assert_int_eq(c->reads[r2].code, KV_ENOTLEADER); /* still: answered once */

    /* the new leader: a read right after its election covers every write
     * acknowledged before it (the fake checks the floor) */
    uint64_t leader = fk_leader(c);
    ck_assert_uint_ne(leader, 0);
    ck_assert_uint_ne(leader, 1);
    size_t r3;
    ck_assert_int_eq(fk_ask_read(c, leader, &r3), 0);
    fk_tick_all(c, 3);
    ck_assert(c->reads[r3].answered && c->reads[r3].code == 0);
    ck_assert_uint_ge(c->reads[r3].index, c->writes[1].index);
    fk_check_acked(c);
    fk_free(c);
}
END_TEST

/* At the pending-bytes and reads limits: accepted; one past: KV_EBUSY; free
 * again once answered. */
START_TEST(test_limits_busy) {
    fk_cluster *c = fk_new(3, true, true);
    c->lim = (node_limits){.pending_bytes_max = 8, .reads_max = 2};
    for (uint32_t id = 1; id <= 3; id++) {
        fk_crash(c, id);
        fk_restart(c, id);
    }
    fk_elect(c, 1);
    ck_assert_int_eq(fk_propose(c, 1, "aaaa"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "bbbb"), 0); /* at the limit: 8 bytes */
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 8);
    ck_assert_int_eq(fk_propose(c, 1, "c"), KV_EBUSY);
    size_t slot;
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), KV_EBUSY);
    fk_deliver_all(c);
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 0);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 0);
    ck_assert_int_eq(fk_propose(c, 1, "c"), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    fk_free(c);
}
END_TEST

/* One run of the crash workload: writes through whoever leads, the victim
 * failing its nth call of one callback, crashed and restarted from its disk.
 * Returns whether the fault fired. */
static const char *fk_call_name(fk_call call) {
    static const char *names[] = {"none", "hs_save",    "snap_install", "snap_chunk",
                                  "send", "log_append", "apply"};
    return names[call];
}

static bool fk_crash_run(fk_call call, uint64_t victim, uint32_t nth) {
    fk_cluster *c = fk_new(3, true, true);
    c->n[victim].fail_call = call;
    c->n[victim].fail_nth = nth;
    ck_assert_int_eq(raft_campaign(node_raft(c->n[1].nd)), 0); /* 1 leads, unless it fails */
    fk_run(c, 1);
    for (uint32_t k = 0; k < 6; k++) {
        uint64_t leader = 0;
        for (uint32_t t = 0; t < 200 && (leader = fk_leader(c)) == 0; t++) {
            fk_restart_down(c);
            fk_tick_all(c, 1);
        }
        ck_assert_uint_ne(leader, 0);
        char data[16];
        snprintf(data, sizeof(data), "w%u", k);
        (void)fk_propose(c, leader, data); /* may find it gone: NOTLEADER */
        fk_tick_all(c, 2);
        fk_restart_down(c);
        fk_check_acked(c);
    }
    bool fired = c->faults_fired > 0;
    ck_assert_uint_le(c->faults_fired, 1);
    /* the cluster goes on: a last write is acknowledged and reaches all */
    c->n[victim].fail_call = FK_NONE;
    bool done = false;
    for (uint32_t t = 0; t < 200 && !done; t++) {
        fk_restart_down(c);
        fk_tick_all(c, 1);
        uint64_t leader = fk_leader(c);
        const fk_write *last = c->writes_count ? &c->writes[c->writes_count - 1] : NULL;
        if (last == NULL || strcmp(last->data, "final") != 0 || last->answered) {
            done = last != NULL && strcmp(last->data, "final") == 0 && last->code == 0;
            if (!done && leader != 0)
                (void)fk_propose(c, leader, "final");
        }
    }
    ck_assert_msg(done, "%s call %u of node %lu: the cluster did not commit again",
                  fk_call_name(call), nth, (unsigned long)victim);
    fk_tick_all(c, 3);
    for (uint32_t id = 1; id <= 3; id++)
        ck_assert_uint_ge(c->n[id].applied, c->acked_max);
    fk_check_acked(c);
    fk_free(c);
    return fired;
}

/* A snapshot sent to follower 3 (cut off while the leader compacted), with
 * node 3 failing its nth call of snap_chunk or snap_install. */
static bool fk_snap_crash_run(fk_call call, uint32_t nth) {
    fk_cluster *c = fk_new(3, true, true);
    fk_elect(c, 1);
    fk_isolate(c, 3, true);
    for (uint32_t k = 0; k < 4; k++) {
        char data[16];
        snprintf(data, sizeof(data), "s%u", k);
        ck_assert_int_eq(fk_propose(c, 1, data), 0);
        fk_tick_all(c, 1);
    }
    fk_snapshot(c, 1);
    uint64_t snap_index = c->n[1].snap.index;
    c->n[3].fail_call = call;
    c->n[3].fail_nth = nth;
    fk_isolate(c, 3, false);
    for (uint32_t t = 0; t < 300 && (c->n[3].nd == NULL || c->n[3].applied < snap_index); t++) {
        fk_restart_down(c);
        fk_tick_all(c, 1);
    }
    ck_assert_ptr_nonnull(c->n[3].nd);
    ck_assert_uint_ge(c->n[3].applied, snap_index);
    ck_assert(c->n[3].has_snap);
    bool fired = c->faults_fired > 0;
    ck_assert_int_eq(fk_propose(c, fk_leader(c), "final"), 0);
    fk_tick_all(c, 3);
    const fk_write *last = &c->writes[c->writes_count - 1];
    ck_assert(last->answered && last->code == 0);
    for (uint32_t id = 1; id <= 3; id++)
        ck_assert_uint_ge(c->n[id].applied, c->acked_max);
    fk_check_acked(c);
    fk_free(c);
    return fired;
}

/* A crash at every point of a Ready: each callback in turn fails at its
 * 1st, 2nd, ... call, until the workload no longer reaches that call:
 * hs_save, send, log_append, apply on the first leader (1) and on a
 * follower (2); snap_chunk, snap_install on a follower catching up. */
START_TEST(test_crash_at_every_point) {
    const fk_call calls[] = {FK_HS_SAVE, FK_SEND, FK_LOG_APPEND, FK_APPLY};
    uint32_t runs = 0;
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        for (uint64_t victim = 1; victim <= 2; victim++) {
            uint32_t nth = 1;
            while (fk_crash_run(calls[i], victim, nth)) {
                nth++;
                runs++;
                ck_assert_uint_lt(nth, FK_FAULT_NTH_MAX);
            }
            ck_assert_uint_gt(nth, 1); /* the point was reached at least once */
            printf("test_crash_at_every_point: %s of node %lu failed at calls 1..%u\n",
                   fk_call_name(calls[i]), (unsigned long)victim, nth - 1);
        }
    }
    const fk_call snap_calls[] = {FK_SNAP_CHUNK, FK_SNAP_INSTALL};
    for (size_t i = 0; i < 2; i++) {
        uint32_t nth = 1;
        while (fk_snap_crash_run(snap_calls[i], nth)) {
            nth++;
            runs++;
            ck_assert_uint_lt(nth, FK_FAULT_NTH_MAX);
        }
        ck_assert_uint_gt(nth, 1);
        printf("test_crash_at_every_point: %s of node 3 failed at calls 1..%u\n",
               fk_call_name(snap_calls[i]), nth - 1);
    }
    ck_assert_uint_gt(runs, 0);
}
END_TEST

/* node_log_durable from inside log_append reaches raft only after
 * raft_advance (the fake checks raft's persisted index does not move inside
 * the Ready), and is not lost: the write commits in the same node_run. */
START_TEST(test_log_durable_held_until_advance) {
    fk_cluster *c = fk_new(1, true, true);
    fk_elect(c, 1);
    uint64_t checks = c->n[1].held_checks;
    ck_assert_int_eq(fk_propose(c, 1, "a"), 0);
    ck_assert_uint_gt(c->n[1].held_checks, checks);
    ck_assert_uint_eq(raft_persisted_index(node_raft(c->n[1].nd)), c->writes[0].index);
    ck_assert(c->writes[0].answered && c->writes[0].code == 0);
    ck_assert_uint_eq(node_applied(c->n[1].nd), c->writes[0].index);
    fk_free(c);
}
END_TEST

static Suite *node_suite(void) {
    Suite *s = suite_create("node");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_hard_state_durable_before_send);
    tcase_add_test(t, test_write_answered_after_apply);
    tcase_add_test(t, test_replaced_write_outcome_unknown);
    tcase_add_test(t, test_step_down_fails_pending);
    tcase_add_test(t, test_reads_apply_and_term_change);
    tcase_add_test(t, test_limits_busy);
    tcase_add_test(t, test_crash_at_every_point);
    tcase_add_test(t, test_log_durable_held_until_advance);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(node_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
