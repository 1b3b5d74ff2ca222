/* Raft unit tests: ReadIndex (thesis §6.4) and lease reads. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "raft.h"
#include "tc.h"

static bool drop_appends_flag;
static bool drop_appends(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    return drop_appends_flag && m->type == RAFT_MSG_APPEND;
}

/* A new leader serves no read until the no-op of its term is committed
 * (docs/rules.md "stale reads after an election"). */
START_TEST(test_no_read_before_noop_commits) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    drop_appends_flag = true;
    c.drop = drop_appends;
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    uint64_t noop = raft_last_index(r);
    ck_assert_uint_lt(raft_commit_index(r), noop);
    ck_assert_int_eq(raft_read_index(r, 42), 0);
    tc_settle(&c);
    tc_tick_all(&c, 3); /* heartbeats go round: still no read */
    ck_assert_uint_eq(c.n[1].reads_count, 0);
    ck_assert_uint_eq(raft_read_pending(r), 1);
    drop_appends_flag = false;
    tc_tick_all(&c, 2);
    ck_assert_uint_ge(raft_commit_index(r), noop);
    ck_assert_uint_eq(c.n[1].reads_count, 1);
    ck_assert_uint_eq(c.n[1].reads[0].ctx, 42);
    ck_assert_int_eq(c.n[1].reads[0].status, 0);
    ck_assert_uint_ge(c.n[1].reads[0].index, noop);
    tc_free(&c);
}
END_TEST

/* Two reads in one loop turn share one heartbeat round. */
START_TEST(test_read_index_batching) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    tc_propose(&c, 1, 3, 8);
    tc_settle(&c);
    uint64_t commit = raft_commit_index(r);
    ck_assert_int_eq(raft_read_index(r, 1), 0);
    ck_assert_int_eq(raft_read_index(r, 2), 0);
    tc_ready(&c, 1);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_HEARTBEAT, 1, 0), 2); /* one per follower */
    ck_assert_uint_eq(c.n[1].reads_count, 0);
    /* one follower's answer makes a quorum with the leader */
    tc_drop_queued(&c, RAFT_MSG_HEARTBEAT, 1, 3);
    tc_settle(&c);
    ck_assert_uint_eq(c.n[1].reads_count, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_uint_eq(c.n[1].reads[i].ctx, (uint64_t)i + 1);
        ck_assert_uint_eq(c.n[1].reads[i].index, commit);
        ck_assert_int_eq(c.n[1].reads[i].status, 0);
    }
    ck_assert_uint_eq(raft_read_pending(r), 0);
    /* a heartbeat answer of an earlier round does not confirm a later read */
    ck_assert_int_eq(raft_read_index(r, 3), 0);
    tc_ready(&c, 1);
    tc_drop_queued(&c, RAFT_MSG_HEARTBEAT, 1, 0);
    raft_msg old = {
        .type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = raft_term(r), .context = 1};
    ck_assert_int_eq(raft_step(r, &old), 0);
    tc_ready(&c, 1);
    ck_assert_uint_eq(c.n[1].reads_count, 2);
    tc_tick_all(&c, 1); /* the next heartbeat round confirms it */
    ck_assert_uint_eq(c.n[1].reads_count, 3);
    tc_free(&c);
}
END_TEST

static void two_pending(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->max_read_pending = 2;
}

START_TEST(test_read_pending_limit) {
    tc c;
    tc_start(&c, 3, 3, two_pending, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    ck_assert_int_eq(raft_read_index(r, 1), 0);
    ck_assert_int_eq(raft_read_index(r, 2), 0);
    ck_assert_int_eq(raft_read_index(r, 3), KV_EBUSY);
    tc_settle(&c);
    ck_assert_uint_eq(c.n[1].reads_count, 2);
    ck_assert_int_eq(raft_read_index(r, 3), 0);
    tc_free(&c);
}
END_TEST

/* Reads waiting when leadership is lost are answered KV_ENOTLEADER. */
START_TEST(test_reads_fail_on_step_down) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    tc_isolate(&c, 1, true);
    ck_assert_int_eq(raft_read_index(r, 9), 0);
    for (int i = 0; i < 25; i++) {
        tc_tick(&c, 1, 1);
        tc_settle(&c);
    }
    ck_assert_int_eq(raft_state_role(r), RAFT_FOLLOWER);
    ck_assert_uint_eq(c.n[1].reads_count, 1);
    ck_assert_int_eq(c.n[1].reads[0].status, KV_ENOTLEADER);
    tc_free(&c);
}
END_TEST

static void lease(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->lease_read = true;
}

/* Lease reads: once a quorum confirmed a recent heartbeat, no round of its
 * own. Before any confirmed heartbeat there is no lease: a round. */
START_TEST(test_lease_read) {
    tc c;
    tc_start(&c, 3, 3, lease, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    ck_assert_int_eq(raft_read_index(r, 4), 0);
    tc_ready(&c, 1);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_HEARTBEAT, 1, 0), 2);
    tc_settle(&c);
    ck_assert_uint_eq(c.n[1].reads_count, 1);
    tc_tick_all(&c, 1); /* a heartbeat round, confirmed */
    ck_assert_int_eq(raft_read_index(r, 5), 0);
    tc_ready(&c, 1);
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_HEARTBEAT, 1, 0), 0);
    ck_assert_uint_eq(c.n[1].reads_count, 2);
    ck_assert_uint_eq(c.n[1].reads[1].ctx, 5);
    ck_assert_uint_eq(c.n[1].reads[1].index, raft_commit_index(r));
    tc_free(&c);
}
END_TEST

