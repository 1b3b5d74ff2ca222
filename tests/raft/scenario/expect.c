/*
 * The interpreter's expectations: "expect-..." commands check one fact and
 * fail with what was expected and what was found.
 */
#include "script_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

/* Fails unless found == want; what names the quantity. */
static int sc__eq(sc_run *run, const char *what, uint64_t found, uint64_t want) {
    if (found != want) {
        return sc_fail(run, "expected %s %" PRIu64 ", found %" PRIu64, what, want, found);
    }
    return 0;
}

static int sc__node_num(sc_run *run, char **argv, uint64_t *id, uint64_t *num) {
    return sc_parse_up_node(run, argv[1], id) < 0 || sc_parse_u64(run, argv[2], num) < 0 ? -1 : 0;
}

static int sc__exp_leader(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    raft_role role = raft_state_role(sc_raft(&run->c, id));
    if (role != RAFT_LEADER) {
        return sc_fail(run,
                       "expected node %" PRIu64 " leader, found %s (leader known: %" PRIu64
                       ", term %" PRIu64 ")",
                       id, sc_role_name(role), raft_leader(sc_raft(&run->c, id)),
                       raft_term(sc_raft(&run->c, id)));
    }
    return 0;
}

static int sc__exp_known_leader(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, leader;
    (void)argc;
    (void)rc_want;
    if (sc__node_num(run, argv, &id, &leader) < 0) {
        return -1;
    }
    return sc__eq(run, "known leader", raft_leader(sc_raft(&run->c, id)), leader);
}

static int sc__exp_role(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    const char *found = sc_role_name(raft_state_role(sc_raft(&run->c, id)));
    if (strcmp(found, argv[2]) != 0) {
        return sc_fail(run, "expected node %" PRIu64 " %s, found %s (term %" PRIu64 ")", id,
                       argv[2], found, raft_term(sc_raft(&run->c, id)));
    }
    return 0;
}

/* expect-term / -vote / -commit / -applied / -last / -durable N value */
static int sc__exp_number(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, want, found;
    (void)argc;
    (void)rc_want;
    if (sc__node_num(run, argv, &id, &want) < 0) {
        return -1;
    }
    const sc_node *n = &run->c.nodes[id];
    const char *what = argv[0] + strlen("expect-");
    if (strcmp(what, "term") == 0) {
        found = raft_term(sc_raft(&run->c, id));
    } else if (strcmp(what, "vote") == 0) {
        found = raft_vote(sc_raft(&run->c, id));
    } else if (strcmp(what, "commit") == 0) {
        found = raft_commit_index(sc_raft(&run->c, id));
    } else if (strcmp(what, "applied") == 0) {
        found = n->applied;
    } else if (strcmp(what, "last") == 0) {
        found = raft_last_index(sc_raft(&run->c, id));
    } else {
        found = n->durable_index;
    }
    return sc__eq(run, what, found, want);
}

static int sc__exp_sm(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    const char *found = run->c.nodes[id].sm != NULL ? run->c.nodes[id].sm : "";
    const char *want = strcmp(argv[2], "-") == 0 ? "" : argv[2];
    if (strcmp(found, want) != 0) {
        return sc_fail(run, "expected state machine [%s], found [%s]", want, found);
    }
    return 0;
}

/* expect-entry N index term [data|noop|conf]: N's log (as written) */
static int sc__exp_entry(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, index, term;
    (void)rc_want;
    if (sc__node_num(run, argv, &id, &index) < 0 || sc_parse_u64(run, argv[3], &term) < 0) {
        return -1;
    }
    const sc_node *n = &run->c.nodes[id];
    if (index < n->log_first || index >= n->log_first + n->log_count) {
        return sc_fail(run,
                       "expected entry %" PRIu64 "/%" PRIu64 ", found no entry %" PRIu64
                       " (log has %" PRIu64 "..%" PRIu64 ")",
                       index, term, index, n->log_first, n->log_first + n->log_count - 1);
    }
    const sc_entry *e = &n->log[index - n->log_first];
    const char *what = e->type == RAFT_ENTRY_NOOP   ? "noop"
                       : e->type == RAFT_ENTRY_CONF ? "conf"
                                                    : e->data;
    if (e->term != term || (argc > 4 && strcmp(what, argv[4]) != 0)) {
        return sc_fail(
            run, "expected entry %" PRIu64 "/%" PRIu64 " %s, found %" PRIu64 "/%" PRIu64 " %s",
            index, term, argc > 4 ? argv[4] : "", e->index, e->term, what);
    }
    return 0;
}

