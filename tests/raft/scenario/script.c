/*
 * The scenario interpreter: parsing and the commands that act on the
 * cluster. Expectations are in expect.c. See script.h and README.md.
 */
#include "script_internal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

/* ---- parsing helpers ---------------------------------------------------------- */

int sc_fail(sc_run *run, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(run->err, sizeof(run->err), fmt, ap);
    va_end(ap);
    return -1;
}

int sc_parse_u64(sc_run *run, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return sc_fail(run, "not a number: '%s'", s);
    }
    *out = v;
    return 0;
}

int sc_parse_node(sc_run *run, const char *s, uint64_t *id) {
    if (sc_parse_u64(run, s, id) < 0) {
        return -1;
    }
    if (!run->has_cluster) {
        return sc_fail(run, "no cluster yet (use 'cluster N' first)");
    }
    if (!sc_node_valid(&run->c, *id)) {
        return sc_fail(run, "no node %s", s);
    }
    return 0;
}

int sc_parse_up_node(sc_run *run, const char *s, uint64_t *id) {
    if (sc_parse_node(run, s, id) < 0) {
        return -1;
    }
    if (!run->c.nodes[*id].up) {
        return sc_fail(run, "node %s is down", s);
    }
    return 0;
}

int sc_parse_link(sc_run *run, const char *s, uint64_t *from, uint64_t *to) {
    const char *arrow = strstr(s, "->");
    char a[32];
    if (arrow == NULL || (size_t)(arrow - s) >= sizeof(a)) {
        return sc_fail(run, "not a link 'from->to': '%s'", s);
    }
    memcpy(a, s, (size_t)(arrow - s));
    a[arrow - s] = '\0';
    return sc_parse_node(run, a, from) < 0 || sc_parse_node(run, arrow + 2, to) < 0 ? -1 : 0;
}

/* Compares a raft return code with the one the script expects. */
static int sc__rc(sc_run *run, int rc, int rc_want) {
    if (rc != rc_want) {
        return sc_fail(run, "returned %s, expected %s", kv_errword(rc), kv_errword(rc_want));
    }
    return 0;
}

/* A harness call that must succeed (the script did not ask for an error). */
static int sc__ok(sc_run *run, int rc, const char *what) {
    if (rc < 0) {
        return sc_fail(run, "%s failed: %s", what, kv_errword(rc));
    }
    return 0;
}

/* ---- cluster setup --------------------------------------------------------------- */

static int sc__option(sc_run *run, raft_config *cfg, const char *opt) {
    const char *eq = strchr(opt, '=');
    if (eq == NULL) {
        return sc_fail(run, "option '%s' is not key=value", opt);
    }
    size_t klen = (size_t)(eq - opt);
    const char *val = eq + 1;
    bool on = strcmp(val, "on") == 0;
    uint64_t num = 0;
#define SC_KEY(k) (klen == strlen(k) && strncmp(opt, k, klen) == 0)
    if (SC_KEY("prevote") || SC_KEY("checkquorum") || SC_KEY("lease")) {
        if (!on && strcmp(val, "off") != 0) {
            return sc_fail(run, "option '%s': on or off", opt);
        }
        *(SC_KEY("prevote")       ? &cfg->pre_vote
          : SC_KEY("checkquorum") ? &cfg->check_quorum
                                  : &cfg->lease_read) = on;
        return 0;
    }
    if (sc_parse_u64(run, val, &num) < 0) {
        return -1;
    }
    if (SC_KEY("election")) {
        cfg->election_ticks = (uint32_t)num;
    } else if (SC_KEY("heartbeat")) {
        cfg->heartbeat_ticks = (uint32_t)num;
    } else if (SC_KEY("max-uncommitted")) {
        cfg->max_uncommitted_bytes = num;
    } else if (SC_KEY("max-inflight")) {
        cfg->max_inflight_msgs = (uint32_t)num;
    } else if (SC_KEY("max-msg-bytes")) {
        cfg->max_msg_bytes = num;
    } else {
        return sc_fail(run, "unknown option '%s'", opt);
    }
#undef SC_KEY
    return 0;
}

