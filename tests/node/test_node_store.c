/*
 * src/node's Ready loop over the real storage, under a seeded fault
 * schedule: three nodes in one process, each a node (node.h) over a half of
 * node_io built on
 *   - the real write-ahead log (wal.h) and hard state (hardstate.h), on one
 *     fake file layer (fs_fake.h) per node: a crash keeps what was synced
 *     and a random subset of the pages written since (FSF_CRASH_PAGES), or
 *     a prefix of them (FSF_CRASH_TORN);
 *   - the real RocksDB state machine (sm.h) in a temporary directory, fed
 *     the entries as kvd feeds it (src/server/server_io.c): client commands
 *     (kv.Command: REGISTER, then PUTs in the session with their sequence
 *     numbers), no-ops, and the membership for CONF entries;
 *   - an in-memory network: messages delivered in a seeded random order,
 *     some dropped, some delivered twice.
 * A restart is kvd's start-up: store_open (src/server/store.c: the log,
 * the state machine, their agreement, the entries to replay), then hs_load
 * checked against the log's last term, then node_new.
 *
 * THE LOG'S THREADS, made deterministic. The log writes and syncs on its own
 * threads; its completions are recorded under a mutex (as server_io.c's
 * on_wal_done) and handed to node_log_durable by the test's thread only at a
 * "sync" step of the schedule. Each node's fake disk has a sync gate (the
 * fsf sync hook): the log's storage thread blocks at the start of every file
 * sync until the schedule opens the gate, so after each append the test
 * waits until that thread is parked at the gate (its batch written, not
 * synced) and the state of the disk at a crash is a function of the seed.
 * A sync step opens the gate until every append so far has completed.
 *
 * A CRASH of a node: its waiting writes are answered CLOSED (the clients'
 * connections drop); the fake disk dies (fsf_die_at) so the parked sync and
 * everything queued fail, the log is closed, and fsf_crash loses what was
 * not synced. RocksDB runs with its own WAL off, so after a crash it holds
 * the state of its last flush: the test takes checkpoints (snap_create, a
 * flush) at random steps, and a crash puts the newest one back
 * (snap_restore) or, without one, an empty db -- or, one time in three,
 * keeps the state machine whole (a crash right after a flush). A power loss
 * crashes every node at once. A disk fault arms one of a node's next few
 * writes or syncs to fail (fsf_fail_write, fsf_fail_sync): the log refuses
 * every later append, or hs_save fails inside a Ready, and the node
 * fail-stops as kvd does (its I/O exit): the test crashes it and restarts it
 * later from what its disk holds.
 *
 * THE CHECKS. As it runs: node_run fails only where a disk fault was armed;
 * an entry is applied only once the log holds it durably (wal_last_index
 * reads durable entries only); the state machine's reply to a client's
 * current attempt is OK (a lost session shows here); start-up succeeds on
 * whatever a crash left (store_open refuses a state machine past its log);
 * a linearizable read (node_read, then sm_get as kvd serves it) sees exactly
 * the last write its client had acknowledged to that key. After the run the
 * cluster heals (every node up, nothing dropped) until every client has had
 * every write acknowledged (an unknown outcome is retried with the same
 * session and sequence, as libkvclient does) and the three state machines
 * reach the leader's commit index; then every key holds the value of the
 * last write acknowledged for it on every node (half the keys are written
 * once, so a lost acknowledged write shows), and the three sm_hash agree.
 *
 * RUNNING. The unit test runs NS_UNIT_SEEDS seeds of NS_UNIT_STEPS steps.
 *   KV_NODE_STORE_SEED=S       replay seed S alone (printed by every run)
 *   KV_NODE_STORE_SEEDS=N      N seeds from S (or 1): the longer run
 *   KV_NODE_STORE_STEPS=K      steps per seed
 *   KV_NODE_STORE_TRACE=1      a line of each node's term, commit, last and
 *                              applied index every 100 steps
 *   KV_NODE_STORE_EARLY_ACK=1  the control: appends reported durable at once
 *                              (node_log_durable inside log_append, before
 *                              the fdatasync), the local "applied only once
 *                              durable" check off: the checks above must
 *                              catch the writes lost at crashes (most seeds
 *                              fail; of the unit seeds, 2 and 3).
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/logging.h"
#include "kv/errors.h"
#include "node/node.h"
#include "proto/kv.pb-c.h"
#include "storage/fs_fake.h"
#include "storage/sm.h"

#include "node_store.h"

/* ---- the clients (the network: node_store_world.c) ---------------------------- */

