/* Raft unit tests: elections, PreVote, CheckQuorum, durability of votes. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "raft.h"
#include "tc.h"

START_TEST(test_single_node_becomes_leader) {
    tc c;
    tc_start(&c, 1, 1, NULL, NULL);
    raft *r = c.n[1].r;
    ck_assert_int_eq(raft_state_role(r), RAFT_FOLLOWER);
    ck_assert_uint_eq(raft_last_index(r), 1); /* the bootstrap entry */
    tc_elect(&c, 1);
    ck_assert_uint_eq(raft_term(r), 2);
    ck_assert_uint_eq(raft_leader(r), 1);
    /* the no-op of term 2 committed once durable, and was applied */
    ck_assert_uint_eq(raft_commit_index(r), 2);
    ck_assert_uint_eq(c.n[1].applied, 2);
    ck_assert(c.n[1].has_membership);
    ck_assert_uint_eq(c.n[1].membership.voters_count, 1);
    uint64_t idx = 0;
    ck_assert_int_eq(raft_propose(r, "x", 1, &idx), 0);
    ck_assert_uint_eq(idx, 3);
    tc_settle(&c);
    ck_assert_uint_eq(raft_commit_index(r), 3);
    ck_assert_uint_eq(c.n[1].applied_normal, 1);
    tc_free(&c);
}
END_TEST

START_TEST(test_three_nodes_elect_one_leader) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 2);
    ck_assert_uint_eq(tc_leader(&c), 2);
    for (int i = 1; i <= 3; i++) {
        ck_assert_uint_eq(raft_leader(c.n[i].r), 2);
        ck_assert_uint_eq(raft_term(c.n[i].r), 2);
        ck_assert_uint_eq(raft_commit_index(c.n[i].r), 2);
        /* votes were durable before the replies left (tc checks each) */
        ck_assert_uint_eq(c.n[i].hs.term, 2);
    }
    ck_assert_uint_eq(c.n[1].hs.vote, 2);
    /* followers refuse proposals and reads */
    ck_assert_int_eq(raft_propose(c.n[1].r, "x", 1, NULL), KV_ENOTLEADER);
    ck_assert_int_eq(raft_read_index(c.n[1].r, 7), KV_ENOTLEADER);
    /* ticking everyone keeps the same leader and term */
    tc_tick_all(&c, 50);
    ck_assert_uint_eq(tc_leader(&c), 2);
    ck_assert_uint_eq(raft_term(c.n[1].r), 2);
    tc_free(&c);
}
END_TEST

/* Randomized timeouts: with everyone ticking, some node wins. */
START_TEST(test_election_with_all_ticking) {
    tc c;
    tc_start(&c, 5, 5, NULL, NULL);
    for (int i = 0; i < 100 && tc_leader(&c) == 0; i++) {
        tc_tick_all(&c, 1);
    }
    ck_assert_uint_ne(tc_leader(&c), 0);
    tc_free(&c);
}
END_TEST

/* The vote is in the hard state of the Ready that carries the reply, and
 * that Ready asks for a sync (docs/rules.md "two leaders in one term"). */
START_TEST(test_vote_reply_needs_sync) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_flush(&c);
    raft_msg v = {.type = RAFT_MSG_VOTE, .from = 2, .to = 1, .term = 5, .index = 1, .log_term = 1};
    ck_assert_int_eq(raft_step(c.n[1].r, &v), 0);
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(c.n[1].r, &rd), 0);
    ck_assert(rd.hs_changed && rd.hs_must_sync);
    ck_assert_uint_eq(rd.hs.term, 5);
    ck_assert_uint_eq(rd.hs.vote, 2);
    ck_assert_uint_eq(rd.msgs_count, 1);
    ck_assert_int_eq(rd.msgs[0].type, RAFT_MSG_VOTE_RESP);
    ck_assert(!rd.msgs[0].reject);
    raft_advance(c.n[1].r, &rd);
    /* a second candidate of the same term is refused */
    v.from = 3;
    ck_assert_int_eq(raft_step(c.n[1].r, &v), 0);
    ck_assert_int_eq(raft_ready(c.n[1].r, &rd), 0);
    ck_assert(!rd.hs_must_sync);
    ck_assert_uint_eq(rd.msgs_count, 1);
    ck_assert(rd.msgs[0].reject);
    raft_advance(c.n[1].r, &rd);
    /* a candidate with a shorter log is refused (paper §5.4.1) */
    raft_msg v2 = {.type = RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 5, .index = 0, .log_term = 0};
    ck_assert_int_eq(raft_step(c.n[2].r, &v2), 0);
    ck_assert_int_eq(raft_ready(c.n[2].r, &rd), 0);
    ck_assert(rd.msgs[0].reject);
    ck_assert_uint_eq(rd.hs.vote, 0);
    raft_advance(c.n[2].r, &rd);
    tc_free(&c);
}
END_TEST

