/* Raft unit tests: a peer's message never crashes or steers a node. Each
 * field of a received message is checked against what the receiver knows;
 * a message that fails is dropped (KV_EPROTO) and counted
 * (raft_msgs_refused), and the node's state is untouched. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"
#include "raft.h"
#include "tc.h"

/* Leader 1 of three; node 3 cut off, so its progress stays PROBE. */
static void leader_probing_3(tc *c) {
    tc_start(c, 3, 3, NULL, NULL);
    tc_isolate(c, 3, true);
    tc_elect(c, 1);
    raft_progress_info p;
    ck_assert_int_eq(raft_progress(c->n[1].r, 3, &p), 0);
    ck_assert_int_eq(p.state, RAFT_PROGRESS_PROBE);
}

/* Issue 10: a reject hint of UINT64_MAX with hint term 0 overflowed to
 * next = 0 and tripped assert(next >= 1) in peer_probe on the leader. */
START_TEST(test_reject_hint_uint64_max) {
    tc c;
    leader_probing_3(&c);
    raft *r = c.n[1].r;
    raft_progress_info before, after;
    ck_assert_int_eq(raft_progress(r, 3, &before), 0);
    raft_msg m = {.type = RAFT_MSG_APPEND_RESP,
                  .from = 3,
                  .to = 1,
                  .term = raft_term(r),
                  .reject = true,
                  .index = before.next - 1,
                  .reject_hint = UINT64_MAX,
                  .hint_term = 0};
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_int_eq(raft_progress(r, 3, &after), 0);
    ck_assert_uint_eq(after.next, before.next);
    ck_assert_int_eq(raft_state_role(r), RAFT_LEADER);
    tc_free(&c);
}
END_TEST

/* Follower 2 of leader 1 (term 2), every node caught up. */
static void follower_2(tc *c) {
    tc_start(c, 3, 3, NULL, NULL);
    tc_elect(c, 1);
    tc_propose(c, 1, 3, 8);
    tc_settle(c);
    ck_assert_uint_eq(raft_leader(c->n[2].r), 1);
}

static raft_membership three(void) {
    raft_membership mb = {.voters_count = 3, .voters = {1, 2, 3}};
    return mb;
}

/* A snapshot of term 0 past the log looked "in the log" (term_at answers 0
 * for an unknown index): the commit index jumped past the last entry and
 * tripped assert(commit <= last). */
START_TEST(test_snapshot_term_zero) {
    tc c;
    follower_2(&c);
    raft *r = c.n[2].r;
    uint64_t commit = raft_commit_index(r);
    raft_msg m = {.type = RAFT_MSG_SNAPSHOT,
                  .from = 1,
                  .to = 2,
                  .term = raft_term(r),
                  .snap = {.index = raft_last_index(r) + 10, .term = 0, .membership = three()}};
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_uint_eq(raft_commit_index(r), commit);
    /* and one whose term is past the sender's, or with no voter */
    m.snap.term = m.term + 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.snap.term = m.term;
    m.snap.membership.voters_count = 0;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_uint_eq(raft_msgs_refused(r), 3);
    tc_free(&c);
}
END_TEST

/* A term of UINT64_MAX would leave no term to campaign in (term + 1 wraps
 * to 0): the node would be stuck for good. Past RAFT_TERM_MAX: refused. */
START_TEST(test_term_uint64_max) {
    tc c;
    follower_2(&c);
    raft *r = c.n[2].r;
    uint64_t term = raft_term(r);
    raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = UINT64_MAX};
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.term = RAFT_TERM_MAX + 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_uint_eq(raft_term(r), term);
    ck_assert_uint_eq(raft_leader(r), 1);
    /* at RAFT_TERM_MAX a node follows but never campaigns past it */
    m.term = RAFT_TERM_MAX;
    ck_assert_int_eq(raft_step(r, &m), 0);
    ck_assert_int_eq(raft_campaign(r), KV_EINVAL);
    tc_tick(&c, 2, 100);
    ck_assert_uint_eq(raft_term(r), RAFT_TERM_MAX);
    tc_free(&c);
}
END_TEST

/* Election safety (paper §5.2): one leader per term. A second node that
 * claims to lead the follower's term is refused, not followed. */
START_TEST(test_second_leader_same_term) {
    tc c;
    follower_2(&c);
    raft *r = c.n[2].r;
    uint64_t last = raft_last_index(r);
    uint64_t lt;
    ck_assert_int_eq(raft_log_term(r, last, &lt), 0);
    raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 3, .to = 2, .term = raft_term(r)};
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.type = RAFT_MSG_APPEND;
    m.index = last;
    m.log_term = lt;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.type = RAFT_MSG_TIMEOUT_NOW; /* only the leader hands leadership over */
    m.index = m.log_term = 0;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_uint_eq(raft_leader(r), 1);
    ck_assert_int_eq(raft_state_role(r), RAFT_FOLLOWER);
    ck_assert_uint_eq(raft_msgs_refused(r), 3);
    tc_free(&c);
}
END_TEST