static size_t ns_up_count(const ns_world *w) {
    size_t k = 0;
    for (uint32_t id = 1; id <= NS_NODES; id++)
        k += w->n[id].nd != NULL;
    return k;
}

/* A random node that is up (down: want_up false), or NULL. */
static ns_node *ns_pick(ns_world *w, bool want_up) {
    uint64_t start = ns_below(w, NS_NODES);
    for (uint32_t k = 0; k < NS_NODES; k++) {
        ns_node *n = &w->n[1 + (start + k) % NS_NODES];
        if ((n->nd != NULL) == want_up)
            return n;
    }
    return NULL;
}

/* Where a client sends: the leader some up node names, else any up node. */
static ns_node *ns_target(ns_world *w) {
    ns_node *n = ns_pick(w, true);
    if (n == NULL)
        return NULL;
    uint64_t leader = node_leader(n->nd);
    if (leader >= 1 && leader <= NS_NODES && w->n[leader].nd != NULL)
        return &w->n[leader];
    return n;
}

/* The client's operation as a kv.Command, as server_req.c packs a request. */
static size_t ns_command(const ns_world *w, const ns_client *c, uint8_t *buf, size_t cap) {
    Kv__Command cmd = KV__COMMAND__INIT;
    if (c->put == SIZE_MAX) {
        cmd.op = KV__COMMAND__OP__REGISTER;
    } else {
        const ns_put *p = &w->puts[c->put];
        cmd.op = KV__COMMAND__OP__PUT;
        cmd.client_id = c->session;
        cmd.seq = p->seq;
        cmd.key.data = (uint8_t *)p->key;
        cmd.key.len = strlen(p->key);
        cmd.value.data = (uint8_t *)p->val;
        cmd.value.len = strlen(p->val);
    }
    size_t len = kv__command__get_packed_size(&cmd);
    ck_assert_uint_le(len, cap);
    return kv__command__pack(&cmd, buf);
}

/* Client ci acts: starts its next operation (when new ones are allowed),
 * or (re)sends the one whose outcome it does not know. */
static void ns_client_act(ns_world *w, uint32_t ci, bool may_start) {
    ns_client *c = &w->clients[ci];
    if (!c->busy) {
        if (!may_start || (c->session != 0 && w->puts_count >= w->puts_budget))
            return;
        c->busy = true;
        c->attempt = SIZE_MAX;
        c->put = SIZE_MAX;
        c->reading = c->seq > 0 && ns_below(w, 4) == 0;
        if (c->reading) { /* the last write to one of its keys */
            uint64_t seq = 1 + ns_below(w, c->seq);
            for (size_t i = 0; i < w->puts_count; i++)
                if (w->puts[i].client == ci && w->puts[i].seq == seq)
                    c->put = i;
            for (size_t i = c->put + 1; i < w->puts_count; i++)
                if (strcmp(w->puts[i].key, w->puts[c->put].key) == 0)
                    c->put = i;
            ck_assert(c->put != SIZE_MAX && w->puts[c->put].acked);
        } else if (c->session != 0) {
            ns_put *p = &w->puts[w->puts_count];
            c->put = w->puts_count++;
            p->client = ci;
            p->seq = ++c->seq;
            if (p->seq % 2 == 0) /* written once: a lost acknowledged write shows */
                snprintf(p->key, sizeof p->key, "c%u-u%" PRIu64, ci, p->seq);
            else
                snprintf(p->key, sizeof p->key, "c%u-k%" PRIu64, ci, p->seq % NS_OVERWRITE_KEYS);
            snprintf(p->val, sizeof p->val, "c%u-s%" PRIu64 "-%08" PRIx64, ci, p->seq,
                     ns_rand(w) & 0xffffffffu);
        }
    } else if (c->attempt != SIZE_MAX && w->step - c->attempt_t < NS_RETRY_STEPS) {
        return; /* still waiting for its answer */
    }
    ns_node *n = ns_target(w);
    if (n == NULL)
        return;
    ck_assert_uint_lt(w->attempts_count, NS_ATTEMPTS_MAX);
    size_t aid = w->attempts_count;
    node_tag tag = {.id = aid};
    int rc;
    if (c->reading) {
        rc = node_read(n->nd, &tag);
    } else {
        uint8_t buf[256];
        size_t len = ns_command(w, c, buf, sizeof buf);
        rc = node_propose(n->nd, buf, len, &tag, NULL);
    }
    if (rc != 0) {
        ck_assert_msg(rc == KV_ENOTLEADER || rc == KV_EBUSY, "%s: %s",
                      c->reading ? "node_read" : "node_propose", kv_errword(rc));
        return;
    }
    w->attempts[aid] = (ns_attempt){.client = ci, .read = c->reading, .put = c->put, .node = n->id};
    w->attempts_count++;
    c->attempt = aid;
    c->attempt_t = w->step;
    w->st.attempts++;
    ns_run(n);
}