/* PreVote: a node cut off from the others campaigns without raising its
 * term, so when it comes back it does not depose the healthy leader. */
START_TEST(test_prevote_keeps_terms) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    uint64_t term = raft_term(c.n[1].r);
    tc_isolate(&c, 3, true);
    for (int i = 0; i < 100; i++) {
        tc_tick_all(&c, 1);
    }
    ck_assert_uint_eq(raft_term(c.n[3].r), term);
    ck_assert_uint_gt(c.sent[RAFT_MSG_PREVOTE], 0);
    ck_assert_int_ne(raft_state_role(c.n[3].r), RAFT_LEADER);
    tc_isolate(&c, 3, false);
    tc_tick_all(&c, 30);
    ck_assert_uint_eq(tc_leader(&c), 1);
    for (int i = 1; i <= 3; i++) {
        ck_assert_uint_eq(raft_term(c.n[i].r), term);
    }
    ck_assert_uint_eq(raft_leader(c.n[3].r), 1);
    tc_free(&c);
}
END_TEST

static void no_prevote(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->pre_vote = false;
    cfg->check_quorum = false;
}

/* A vote granted, then a higher term before the Ready: the Ready's hard
 * state is the new term with its vote cleared, so the grant of the old term
 * is no longer on any disk and must not leave (raft.h step 1). Seen in
 * jepsen_lite_net (seed 539736921174): kvd's assert_sendable aborted a node
 * that granted a vote and heard a newer term in the same turn. */
START_TEST(test_stale_vote_grant_dropped) {
    tc c;
    tc_start(&c, 3, 3, no_prevote, NULL);
    tc_flush(&c);
    raft *r = c.n[1].r;
    raft_msg v = {.type = RAFT_MSG_VOTE, .from = 2, .to = 1, .term = 5, .index = 1, .log_term = 1};
    ck_assert_int_eq(raft_step(r, &v), 0); /* granted in memory: term 5, vote 2 */
    raft_msg v3 = {.type = RAFT_MSG_VOTE, .from = 3, .to = 1, .term = 6, .index = 0, .log_term = 0};
    ck_assert_int_eq(raft_step(r, &v3), 0); /* term 6, vote cleared; 3's log is short: refused */
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    ck_assert_uint_eq(rd.hs.term, 6);
    ck_assert_uint_eq(rd.hs.vote, 0);
    for (size_t i = 0; i < rd.msgs_count; i++) {
        const raft_msg *m = &rd.msgs[i];
        ck_assert_msg(m->type != RAFT_MSG_VOTE_RESP || m->reject || m->term == rd.hs.term,
                      "a grant of term %llu to %llu leaves with hard state term %llu vote %llu",
                      (unsigned long long)m->term, (unsigned long long)m->to,
                      (unsigned long long)rd.hs.term, (unsigned long long)rd.hs.vote);
    }
    raft_advance(r, &rd);
    /* the same with a campaign of its own in between: its VOTEs of term 7
     * are dropped once it hears term 8 before the Ready */
    tc_flush(&c);
    ck_assert_int_eq(raft_campaign(r), 0);
    raft_msg a = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 8};
    ck_assert_int_eq(raft_step(r, &a), 0);
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    ck_assert_uint_eq(rd.hs.term, 8);
    for (size_t i = 0; i < rd.msgs_count; i++)
        ck_assert_msg(rd.msgs[i].type != RAFT_MSG_VOTE,
                      "a VOTE of term %llu leaves with hard state term %llu vote %llu",
                      (unsigned long long)rd.msgs[i].term, (unsigned long long)rd.hs.term,
                      (unsigned long long)rd.hs.vote);
    raft_advance(r, &rd);
    tc_free(&c);
}
END_TEST

/* The same without PreVote raises the isolated node's term: the control. */
START_TEST(test_without_prevote_terms_rise) {
    tc c;
    tc_start(&c, 3, 3, no_prevote, NULL);
    tc_elect(&c, 1);
    uint64_t term = raft_term(c.n[1].r);
    tc_isolate(&c, 3, true);
    tc_tick_all(&c, 100);
    ck_assert_uint_gt(raft_term(c.n[3].r), term);
    tc_free(&c);
}
END_TEST

/* CheckQuorum: a leader that hears from no majority for an election
 * timeout steps down. */