static int sc__cmd_cluster(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t n;
    if (run->has_cluster) {
        return sc_fail(run, "a cluster exists already");
    }
    if (sc_parse_u64(run, argv[1], &n) < 0) {
        return -1;
    }
    if (n < 1 || n > SC_NODES_MAX) {
        return sc_fail(run, "cluster size %" PRIu64 " not in 1..%u", n, SC_NODES_MAX);
    }
    for (int i = 2; i < argc; i++) {
        if (sc__option(run, &run->c.base, argv[i]) < 0) {
            return -1;
        }
    }
    run->has_cluster = true;
    return sc__rc(run, sc_bootstrap(&run->c, (uint32_t)n), rc_want);
}

/* ---- time and the network ----------------------------------------------------------- */

static int sc__count_arg(sc_run *run, int argc, char **argv, int i, uint64_t *count) {
    *count = 1;
    return argc > i ? sc_parse_u64(run, argv[i], count) : 0;
}

static int sc__cmd_tick(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, count;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0 || sc__count_arg(run, argc, argv, 2, &count) < 0) {
        return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (sc__ok(run, sc_tick(&run->c, id), "tick") < 0) {
            return -1;
        }
    }
    return 0;
}

static int sc__tick_all(sc_run *run) {
    for (uint64_t id = 1; id <= SC_NODES_MAX; id++) {
        if (run->c.nodes[id].exists && sc__ok(run, sc_tick(&run->c, id), "tick") < 0) {
            return -1;
        }
    }
    return 0;
}

static int sc__cmd_tick_all(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t count;
    (void)rc_want;
    if (sc__count_arg(run, argc, argv, 1, &count) < 0) {
        return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (sc__tick_all(run) < 0) {
            return -1;
        }
    }
    return 0;
}

/* run [count]: count rounds of "every node ticks, then every message is
 * delivered": a cluster running on a reliable (but maybe partitioned) net. */
static int sc__cmd_run(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t count;
    (void)rc_want;
    if (sc__count_arg(run, argc, argv, 1, &count) < 0) {
        return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (sc__tick_all(run) < 0 || sc__ok(run, sc_deliver_all(&run->c), "deliver-all") < 0) {
            return -1;
        }
    }
    return 0;
}

/* campaign N: ticks only N until its election timeout fires and it starts
 * a (pre-)campaign: it leaves the follower role, or, already a candidate,
 * moves to a new term. */
static int sc__cmd_campaign(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    raft *r = sc_raft(&run->c, id);
    raft_role role0 = raft_state_role(r);
    uint64_t term0 = raft_term(r);
    uint32_t limit = 2 * run->c.base.election_ticks + 1;
    for (uint32_t i = 0; i < limit; i++) {
        if (sc__ok(run, sc_tick(&run->c, id), "tick") < 0) {
            return -1;
        }
        raft_role role = raft_state_role(r);
        if (role != role0 || (role == RAFT_CANDIDATE && raft_term(r) > term0)) {
            return 0;
        }
    }
    return sc_fail(run, "node %" PRIu64 " did not campaign within %u ticks", id, limit);
}

static int sc__cmd_deliver(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t from, to, count = SIZE_MAX;
    size_t got;
    (void)rc_want;
    if (argc == 1) {
        return sc__ok(run, sc_deliver_all(&run->c), "deliver-all");
    }
    if (sc_parse_link(run, argv[1], &from, &to) < 0 ||
        (argc > 2 && sc_parse_u64(run, argv[2], &count) < 0)) {
        return -1;
    }
    return sc__ok(run, sc_deliver(&run->c, from, to, (size_t)count, &got), "deliver");
}

static int sc__cmd_drop(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t from, to, count = SIZE_MAX;
    (void)rc_want;
    if (sc_parse_link(run, argv[1], &from, &to) < 0 ||
        (argc > 2 && sc_parse_u64(run, argv[2], &count) < 0)) {
        return -1;
    }
    size_t dropped = sc_drop(&run->c, from, to, (size_t)count);
    if (argc > 2 && dropped != count) {
        return sc_fail(run, "dropped %zu messages, %" PRIu64 " were asked", dropped, count);
    }
    return 0;
}

