/*
 * kv-jepsen: a real-process test of kv under faults (see jepsen.h for the
 * files). Starts a 3- or 5-node kvd cluster, runs client threads (the
 * register workload checked for linearizability by kvlinz, the set workload
 * checked for lost adds) while a seeded nemesis throws faults, heals, checks
 * every node came back and that none exited unasked, and prints one line:
 *
 *   ops=N ok=A fail=B info=C nemesis_events=E linearizable=true lost=0
 *
 * ok: completed with a known result; fail: definitely without effect (a
 * refused cas, UNAVAILABLE, BUSY); info: outcome unknown (timeouts).
 *
 * Exit: 0 pass; 1 a violation (not linearizable: the checker's smallest
 * window is printed; lost or phantom set elements; nodes that diverge; a
 * node that exited unasked or did not come back; no final read once
 * healed); 2 checker budget exceeded
 * (UNKNOWN); 3 the harness failed (bad arguments, no cluster).
 *
 * The seed fixes the nemesis schedule and the clients' choices; thread
 * timing is not reproducible, so a replay reruns the same schedule, not the
 * same interleaving.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jepsen.h"
#include "kv/client.h"

jl_opts opt = {.seconds = 10,
               .nodes = 3,
               .clients = 5,
               .keys = 3,
               .port_base = 29000,
               .workload = WL_BOTH,
               .snapshot_entries = 100};
char run_dir[4096];
char endpoints[512];
char cluster_arg[512];
static const char *argv0;
static char replay[2048];

/* Clients pace themselves to about this many operations per key per run. */
#define KEY_OPS_TARGET 2400u

static void usage(FILE *f) {
    fprintf(f, "usage: kv-jepsen --bin DIR --dir TMP [--seed S] [--time N] [--nodes 3|5]\n"
               "                 [--nemesis LIST] [--workload register|set|both|bank]\n"
               "                 [--control no-fsync|stale-read] [--clients C] [--keys K]\n"
               "                 [--port-base P] [--snapshot-entries N] [--keep]\n"
               "  --bin DIR        where kvd lives\n"
               "  --dir TMP        a run directory is made under it (removed on success\n"
               "                   unless --keep); the history file is written beside it\n"
               "  --seed S         nemesis and client choices (default: from the time)\n"
               "  --time N         nemesis seconds (default 10; --seconds is the same)\n"
               "  --nemesis LIST   comma-separated, or all (the default: every one but\n"
               "                   partition-long, which must be named):");
    for (int k = 0; k < NEM_COUNT; k++)
        fprintf(f, " %s", nemesis_names[k]);
    fprintf(f, "\n"
               "  --workload W     register, set or both (default both); bank: transfers\n"
               "                   and reads of all accounts by transaction (bank.c)\n"
               "                   watch: the set's adds and a watcher of them, its\n"
               "                   stream checked (watch.c)\n"
               "  --control C      stale-read: gets read one node without ReadIndex;\n"
               "                   no-fsync: kvd --unsafe-no-fsync; bank-skew: a transfer\n"
               "                   credits one more than it debits. Each must be caught.\n"
               "  --lossyfs PROG   mount lossyfs under each data dir: enables the crash\n"
               "                   nemeses (unsynced writes lost)\n"
               "  --netns SCRIPT   nodes in network namespaces (tests/jepsen-lite/netns.sh):\n"
               "                   enables the partition nemeses\n"
               "  --heal-reset     destroy the peers' TCP connections at every heal (works\n"
               "                   around a known kv bug: README, Testing)\n"
               "  --read-lease     kvd --read-lease: linearizable reads on the leader's lease\n"
               "  --port-base P    nodes listen on P+1..P+nodes (default 29000)\n"
               "  --snapshot-entries N  kvd's snapshot threshold (default 100: tiny,\n"
               "                   so snapshots are taken and sent all the time)\n");
}