START_TEST(test_check_quorum_steps_down) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    tc_isolate(&c, 1, true);
    for (int i = 0; i < 2 * 10 + 1; i++) {
        tc_tick(&c, 1, 1);
        tc_settle(&c);
    }
    ck_assert_int_eq(raft_state_role(c.n[1].r), RAFT_FOLLOWER);
    ck_assert_uint_eq(raft_leader(c.n[1].r), 0);
    tc_free(&c);
}
END_TEST

/* A follower that heard from its leader recently ignores a campaign (the
 * lease of CheckQuorum). */
START_TEST(test_lease_ignores_vote) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    uint64_t term = raft_term(c.n[2].r);
    raft_msg v = {.type = RAFT_MSG_VOTE,
                  .from = 3,
                  .to = 2,
                  .term = term + 1,
                  .index = 100,
                  .log_term = term};
    ck_assert_int_eq(raft_step(c.n[2].r, &v), 0);
    ck_assert_uint_eq(raft_term(c.n[2].r), term);
    ck_assert_uint_eq(raft_leader(c.n[2].r), 1);
    tc_free(&c);
}
END_TEST

START_TEST(test_bad_config_and_messages) {
    raft_config cfg;
    raft *r = NULL;
    raft_config_init(&cfg, 0);
    ck_assert_int_eq(raft_new(&cfg, &r), KV_EINVAL);
    raft_config_init(&cfg, 1);
    cfg.lease_read = true;
    cfg.check_quorum = false;
    ck_assert_int_eq(raft_new(&cfg, &r), KV_EINVAL);
    raft_config_init(&cfg, 1);
    cfg.max_inflight_msgs = KV_RAFT_INFLIGHT_MSGS_MAX + 1;
    ck_assert_int_eq(raft_new(&cfg, &r), KV_EINVAL);
    raft_config_init(&cfg, 1);
    ck_assert_int_eq(raft_new(&cfg, &r), 0);
    raft_msg m = {.type = RAFT_MSG_APPEND, .from = 2, .to = 3, .term = 1};
    ck_assert_int_eq(raft_step(r, &m), KV_EINVAL);
    m.to = 1;
    m.type = 99;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.type = RAFT_MSG_APPEND;
    m.entries_count = 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    raft_entry e = {.index = 5, .term = 1};
    m.entries = &e;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO); /* not after index 0 */
    raft_free(r);
}
END_TEST

/* raft_campaign starts an election at once; a non-voter cannot. */
START_TEST(test_campaign_now) {
    tc c;
    tc_start(&c, 3, 4, NULL, NULL);
    ck_assert_int_eq(raft_campaign(c.n[3].r), 0);
    tc_settle(&c);
    ck_assert_uint_eq(tc_leader(&c), 3);
    ck_assert_int_eq(raft_campaign(c.n[3].r), 0); /* leader: nothing */
    ck_assert_int_eq(raft_campaign(c.n[4].r), KV_EINVAL);
    ck_assert_uint_eq(tc_leader(&c), 3);
    tc_free(&c);
}
END_TEST

/* A founding node that stored its vote but not entry 1 makes the same
 * entry 1 again on restart and keeps its term and vote. */
START_TEST(test_bootstrap_restart_without_log) {
    raft_config cfg;
    raft_config_init(&cfg, 2);
    cfg.bootstrap.voters_count = 3;
    for (int i = 0; i < 3; i++) {
        cfg.bootstrap.voters[i] = (uint64_t)i + 1;
    }
    cfg.hs = (raft_hard_state){.term = 3, .vote = 1};
    raft *r;
    ck_assert_int_eq(raft_new(&cfg, &r), 0);
    ck_assert_uint_eq(raft_term(r), 3);
    ck_assert_uint_eq(raft_vote(r), 1);
    ck_assert_uint_eq(raft_last_index(r), 1);
    raft_membership m;
    raft_membership_get(r, &m);
    ck_assert_uint_eq(m.voters_count, 3);
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    ck_assert_uint_eq(rd.entries_count, 1);
    ck_assert_uint_eq(rd.entries[0].term, 1);
    ck_assert(!rd.hs_must_sync); /* term and vote unchanged */
    raft_advance(r, &rd);
    raft_free(r);
}
END_TEST

/* The link to the leader closed on both followers (its process died): they
 * forget it and one is elected within a few ticks, in the next term (no
 * split vote, PreVote first), not after an election timeout. */