static void sc__heal(sc_cluster *c) {
    for (uint64_t a = 1; a <= SC_NODES_MAX; a++) {
        for (uint64_t b = 1; b <= SC_NODES_MAX; b++) {
            c->cut[a][b] = false;
        }
    }
}

/* partition 1,2 | 3 [| ...]: links between groups are cut both ways; a node
 * listed in no group is alone. */
static int sc__cmd_partition(sc_run *run, int argc, char **argv, int rc_want) {
    uint32_t group[SC_NODES_MAX + 1] = {0};
    uint32_t g = 1;
    (void)rc_want;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "|") == 0) {
            g++;
            continue;
        }
        char *save = NULL;
        for (char *tok = strtok_r(argv[i], ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            uint64_t id;
            if (sc_parse_node(run, tok, &id) < 0) {
                return -1;
            }
            group[id] = g;
        }
    }
    sc__heal(&run->c);
    for (uint64_t a = 1; a <= SC_NODES_MAX; a++) {
        for (uint64_t b = 1; b <= SC_NODES_MAX; b++) {
            bool same = a == b || (group[a] != 0 && group[a] == group[b]);
            if (!same) {
                sc_cut(&run->c, a, b, true);
            }
        }
    }
    return 0;
}

static int sc__cmd_partition_oneway(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t from, to;
    (void)argc;
    (void)rc_want;
    if (sc_parse_link(run, argv[1], &from, &to) < 0) {
        return -1;
    }
    sc_cut(&run->c, from, to, true);
    return 0;
}

static int sc__cmd_isolate(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0) {
        return -1;
    }
    for (uint64_t other = 1; other <= SC_NODES_MAX; other++) {
        if (other != id) {
            sc_cut(&run->c, id, other, true);
            sc_cut(&run->c, other, id, true);
        }
    }
    return 0;
}

static int sc__cmd_heal(sc_run *run, int argc, char **argv, int rc_want) {
    (void)argc;
    (void)argv;
    (void)rc_want;
    sc__heal(&run->c);
    return 0;
}

/* ---- nodes and disks --------------------------------------------------------------- */

static int sc__cmd_crash(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    sc_crash(&run->c, id);
    return 0;
}

static int sc__cmd_wipe(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0) {
        return -1;
    }
    sc_wipe(&run->c, id);
    return 0;
}

static int sc__cmd_restart(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    if (sc_parse_node(run, argv[1], &id) < 0) {
        return -1;
    }
    if (run->c.nodes[id].up) {
        return sc_fail(run, "node %" PRIu64 " is running (crash it first)", id);
    }
    return sc__rc(run, sc_restart(&run->c, id), rc_want);
}

static int sc__cmd_persist(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    if (sc__ok(run, sc_persist(&run->c, id), "persist") < 0) {
        return -1;
    }
    return sc__ok(run, sc_process(&run->c, id), "ready");
}

/* nosync N: N's entries are written but become durable only at `persist N`.
 * autosync N: back to syncing every Ready (and sync what is pending). */
static int sc__cmd_sync_mode(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0) {
        return -1;
    }
    bool manual = strcmp(argv[0], "nosync") == 0;
    run->c.nodes[id].manual_sync = manual;
    if (!manual && run->c.nodes[id].up) {
        return sc__cmd_persist(run, argc, argv, 0);
    }
    return 0;
}

static int sc__cmd_snapshot(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, bytes = 0;
    if (sc_parse_up_node(run, argv[1], &id) < 0 ||
        (argc > 2 && sc_parse_u64(run, argv[2], &bytes) < 0)) {
        return -1;
    }
    return sc__rc(run, sc_snapshot(&run->c, id, (size_t)bytes), rc_want);
}

static int sc__cmd_compact(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, index;
    (void)argc;
    if (sc_parse_up_node(run, argv[1], &id) < 0 || sc_parse_u64(run, argv[2], &index) < 0) {
        return -1;
    }
    return sc__rc(run, sc_compact(&run->c, id, index), rc_want);
}

