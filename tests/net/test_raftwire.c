/* raft_msg -> kv.RaftMessage -> bytes -> kv.RaftMessage -> raft_msg gives
 * back every field; invalid messages from the wire are refused (net.h). */
#include "net/net.h"

#include "kv/errors.h"

#include "net_test_util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* Through the wire and back: pack msgs as one RaftBatch, unpack, decode each
 * and compare with the original. */
static void round_trip(const raft_msg *msgs, size_t count) {
    Kv__RaftMessage pbs[4];
    Kv__RaftMessage *ptrs[4];
    Kv__RaftEntry ents[16];
    Kv__RaftEntry *ent_ptrs[16];
    size_t e = 0;
    ck_assert_uint_le(count, 4);
    for (size_t i = 0; i < count; i++) {
        ck_assert_uint_le(e + msgs[i].entries_count, 16);
        raftwire_to_pb(&msgs[i], &pbs[i], ents + e, ent_ptrs + e);
        ptrs[i] = &pbs[i];
        e += msgs[i].entries_count;
    }
    Kv__RaftBatch b = KV__RAFT_BATCH__INIT;
    b.n_msgs = count;
    b.msgs = ptrs;
    size_t len = kv__raft_batch__get_packed_size(&b);
    uint8_t *buf = malloc(len);
    ck_assert_uint_eq(kv__raft_batch__pack(&b, buf), len);
    Kv__RaftBatch *back = kv__raft_batch__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(back->n_msgs, count);
    for (size_t i = 0; i < count; i++) {
        raft_msg m;
        ck_assert_int_eq(raftwire_from_pb(back->msgs[i], &m), 0);
        ck_assert_msg(nt_msg_eq(&m, &msgs[i]), "message %zu differs after the round trip", i);
        ck_assert(m.entries_count > 0 || m.entries == NULL);
        free(m.entries);
    }
    kv__raft_batch__free_unpacked(back, NULL);
    free(buf);
}

START_TEST(test_append_with_entries) {
    uint64_t seed = nt_seed("test_append_with_entries");
    static uint8_t big[100000];
    nt_fill(&seed, big, sizeof big);
    static uint8_t conf[] = {1, 1, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0};
    raft_entry ents[3] = {
        {.index = 101, .term = 7, .type = RAFT_ENTRY_NORMAL, .data = big, .len = sizeof big},
        {.index = 102, .term = 7, .type = RAFT_ENTRY_NOOP},
        {.index = 103, .term = 8, .type = RAFT_ENTRY_CONF, .data = conf, .len = sizeof conf},
    };
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = 8,
                  .log_term = 6,
                  .index = 100,
                  .commit = 99,
                  .entries = ents,
                  .entries_count = 3};
    /* An append response with every "reject" field set, and a heartbeat. */
    raft_msg resp = {.type = RAFT_MSG_APPEND_RESP,
                     .from = 2,
                     .to = 1,
                     .term = 8,
                     .index = 50,
                     .reject = true,
                     .reject_hint = 47,
                     .hint_term = 5};
    raft_msg hb = {.type = RAFT_MSG_HEARTBEAT,
                   .from = 1,
                   .to = 3,
                   .term = 9,
                   .commit = 120,
                   .context = 0xFFFFFFFFFFFFFFFFull};
    raft_msg vote = {.type = RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 10, .transfer = true};
    raft_msg all[4] = {m, resp, hb, vote};
    round_trip(all, 4);
}
END_TEST

