/* Raft unit tests: membership changes and leadership transfer. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "raft.h"
#include "tc.h"

static bool is_voter(const raft_membership *m, uint64_t id) {
    for (uint32_t i = 0; i < m->voters_count; i++) {
        if (m->voters[i] == id) {
            return true;
        }
    }
    return false;
}

static bool drop_appends_flag;
static bool drop_appends(tc *c, const raft_msg *m, void *arg) {
    (void)c;
    (void)arg;
    return drop_appends_flag && m->type == RAFT_MSG_APPEND;
}

/* Learner 4 joins, catches up, is promoted; then the leader removes itself
 * and steps down once that commits; the others elect a new leader. */
START_TEST(test_add_promote_remove_leader) {
    tc c;
    tc_start(&c, 3, 4, NULL, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    tc_isolate(&c, 4, true);
    uint64_t idx;
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 4, &idx), 0);
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 5, NULL), KV_EBUSY);
    raft_membership m;
    raft_membership_get(r, &m); /* in effect when appended */
    ck_assert_uint_eq(m.learners_count, 1);
    ck_assert_uint_eq(m.learners[0], 4);
    tc_settle(&c);
    ck_assert_uint_ge(raft_commit_index(r), idx);
    ck_assert(c.n[2].has_membership);
    ck_assert_uint_eq(c.n[2].membership.learners_count, 1);
    /* not caught up: promotion refused */
    ck_assert(!raft_learner_caught_up(r, 4));
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_PROMOTE, 4, NULL), KV_EBUSY);
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 4, NULL), KV_EINVAL);
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_PROMOTE, 2, NULL), KV_EINVAL);
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_REMOVE, 7, NULL), KV_EINVAL);
    tc_isolate(&c, 4, false);
    tc_tick_all(&c, 3);
    ck_assert(raft_learner_caught_up(r, 4));
    ck_assert_uint_eq(c.n[4].applied, raft_commit_index(r));
    ck_assert_int_eq(raft_state_role(c.n[4].r), RAFT_FOLLOWER);
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_PROMOTE, 4, &idx), 0);
    tc_settle(&c);
    for (int i = 1; i <= 4; i++) {
        ck_assert(is_voter(&c.n[i].membership, 4));
    }
    /* remove the leader */
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_REMOVE, 1, &idx), 0);
    ck_assert_int_eq(raft_state_role(r), RAFT_LEADER); /* until it commits */
    tc_settle(&c);
    ck_assert_int_eq(raft_state_role(r), RAFT_FOLLOWER);
    ck_assert_uint_ge(raft_commit_index(r), idx);
    for (int i = 0; i < 200 && tc_leader(&c) == 0; i++) {
        tc_tick_all(&c, 1);
    }
    uint64_t l = tc_leader(&c);
    ck_assert(l >= 2 && l <= 4);
    tc_tick_all(&c, 30);
    ck_assert_int_eq(raft_state_role(r), RAFT_FOLLOWER); /* never campaigns */
    ck_assert_uint_ge(raft_commit_index(c.n[l].r), idx + 1);
    ck_assert(!is_voter(&c.n[2].membership, 1));
    tc_free(&c);
}
END_TEST

/* Voters 1..3 (1 leads) and learner 4, which caught up and is active. */
static void with_learner(tc *c) {
    tc_start(c, 3, 4, NULL, NULL);
    tc_elect(c, 1);
    ck_assert_int_eq(raft_propose_conf(c->n[1].r, RAFT_CONF_ADD_LEARNER, 4, NULL), 0);
    tc_settle(c);
    tc_tick_all(c, 3);
    ck_assert(raft_learner_caught_up(c->n[1].r, 4));
}

/* A learner that stopped hearing its leader must not stay in that
 * leader's lease for ever: a voter whose newer conf counts it (a promotion
 * the learner has not received yet) needs its (pre)vote. Every PreVote that
 * comes more than an election timeout after the leader went silent gets an
 * answer. */
START_TEST(test_learner_lease_ends) {
    tc c;
    with_learner(&c);
    tc_isolate(&c, 1, true);
    tc_tick(&c, 4, 30); /* 3 election timeouts without a leader */
    uint64_t term = raft_term(c.n[4].r);
    int answered = 0;
    for (int i = 0; i < 20; i++) {
        tc_tick(&c, 4, 1);
        raft_msg pv = {.type = RAFT_MSG_PREVOTE,
                       .from = 2,
                       .to = 4,
                       .term = term + 1,
                       .index = raft_last_index(c.n[2].r),
                       .log_term = term};
        ck_assert_int_eq(raft_step(c.n[4].r, &pv), 0);
        tc_ready(&c, 4);
        answered += tc_queued(&c, RAFT_MSG_PREVOTE_RESP, 4, 2) > 0;
        tc_drop_queued(&c, 0, 4, 0);
    }
    ck_assert_int_eq(answered, 20);
    ck_assert_uint_eq(raft_term(c.n[4].r), term); /* PreVote changed nothing */
    tc_free(&c);
}
END_TEST

/* raft.h: "caught up" also means active; promoting a learner that went away
 * would add a voter that never answers (with 1 voter: no quorum ever). */
START_TEST(test_promote_needs_active_learner) {
    tc c;
    with_learner(&c);
    tc_isolate(&c, 4, true);
    tc_tick_all(&c, 25); /* two CheckQuorum windows without hearing 4 */
    ck_assert_int_eq(raft_state_role(c.n[1].r), RAFT_LEADER);
    ck_assert(!raft_learner_caught_up(c.n[1].r, 4));
    ck_assert_int_eq(raft_propose_conf(c.n[1].r, RAFT_CONF_PROMOTE, 4, NULL), KV_EBUSY);
    tc_isolate(&c, 4, false);
    tc_tick_all(&c, 2);
    ck_assert(raft_learner_caught_up(c.n[1].r, 4));
    tc_free(&c);
}
END_TEST