/* The leader of a term never changes an entry it sent in that term: an
 * APPEND that would truncate entries the follower already matched with this
 * term's leader (and may have acknowledged) is refused. */
START_TEST(test_append_rewrites_matched_entries) {
    tc c;
    tc_start(&c, 3, 3, NULL, NULL);
    raft *r = c.n[2].r;
    raft_entry e[2] = {{.index = 2, .term = 2, .data = "a", .len = 1},
                       {.index = 3, .term = 3, .data = "b", .len = 1}};
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = 3,
                  .index = 1,
                  .log_term = 1,
                  .entries = e,
                  .entries_count = 2,
                  .commit = 1};
    ck_assert_int_eq(raft_step(r, &m), 0);
    ck_assert_uint_eq(raft_last_index(r), 3);
    /* the same leader, the same term, entry 2 now of term 3 */
    e[0].term = 3;
    m.entries_count = 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    uint64_t t;
    ck_assert_int_eq(raft_log_term(r, 2, &t), 0);
    ck_assert_uint_eq(t, 2);
    ck_assert_uint_eq(raft_last_index(r), 3);
    ck_assert_uint_eq(raft_msgs_refused(r), 1);
    tc_free(&c);
}
END_TEST

/* Fields that no real sender produces: each refused and counted. */
START_TEST(test_impossible_fields) {
    tc c;
    follower_2(&c);
    raft *r = c.n[2].r;
    uint64_t term = raft_term(r), last = raft_last_index(r), lt;
    ck_assert_int_eq(raft_log_term(r, last, &lt), 0);
    /* index + entries wraps around */
    raft_entry e = {.index = 0, .term = term};
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = term,
                  .index = UINT64_MAX,
                  .log_term = term,
                  .entries = &e,
                  .entries_count = 1};
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    /* previous entry's term past the message's term */
    m = (raft_msg){.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = term, .index = last};
    m.log_term = term + 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    /* from ourselves */
    m = (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 2, .term = term};
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    /* entries on a message that carries none */
    m = (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = term};
    e = (raft_entry){.index = 1, .term = 1};
    m.entries = &e;
    m.entries_count = 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    /* a candidate whose last entry is of a term past the one it campaigns
     * in: no such log, yet it would look most up to date and win the vote
     * of a node that lost its leader (here: cut off, now pre-candidate) */
    tc_isolate(&c, 2, true);
    tc_tick(&c, 2, 40);
    ck_assert_int_eq(raft_state_role(r), RAFT_PRE_CANDIDATE);
    uint64_t vote = raft_vote(r);
    m = (raft_msg){.type = RAFT_MSG_VOTE, .from = 3, .to = 2, .term = term + 1};
    m.index = last;
    m.log_term = term + 5;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_uint_eq(raft_vote(r), vote);
    ck_assert_uint_eq(raft_term(r), term);
    ck_assert_uint_eq(raft_msgs_refused(r), 5);
    ck_assert_uint_eq(raft_last_index(r), last);
    tc_free(&c);
}
END_TEST

/* Leader side: acknowledgements of entries it never had, hints past the
 * rejected index, read rounds it never started, snapshot offsets past the
 * snapshot's end. */
START_TEST(test_leader_impossible_answers) {
    tc c;
    leader_probing_3(&c);
    raft *r = c.n[1].r;
    uint64_t term = raft_term(r), last = raft_last_index(r);
    raft_progress_info p2, p3, q;
    ck_assert_int_eq(raft_progress(r, 2, &p2), 0);
    ck_assert_int_eq(raft_progress(r, 3, &p3), 0);
    raft_msg m = {.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = term};
    m.index = last + 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m = (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 1, .term = term, .reject = true};
    m.index = p3.next - 1;
    m.reject_hint = m.index + 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.reject_hint = 0;
    m.hint_term = term + 1;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m.index = 0; /* every log matches at index 0 */
    m.hint_term = 0;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    m = (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = term};
    m.context = UINT64_MAX;
    ck_assert_int_eq(raft_step(r, &m), KV_EPROTO);
    ck_assert_uint_eq(raft_msgs_refused(r), 5);
    ck_assert_int_eq(raft_progress(r, 2, &q), 0);
    ck_assert_uint_eq(q.match, p2.match);
    ck_assert_int_eq(raft_progress(r, 3, &q), 0);
    ck_assert_uint_eq(q.next, p3.next);
    ck_assert_int_eq(raft_state_role(r), RAFT_LEADER);
    tc_free(&c);
}
END_TEST

int main(void) {
    Suite *s = suite_create("raft_hostile");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_reject_hint_uint64_max);
    tcase_add_test(t, test_snapshot_term_zero);
    tcase_add_test(t, test_term_uint64_max);
    tcase_add_test(t, test_second_leader_same_term);
    tcase_add_test(t, test_append_rewrites_matched_entries);
    tcase_add_test(t, test_impossible_fields);
    tcase_add_test(t, test_leader_impossible_answers);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