/* ---- client requests ----------------------------------------------------------------- */

/* propose N data: a write named data (node_propose); its answer is checked
 * with expect-write. */
static int sc__cmd_propose(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    /* the harness's callbacks never fail, so node_run's code is always 0 */
    return sc__rc(run, sc_propose(&run->c, id, argv[2], argv[2], strlen(argv[2])), rc_want);
}

/* propose-bytes N size [tag]: one entry of size bytes ("tag" then 'x's), a
 * write named tag. */
static int sc__cmd_propose_bytes(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, size;
    if (sc_parse_up_node(run, argv[1], &id) < 0 || sc_parse_u64(run, argv[2], &size) < 0) {
        return -1;
    }
    if (size > KV_ENTRY_BYTES_MAX + 1) {
        return sc_fail(run, "size %" PRIu64 " too large for a test entry", size);
    }
    char *data = malloc(size + 1);
    assert(data != NULL);
    memset(data, 'x', size);
    const char *tag = argc > 3 ? argv[3] : "";
    memcpy(data, tag, strlen(tag) < size ? strlen(tag) : size);
    int rc = sc_propose(&run->c, id, tag, data, size);
    free(data);
    return sc__rc(run, rc, rc_want);
}

/* read-index N ctx: a linearizable read named ctx (node_read); its answer
 * is checked with expect-read. */
static int sc__cmd_read_index(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, ctx;
    (void)argc;
    if (sc_parse_up_node(run, argv[1], &id) < 0 || sc_parse_u64(run, argv[2], &ctx) < 0) {
        return -1;
    }
    return sc__rc(run, sc_read_ask(&run->c, id, ctx), rc_want);
}

/* The node a membership change or transfer is asked of: "@N" as the last
 * argument, or the current leader. */
static int sc__target(sc_run *run, int *argc, char **argv, uint64_t *id) {
    if (*argc > 2 && argv[*argc - 1][0] == '@') {
        (*argc)--;
        return sc_parse_up_node(run, argv[*argc] + 1, id);
    }
    *id = sc_leader(&run->c);
    return *id == 0 ? sc_fail(run, "no leader to ask") : 0;
}

static int sc__cmd_conf(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t at, node;
    if (sc__target(run, &argc, argv, &at) < 0 || sc_parse_u64(run, argv[1], &node) < 0) {
        return -1;
    }
    raft_conf_op op = strcmp(argv[0], "add-learner") == 0 ? RAFT_CONF_ADD_LEARNER
                      : strcmp(argv[0], "promote") == 0   ? RAFT_CONF_PROMOTE
                                                          : RAFT_CONF_REMOVE;
    if (op == RAFT_CONF_ADD_LEARNER && node >= 1 && node <= SC_NODES_MAX &&
        !run->c.nodes[node].exists && sc__ok(run, sc_add_node(&run->c, node), "new node") < 0) {
        return -1;
    }
    if (sc__rc(run, raft_propose_conf(sc_raft(&run->c, at), op, node, NULL), rc_want) < 0) {
        return -1;
    }
    return sc__ok(run, sc_process(&run->c, at), "ready");
}

static int sc__cmd_transfer(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t at, node;
    if (sc__target(run, &argc, argv, &at) < 0 || sc_parse_u64(run, argv[1], &node) < 0) {
        return -1;
    }
    if (sc__rc(run, raft_transfer_leader(sc_raft(&run->c, at), node), rc_want) < 0) {
        return -1;
    }
    return sc__ok(run, sc_process(&run->c, at), "ready");
}

/* ---- printing ------------------------------------------------------------------------ */

static int sc__cmd_log(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0) {
        return -1;
    }
    sc_print_log(&run->c, id);
    return 0;
}

static int sc__cmd_status(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)rc_want;
    if (argc > 1) {
        if (sc_parse_node(run, argv[1], &id) < 0) {
            return -1;
        }
        sc_print_status(&run->c, id);
        return 0;
    }
    for (id = 1; id <= SC_NODES_MAX; id++) {
        if (run->c.nodes[id].exists) {
            sc_print_status(&run->c, id);
        }
    }
    return 0;
}