/* A new leader commits an entry of its term before any change. */
START_TEST(test_no_change_before_own_term_commit) {
    tc c;
    tc_start(&c, 3, 4, NULL, NULL);
    drop_appends_flag = true;
    c.drop = drop_appends;
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 4, NULL), KV_EBUSY);
    drop_appends_flag = false;
    tc_tick_all(&c, 2);
    ck_assert_int_eq(raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 4, NULL), 0);
    ck_assert_int_eq(raft_propose_conf(c.n[2].r, RAFT_CONF_REMOVE, 3, NULL), KV_ENOTLEADER);
    tc_free(&c);
}
END_TEST

/* An uncommitted CONF entry that is truncated away takes the previous
 * membership back (thesis §4.1). */
START_TEST(test_conf_reverts_on_truncation) {
    tc c;
    tc_start(&c, 5, 6, NULL, NULL);
    tc_elect(&c, 1);
    /* leader 1 appends a change that only node 2 receives */
    c.cut[1][3] = c.cut[1][4] = c.cut[1][5] = c.cut[2][1] = true;
    ck_assert_int_eq(raft_propose_conf(c.n[1].r, RAFT_CONF_ADD_LEARNER, 6, NULL), 0);
    tc_settle(&c);
    raft_membership m;
    raft_membership_get(c.n[2].r, &m);
    ck_assert_uint_eq(m.learners_count, 1);
    ck_assert_uint_eq(raft_commit_index(c.n[2].r), raft_last_index(c.n[2].r) - 1);
    /* nodes 3-5 elect one of them; its log has no such entry */
    tc_isolate(&c, 1, true);
    c.cut[2][1] = false;
    uint64_t l = 0;
    for (int i = 0; i < 300 && l == 0; i++) {
        tc_tick(&c, 3, 1);
        tc_tick(&c, 4, 1);
        tc_tick(&c, 5, 1);
        tc_settle(&c);
        l = tc_leader(&c);
        l = l >= 3 ? l : 0;
    }
    ck_assert_uint_ge(l, 3);
    tc_tick_all(&c, 2);
    raft_membership_get(c.n[2].r, &m);
    ck_assert_uint_eq(m.learners_count, 0);
    ck_assert_uint_eq(m.voters_count, 5);
    ck_assert_uint_eq(raft_leader(c.n[2].r), l);
    tc_free(&c);
}
END_TEST

/* Leadership transfer (thesis §3.10): proposals stop, the target catches
 * up, gets TIMEOUT_NOW and wins at once. */
START_TEST(test_transfer_leader) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    uint64_t term = raft_term(r);
    tc_isolate(&c, 3, true);
    tc_propose(&c, 1, 5, 10);
    tc_settle(&c);
    tc_isolate(&c, 3, false);
    ck_assert_int_eq(raft_transfer_leader(r, 3), 0);
    ck_assert(raft_transferring(r));
    ck_assert_int_eq(raft_propose(r, "x", 1, NULL), KV_EBUSY);
    ck_assert_int_eq(raft_transfer_leader(r, 9), KV_EINVAL);
    tc_settle(&c);
    tc_tick_all(&c, 2);
    ck_assert_uint_eq(tc_leader(&c), 3);
    ck_assert_uint_eq(raft_term(c.n[3].r), term + 1);
    ck_assert_uint_eq(c.sent[RAFT_MSG_TIMEOUT_NOW], 1);
    ck_assert_uint_eq(c.n[3].applied_normal, 5);
    ck_assert_int_eq(raft_state_role(r), RAFT_FOLLOWER);
    ck_assert_int_eq(raft_transfer_leader(r, 2), KV_ENOTLEADER);
    tc_free(&c);
}
END_TEST

/* A transfer to an unreachable node is given up after an election timeout. */
START_TEST(test_transfer_aborts) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    raft *r = c.n[1].r;
    tc_isolate(&c, 3, true);
    tc_propose(&c, 1, 1, 10);
    tc_settle(&c);
    ck_assert_int_eq(raft_transfer_leader(r, 3), 0);
    tc_tick_all(&c, 11);
    ck_assert(!raft_transferring(r));
    ck_assert_uint_eq(tc_leader(&c), 1);
    ck_assert_int_eq(raft_propose(r, "x", 1, NULL), 0);
    tc_free(&c);
}
END_TEST

START_TEST(test_conf_decode) {
    uint8_t bad[12] = {2};
    raft_conf_op op;
    uint64_t node;
    raft_membership m;
    ck_assert_int_eq(raft_conf_decode(bad, sizeof(bad), &op, &node, &m), KV_EVERSION);
    bad[0] = 1;
    bad[10] = 1; /* one voter, no bytes for it */
    ck_assert_int_eq(raft_conf_decode(bad, sizeof(bad), &op, &node, &m), KV_ECORRUPT);
    ck_assert_int_eq(raft_conf_decode(bad, 3, &op, &node, &m), KV_ECORRUPT);
}
END_TEST

Suite *conf_suite(void) {
    Suite *s = suite_create("raft_conf");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_add_promote_remove_leader);
    tcase_add_test(t, test_no_change_before_own_term_commit);
    tcase_add_test(t, test_conf_reverts_on_truncation);
    tcase_add_test(t, test_transfer_leader);
    tcase_add_test(t, test_transfer_aborts);
    tcase_add_test(t, test_conf_decode);
    tcase_add_test(t, test_learner_lease_ends);
    tcase_add_test(t, test_promote_needs_active_learner);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(conf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