/* Node 1 leads term t with a lease; a newer leader (term > t) exists. Node 1
 * must not answer a read at once (it would be stale): it may only answer
 * after a round, which it cannot complete. Returns whether it answered. */
static bool stale_lease_read(tc *c, uint64_t new_leader) {
    raft *old = c->n[1].r;
    ck_assert_int_eq(raft_state_role(c->n[new_leader].r), RAFT_LEADER);
    ck_assert_uint_gt(raft_term(c->n[new_leader].r), raft_term(old));
    tc_propose(c, new_leader, 1, 8);
    tc_settle(c);
    ck_assert_uint_gt(raft_commit_index(c->n[new_leader].r), raft_commit_index(old));
    ck_assert_int_eq(raft_state_role(old), RAFT_LEADER);
    size_t before = c->n[1].reads_count;
    ck_assert_int_eq(raft_read_index(old, 77), 0);
    tc_settle(c);
    return c->n[1].reads_count > before;
}

/* CheckQuorum steps a cut-off leader down only at the second check after
 * its last ack, up to 2 * election_ticks; the followers stop ignoring
 * campaigns election_ticks after it. Its lease must end before they do. */
START_TEST(test_lease_expires_before_followers_vote) {
    tc c;
    tc_start(&c, 3, 3, lease, NULL);
    tc_elect(&c, 1);
    tc_tick_all(&c, 1); /* confirmed round: lease; acks in this check window */
    tc_isolate(&c, 1, true);
    uint64_t leader = 0;
    for (int i = 0; i < 40 && leader == 0; i++) {
        tc_tick_all(&c, 1); /* the same clock everywhere */
        for (uint64_t id = 2; id <= 3; id++) {
            leader = raft_state_role(c.n[id].r) == RAFT_LEADER ? id : leader;
        }
    }
    ck_assert_uint_ne(leader, 0);
    ck_assert_int_eq(raft_state_role(c.n[1].r), RAFT_LEADER); /* not yet down */
    ck_assert(!stale_lease_read(&c, leader));
    tc_free(&c);
}
END_TEST

/* A leader that sent TIMEOUT_NOW has no lease: the target's campaign
 * ignores the followers' leases (etcd-io/raft#99, etcd#12704). */
START_TEST(test_lease_revoked_by_transfer) {
    tc c;
    tc_start(&c, 3, 3, lease, NULL);
    tc_elect(&c, 1);
    tc_tick_all(&c, 1); /* lease */
    ck_assert_int_eq(raft_transfer_leader(c.n[1].r, 2), 0);
    tc_ready(&c, 1); /* TIMEOUT_NOW queued to 2 */
    ck_assert_uint_eq(tc_queued(&c, RAFT_MSG_TIMEOUT_NOW, 1, 2), 1);
    tc_isolate(&c, 1, true); /* then 1 is cut off */
    tc_settle(&c);
    ck_assert(!stale_lease_read(&c, 2));
    tc_free(&c);
}
END_TEST

static void lease_two_pending(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->lease_read = true;
    cfg->max_read_pending = 2;
}

/* Answered reads wait in raft until raft_advance: they count against
 * max_read_pending too, or lease reads between two Readys grow memory
 * without bound. */
START_TEST(test_lease_reads_bounded) {
    tc c;
    tc_start(&c, 3, 3, lease_two_pending, NULL);
    tc_elect(&c, 1);
    tc_tick_all(&c, 1); /* lease */
    raft *r = c.n[1].r;
    ck_assert_int_eq(raft_read_index(r, 1), 0);
    ck_assert_int_eq(raft_read_index(r, 2), 0);
    ck_assert_int_eq(raft_read_index(r, 3), KV_EBUSY);
    tc_ready(&c, 1);
    ck_assert_uint_eq(c.n[1].reads_count, 2);
    ck_assert_int_eq(raft_read_index(r, 3), 0);
    tc_free(&c);
}
END_TEST

START_TEST(test_single_node_read) {
    tc c;
    tc_start(&c, 1, 1, NULL, NULL);
    tc_elect(&c, 1);
    ck_assert_int_eq(raft_read_index(c.n[1].r, 5), 0);
    tc_ready(&c, 1);
    ck_assert_uint_eq(c.n[1].reads_count, 1);
    ck_assert_uint_eq(c.n[1].reads[0].index, raft_commit_index(c.n[1].r));
    tc_free(&c);
}
END_TEST

Suite *read_suite(void) {
    Suite *s = suite_create("raft_read");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_no_read_before_noop_commits);
    tcase_add_test(t, test_read_index_batching);
    tcase_add_test(t, test_read_pending_limit);
    tcase_add_test(t, test_reads_fail_on_step_down);
    tcase_add_test(t, test_lease_read);
    tcase_add_test(t, test_lease_expires_before_followers_vote);
    tcase_add_test(t, test_lease_revoked_by_transfer);
    tcase_add_test(t, test_single_node_read);
    tcase_add_test(t, test_lease_reads_bounded);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(read_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