/* ---- the schedule ---------------------------------------------------------------- */

static void ns_tick_all(ns_world *w) {
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        if (w->n[id].nd != NULL) {
            node_tick(w->n[id].nd);
            ns_run(&w->n[id]);
        }
    }
    w->st.ticks++;
}

/* One step of the schedule, chosen by the seed (per mille). */
static void ns_step(ns_world *w) {
    w->step++;
    w->st.steps++;
    uint64_t r = ns_below(w, 1000);
    ns_node *n;
    if (r < 350) {
        for (uint64_t k = 1 + ns_below(w, 6); k > 0 && w->net_count > 0; k--) {
            uint64_t d = ns_below(w, 100);
            ns_deliver(w, ns_below(w, w->net_count), d < 5, d >= 97);
        }
    } else if (r < 450) {
        ns_tick_all(w);
    } else if (r < 500) {
        if ((n = ns_pick(w, true)) != NULL) {
            node_tick(n->nd);
            ns_run(n);
            w->st.ticks++;
        }
    } else if (r < 650) {
        if ((n = ns_pick(w, true)) != NULL)
            ns_sync(n);
    } else if (r < 850) {
        ns_client_act(w, (uint32_t)ns_below(w, NS_CLIENTS), true);
    } else if (r < 860) {
        if ((n = ns_pick(w, true)) != NULL)
            ns_checkpoint(n);
    } else if (r < 863) {
        if ((n = ns_pick(w, true)) != NULL)
            ns_crash(n);
    } else if (r < 864) {
        if (ns_up_count(w) > 0)
            w->st.power_losses++;
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd != NULL)
                ns_crash(&w->n[id]);
    } else if (r < 866) {
        if ((n = ns_pick(w, true)) != NULL && !n->disk_fault) {
            /* the disk fails one of the next few writes or syncs */
            if (ns_below(w, 2) == 0)
                fsf_fail_sync(n->f, 1 + ns_below(w, 4));
            else
                fsf_fail_write(n->f, 1 + ns_below(w, 4));
            n->disk_fault = true;
            w->st.disk_faults++;
        }
    } else if (r < 914) {
        if ((n = ns_pick(w, false)) != NULL)
            ns_restart(n);
    } else {
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd != NULL)
                ns_sync(&w->n[id]);
    }
}

static bool ns_clients_idle(const ns_world *w) {
    for (uint32_t c = 0; c < NS_CLIENTS; c++)
        if (w->clients[c].busy)
            return false;
    return true;
}

/* Every node up, nothing dropped: runs until every client operation is
 * acknowledged and every state machine is at the leader's commit index. */