static int parse_long(const char *name, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno != 0 || *end != 0 || x < lo || x > hi) {
        fprintf(stderr, "kv-jepsen: bad %s '%s' (%ld..%ld)\n", name, s, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_word(const char *a, const char *v) {
    if (strcmp(a, "--workload") == 0) {
        opt.workload = strcmp(v, "register") == 0 ? WL_REGISTER
                       : strcmp(v, "set") == 0    ? WL_SET
                       : strcmp(v, "both") == 0   ? WL_BOTH
                       : strcmp(v, "bank") == 0   ? WL_BANK
                       : strcmp(v, "watch") == 0  ? WL_WATCH
                                                  : 0;
        return opt.workload != 0 ? 0 : -1;
    }
    if (strcmp(a, "--control") == 0) {
        opt.control = strcmp(v, "stale-read") == 0  ? CONTROL_STALE_READ
                      : strcmp(v, "no-fsync") == 0  ? CONTROL_NO_FSYNC
                      : strcmp(v, "bank-skew") == 0 ? CONTROL_BANK_SKEW
                                                    : -1;
        return opt.control >= 0 ? 0 : -1;
    }
    if (strcmp(a, "--nemesis") == 0)
        return nemesis_parse(v, &opt.nemeses);
    if (strcmp(a, "--seed") == 0) {
        char *end;
        errno = 0;
        opt.seed = strtoull(v, &end, 10);
        return errno == 0 && *end == 0 ? 0 : -1;
    }
    return 1; /* not a word option */
}

/* One "--name value" option; 0, or -1 (bad). */
static int parse_opt(const char *a, const char *v) {
    long x;
    int rc = parse_word(a, v);
    if (rc <= 0)
        return rc;
    rc = 0;
    if (strcmp(a, "--bin") == 0)
        opt.bin = v;
    else if (strcmp(a, "--dir") == 0)
        opt.dir = v;
    else if (strcmp(a, "--lossyfs") == 0)
        opt.lossyfs = v;
    else if (strcmp(a, "--netns") == 0)
        opt.netns = v;
    else if (strcmp(a, "--seconds") == 0 || strcmp(a, "--time") == 0)
        rc = parse_long(a, v, 1, 86400, &x), opt.seconds = (int)x;
    else if (strcmp(a, "--nodes") == 0)
        rc = parse_long(a, v, 3, NODES_MAX, &x), opt.nodes = (int)x;
    else if (strcmp(a, "--clients") == 0)
        rc = parse_long(a, v, 1, CLIENTS_MAX, &x), opt.clients = (int)x;
    else if (strcmp(a, "--keys") == 0)
        rc = parse_long(a, v, 1, KEYS_MAX, &x), opt.keys = (int)x;
    else if (strcmp(a, "--port-base") == 0)
        rc = parse_long(a, v, 1024, 65535 - NODES_MAX - 1, &x), opt.port_base = (int)x;
    else if (strcmp(a, "--snapshot-entries") == 0)
        rc = parse_long(a, v, 1, 1000000, &x), opt.snapshot_entries = (int)x;
    else
        rc = -1;
    return rc;
}

/* The crash nemeses need lossyfs; the no-fsync control needs crashes (a
 * kill -9 alone loses nothing the kernel's page cache holds). */
static int nemesis_defaults(bool given) {
    if (!given && opt.control == CONTROL_NO_FSYNC)
        opt.nemeses = NEM_CRASH_MASK;
    if (opt.lossyfs == NULL && (opt.nemeses & NEM_CRASH_MASK) != 0) {
        if (given || opt.control == CONTROL_NO_FSYNC) {
            fprintf(stderr, "kv-jepsen: the crash nemeses and --control no-fsync need "
                            "--lossyfs PROGRAM (root, /dev/fuse, libfuse3)\n");
            return -1;
        }
        opt.nemeses &= ~NEM_CRASH_MASK;
    }
    if (opt.netns == NULL && (opt.nemeses & NEM_NET_MASK) != 0) {
        if (given) {
            fprintf(stderr, "kv-jepsen: the partition nemeses need --netns netns.sh (root, "
                            "ip, nft)\n");
            return -1;
        }
        opt.nemeses &= ~NEM_NET_MASK;
    }
    return opt.nemeses != 0 ? 0 : -1;
}

/* 0, 1 (--help: done) or -1 (bad arguments, usage printed). */
static int parse_args(int argc, char **argv, bool *seed_given) {
    bool nemesis_given = false;
    opt.nemeses = NEM_DEFAULT_MASK;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--heal-reset") == 0 || strcmp(a, "--read-lease") == 0) {
            opt.heal_reset |= a[2] == 'h';
            opt.read_lease |= a[2] == 'r';
            continue;
        }
        if (strcmp(a, "--keep") == 0 || strcmp(a, "--control-stale") == 0) {
            opt.keep |= a[2] == 'k';
            opt.control = a[2] == 'k' ? opt.control : CONTROL_STALE_READ;
            continue;
        }
        *seed_given |= strcmp(a, "--seed") == 0;
        nemesis_given |= strcmp(a, "--nemesis") == 0;
        if (i + 1 >= argc || parse_opt(a, argv[i + 1]) != 0) {
            fprintf(stderr, "kv-jepsen: bad or incomplete option '%s'\n", a);
            usage(stderr);
            return -1;
        }
        i++;
    }
    if (opt.bin == NULL || opt.dir == NULL || (opt.nodes != 3 && opt.nodes != 5)) {
        usage(stderr);
        return -1;
    }
    return nemesis_defaults(nemesis_given);
}