START_TEST(test_leader_hint_fast_election) {
    for (uint64_t first = 2; first <= 3; first++) {
        tc c;
        tc_start(&c, 3, 3, NULL, NULL);
        tc_elect(&c, 1);
        uint64_t term = raft_term(c.n[1].r);
        size_t prevotes = c.sent[RAFT_MSG_PREVOTE];
        tc_isolate(&c, 1, true);
        raft_leader_unreachable(c.n[2].r, 1);
        raft_leader_unreachable(c.n[3].r, 1);
        ck_assert_uint_eq(raft_leader(c.n[2].r), 0);
        ck_assert_uint_eq(raft_leader(c.n[3].r), 0);
        uint64_t other = first == 2 ? 3 : 2, lead = 0;
        int ticks = 0;
        /* one follower's tick, then the other's: their clocks are not in step */
        for (; ticks < 10 && lead == 0; ticks++) {
            tc_tick(&c, first, 1);
            tc_settle(&c);
            tc_tick(&c, other, 1);
            tc_settle(&c);
            lead = raft_state_role(c.n[2].r) == RAFT_LEADER   ? 2
                   : raft_state_role(c.n[3].r) == RAFT_LEADER ? 3
                                                              : 0;
        }
        ck_assert_uint_ne(lead, 0);
        ck_assert_int_le(ticks, 3); /* 1..election_ticks/3 */
        ck_assert_uint_eq(raft_term(c.n[lead].r), term + 1);
        ck_assert_uint_gt(c.sent[RAFT_MSG_PREVOTE], prevotes);
        tc_free(&c);
    }
}
END_TEST

/* A wrong hint (the leader is alive; one follower's link dropped) costs no
 * term: the other follower keeps its lease and ignores the PreVote, and the
 * leader's next heartbeat makes the hinted node its follower again. */
START_TEST(test_leader_hint_wrong_costs_nothing) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    uint64_t term = raft_term(c.n[1].r);
    size_t prevotes = c.sent[RAFT_MSG_PREVOTE];
    raft_leader_unreachable(c.n[2].r, 1);
    ck_assert_uint_eq(raft_leader(c.n[2].r), 0);
    /* within 3 of its ticks (the leader's heartbeats not yet in) it campaigns */
    tc_tick(&c, 2, 3);
    ck_assert_int_eq(raft_state_role(c.n[2].r), RAFT_PRE_CANDIDATE);
    /* its PreVote reaches node 3, which still hears node 1, and node 1 */
    tc_settle(&c);
    ck_assert_uint_gt(c.sent[RAFT_MSG_PREVOTE], prevotes);
    ck_assert_int_eq(raft_state_role(c.n[2].r), RAFT_PRE_CANDIDATE);
    ck_assert_uint_eq(raft_term(c.n[2].r), term);
    tc_tick_all(&c, 3);
    ck_assert_uint_eq(tc_leader(&c), 1);
    for (int i = 1; i <= 3; i++) {
        ck_assert_uint_eq(raft_term(c.n[i].r), term);
        ck_assert_uint_eq(raft_leader(c.n[i].r), 1);
    }
    tc_free(&c);
}
END_TEST

static void lease_on(raft_config *cfg, void *arg) {
    (void)arg;
    cfg->lease_read = true;
}

/* The hint is ignored with lease_read, for a node that is not the leader,
 * and on the leader itself. */
START_TEST(test_leader_hint_ignored) {
    tc c;
    tc_start(&c, 3, 3, lease_on, NULL);
    tc_elect(&c, 1);
    raft_leader_unreachable(c.n[2].r, 1);
    ck_assert_uint_eq(raft_leader(c.n[2].r), 1);
    tc_free(&c);
    tc_start(&c, 3, 3, NULL, NULL);
    tc_elect(&c, 1);
    raft_leader_unreachable(c.n[2].r, 3);
    ck_assert_uint_eq(raft_leader(c.n[2].r), 1);
    raft_leader_unreachable(c.n[1].r, 1);
    ck_assert_int_eq(raft_state_role(c.n[1].r), RAFT_LEADER);
    tc_free(&c);
}
END_TEST

Suite *election_suite(void) {
    Suite *s = suite_create("raft_election");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_single_node_becomes_leader);
    tcase_add_test(t, test_three_nodes_elect_one_leader);
    tcase_add_test(t, test_election_with_all_ticking);
    tcase_add_test(t, test_vote_reply_needs_sync);
    tcase_add_test(t, test_stale_vote_grant_dropped);
    tcase_add_test(t, test_prevote_keeps_terms);
    tcase_add_test(t, test_without_prevote_terms_rise);
    tcase_add_test(t, test_check_quorum_steps_down);
    tcase_add_test(t, test_lease_ignores_vote);
    tcase_add_test(t, test_bad_config_and_messages);
    tcase_add_test(t, test_campaign_now);
    tcase_add_test(t, test_bootstrap_restart_without_log);
    tcase_add_test(t, test_leader_hint_fast_election);
    tcase_add_test(t, test_leader_hint_wrong_costs_nothing);
    tcase_add_test(t, test_leader_hint_ignored);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(election_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