static void ns_heal(ns_world *w) {
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        fsf_fail_sync(w->n[id].f, 0); /* a fault that fired already still stops its node */
        fsf_fail_write(w->n[id].f, 0);
    }
    for (uint32_t round = 0; round < NS_HEAL_ROUNDS; round++) {
        w->st.heal_rounds++;
        w->step++;
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd == NULL)
                ns_restart(&w->n[id]);
        for (uint32_t id = 1; id <= NS_NODES; id++)
            ns_sync(&w->n[id]);
        for (size_t k = w->net_count; k > 0 && w->net_count > 0; k--)
            ns_deliver(w, ns_below(w, w->net_count), false, false);
        for (uint32_t c = 0; c < NS_CLIENTS; c++)
            ns_client_act(w, c, false);
        uint64_t leader = 0;
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd != NULL && node_is_leader(w->n[id].nd))
                leader = id;
        if (leader != 0 && ns_up_count(w) == NS_NODES && ns_clients_idle(w) && w->net_count == 0) {
            uint64_t commit = raft_commit_index(node_raft(w->n[leader].nd));
            bool all = commit == raft_last_index(node_raft(w->n[leader].nd));
            for (uint32_t id = 1; id <= NS_NODES; id++)
                all = all && sm_applied_index(w->n[id].s) == commit;
            if (all)
                return;
        }
        if (round % 4 == 0) {
            ns_tick_all(w);
        }
    }
    char what[512];
    size_t at = 0;
    for (uint32_t id = 1; id <= NS_NODES && w->n[id].nd != NULL; id++) {
        raft *r = node_raft(w->n[id].nd);
        at += (size_t)snprintf(
            what + at, sizeof what - at,
            " n%u: %s term %" PRIu64 " commit %" PRIu64 " last %" PRIu64 " applied %" PRIu64 ";",
            id, node_is_leader(w->n[id].nd) ? "leader" : "follower", raft_term(r),
            raft_commit_index(r), raft_last_index(r), sm_applied_index(w->n[id].s));
    }
    ck_abort_msg("seed %" PRIu64 ": the cluster did not heal in %u rounds (clients idle: %d,"
                 " messages in flight %zu):%s",
                 w->seed, NS_HEAL_ROUNDS, ns_clients_idle(w), w->net_count, what);
}

/* Every key holds the last value acknowledged for it, on every node; the
 * three state machines hash alike at one applied index. */
static void ns_check(ns_world *w) {
    uint64_t hash[NS_NODES + 1];
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        ck_assert_int_eq(sm_hash(w->n[id].s, &hash[id]), 0);
        ck_assert_uint_eq(sm_applied_index(w->n[id].s), sm_applied_index(w->n[1].s));
    }
    for (size_t i = 0; i < w->puts_count; i++) {
        const ns_put *p = &w->puts[i];
        ck_assert_msg(p->acked, "seed %" PRIu64 ": write %s=%s never acknowledged", w->seed, p->key,
                      p->val);
        bool last = true; /* the last write of its key */
        for (size_t j = i + 1; j < w->puts_count && last; j++)
            last = strcmp(w->puts[j].key, p->key) != 0;
        if (!last)
            continue;
        for (uint32_t id = 1; id <= NS_NODES; id++) {
            void *v = NULL;
            size_t vlen = 0;
            int rc = sm_get(w->n[id].s, p->key, strlen(p->key), &v, &vlen);
            ck_assert_msg(rc == 0 && vlen == strlen(p->val) && memcmp(v, p->val, vlen) == 0,
                          "seed %" PRIu64
                          ": node %u lost acknowledged write %s=%s (applied at %" PRIu64
                          "): it holds %s%.*s",
                          w->seed, id, p->key, p->val, p->index, rc == 0 ? "" : kv_errword(rc),
                          rc == 0 ? (int)vlen : 0, rc == 0 ? (const char *)v : "");
            free(v);
        }
    }
    for (uint32_t id = 2; id <= NS_NODES; id++)
        ck_assert_msg(hash[id] == hash[1],
                      "seed %" PRIu64 ": node %u's state machine hash %016" PRIx64
                      " differs from node 1's %016" PRIx64 " at applied index %" PRIu64,
                      w->seed, id, hash[id], hash[1], sm_applied_index(w->n[1].s));
}