static void sc__read_str(const sc_read *rd, char *buf, size_t n) {
    if (rd == NULL) {
        snprintf(buf, n, "never asked");
    } else if (!rd->answered) {
        snprintf(buf, n, "pending (no answer)");
    } else if (rd->status == 0) {
        snprintf(buf, n, "ok at index %" PRIu64, rd->index);
    } else {
        snprintf(buf, n, "%s", kv_errword(rd->status));
    }
}

/* expect-read N ctx ok [index] | pending | NOTLEADER */
static int sc__exp_read(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, ctx, index = 0;
    (void)rc_want;
    if (sc__node_num(run, argv, &id, &ctx) < 0 ||
        (argc > 4 && sc_parse_u64(run, argv[4], &index) < 0)) {
        return -1;
    }
    const sc_read *rd = sc_read_find(&run->c, id, ctx);
    char found[64];
    sc__read_str(rd, found, sizeof(found));
    bool ok;
    if (strcmp(argv[3], "ok") == 0) {
        ok = rd != NULL && rd->answered && rd->status == 0 && (argc <= 4 || rd->index == index);
    } else if (strcmp(argv[3], "pending") == 0) {
        ok = rd != NULL && !rd->answered;
    } else {
        ok = rd != NULL && rd->answered && rd->status != 0 &&
             strcmp(kv_errword(rd->status), argv[3]) == 0;
    }
    if (!ok) {
        return sc_fail(run, "expected read %" PRIu64 " %s%s%s, found %s", ctx, argv[3],
                       argc > 4 ? " at index " : "", argc > 4 ? argv[4] : "", found);
    }
    return 0;
}

/* expect-read-fails N ctx: the read was not confirmed (an error, or still
 * unanswered): it must not be served. */
static int sc__exp_read_fails(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, ctx;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0 || sc_parse_u64(run, argv[2], &ctx) < 0) {
        return -1;
    }
    const sc_read *rd = sc_read_find(&run->c, id, ctx);
    if (rd != NULL && rd->answered && rd->status == 0) {
        return sc_fail(run,
                       "expected read %" PRIu64 " to fail, found it confirmed at index %" PRIu64,
                       ctx, rd->index);
    }
    return 0;
}

/* expect-write name ok [index] | pending | WORD: the answer to the last
 * write proposed with that name (WORD: NOTLEADER, CLOSED: outcome unknown). */
static int sc__exp_write(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t index = 0;
    (void)rc_want;
    if (argc > 3 && sc_parse_u64(run, argv[3], &index) < 0) {
        return -1;
    }
    const sc_write *w = sc_write_find(&run->c, argv[1]);
    if (w == NULL) {
        return sc_fail(run, "no write named '%s' was accepted", argv[1]);
    }
    bool ok;
    if (strcmp(argv[2], "ok") == 0) {
        ok = w->answered && w->code == 0 && (argc <= 3 || w->index == index);
    } else if (strcmp(argv[2], "pending") == 0) {
        ok = !w->answered;
    } else {
        ok = w->answered && w->code != 0 && strcmp(kv_errword(w->code), argv[2]) == 0;
    }
    if (!ok) {
        return sc_fail(run,
                       "expected write '%s' (%" PRIu64 "/%" PRIu64 " at node %" PRIu64
                       ") %s%s%s, found %s",
                       w->name, w->index, w->term, w->node, argv[2], argc > 3 ? " at index " : "",
                       argc > 3 ? argv[3] : "",
                       !w->answered   ? "pending"
                       : w->code == 0 ? "ok"
                                      : kv_errword(w->code));
    }
    return 0;
}