static void make_replay(void) {
    static const char *const wl[] = {"", "register", "set", "both", "bank", "watch"};
    static const char *const ctl[] = {"", " --control stale-read", " --control no-fsync",
                                      " --control bank-skew"};
    char nem[256] = "";
    size_t len = 0;
    for (int k = 0; k < NEM_COUNT; k++)
        if (opt.nemeses & (1u << k))
            len += (size_t)snprintf(nem + len, sizeof nem - len, "%s%s", len ? "," : "",
                                    nemesis_names[k]);
    snprintf(replay, sizeof replay,
             "%s --bin %s --dir %s --seed %" PRIu64 " --time %d --nodes %d --nemesis %s "
             "--workload %s --clients %d --keys %d --port-base %d --snapshot-entries %d%s",
             argv0, opt.bin, opt.dir, opt.seed, opt.seconds, opt.nodes, nem, wl[opt.workload],
             opt.clients, opt.keys, opt.port_base, opt.snapshot_entries, ctl[opt.control]);
    size_t n = strlen(replay);
    if (opt.lossyfs != NULL)
        n += (size_t)snprintf(replay + n, sizeof replay - n, " --lossyfs %s", opt.lossyfs);
    if (opt.netns != NULL)
        n += (size_t)snprintf(replay + n, sizeof replay - n, " --netns %s", opt.netns);
    if (opt.heal_reset)
        n += (size_t)snprintf(replay + n, sizeof replay - n, " --heal-reset");
    if (opt.read_lease)
        snprintf(replay + n, sizeof replay - n, " --read-lease");
}

/* Run dir, endpoints, the founders' --cluster. 0 or -1. */
static int setup_run(void) {
    mkdir(opt.dir, 0755);
    snprintf(run_dir, sizeof run_dir, "%s/jl-%" PRIu64 "-XXXXXX", opt.dir, opt.seed);
    if (mkdtemp(run_dir) == NULL) {
        fprintf(stderr, "kv-jepsen: mkdtemp %s: %s\n", run_dir, strerror(errno));
        return -1;
    }
    printf("kv-jepsen: run dir %s (node logs nI.log); history file %s.history\n", run_dir, run_dir);
    size_t el = 0, cl = 0;
    for (int i = 0; i < opt.nodes; i++) {
        char a[64];
        node_addr(i, a, sizeof a);
        el += (size_t)snprintf(endpoints + el, sizeof endpoints - el, "%s%s", i ? "," : "", a);
        cl += (size_t)snprintf(cluster_arg + cl, sizeof cluster_arg - cl, "%sn%d=%s", i ? "," : "",
                               i + 1, a);
    }
    return 0;
}