static int sc__cmd_queue(sc_run *run, int argc, char **argv, int rc_want) {
    (void)rc_want;
    uint64_t from = 0, to = 0;
    if (argc > 1 && sc_parse_link(run, argv[1], &from, &to) < 0) {
        return -1;
    }
    for (uint64_t a = 1; a <= SC_NODES_MAX; a++) {
        for (uint64_t b = 1; b <= SC_NODES_MAX; b++) {
            const sc_queue *q = &run->c.links[a][b];
            for (size_t i = 0; i < q->count && (argc == 1 || (a == from && b == to)); i++) {
                printf("  queued ");
                sc_print_msg(&q->msgs[i]);
            }
        }
    }
    return 0;
}

static int sc__cmd_echo(sc_run *run, int argc, char **argv, int rc_want) {
    (void)run;
    (void)rc_want;
    for (int i = 1; i < argc; i++) {
        printf("%s%s", argv[i], i + 1 < argc ? " " : "\n");
    }
    return 0;
}

/* ---- the command table and the runner --------------------------------------------------- */

static const sc_cmd sc__cmds[] = {
    {"cluster", 1, 12, true, sc__cmd_cluster,
     "cluster N [election=T heartbeat=T prevote=on|off "
     "checkquorum=on|off max-uncommitted=B ...]"},
    {"tick", 1, 2, false, sc__cmd_tick, "tick N [count]"},
    {"tick-all", 0, 1, false, sc__cmd_tick_all, "tick-all [count]"},
    {"run", 0, 1, false, sc__cmd_run, "run [rounds]"},
    {"campaign", 1, 1, false, sc__cmd_campaign, "campaign N"},
    {"deliver", 0, 2, false, sc__cmd_deliver, "deliver [from->to [count]]"},
    {"deliver-all", 0, 0, false, sc__cmd_deliver, "deliver-all"},
    {"drop", 1, 2, false, sc__cmd_drop, "drop from->to [count]"},
    {"partition", 1, 20, false, sc__cmd_partition, "partition 1,2 | 3"},
    {"partition-oneway", 1, 1, false, sc__cmd_partition_oneway, "partition-oneway from->to"},
    {"isolate", 1, 1, false, sc__cmd_isolate, "isolate N"},
    {"heal", 0, 0, false, sc__cmd_heal, "heal"},
    {"crash", 1, 1, false, sc__cmd_crash, "crash N"},
    {"restart", 1, 1, true, sc__cmd_restart, "restart N"},
    {"wipe", 1, 1, false, sc__cmd_wipe, "wipe N"},
    {"persist", 1, 1, false, sc__cmd_persist, "persist N"},
    {"nosync", 1, 1, false, sc__cmd_sync_mode, "nosync N"},
    {"autosync", 1, 1, false, sc__cmd_sync_mode, "autosync N"},
    {"snapshot", 1, 2, true, sc__cmd_snapshot, "snapshot N [bytes]"},
    {"compact", 2, 2, true, sc__cmd_compact, "compact N index"},
    {"propose", 2, 2, true, sc__cmd_propose, "propose N data"},
    {"propose-bytes", 2, 3, true, sc__cmd_propose_bytes, "propose-bytes N size [tag]"},
    {"read-index", 2, 2, true, sc__cmd_read_index, "read-index N ctx"},
    {"add-learner", 1, 2, true, sc__cmd_conf, "add-learner ID [@N]"},
    {"promote", 1, 2, true, sc__cmd_conf, "promote ID [@N]"},
    {"remove", 1, 2, true, sc__cmd_conf, "remove ID [@N]"},
    {"transfer-leader", 1, 2, true, sc__cmd_transfer, "transfer-leader ID [@N]"},
    {"log", 1, 1, false, sc__cmd_log, "log N"},
    {"status", 0, 1, false, sc__cmd_status, "status [N]"},
    {"queue", 0, 1, false, sc__cmd_queue, "queue [from->to]"},
    {"echo", 0, SC_ARGS_MAX, false, sc__cmd_echo, "echo text"},
    {NULL, 0, 0, false, NULL, NULL},
};