static void sc__ids_str(const uint64_t *ids, uint32_t count, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < count && off < n; i++) {
        off += (size_t)snprintf(buf + off, n - off, "%s%" PRIu64, i > 0 ? "," : "", ids[i]);
    }
}

static int sc__cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

/* expect-membership N voters=1,2,3 [learners=4|learners=-]: the membership
 * N uses now (its latest conf entry). */
static int sc__exp_membership(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)rc_want;
    if (sc_parse_up_node(run, argv[1], &id) < 0) {
        return -1;
    }
    raft_membership m;
    raft_membership_get(sc_raft(&run->c, id), &m);
    qsort(m.voters, m.voters_count, sizeof(uint64_t), sc__cmp_u64);
    qsort(m.learners, m.learners_count, sizeof(uint64_t), sc__cmp_u64);
    char voters[128], learners[128];
    sc__ids_str(m.voters, m.voters_count, voters, sizeof(voters));
    sc__ids_str(m.learners, m.learners_count, learners, sizeof(learners));
    for (int i = 2; i < argc; i++) {
        bool v = strncmp(argv[i], "voters=", 7) == 0, l = strncmp(argv[i], "learners=", 9) == 0;
        if (!v && !l) {
            return sc_fail(run, "expected voters=... or learners=..., got '%s'", argv[i]);
        }
        const char *want = strchr(argv[i], '=') + 1;
        want = strcmp(want, "-") == 0 ? "" : want;
        if (strcmp(want, v ? voters : learners) != 0) {
            return sc_fail(run, "expected %s, found voters=%s learners=%s", argv[i], voters,
                           learners);
        }
    }
    return 0;
}

/* expect-msgs from->to count [TYPE]: messages queued on the link. */
static int sc__exp_msgs(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t from, to, want;
    (void)rc_want;
    if (sc_parse_link(run, argv[1], &from, &to) < 0 || sc_parse_u64(run, argv[2], &want) < 0) {
        return -1;
    }
    const sc_queue *q = &run->c.links[from][to];
    uint64_t found = 0;
    for (size_t i = 0; i < q->count; i++) {
        found += argc < 4 || strcmp(sc_msg_type_name(q->msgs[i].type), argv[3]) == 0;
    }
    if (found != want) {
        return sc_fail(run, "expected %" PRIu64 " %s messages queued on %s, found %" PRIu64, want,
                       argc > 3 ? argv[3] : "", argv[1], found);
    }
    return 0;
}

/* expect-snapshot N index: the snapshot on N's disk (taken or installed).
 * expect-installed N count: snapshots N received from a leader.
 * expect-chunks N count: snapshot chunks N stored. */
static int sc__exp_snapshot(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, want;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0 || sc_parse_u64(run, argv[2], &want) < 0) {
        return -1;
    }
    const sc_node *n = &run->c.nodes[id];
    if (strcmp(argv[0], "expect-installed") == 0) {
        return sc__eq(run, "snapshots installed", n->snaps_installed, want);
    }
    if (strcmp(argv[0], "expect-chunks") == 0) {
        return sc__eq(run, "chunks stored", n->chunks_stored, want);
    }
    return sc__eq(run, "snapshot index", n->has_snap ? n->snap.index : 0, want);
}

