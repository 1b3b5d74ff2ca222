/*
 * kv-jepsen: the nemesis (see jepsen.h). Each event is drawn from the
 * seeded rng among the enabled kinds; it faults, waits, heals, and leaves
 * every node it touched running again (the watch for unexpected exits then
 * covers it again).
 */
#include <inttypes.h>
#include <string.h>

#include "jepsen.h"

const char *const nemesis_names[NEM_COUNT] = {
    [NEM_KILL] = "kill",
    [NEM_KILL_MAJORITY] = "kill-majority",
    [NEM_KILL_ALL] = "kill-all",
    [NEM_PAUSE] = "pause",
    [NEM_PAUSE_MAJORITY] = "pause-majority",
    [NEM_PAUSE_ALL] = "pause-all",
    [NEM_RESTART] = "restart",
    [NEM_CRASH] = "crash",
    [NEM_CRASH_MAJORITY] = "crash-majority",
    [NEM_CRASH_ALL] = "crash-all",
    [NEM_PART_LEADER] = "partition-leader",
    [NEM_PART_MAJORITY] = "partition-majority",
    [NEM_PART_BRIDGE] = "partition-bridge",
    [NEM_PART_ONEWAY] = "partition-oneway",
    [NEM_MEMBER] = "member",
    [NEM_TRANSFER] = "transfer",
    [NEM_CORRUPT] = "corrupt",
    [NEM_WIRE] = "wire",
    [NEM_PART_LONG] = "partition-long",
};
atomic_int liveness_failures;
int nemesis_counts[NEM_COUNT];

int nemesis_parse(const char *list, uint32_t *out) {
    char buf[512];
    if (strlen(list) >= sizeof buf)
        return -1;
    strcpy(buf, list);
    *out = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "all") == 0) {
            *out |= NEM_DEFAULT_MASK;
            continue;
        }
        int k = 0;
        while (k < NEM_COUNT && strcmp(t, nemesis_names[k]) != 0)
            k++;
        if (k == NEM_COUNT) {
            fprintf(stderr, "kv-jepsen: unknown nemesis '%s'\n", t);
            return -1;
        }
        *out |= 1u << k;
    }
    return *out != 0 ? 0 : -1;
}

/* Picks `count` distinct nodes into set[] (a bitmask), the leader first when
 * with_leader and one is found. */
static uint32_t pick_nodes(rng *r, int count, bool with_leader) {
    uint32_t set = 0;
    int leader = with_leader ? find_leader() : -1;
    int got = 0;
    if (leader >= 0) {
        set |= 1u << leader;
        got++;
    }
    while (got < count) {
        int i = (int)rng_range(r, 0, (uint64_t)opt.nodes - 1);
        if (!(set & (1u << i))) {
            set |= 1u << i;
            got++;
        }
    }
    return set;
}

static void set_str(uint32_t set, char *out, size_t n) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < opt.nodes && len + 5 < n; i++)
        if (set & (1u << i))
            len += (size_t)snprintf(out + len, n - len, "%sn%d", len ? "," : "", i + 1);
}

/* kill -9 of the nodes in set (crash: then their file systems drop what
 * was not synced), down for a while, restarted. */
static int nem_kill(rng *r, uint32_t set, bool crash) {
    char s[64];
    set_str(set, s, sizeof s);
    uint64_t down = rng_range(r, 500, 1500);
    bool torn = rng_range(r, 0, 1) == 0;
    uint64_t seed = rng_next(r);
    logf_("nemesis: %s %s, restart in %" PRIu64 " ms",
          !crash ? "kill -9"
          : torn ? "crash (kill -9, unsynced writes torn: a prefix kept)"
                 : "crash (kill -9, unsynced writes lost)",
          s, down);
    for (int i = 0; i < opt.nodes; i++)
        if (set & (1u << i))
            node_kill9(i);
    for (int i = 0; crash && i < opt.nodes; i++)
        if ((set & (1u << i)) && fs_crash(i, torn, seed + (uint64_t)i) != 0) {
            logf_("nemesis: the crash of n%d's file system failed", i + 1);
            return -1;
        }
    nodes_sleep(down);
    for (int i = 0; i < opt.nodes; i++)
        if ((set & (1u << i)) && node_start(i) != 0)
            return -1;
    return 0;
}