/* Starts every node and waits for a put to succeed (30 s). 0 or -1. */
static int cluster_up(void) {
    for (int i = 0; i < opt.nodes; i++)
        if (node_start(i) != 0)
            return -1;
    uint64_t deadline = now_ns() + 30ull * 1000000000u;
    int rc = -1;
    while (now_ns() < deadline) {
        kv_client *c;
        struct kv_client_options o;
        kv_client_options_init(&o);
        o.timeout_ms = 1000;
        if (kv_client_open(&c, endpoints, &o) == 0) {
            rc = kv_put(c, "jl-ready", 8, "1", 1);
            kv_client_close(c);
            if (rc == 0)
                break;
        }
        nodes_sleep(100);
    }
    if (rc != 0) {
        fprintf(stderr, "kv-jepsen: no leader within 30 s (last: %s); logs in %s\n", kv_errword(rc),
                run_dir);
        return -1;
    }
    logf_("cluster up: %s", endpoints);
    return 0;
}

static int clients_start(void) {
    /* Mean think time 2 * run * clients / (keys * target) / 2. */
    think_ms_max = 2ull * (uint64_t)(opt.seconds + 2) * 1000u * (uint64_t)opt.clients /
                   ((uint64_t)opt.keys * KEY_OPS_TARGET);
    for (int i = 0; i < opt.clients; i++) {
        client_ctx *cx = &clients[i];
        cx->id = i;
        cx->set_client = opt.workload == WL_SET || opt.workload == WL_WATCH ||
                         (opt.workload == WL_BOTH && i % 2 == 1);
        cx->bank_client = opt.workload == WL_BANK;
        cx->r.s = opt.seed * 0x100000001b3ull + (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
        linz_history_init(&cx->h);
        if (cx->set_client && (cx->adds = calloc(SET_ADDS_MAX, sizeof(set_add))) == NULL)
            return -1;
        if (pthread_create(&cx->th, NULL, client_main, cx) != 0)
            return -1;
    }
    return 0;
}

/* The nemesis, in the main thread (the nodes die with the thread that
 * forked them, PR_SET_PDEATHSIG, so every fork is made here). Then heals:
 * every node is running again. Returns the number of events, -1 on a
 * harness error. */
static int nemesis_run(void) {
    rng nem = {opt.seed ^ 0x6e656d65736973ull};
    /* --time, or longer until every enabled kind fired (at most 3 times). */
    uint64_t end = now_ns() + (uint64_t)opt.seconds * 1000000000u;
    uint64_t end_max = now_ns() + 3ull * (uint64_t)opt.seconds * 1000000000u;
    int events = 0;
    for (;;) {
        nodes_sleep(rng_range(&nem, 300, 1000));
        uint64_t now = now_ns();
        if (now >= end_max || (now >= end && nemesis_all_fired()))
            break;
        if (nemesis_step(&nem) != 0)
            return -1;
        events++;
    }
    for (int i = 0; i < opt.nodes; i++) {
        node_resume(i);
        if (nodes[i].pid <= 0 && node_start(i) != 0)
            return -1;
    }
    events = 0; /* every fault thrown, the overlapping ones too */
    for (int k = 0; k < NEM_COUNT; k++)
        events += nemesis_counts[k];
    logf_("nemesis done: %d events; healed, settling 2 s", events);
    return events;
}

typedef struct tally {
    uint64_t ok, fail, info;
} tally;

static tally tally_clients(linz_history *all) {
    tally t = {0, 0, 0};
    int errs[32] = {0};
    for (int i = 0; i < opt.clients; i++) {
        const client_ctx *cx = &clients[i];
        for (size_t j = 0; j < cx->h.ops_count; j++)
            if (linz_history_add(all, &cx->h.ops[j], NULL) != 0)
                abort();
        for (int k = 0; k < K_COUNT; k++) {
            t.ok += cx->c[k].ok + cx->c[k].absent;
            t.fail += cx->c[k].cmp + cx->c[k].failed;
            t.info += cx->c[k].unknown;
        }
        for (int e = 0; e < 32; e++)
            errs[e] += cx->errs[e];
    }
    printf("kv-jepsen: errors seen by clients:");
    for (int e = 1; e < 32; e++)
        if (errs[e] != 0)
            printf(" %s=%d", kv_errword(-e), errs[e]);
    printf("\n");
    return t;
}

static void clients_stop(void) {
    atomic_store(&stop_clients, true);
    for (int i = 0; i < opt.clients; i++)
        pthread_join(clients[i].th, NULL);
    logf_("clients stopped");
}

/* Stops the nodes; counts those that do not exit 0 on SIGTERM. */
static void nodes_shut_down(void) {
    nodes_reap();
    for (int i = 0; i < opt.nodes; i++) {
        if (nodes[i].pid <= 0)
            continue;
        int st = node_stop(i);
        if (st != 0) {
            logf_("n%d: exit status 0x%x at the final SIGTERM (want 0)", i + 1, (unsigned)st);
            atomic_fetch_add(&unexpected_exits, 1);
        }
    }
}

typedef struct verdict {
    linz_verdict linz;
    uint64_t lost, phantom, elements;
    uint64_t watch_events, watch_bad;
    bool diverged, final_failed, fatal, down;
    uint64_t bank_bad; /* reads of all accounts that did not sum to the total */
} verdict;

static int verdict_rc(const verdict *v) {
    /* A cluster that cannot serve the final read once healed fails too. */
    if (v->linz == LINZ_FAIL || v->lost || v->phantom || v->diverged || v->fatal || v->down ||
        v->bank_bad || v->final_failed || v->watch_bad || atomic_load(&unexpected_exits) > 0 ||
        atomic_load(&liveness_failures) > 0)
        return 1;
    return v->linz == LINZ_UNKNOWN ? 2 : 0;
}

/* After the run: checks, history file, summary line. Returns the exit code. */
static int judge(verdict *v, int events) {
    linz_history all;
    linz_history_init(&all);
    tally t = tally_clients(&all);
    for (int i = 0; i < opt.clients; i++)
        v->fatal |= clients[i].fatal;
    char hist[4300];
    snprintf(hist, sizeof hist, "%s.history", run_dir);
    if (history_write(hist) == 0)
        printf("kv-jepsen: history in %s\n", hist);
    uint64_t c0 = now_ns();
    linz_result res;
    v->linz = linz_check(&all, &res);
    printf("kv-jepsen: linearizability: %s (%zu register ops, %" PRIu64 " steps, %.2f s)\n",
           linz_verdict_name(v->linz), all.ops_count, res.steps, (double)(now_ns() - c0) / 1e9);
    if (v->linz == LINZ_FAIL)
        linz_result_print(&all, &res, stdout);
    else if (v->linz == LINZ_UNKNOWN)
        printf("kv-jepsen: checker budget exceeded: %s\n", res.reason);
    linz_history_free(&all);
    if (unexpected_exits > 0)
        printf("kv-jepsen: %d node exit(s) nobody asked for (see the log above)\n",
               atomic_load(&unexpected_exits));
    int rc = verdict_rc(v);
    printf("ops=%" PRIu64 " ok=%" PRIu64 " fail=%" PRIu64 " info=%" PRIu64
           " nemesis_events=%d linearizable=%s lost=%" PRIu64 "\n",
           t.ok + t.fail + t.info, t.ok, t.fail, t.info, events,
           v->linz == LINZ_OK     ? "true"
           : v->linz == LINZ_FAIL ? "false"
                                  : "unknown",
           v->lost);
    return rc;
}

static void finish(int rc) {
    bool control = opt.control != CONTROL_NONE;
    if (!opt.keep && (rc == 0 || (rc == 1 && control)))
        rm_rf(run_dir);
    else
        printf("kv-jepsen: kept %s\n", run_dir);
    printf("kv-jepsen: %s (seed %" PRIu64 ", %.1f s)%s\n",
           rc == 0   ? "PASS"
           : rc == 1 ? "FAIL"
           : rc == 2 ? "UNKNOWN"
                     : "ERROR",
           opt.seed, (double)(now_ns() - t0_ns) / 1e9,
           control ? " [control run: FAIL expected]" : "");
    if (rc != 0)
        printf("kv-jepsen: replay: %s\n", replay);
}

/* Whatever way the run ends: no kvd, no lossyfs, no mount left. */
static void cleanup(void) {
    atomic_store(&stop_clients, true);
    nodes_kill_all();
    fs_unmount_all();
    net_down();
}

static void on_signal(int sig) {
    (void)sig;
    exit(130); /* runs cleanup() */
}

static void seed_default(bool seed_given) {
    if (seed_given)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    opt.seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20);
    opt.seed %= 1000000000000ull;
}

