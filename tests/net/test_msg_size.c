/* Every message the Raft core builds fits in one frame once encoded
 * (issue 10): the core counts each entry's protobuf overhead, not only its
 * payload, so no follower waits behind an APPEND that net must drop as
 * TOOBIG. Checked on the encoding net sends: each kv.RaftMessage as a field
 * of a kv.RaftBatch (net_peer.c link_send). */
#include "net/net.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "net_test_loop.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of m as one field of a RaftBatch: tag, length, message. */
static size_t wire_bytes(const raft_msg *m) {
    Kv__RaftEntry *ents = malloc((m->entries_count + 1) * sizeof *ents);
    Kv__RaftEntry **ptrs = malloc((m->entries_count + 1) * sizeof *ptrs);
    ck_assert(ents != NULL && ptrs != NULL);
    Kv__RaftMessage pb;
    raftwire_to_pb(m, &pb, ents, ptrs);
    size_t sz = kv__raft_message__get_packed_size(&pb);
    free(ents);
    free(ptrs);
    size_t v = 1;
    for (size_t x = sz; x >= 0x80; x >>= 7)
        v++;
    return 1 + v + sz;
}

/* Proposes count entries of len bytes, then checks that the next Ready's
 * APPENDs to node 2 carry them all and each fits in a frame. Returns the
 * number of APPENDs. */
static size_t propose_and_check(raft *r, size_t count, size_t len) {
    static uint8_t bytes[KV_ENTRY_BYTES_MAX];
    ck_assert_uint_le(len, sizeof bytes);
    raft_buf *bufs = calloc(count, sizeof *bufs);
    ck_assert_ptr_nonnull(bufs);
    for (size_t i = 0; i < count; i++)
        bufs[i] = (raft_buf){.data = bytes, .len = len};
    uint64_t first;
    ck_assert_int_eq(raft_propose_batch(r, bufs, count, &first), 0);
    free(bufs);
    struct raft_ready rd;
    ck_assert_int_eq(raft_ready(r, &rd), 0);
    size_t appends = 0, entries = 0;
    for (size_t i = 0; i < rd.msgs_count; i++) {
        const raft_msg *m = &rd.msgs[i];
        if (m->type != RAFT_MSG_APPEND || m->to != 2)
            continue;
        appends++;
        entries += m->entries_count;
        size_t w = wire_bytes(m);
        ck_assert_msg(w <= KV_FRAME_BYTES_MAX, "APPEND %zu of %zu entries is %zu bytes, over %u",
                      appends, m->entries_count, w, KV_FRAME_BYTES_MAX);
    }
    ck_assert_uint_eq(entries, count);
    raft_advance(r, &rd);
    return appends;
}

/* Entries with no payload once cost nothing against max_msg_bytes: one
 * APPEND took them all, megabytes over the frame limit. */
START_TEST(test_many_empty_entries_fit) {
    raft *r = nt_leader();
    ck_assert_uint_gt(propose_and_check(r, 400000, 0), 1);
    raft_free(r);
}
END_TEST

/* 1-byte entries up to max_msg_bytes of payload were ~13 times that once
 * encoded. */
START_TEST(test_many_small_entries_fit) {
    raft *r = nt_leader();
    ck_assert_uint_gt(propose_and_check(r, 300000, 1), 1);
    raft_free(r);
}
END_TEST

/* The largest entry goes alone and fits; one byte more is refused at the
 * proposal. */
START_TEST(test_largest_entry_fits) {
    raft *r = nt_leader();
    ck_assert_uint_eq(propose_and_check(r, 1, KV_ENTRY_BYTES_MAX), 1);
    static uint8_t big[KV_ENTRY_BYTES_MAX + 1];
    ck_assert_int_eq(raft_propose(r, big, sizeof big, NULL), KV_ETOOBIG);
    raft_free(r);
}
END_TEST

/* The bounds kv/limits.h gives for the wire's overhead hold for the
 * largest values every field can take. */
START_TEST(test_overhead_bounds) {
    raft_msg m = {
        .type = RAFT_MSG_TIMEOUT_NOW, .reject = true, .transfer = true, .snap_last = true};
    m.from = m.to = m.term = m.log_term = m.index = m.commit = UINT64_MAX;
    m.reject_hint = m.hint_term = m.context = m.snap_offset = m.snap_total = UINT64_MAX;
    m.snap.index = m.snap.term = UINT64_MAX;
    m.snap.membership.voters_count = 5;
    m.snap.membership.learners_count = KV_NODES_MAX - 5;
    for (uint32_t i = 0; i < KV_NODES_MAX; i++)
        *(i < 5 ? &m.snap.membership.voters[i] : &m.snap.membership.learners[i - 5]) =
            UINT64_MAX - i;
    static uint8_t chunk[KV_SNAPSHOT_CHUNK_BYTES];
    m.snap_data = chunk;
    m.snap_len = sizeof chunk;
    size_t base = wire_bytes(&m);
    ck_assert_uint_le(base, KV_RAFT_MSG_WIRE_OVERHEAD_BYTES + KV_SNAPSHOT_CHUNK_BYTES);
    m.snap_data = NULL;
    m.snap_len = 0;
    base = wire_bytes(&m);
    ck_assert_uint_le(base, KV_RAFT_MSG_WIRE_OVERHEAD_BYTES);
    /* each entry adds at most its payload plus the entry overhead */
    static uint8_t data[KV_ENTRY_BYTES_MAX];
    static raft_entry e[3];
    size_t lens[3] = {0, 1, KV_ENTRY_BYTES_MAX};
    for (int i = 0; i < 3; i++) {
        e[i] = (raft_entry){.index = UINT64_MAX, .term = UINT64_MAX, .type = UINT32_MAX};
        e[i].data = lens[i] ? data : NULL;
        e[i].len = lens[i];
    }
    m.entries = e;
    m.entries_count = 3;
    size_t with = wire_bytes(&m);
    ck_assert_uint_le(with, base + 3 * KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES + 1 + KV_ENTRY_BYTES_MAX);
    /* and the sum stays in a frame */
    m.entries = &e[2];
    m.entries_count = 1;
    ck_assert_uint_le(wire_bytes(&m), KV_FRAME_BYTES_MAX);
}
END_TEST

int main(void) {
    Suite *s = suite_create("net_msg_size");
    TCase *tc = tcase_create("msg_size");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_many_empty_entries_fit);
    tcase_add_test(tc, test_many_small_entries_fit);
    tcase_add_test(tc, test_largest_entry_fits);
    tcase_add_test(tc, test_overhead_bounds);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