static int nem_pause(rng *r, uint32_t set) {
    char s[64];
    set_str(set, s, sizeof s);
    uint64_t pause = rng_range(r, 1000, 3000);
    logf_("nemesis: SIGSTOP %s for %" PRIu64 " ms", s, pause);
    for (int i = 0; i < opt.nodes; i++)
        if (set & (1u << i))
            node_pause(i);
    nodes_sleep(pause);
    for (int i = 0; i < opt.nodes; i++)
        if (set & (1u << i))
            node_resume(i);
    logf_("nemesis: SIGCONT %s", s);
    return 0;
}

static int nem_restart(rng *r) {
    logf_("nemesis: restart all nodes in turn");
    for (int i = 0; i < opt.nodes; i++) {
        int st = node_stop(i);
        if (st != 0) {
            logf_("nemesis: n%d stopped with status 0x%x (SIGTERM should exit 0)", i + 1,
                  (unsigned)st);
            atomic_fetch_add(&unexpected_exits, 1);
        }
        if (node_start(i) != 0)
            return -1;
        nodes_sleep(rng_range(r, 300, 700));
    }
    return 0;
}

/* Cuts a from b both ways in the drop matrix. */
static void cut(uint32_t *drop, int a, int b) {
    drop[a] |= 1u << b;
    drop[b] |= 1u << a;
}

/* The drop matrix of one partition kind (see net.c); *what describes it. */
static void partition_shape(rng *r, int kind, uint32_t *drop, char *what, size_t n) {
    int leader = find_leader();
    int pick = (int)rng_range(r, 0, (uint64_t)opt.nodes - 1);
    int l = leader >= 0 ? leader : pick;
    uint32_t side = 0;
    char s[64];
    if (kind == NEM_PART_LEADER) {
        for (int j = 0; j < opt.nodes; j++)
            if (j != l)
                cut(drop, l, j);
        snprintf(what, n, "leader n%d isolated", l + 1);
    } else if (kind == NEM_PART_MAJORITY || kind == NEM_PART_BRIDGE) {
        int bridge = kind == NEM_PART_BRIDGE ? pick : -1;
        int want = (opt.nodes - (bridge >= 0 ? 1 : 0)) / 2; /* the smaller side */
        side = want >= 1 && bridge != l && rng_range(r, 0, 1) == 0 ? 1u << l : 0;
        for (int got = side ? 1 : 0; got < want;) {
            int x = (int)rng_range(r, 0, (uint64_t)opt.nodes - 1);
            if (x != bridge && !(side & (1u << x))) {
                side |= 1u << x;
                got++;
            }
        }
        for (int a = 0; a < opt.nodes; a++)
            for (int b = 0; b < opt.nodes; b++)
                if ((side & (1u << a)) && !(side & (1u << b)) && b != bridge)
                    cut(drop, a, b);
        set_str(side, s, sizeof s);
        if (bridge >= 0)
            snprintf(what, n, "bridge: {%s} | n%d | the rest", s, bridge + 1);
        else
            snprintf(what, n, "{%s} cut from the majority", s);
    } else {
        bool deaf = rng_range(r, 0, 1) == 0;
        for (int j = 0; j < opt.nodes; j++)
            if (j != l) {
                if (deaf)
                    drop[l] |= 1u << j;
                else
                    drop[j] |= 1u << l;
            }
        snprintf(what, n,
                 deaf ? "one way: leader n%d hears nobody" : "one way: nobody hears leader n%d",
                 l + 1);
    }
}

static int nemesis_one(rng *r, int action);

/* Kinds that may run inside a partition: process faults and crashes. */
#define NEM_OVERLAP_MASK                                                                           \
    ((1u << NEM_KILL) | (1u << NEM_KILL_MAJORITY) | (1u << NEM_PAUSE) | (1u << NEM_CRASH) |        \
     (1u << NEM_CRASH_MAJORITY) | (1u << NEM_CRASH_ALL) | (1u << NEM_TRANSFER))