static const sc_cmd *sc__find(const char *name) {
    for (const sc_cmd *t = sc__cmds; t->name != NULL; t++) {
        if (strcmp(t->name, name) == 0) {
            return t;
        }
    }
    for (const sc_cmd *t = sc_expect_cmds; t->name != NULL; t++) {
        if (strcmp(t->name, name) == 0) {
            return t;
        }
    }
    return NULL;
}

/* Splits line into words; a trailing "=> WORD" becomes *rc_want. Returns
 * argc (0: nothing to do), or -1. */
static int sc__split(sc_run *run, char *line, char **argv, int *rc_want, bool *has_rc) {
    int argc = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
        if (argc == (int)SC_ARGS_MAX) {
            return sc_fail(run, "more than %u words", SC_ARGS_MAX);
        }
        argv[argc++] = w;
    }
    *rc_want = 0;
    *has_rc = argc >= 2 && strcmp(argv[argc - 2], "=>") == 0;
    if (*has_rc) {
        const char *word = argv[argc - 1];
        *rc_want = strcmp(word, "OK") == 0 ? 0 : kv_errcode(word);
        if (*rc_want == 0 && strcmp(word, "OK") != 0) {
            return sc_fail(run, "unknown code word '%s'", word);
        }
        argc -= 2;
    }
    return argc;
}

static int sc__exec(sc_run *run, char *line) {
    char *words[SC_ARGS_MAX + 1];
    char **argv = words;
    int rc_want;
    bool has_rc;
    int argc = sc__split(run, line, words, &rc_want, &has_rc);
    if (argc <= 0) {
        return argc;
    }
    /* "expect-violation COMMAND...": COMMAND must trip a safety check. */
    bool want_violation = strcmp(argv[0], "expect-violation") == 0;
    if (want_violation) {
        if (argc < 2 || strcmp(argv[1], "expect-violation") == 0) {
            return sc_fail(run, "usage: expect-violation COMMAND [ARGS...]");
        }
        argv++;
        argc--;
    }
    const sc_cmd *cmd = sc__find(argv[0]);
    if (cmd == NULL) {
        return sc_fail(run, "unknown command '%s'", argv[0]);
    }
    if (argc - 1 < cmd->args_min || argc - 1 > cmd->args_max || (has_rc && !cmd->takes_rc)) {
        return sc_fail(run, "usage: %s%s", cmd->usage, cmd->takes_rc ? " [=> WORD]" : "");
    }
    if (cmd->fn(run, argc, argv, rc_want) < 0) {
        return -1;
    }
    bool violated = run->c.violation[0] != '\0';
    if (violated && !want_violation) {
        return sc_fail(run, "safety violation: %s", run->c.violation);
    }
    if (!violated && want_violation) {
        return sc_fail(run, "expected a safety violation, found none");
    }
    if (violated) {
        printf("expected safety violation: %s\n", run->c.violation);
        run->c.violation[0] = '\0';
    }
    return 0;
}

int sc_run_script(FILE *f, const char *file, bool trace) {
    sc_run *run = calloc(1, sizeof(*run));
    assert(run != NULL);
    sc_init(&run->c);
    run->c.trace = trace;
    run->file = file;
    char line[SC_LINE_BYTES_MAX + 2];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        run->line++;
        size_t len = strlen(line);
        if (len > SC_LINE_BYTES_MAX) {
            rc = sc_fail(run, "line longer than %u bytes", SC_LINE_BYTES_MAX);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        size_t lead = strspn(line, " \t");
        if (line[lead] == '#' || line[lead] == '\0') {
            continue;
        }
        memcpy(run->cmd, line + lead, len - lead + 1);
        if (trace) {
            printf("> %s:%u: %s\n", file, run->line, run->cmd);
        }
        rc = sc__exec(run, line);
    }
    if (rc < 0) {
        fflush(stdout);
        fprintf(stderr, "%s:%u: %s\n  %s\n", file, run->line, run->cmd, run->err);
    }
    sc_free(&run->c);
    free(run);
    return rc;
}