int main(int argc, char **argv) {
    argv0 = argv[0];
    t0_ns = now_ns();
    bool seed_given = false;
    int prc = parse_args(argc, argv, &seed_given);
    if (prc != 0)
        return prc > 0 ? 0 : 3;
    seed_default(seed_given);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("kv-jepsen: seed %" PRIu64 "\n", opt.seed);
    make_replay();
    printf("kv-jepsen: replay: %s\n", replay);
    signal(SIGPIPE, SIG_IGN);
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int nrc = net_up();
    if (nrc != 0)
        return nrc == 77 ? 77 : 3;
    if (setup_run() != 0)
        return 3;
    if (cluster_up() != 0 || (opt.workload == WL_BANK && bank_init() != 0) ||
        clients_start() != 0 || (opt.workload == WL_WATCH && watch_start() != 0)) {
        atomic_store(&stop_clients, true);
        nodes_kill_all();
        printf("kv-jepsen: kept %s\n", run_dir);
        return 3;
    }
    int events = nemesis_run();
    verdict v = {.linz = LINZ_OK};
    v.down = events >= 0 && nodes_check_up(15000) != 0;
    nodes_sleep(2000);
    clients_stop();
    if (events >= 0 && opt.workload == WL_BANK) {
        v.final_failed = bank_final_check(&v.diverged) != 0;
        v.bank_bad = atomic_load(&bank_bad);
        printf("kv-jepsen: bank: %" PRIu64 " reads of all accounts broke the total%s\n", v.bank_bad,
               v.diverged ? ", NODES DIVERGE" : "");
    } else if (events >= 0 && opt.workload != WL_REGISTER) {
        v.final_failed = set_final_check(&v.lost, &v.phantom, &v.elements, &v.diverged) != 0;
        printf("kv-jepsen: set: %" PRIu64 " elements in the final read, lost %" PRIu64
               ", phantom %" PRIu64 "%s\n",
               v.elements, v.lost, v.phantom, v.diverged ? ", NODES DIVERGE" : "");
    }
    if (events >= 0 && opt.workload == WL_WATCH) {
        v.final_failed |= watch_final_check(&v.watch_events, &v.watch_bad) != 0;
        printf("kv-jepsen: watch: %" PRIu64 " events delivered, %" PRIu64
               " problems (missing, repeated, phantom, out of order)\n",
               v.watch_events, v.watch_bad);
    }
    nodes_shut_down();
    int rc = events < 0 ? 3 : judge(&v, events);
    if (rc != 0 || opt.keep)
        fs_save_all(); /* lossyfs forgets everything when it stops */
    fs_unmount_all();
    net_down();
    finish(rc);
    return rc;
}