START_TEST(test_snapshot_fields) {
    uint64_t seed = nt_seed("test_snapshot_fields");
    static uint8_t chunk[KV_SNAPSHOT_CHUNK_BYTES];
    nt_fill(&seed, chunk, sizeof chunk);
    raft_msg m = {.type = RAFT_MSG_SNAPSHOT,
                  .from = 1,
                  .to = 4,
                  .term = 12,
                  .snap = {.index = 5000,
                           .term = 11,
                           .membership = {.voters_count = 3,
                                          .learners_count = 2,
                                          .voters = {1, 2, 3},
                                          .learners = {4, 5}}},
                  .snap_offset = 3 * (uint64_t)KV_SNAPSHOT_CHUNK_BYTES,
                  .snap_total = 5 * (uint64_t)KV_SNAPSHOT_CHUNK_BYTES - 17,
                  .snap_data = chunk,
                  .snap_len = sizeof chunk,
                  .snap_last = true};
    raft_msg ack = {.type = RAFT_MSG_SNAPSHOT_RESP,
                    .from = 4,
                    .to = 1,
                    .term = 12,
                    .snap = {.index = 5000, .term = 11},
                    .snap_offset = 4 * (uint64_t)KV_SNAPSHOT_CHUNK_BYTES};
    /* A membership at the limit: KV_NODES_MAX members in all. */
    raft_msg full = m;
    full.snap.membership.voters_count = 5;
    full.snap.membership.learners_count = KV_NODES_MAX - 5;
    for (uint32_t i = 0; i < KV_NODES_MAX; i++) {
        if (i < 5)
            full.snap.membership.voters[i] = i + 1;
        else
            full.snap.membership.learners[i - 5] = i + 1;
    }
    full.snap_data = NULL;
    full.snap_len = 0;
    raft_msg all[3] = {m, ack, full};
    round_trip(all, 3);
}
END_TEST

START_TEST(test_invalid_from_wire) {
    raft_msg m;
    uint64_t ids[KV_NODES_MAX + 1];
    for (size_t i = 0; i <= KV_NODES_MAX; i++)
        ids[i] = i + 1;

    Kv__RaftMessage pb = KV__RAFT_MESSAGE__INIT;
    pb.type = RAFT_MSG_SNAPSHOT;
    pb.n_snap_voters = 5;
    pb.snap_voters = ids;
    pb.n_snap_learners = KV_NODES_MAX - 4; /* one member too many */
    pb.snap_learners = ids + 5;
    ck_assert_int_eq(raftwire_from_pb(&pb, &m), KV_EPROTO);
    pb.n_snap_learners = 0;
    pb.n_snap_voters = KV_NODES_MAX + 1;
    ck_assert_int_eq(raftwire_from_pb(&pb, &m), KV_EPROTO);
    pb.n_snap_voters = KV_NODES_MAX;
    ck_assert_int_eq(raftwire_from_pb(&pb, &m), 0);

    Kv__RaftMessage t = KV__RAFT_MESSAGE__INIT;
    t.type = 0;
    ck_assert_int_eq(raftwire_from_pb(&t, &m), KV_EPROTO);
    t.type = RAFT_MSG_TIMEOUT_NOW + 1;
    ck_assert_int_eq(raftwire_from_pb(&t, &m), KV_EPROTO);

    /* A CONF entry without data; an entry of an unknown type. */
    Kv__RaftEntry e1 = KV__RAFT_ENTRY__INIT, e2 = KV__RAFT_ENTRY__INIT;
    e1.type = RAFT_ENTRY_NORMAL;
    e1.index = 1;
    e2.type = RAFT_ENTRY_CONF;
    e2.index = 2;
    Kv__RaftEntry *eps[2] = {&e1, &e2};
    Kv__RaftMessage a = KV__RAFT_MESSAGE__INIT;
    a.type = RAFT_MSG_APPEND;
    a.n_entries = 2;
    a.entries = eps;
    ck_assert_int_eq(raftwire_from_pb(&a, &m), KV_EPROTO);
    e2.type = RAFT_ENTRY_CONF + 1;
    ck_assert_int_eq(raftwire_from_pb(&a, &m), KV_EPROTO);
    e2.type = RAFT_ENTRY_NOOP; /* now valid; an empty NORMAL entry is fine */
    ck_assert_int_eq(raftwire_from_pb(&a, &m), 0);
    ck_assert_uint_eq(m.entries_count, 2);
    ck_assert_ptr_null(m.entries[0].data);
    free(m.entries);
}
END_TEST

int main(void) {
    Suite *s = suite_create("net_raftwire");
    TCase *tc = tcase_create("raftwire");
    tcase_add_test(tc, test_append_with_entries);
    tcase_add_test(tc, test_snapshot_fields);
    tcase_add_test(tc, test_invalid_from_wire);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