/* One enabled kind of NEM_OVERLAP_MASK, drawn from r, or -1. */
static int overlap_kind(rng *r) {
    int kinds[NEM_COUNT], n = 0;
    for (int k = 0; k < NEM_COUNT; k++)
        if ((opt.nemeses & NEM_OVERLAP_MASK & (1u << k)) != 0)
            kinds[n++] = k;
    return n == 0 ? -1 : kinds[rng_range(r, 0, (uint64_t)n - 1)];
}

static int nem_partition(rng *r, int kind) {
    uint32_t drop[NODES_MAX] = {0};
    char what[128];
    partition_shape(r, kind, drop, what, sizeof what);
    uint64_t ms = rng_range(r, 1500, 4000);
    /* Half the partitions overlap another fault, thrown while they last. */
    int other = rng_range(r, 0, 1) == 0 ? overlap_kind(r) : -1;
    logf_("nemesis: partition %s for %" PRIu64 " ms%s%s", what, ms, other >= 0 ? ", with " : "",
          other >= 0 ? nemesis_names[other] : "");
    for (int i = 0; i < opt.nodes; i++)
        if (drop[i] != 0 && net_drop(i, drop[i]) != 0)
            return -1;
    uint64_t t0 = now_ns();
    nodes_sleep(ms / 3);
    if (other >= 0 && nemesis_one(r, other) != 0)
        return -1;
    uint64_t spent = (now_ns() - t0) / 1000000u;
    nodes_sleep(spent < ms ? ms - spent : 0);
    if (net_heal() != 0)
        return -1;
    logf_("nemesis: partition healed");
    return 0;
}

/* How long a node cut off for PART_LONG_MS may take, once healed, to apply
 * what the leader had committed at the heal: a few election timeouts (kvd's
 * default is 500 ms) and a snapshot; minutes mean its links stayed dead. */
#define PART_LONG_MS 30000u
#define CATCH_UP_MS_MAX 10000u

/* Milliseconds until node f applied commit (polling), or UINT64_MAX past
 * 6 * CATCH_UP_MS_MAX. */
static uint64_t catch_up_ms(int f, uint64_t commit) {
    uint64_t t0 = now_ns(), c, a;
    while (now_ns() - t0 < 6ull * CATCH_UP_MS_MAX * 1000000u) {
        if (node_indexes(f, &c, &a) == 0 && a >= commit)
            return (now_ns() - t0) / 1000000u;
        nodes_sleep(100);
    }
    return UINT64_MAX;
}

/* A follower cut off from every other node for 30 s, while writes go on;
 * healed, it must catch up within CATCH_UP_MS_MAX. */
static int nem_partition_long(rng *r) {
    int leader = find_leader();
    int f = (int)rng_range(r, 0, (uint64_t)opt.nodes - 1);
    if (leader < 0 || f == leader)
        f = (leader + 1 + (int)rng_range(r, 0, (uint64_t)opt.nodes - 2)) % opt.nodes;
    uint32_t drop[NODES_MAX] = {0};
    for (int j = 0; j < opt.nodes; j++)
        if (j != f)
            cut(drop, f, j);
    logf_("nemesis: partition-long: n%d cut off for %u ms", f + 1, PART_LONG_MS);
    for (int i = 0; i < opt.nodes; i++)
        if (drop[i] != 0 && net_drop(i, drop[i]) != 0)
            return -1;
    nodes_sleep(PART_LONG_MS);
    if (net_heal() != 0)
        return -1;
    uint64_t commit = 0, applied, ms;
    int l = find_leader();
    if (l < 0 || node_indexes(l, &commit, &applied) != 0) {
        logf_("nemesis: partition-long healed; no leader answered");
        return 0;
    }
    ms = catch_up_ms(f, commit);
    if (ms > CATCH_UP_MS_MAX) {
        logf_("nemesis: n%d DID NOT CATCH UP within %u ms of the heal (leader n%d's commit %" PRIu64
              "; %s)",
              f + 1, CATCH_UP_MS_MAX, l + 1, commit, ms == UINT64_MAX ? "not in 60 s" : "late");
        atomic_fetch_add(&liveness_failures, 1);
    }
    if (ms != UINT64_MAX)
        logf_("nemesis: partition-long healed: n%d applied %" PRIu64 " after %" PRIu64 " ms", f + 1,
              commit, ms);
    return 0;
}