/* expect-progress L id probe|replicate|snapshot [match]: L's view of id. */
static int sc__exp_progress(sc_run *run, int argc, char **argv, int rc_want) {
    static const char *names[] = {"probe", "replicate", "snapshot"};
    uint64_t id, peer, match = 0;
    (void)rc_want;
    if (sc__node_num(run, argv, &id, &peer) < 0 ||
        (argc > 4 && sc_parse_u64(run, argv[4], &match) < 0)) {
        return -1;
    }
    raft_progress_info p;
    int rc = raft_progress(sc_raft(&run->c, id), peer, &p);
    if (rc < 0) {
        return sc_fail(run, "raft_progress: %s", kv_errword(rc));
    }
    const char *state = p.state <= RAFT_PROGRESS_SNAPSHOT ? names[p.state] : "?";
    if (strcmp(state, argv[3]) != 0 || (argc > 4 && p.match != match)) {
        return sc_fail(run, "expected %s %s, found %s match=%" PRIu64 " next=%" PRIu64, argv[3],
                       argc > 4 ? argv[4] : "", state, p.match, p.next);
    }
    return 0;
}

/* expect-caught-up L id yes|no */
static int sc__exp_caught_up(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id, peer;
    (void)argc;
    (void)rc_want;
    if (sc__node_num(run, argv, &id, &peer) < 0) {
        return -1;
    }
    bool found = raft_learner_caught_up(sc_raft(&run->c, id), peer);
    if (found != (strcmp(argv[3], "yes") == 0)) {
        return sc_fail(run, "expected caught-up %s, found %s", argv[3], found ? "yes" : "no");
    }
    return 0;
}

static int sc__exp_down(sc_run *run, int argc, char **argv, int rc_want) {
    uint64_t id;
    (void)argc;
    (void)rc_want;
    if (sc_parse_node(run, argv[1], &id) < 0) {
        return -1;
    }
    return run->c.nodes[id].up ? sc_fail(run, "expected node %" PRIu64 " down, found it up", id)
                               : 0;
}

const sc_cmd sc_expect_cmds[] = {
    {"expect-leader", 1, 1, false, sc__exp_leader, "expect-leader N"},
    {"expect-known-leader", 2, 2, false, sc__exp_known_leader, "expect-known-leader N L"},
    {"expect-role", 2, 2, false, sc__exp_role,
     "expect-role N follower|pre-candidate|candidate|leader"},
    {"expect-term", 2, 2, false, sc__exp_number, "expect-term N term"},
    {"expect-vote", 2, 2, false, sc__exp_number, "expect-vote N id"},
    {"expect-commit", 2, 2, false, sc__exp_number, "expect-commit N index"},
    {"expect-applied", 2, 2, false, sc__exp_number, "expect-applied N index"},
    {"expect-last", 2, 2, false, sc__exp_number, "expect-last N index"},
    {"expect-durable", 2, 2, false, sc__exp_number, "expect-durable N index"},
    {"expect-sm", 2, 2, false, sc__exp_sm, "expect-sm N a,b,c|-"},
    {"expect-entry", 3, 4, false, sc__exp_entry, "expect-entry N index term [data|noop|conf]"},
    {"expect-read", 3, 4, false, sc__exp_read, "expect-read N ctx ok [index]|pending|NOTLEADER"},
    {"expect-read-fails", 2, 2, false, sc__exp_read_fails, "expect-read-fails N ctx"},
    {"expect-write", 2, 3, false, sc__exp_write, "expect-write name ok [index]|pending|WORD"},
    {"expect-membership", 2, 3, false, sc__exp_membership,
     "expect-membership N voters=1,2 [learners=3]"},
    {"expect-msgs", 2, 3, false, sc__exp_msgs, "expect-msgs from->to count [TYPE]"},
    {"expect-snapshot", 2, 2, false, sc__exp_snapshot, "expect-snapshot N index"},
    {"expect-installed", 2, 2, false, sc__exp_snapshot, "expect-installed N count"},
    {"expect-chunks", 2, 2, false, sc__exp_snapshot, "expect-chunks N count"},
    {"expect-progress", 3, 4, false, sc__exp_progress,
     "expect-progress L id probe|replicate|snapshot [match]"},
    {"expect-caught-up", 3, 3, false, sc__exp_caught_up, "expect-caught-up L id yes|no"},
    {"expect-down", 1, 1, false, sc__exp_down, "expect-down N"},
    {NULL, 0, 0, false, NULL, NULL},
};