/* One line of the cluster's state (KV_NODE_STORE_TRACE). */
static void ns_trace(const ns_world *w) {
    printf("step %" PRIu64 ": in flight %zu, writes %zu, acknowledged %" PRIu64 " |", w->step,
           w->net_count, w->puts_count, w->st.acked);
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        node *nd = w->n[id].nd;
        if (nd == NULL) {
            printf(" n%u down", id);
            continue;
        }
        raft *r = node_raft(nd);
        printf(" n%u %s t%" PRIu64 " c%" PRIu64 " l%" PRIu64 " a%" PRIu64, id,
               node_is_leader(nd) ? "L" : "F", raft_term(r), raft_commit_index(r),
               raft_last_index(r), node_applied(nd));
    }
    printf("\n");
}

static uint64_t ns_env(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : dflt;
}

static void ns_run_seed(uint64_t seed, uint64_t steps) {
    bool early = ns_env("KV_NODE_STORE_EARLY_ACK", 0) != 0;
    printf("test_node_store: seed %" PRIu64 " (replay: KV_NODE_STORE_SEED=%" PRIu64
           " KV_NODE_STORE_STEPS=%" PRIu64 "%s ./test_node_store)\n",
           seed, seed, steps, early ? " KV_NODE_STORE_EARLY_ACK=1" : "");
    fflush(stdout);
    ns_world *w = ns_new(seed, early, steps / 8);
    printf("test_node_store: seed %" PRIu64 ": files in %s (kept when it fails)\n", seed, w->root);
    bool trace = getenv("KV_NODE_STORE_TRACE") != NULL;
    for (uint64_t s = 0; s < steps; s++) {
        ns_step(w);
        if (trace && s % 100 == 0)
            ns_trace(w);
    }
    ns_heal(w);
    ns_check(w);
    const ns_stats *t = &w->st;
    printf("test_node_store: seed %" PRIu64 " ok: %zu writes acknowledged (%" PRIu64
           " attempts, %" PRIu64 " unknown outcomes), %" PRIu64 " reads, applied %" PRIu64 "\n",
           seed, w->puts_count, t->attempts, t->unknown, t->reads, sm_applied_index(w->n[1].s));
    printf("  %" PRIu64 " crashes (%" PRIu64 " power losses, %" PRIu64 " fail-stops of %" PRIu64
           " disk faults armed; state machine kept %" PRIu64 ", back to a flush %" PRIu64
           ", empty %" PRIu64 "), %" PRIu64 " flush points, %" PRIu64 " syncs\n",
           t->crashes, t->power_losses, t->fail_stops, t->disk_faults, t->kept, t->restores,
           t->wiped, t->checkpoints, t->syncs);
    printf("  %" PRIu64 " messages delivered, %" PRIu64 " dropped, %" PRIu64 " duplicated; %" PRIu64
           " heal rounds\n",
           t->delivered, t->dropped, t->duplicated, t->heal_rounds);
    if (early)
        printf("test_node_store: control: %" PRIu64 " applies ran ahead of the log's durability\n",
               t->early_applies);
    fflush(stdout);
    ns_free(w);
}

START_TEST(test_ready_loop_real_storage_faults) {
    kv_log_set_level(getenv("KV_LOG") ? KV_LOG_DEBUG : KV_LOG_ERROR);
    uint64_t first = ns_env("KV_NODE_STORE_SEED", 1);
    uint64_t count =
        ns_env("KV_NODE_STORE_SEEDS", getenv("KV_NODE_STORE_SEED") ? 1 : NS_UNIT_SEEDS);
    uint64_t steps = ns_env("KV_NODE_STORE_STEPS", NS_UNIT_STEPS);
    for (uint64_t s = first; s < first + count; s++)
        ns_run_seed(s, steps);
}
END_TEST

static Suite *node_store_suite(void) {
    Suite *s = suite_create("node_store");
    TCase *t = tcase_create("faults");
    tcase_set_timeout(t, 0);
    tcase_add_test(t, test_ready_loop_real_storage_faults);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(node_store_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