/* Frame faults on every peer link for a while (proxy.c). */
static int nem_wire(rng *r) {
    int delay = (int)rng_range(r, 0, 40), jitter = (int)rng_range(r, 0, 40);
    int dup = (int)rng_range(r, 0, 20), reorder = (int)rng_range(r, 0, 20);
    int cut = (int)rng_range(r, 0, 3);
    uint64_t ms = rng_range(r, 2000, 4000), f0, x0, f1, x1;
    proxy_counts(&f0, &x0);
    logf_("nemesis: wire: peer frames delayed %d+-%d ms, %d%% duplicated, %d%% reordered, "
          "%d%% cut, for %" PRIu64 " ms",
          delay, jitter, dup, reorder, cut, ms);
    proxy_faults(delay, jitter, dup, reorder, cut);
    nodes_sleep(ms);
    proxy_faults(0, 0, 0, 0, 0);
    proxy_counts(&f1, &x1);
    logf_("nemesis: wire healed (%" PRIu64 " frames, %" PRIu64 " faulted)", f1 - f0, x1 - x0);
    return 0;
}

bool nemesis_all_fired(void) {
    for (int k = 0; k < NEM_COUNT; k++)
        if ((opt.nemeses & (1u << k)) && nemesis_counts[k] == 0)
            return false;
    return true;
}

int nemesis_step(rng *r) {
    /* Every enabled kind once (in a seeded order), then any. */
    bool all = nemesis_all_fired();
    int enabled[NEM_COUNT], n = 0;
    for (int k = 0; k < NEM_COUNT; k++)
        if ((opt.nemeses & (1u << k)) && (all || nemesis_counts[k] == 0))
            enabled[n++] = k;
    int action = enabled[rng_range(r, 0, (uint64_t)n - 1)];
    return nemesis_one(r, action);
}

static int nemesis_one(rng *r, int action) {
    int majority = opt.nodes / 2 + 1;
    nemesis_counts[action]++;
    switch (action) {
    case NEM_KILL:
        return nem_kill(r, pick_nodes(r, 1, false), false);
    case NEM_KILL_MAJORITY:
        return nem_kill(r, pick_nodes(r, majority, false), false);
    case NEM_KILL_ALL:
        return nem_kill(r, pick_nodes(r, opt.nodes, false), false);
    case NEM_PAUSE:
        return nem_pause(r, pick_nodes(r, 1, true));
    case NEM_PAUSE_MAJORITY:
        return nem_pause(r, pick_nodes(r, majority, true));
    case NEM_PAUSE_ALL:
        return nem_pause(r, pick_nodes(r, opt.nodes, false));
    case NEM_RESTART:
        return nem_restart(r);
    case NEM_CRASH:
        return nem_kill(r, pick_nodes(r, 1, true), true);
    case NEM_CRASH_MAJORITY:
        return nem_kill(r, pick_nodes(r, majority, true), true);
    case NEM_CRASH_ALL:
        return nem_kill(r, pick_nodes(r, opt.nodes, false), true);
    case NEM_PART_LEADER:
    case NEM_PART_MAJORITY:
    case NEM_PART_BRIDGE:
    case NEM_PART_ONEWAY:
        return nem_partition(r, action);
    case NEM_MEMBER:
    case NEM_TRANSFER:
        return nemesis_members(r, action);
    case NEM_CORRUPT:
        return nemesis_corrupt(r);
    case NEM_WIRE:
        return nem_wire(r);
    case NEM_PART_LONG:
        return nem_partition_long(r);
    }
    return -1;
}
