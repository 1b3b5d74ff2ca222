/*
 * kv-jepsen: membership nemeses, under load.
 *
 *   member    remove a follower (kv_member_remove), stop it, wipe its data
 *             dir, add it back as a new member (kv_member_add: a learner),
 *             start it with --join, wait until it is a voter again. A
 *             replaced disk never comes back as itself (docs/rules.md).
 *   transfer  hand leadership to a random follower (kv_transfer_leader).
 *
 * Operator calls that fail with BUSY or NOTLEADER are retried for a while;
 * one that still fails ends the event without failing the run (an operator
 * would retry), but is logged. A node that does not come back as a voter
 * fails the run (nodes_check_up and the final kv_check see it).
 */
#include <inttypes.h>
#include <string.h>

#include "jepsen.h"
#include "kv/client.h"

static kv_client *op_client(void) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 3000;
    o.connect_timeout_ms = 300;
    kv_client *c = NULL;
    return kv_client_open(&c, endpoints, &o) == 0 ? c : NULL;
}

/* The role of name in the leader's member list: 'v' voter, 'l' learner or
 * joining, 0 not a member, -1 unknown. */
static int member_role(kv_client *c, const char *name) {
    kv_member *m = NULL;
    size_t n = 0;
    if (kv_member_list(c, &m, &n) != 0)
        return -1;
    int role = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, name) == 0)
            role = m[i].learner || m[i].joining ? 'l' : 'v';
    kv_free(m);
    return role;
}

/* A random follower that is running, or -1. */
static int pick_follower(rng *r) {
    int leader = find_leader();
    for (int t = 0; leader < 0 && t < 20; t++) {
        nodes_sleep(250);
        leader = find_leader();
    }
    int start = (int)rng_range(r, 0, (uint64_t)opt.nodes - 1);
    for (int k = 0; k < opt.nodes; k++) {
        int i = (start + k) % opt.nodes;
        if (i != leader && nodes[i].pid > 0)
            return leader >= 0 ? i : -1;
    }
    return -1;
}

/* Retries an operator call (8 tries, 250 ms apart) while it answers BUSY, NOTLEADER,
 * UNAVAILABLE or TIMEOUT. */
#define OP_RETRY(rc, call)                                                                         \
    do {                                                                                           \
        for (int t_ = 0; t_ < 8; t_++) {                                                           \
            rc = (call);                                                                           \
            if (rc != KV_EBUSY && rc != KV_ENOTLEADER && rc != KV_EUNAVAILABLE &&                  \
                rc != KV_ETIMEOUT)                                                                 \
                break;                                                                             \
            nodes_sleep(250);                                                                      \
        }                                                                                          \
    } while (0)

/* Brings node i back as a new member; 0, or -1 when it did not become a
 * voter within 30 s. */
static int member_readd(kv_client *c, int i, const char *name) {
    char addr[64];
    node_addr(i, addr, sizeof addr);
    int rc;
    OP_RETRY(rc, kv_member_add(c, name, addr));
    if (rc != 0 && rc != KV_EEXIST) {
        logf_("nemesis: member add %s failed: %s", name, kv_errword(rc));
        return -1;
    }
    if (node_start_join(i) != 0)
        return -1;
    for (int t = 0; t < 120; t++) {
        if (member_role(c, name) == 'v') {
            nodes[i].joined = false; /* restarts from its data dir from now on */
            logf_("nemesis: %s is a voter again", name);
            return 0;
        }
        nodes_sleep(250);
    }
    logf_("nemesis: %s did not become a voter within 30 s", name);
    return -1;
}

int member_replace(int i) {
    char name[16];
    snprintf(name, sizeof name, "n%d", i + 1);
    kv_client *c = op_client();
    if (c == NULL)
        return -1;
    int rc;
    OP_RETRY(rc, kv_member_remove(c, name));
    if (rc != 0 && member_role(c, name) != 0) {
        logf_("nemesis: member remove %s failed: %s", name, kv_errword(rc));
        kv_client_close(c);
        return -1;
    }
    int st = node_stop(i);
    if (st != 0)
        logf_("nemesis: removed %s stopped with status 0x%x", name, (unsigned)st);
    int out = node_wipe(i) == 0 ? member_readd(c, i, name) : -1;
    kv_client_close(c);
    if (out != 0) {
        logf_("nemesis: %s could not be replaced", name);
        atomic_fetch_add(&unexpected_exits, 1); /* a member that did not come back */
    }
    return 0;
}

static int nem_member(rng *r) {
    int i = pick_follower(r);
    if (i < 0) {
        logf_("nemesis: member: no leader found; skipped");
        nemesis_counts[NEM_MEMBER]--; /* did not happen: try again later */
        return 0;
    }
    logf_("nemesis: member remove n%d, wipe, add back with --join", i + 1);
    return member_replace(i);
}

static int nem_transfer(rng *r) {
    int i = pick_follower(r);
    kv_client *c = op_client();
    if (i >= 0 && c != NULL) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i + 1);
        int rc;
        OP_RETRY(rc, kv_transfer_leader(c, name));
        logf_("nemesis: transfer leadership to %s: %s", name, rc == 0 ? "done" : kv_errword(rc));
    }
    if (c != NULL)
        kv_client_close(c);
    return 0;
}

int nemesis_members(rng *r, int kind) {
    return kind == NEM_MEMBER ? nem_member(r) : nem_transfer(r);
}
