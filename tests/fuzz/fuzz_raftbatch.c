/* Fuzz target: a peer's RaftBatch, decoded as net_conn.c decodes it
 * (kv__raft_batch__unpack, raftwire_from_pb) and stepped into a raft node
 * (tests/raft/unit/hostile.c: node 1 of voters 1..3 and learner 4, with a
 * log of several terms) whose invariants are checked after every message.
 * Input: a role byte (hn_role, modulo), a flags byte, the RaftBatch.
 * Flags: bit 0 addresses every message to node 1 (otherwise most are
 * refused as not ours); bit 1 ticks the node 50 times after each message
 * (elections, heartbeats, snapshot retries). */
#include "fuzz.h"

#include "hostile.h"
#include "kv/errors.h"
#include "net/net.h"

#include <string.h>

#define FUZZ_TICKS 50

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    hn_role role = (hn_role)(data[0] % HN_ROLES);
    uint8_t flags = data[1];
    Kv__RaftBatch *b = kv__raft_batch__unpack(NULL, size - 2, data + 2);
    if (b == NULL)
        return 0;
    hn h;
    hn_start(&h, role, 1 + data[0]);
    for (size_t i = 0; i < b->n_msgs; i++) {
        raft_msg m;
        int rc = raftwire_from_pb(b->msgs[i], &m);
        FUZZ_CHECK(rc == 0 || rc == KV_EPROTO || rc == KV_ENOMEM);
        if (rc != 0)
            continue;
        FUZZ_CHECK(m.entries_count == b->msgs[i]->n_entries);
        if (flags & 1)
            m.to = 1;
        rc = hn_step(&h, &m); /* aborts when an invariant breaks */
        FUZZ_DEBUG("raftbatch: role %d type %u -> %d\n", role, m.type, rc);
        free(m.entries);
        for (int t = 0; (flags & 2) && t < FUZZ_TICKS; t++)
            hn_tick(&h);
    }
    hn_free(&h);
    kv__raft_batch__free_unpacked(b, NULL);
    return 0;
}
