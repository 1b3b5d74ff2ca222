/*
 * raft-sim: the randomized deterministic simulator of src/raft.
 *
 *   raft-sim --seeds N [--first-seed S] [--nodes 3|5] [--steps K]
 *   raft-sim --seed S [--nodes X] [--steps K] [--trace]
 *   raft-sim --control unsafe-disk|stale-reads --seeds N ...
 *   raft-sim --bench [--entries N]
 *
 * Exit 0 when every invariant held on every seed, 1 on any failure, 2 on a
 * bad flag. The last line sums the runs:
 *   seeds=N failures=F elections=E commits=C snapshots=P membership_changes=M
 */
#include "sim.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cli {
    uint64_t seeds, first_seed;
    bool single;
    bool bench;
    uint64_t bench_entries;
    sim_opts o;
} cli;

static void usage(FILE *f) {
    fprintf(f, "usage: raft-sim --seeds N [--first-seed S] [--nodes 3|5] [--steps K]\n"
               "       raft-sim --seed S [--nodes 3|5] [--steps K] [--trace]\n"
               "       raft-sim --control unsafe-disk|stale-reads --seeds N\n"
               "       raft-sim --bench [--entries N]\n");
}

static int bad_flag(const char *flag, const char *why) {
    fprintf(stderr, "raft-sim: bad flag %s: %s\n", flag, why);
    usage(stderr);
    return 2;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_control(const char *s, enum sim_control *c) {
    static const struct {
        const char *name;
        enum sim_control c;
    } names[] = {{"none", SIM_CTRL_NONE},
                 {"unsafe-disk", SIM_CTRL_UNSAFE_DISK},
                 {"stale-reads", SIM_CTRL_STALE_READS}};
    for (size_t i = 0; s != NULL && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *c = names[i].c;
            return 0;
        }
    }
    return -1;
}

static int parse_num_flag(const char *flag, const char *val, uint64_t lo, uint64_t hi,
                          uint64_t *out) {
    if (parse_u64(val, out) != 0)
        return bad_flag(flag, "needs a non-negative integer");
    if (*out < lo || *out > hi)
        return bad_flag(flag, "out of range");
    return 0;
}

static int parse_args(int argc, char **argv, cli *c) {
    *c = (cli){.seeds = 1, .first_seed = 1, .bench_entries = 2000000};
    c->o = (sim_opts){.nodes = 3, .steps = SIM_STEPS_DEFAULT, .control = SIM_CTRL_NONE};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        uint64_t n = 0;
        if (strcmp(f, "--trace") == 0) {
            c->o.trace = true;
            continue;
        }
        if (strcmp(f, "--bench") == 0) {
            c->bench = true;
            continue;
        }
        if (strcmp(f, "--lease-read") == 0) {
            c->o.lease_read = true;
            continue;
        }
        if (strcmp(f, "--seeds") == 0) {
            rc = parse_num_flag(f, v, 1, 100000000, &c->seeds);
        } else if (strcmp(f, "--first-seed") == 0) {
            rc = parse_num_flag(f, v, 0, UINT64_MAX, &c->first_seed);
        } else if (strcmp(f, "--seed") == 0) {
            rc = parse_num_flag(f, v, 0, UINT64_MAX, &c->first_seed);
            c->single = true;
        } else if (strcmp(f, "--nodes") == 0) {
            rc = parse_num_flag(f, v, 3, 5, &n);
            if (rc == 0 && n != 3 && n != 5)
                rc = bad_flag(f, "must be 3 or 5");
            c->o.nodes = (uint32_t)n;
        } else if (strcmp(f, "--steps") == 0) {
            rc = parse_num_flag(f, v, 100, SIM_STEPS_MAX, &c->o.steps);
        } else if (strcmp(f, "--entries") == 0) {
            rc = parse_num_flag(f, v, 1, 1000000000, &c->bench_entries);
        } else if (strcmp(f, "--control") == 0) {
            if (parse_control(v, &c->o.control) != 0)
                rc = bad_flag(f, "must be unsafe-disk, stale-reads or none");
        } else {
            return bad_flag(f, "unknown flag");
        }
        if (rc != 0)
            return rc;
        i++;
    }
    if (c->single)
        c->seeds = 1;
    return 0;
}

static void print_replay(const cli *c, uint64_t seed) {
    printf("replay: raft-sim --seed %" PRIu64 " --nodes %u --steps %" PRIu64 " --trace%s%s%s\n",
           seed, c->o.nodes, c->o.steps, c->o.lease_read ? " --lease-read" : "",
           c->o.control != SIM_CTRL_NONE ? " --control " : "",
           c->o.control != SIM_CTRL_NONE ? sim_control_name(c->o.control) : "");
}

static int run_seeds(const cli *c) {
    sim_stats total = {0};
    uint64_t failures = 0;
    for (uint64_t k = 0; k < c->seeds; k++) {
        uint64_t seed = c->first_seed + k;
        char why[512] = "";
        sim_stats st = {0};
        int rc = sim_run(&c->o, seed, &st, why, sizeof(why));
        total.elections += st.elections;
        total.commits += st.commits;
        total.snapshots += st.snapshots;
        total.membership_changes += st.membership_changes;
        if (rc != 0) {
            failures++;
            printf("FAIL seed=%" PRIu64 " nodes=%u %s\n", seed, c->o.nodes, why);
            print_replay(c, seed);
            fflush(stdout);
        }
    }
    printf("seeds=%" PRIu64 " failures=%" PRIu64 " elections=%" PRIu64 " commits=%" PRIu64
           " snapshots=%" PRIu64 " membership_changes=%" PRIu64 "\n",
           c->seeds, failures, total.elections, total.commits, total.snapshots,
           total.membership_changes);
    return failures == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    /* Snapshot chunks are 1 MiB: keep them in the heap instead of an
     * mmap/munmap pair per message copy (system time, not behaviour). */
    mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    cli c;
    int rc = parse_args(argc, argv, &c);
    if (rc != 0)
        return rc;
    if (c.bench)
        return sim_bench(c.bench_entries) == 0 ? 0 : 1;
    if (!c.single && !c.o.trace)
        printf("raft-sim: seeds %" PRIu64 "..%" PRIu64 " nodes=%u steps=%" PRIu64 "%s%s\n",
               c.first_seed, c.first_seed + c.seeds - 1, c.o.nodes, c.o.steps,
               c.o.control != SIM_CTRL_NONE ? " control=" : "",
               c.o.control != SIM_CTRL_NONE ? sim_control_name(c.o.control) : "");
    return run_seeds(&c);
}
