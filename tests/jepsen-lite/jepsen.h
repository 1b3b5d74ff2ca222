/*
 * kv-jepsen's internal interface: the pieces of one run, one file each.
 *
 *   util.c      time, seeded rng, log, small helpers
 *   nodes.c     the kvd processes: init, start, kill -9, pause, stop, and
 *               the watch for exits nobody asked for
 *   workload.c  client threads: the register workload (get/put/cas checked
 *               by kvlinz) and the set workload (unique adds, final read)
 *   bank.c      the bank workload: transfers and reads by transaction, every
 *               read of all accounts sums to the total
 *   watch.c     the watch workload: a watcher of the set's prefix, its
 *               stream checked against the final read
 *   nemesis.c   the fault schedule (the names in --nemesis)
 *   jepsen.c    options, the run, the history file and the summary line
 *
 * Threads: the main thread forks and reaps every kvd (they die with it,
 * PR_SET_PDEATHSIG) and runs the nemesis; client threads only talk to the
 * cluster through their own kv_client and append to their own history.
 */
#ifndef KV_TESTS_JEPSEN_H
#define KV_TESTS_JEPSEN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "linz.h"

#define NODES_MAX 5
#define KEYS_MAX 64
#define CLIENTS_MAX 64
/* Set elements one client may add in a run (one key each). */
#define SET_ADDS_MAX 20000u

/* ---- options (jepsen.c) -------------------------------------------------- */

/* WL_WATCH: set clients, and a watcher of their prefix (watch.c). */
enum workload { WL_REGISTER = 1, WL_SET = 2, WL_BOTH = 3, WL_BANK = 4, WL_WATCH = 5 };
enum control { CONTROL_NONE, CONTROL_STALE_READ, CONTROL_NO_FSYNC, CONTROL_BANK_SKEW };

typedef struct jl_opts {
    const char *bin;
    const char *dir;
    uint64_t seed;
    int seconds;
    int nodes;
    int clients;
    int keys;
    int port_base;
    int workload;
    int control;
    uint32_t nemeses; /* bit set of NEM_* */
    int snapshot_entries;
    const char *lossyfs; /* the lossyfs program, or NULL: no crash nemeses */
    const char *netns;   /* netns.sh, or NULL: loopback, no partitions */
    bool heal_reset;     /* peer TCP connections destroyed at every heal */
    bool read_lease;     /* kvd --read-lease: reads on the leader's lease */
    bool keep;
} jl_opts;

extern jl_opts opt;
extern char run_dir[4096];
extern char endpoints[512];
extern char cluster_arg[512];

/* ---- util.c -------------------------------------------------------------- */

uint64_t now_ns(void);
extern uint64_t t0_ns;
void sleep_ms(uint64_t ms);
void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct rng {
    uint64_t s;
} rng;
uint64_t rng_next(rng *r);
uint64_t rng_range(rng *r, uint64_t lo, uint64_t hi); /* uniform in [lo, hi] */
int rm_rf(const char *path);

/* ---- nodes.c ------------------------------------------------------------- */

typedef struct node {
    pid_t pid; /* 0: not running */
    int starts;
    bool paused; /* SIGSTOPped by the nemesis */
    bool joined; /* re-added as a new member: starts with --join */
} node;

extern node nodes[NODES_MAX];
/* Exits no one asked for (a crash, an assert, a refusal to start). */
extern atomic_int unexpected_exits;

int node_port(int i);
int node_start(int i);
/* Starts node i as a new member: kvd --join through a running member. */
int node_start_join(int i);
/* Removes node i's data dir (it must be stopped). 0 or -1. */
int node_wipe(int i);
void node_kill9(int i);
void node_pause(int i);
void node_resume(int i);
/* Waits up to ms for node i to exit: its wait status, -1 (not a child) or
 * -2 (still running). */
int node_wait(int i, uint64_t ms);
int node_stop(int i); /* SIGTERM, then SIGKILL after 10 s; the wait status */
void nodes_kill_all(void);
/* Reaps any node that exited on its own: counted in unexpected_exits and
 * logged with its status. Main thread only. */
void nodes_reap(void);
/* Sleeps ms, reaping every 50 ms. */
void nodes_sleep(uint64_t ms);
/* Node i's commit and applied indexes (kv_node_status); 0 or -1. */
int node_indexes(int i, uint64_t *commit, uint64_t *applied);
/* Faults of liveness the nemesis saw (a node that did not catch up in time
 * after a heal): each fails the run. */
extern atomic_int liveness_failures;
/* The leader's index from kv_node_status, -1 if none answers as leader. */
int find_leader(void);
/* 0 when every node answers kv_node_status within ms; logs the others. */
int nodes_check_up(uint64_t ms);

/* ---- lossy.c: one lossyfs per node (with --lossyfs) ------------------------ */

/* RUN/nI/data under lossyfs, else RUN/nI. */
void node_data_dir(int i, char *out, size_t n);
int fs_mount(int i);     /* mounts RUN/nI; 0 once it answers */
int fs_sync_root(int i); /* fsync of RUN/nI (the harness's mkdir of data) */
/* Power loss on node i's file system: every unsynced change dropped, or
 * (torn) a seeded prefix of each file's kept, the last maybe torn; its kvd
 * must be dead (killed and reaped). 0 or -1. */
int fs_crash(int i, bool torn, uint64_t seed);
void fs_unmount_all(void); /* stops every lossyfs, lazily unmounts */
/* Copies every node's data dir out of lossyfs (RUN/nI-data-saved). */
void fs_save_all(void);

/* ---- net.c: namespaces and partitions (with --netns) ---------------------- */

void node_host(int i, char *out, size_t n); /* 10.77.0.<i+1> or 127.0.0.1 */
void node_addr(int i, char *out, size_t n); /* host:port */
/* Makes the namespaces and moves this process into the clients' one. 0, 77
 * (no root, ip or nft) or -1. */
int net_up(void);
void net_enter_node(int i); /* in a node's child before exec */
/* Node i drops every packet from the nodes in srcs (0: none). 0 or -1. */
int net_drop(int i, uint32_t srcs);
int net_heal(void);
void net_down(void);

/* ---- proxy.c: the frame-aware proxy on peer links (the wire nemesis) ------ */

int proxy_port(int a, int b); /* where the proxy of a's link to b listens */
int proxy_start(void);        /* every pair's listener; in the clients' namespace */
/* Faults for every pair from now on (all 0: none). */
void proxy_faults(int delay_ms, int jitter_ms, int dup_pct, int reorder_pct, int cut_pct);
void proxy_counts(uint64_t *frames, uint64_t *faults);

/* ---- workload.c ---------------------------------------------------------- */

enum { K_GET, K_PUT, K_CAS, K_ADD, K_TRANSFER, K_READ, K_COUNT };
/* ok: completed; cmp: cas refused (COMPARE); unknown: outcome unknown (or a
 * failed get, not recorded); failed: definitely not applied. */
typedef struct counts {
    uint64_t ok, absent, cmp, unknown, failed;
} counts;

/* One set add: the element is the key "js<client>-<n>". */
typedef struct set_add {
    uint32_t n;
    uint64_t invoke, complete; /* complete: LINZ_TIME_INF when unknown */
    int8_t outcome;            /* 1 ok, 0 unknown, -1 definitely failed */
} set_add;

typedef struct client_ctx {
    int id;
    bool set_client;  /* set workload, else register (or bank) */
    bool bank_client; /* bank workload */
    pthread_t th;
    linz_history h;
    set_add *adds; /* set workload: SET_ADDS_MAX */
    uint32_t adds_count;
    counts c[K_COUNT];
    int errs[32]; /* by -code */
    rng r;
    bool seen_present[KEYS_MAX];
    int64_t seen[KEYS_MAX];
    int fatal;
} client_ctx;

extern client_ctx clients[CLIENTS_MAX];
extern atomic_bool stop_clients;
extern uint64_t think_ms_max;

void *client_main(void *arg);
void key_name(int k, char *out, size_t n);

/* The set workload's final read (after healing): every acknowledged add must
 * be present and nothing else; *lost and *phantom get the counts (each is
 * logged), *diverged whether kv_check found the nodes' state machines to
 * differ. Returns 0, or -1 when the final read itself failed. */
int set_final_check(uint64_t *lost, uint64_t *phantom, uint64_t *elements, bool *diverged);

/* kv_check until every member answers (up to 30 s): 0 agree, KV_ECORRUPT
 * when one differs, else the last error (final.c). */
struct kv_client;
int final_compare_nodes(struct kv_client *c);

/* ---- bank.c ---------------------------------------------------------------- */

/* Accounts, and the money in them all (each opens with an equal share). */
#define BANK_ACCOUNTS 5
#define BANK_TOTAL 1000
/* Reads that broke the invariant (each logged, the first 20). */
extern atomic_uint_fast64_t bank_bad;
/* Opens the accounts (one txn); 0 or -1. Before the clients start. */
int bank_init(void);
/* One operation of a bank client: a transfer or a read of all accounts. */
void bank_op(client_ctx *cx, struct kv_client *c);
/* After healing: a final read of all accounts (which must sum to the
 * total: else bank_bad grows) and kv_check. *diverged: the nodes differ.
 * 0, or -1 when the final read or the check could not be made. */
int bank_final_check(bool *diverged);

/* Writes every client's history, one op per line, to path. */
int history_write(const char *path);

/* ---- watch.c -------------------------------------------------------------- */

/* Starts the watcher thread (after the cluster is up). 0 or -1. */
int watch_start(void);
/* After healing and the clients stopped: a final scan, the watcher given
 * time to deliver it all, then stopped and its stream compared (watch.c).
 * *events delivered, *bad problems found (each logged). 0, or -1 when the
 * check could not run (scan failed, the watcher ended on its own). */
int watch_final_check(uint64_t *events, uint64_t *bad);

/* ---- nemesis.c ----------------------------------------------------------- */

enum {
    NEM_KILL,           /* kill -9 of one node, restart */
    NEM_KILL_MAJORITY,  /* kill -9 of a majority at once */
    NEM_KILL_ALL,       /* kill -9 of every node at once */
    NEM_PAUSE,          /* SIGSTOP of the leader */
    NEM_PAUSE_MAJORITY, /* SIGSTOP of a majority */
    NEM_PAUSE_ALL,      /* SIGSTOP of every node */
    NEM_RESTART,        /* rolling SIGTERM restart */
    NEM_CRASH,          /* kill -9 of one node, unsynced writes dropped */
    NEM_CRASH_MAJORITY, /* the same, a majority at once */
    NEM_CRASH_ALL,      /* the same, every node at once (power loss) */
    NEM_PART_LEADER,    /* the leader cut off from every other node */
    NEM_PART_MAJORITY,  /* a majority and a minority, cut apart */
    NEM_PART_BRIDGE,    /* two sides cut apart; one node sees both */
    NEM_PART_ONEWAY,    /* the leader hears nobody, or nobody hears it */
    NEM_MEMBER,         /* remove a follower, wipe it, add it back (members.c) */
    NEM_TRANSFER,       /* transfer leadership to a follower */
    NEM_CORRUPT,        /* a flipped byte in a follower's synced log or snapshot */
    NEM_WIRE,           /* peer frames delayed, duplicated, reordered, cut (proxy.c) */
    NEM_PART_LONG,      /* a follower cut off for 30 s, then it must catch up in 10 s */
    NEM_COUNT
};

extern const char *const nemesis_names[NEM_COUNT];
extern int nemesis_counts[NEM_COUNT];
/* "all" and the default: every kind but partition-long, which fails on a
 * known kv bug until it is fixed (README, Testing) and takes 30 s. */
#define NEM_DEFAULT_MASK (((1u << NEM_COUNT) - 1) & ~(1u << NEM_PART_LONG))
#define NEM_NET_MASK                                                                               \
    ((1u << NEM_PART_LEADER) | (1u << NEM_PART_MAJORITY) | (1u << NEM_PART_BRIDGE) |               \
     (1u << NEM_PART_ONEWAY) | (1u << NEM_WIRE) | (1u << NEM_PART_LONG))
#define NEM_CRASH_MASK ((1u << NEM_CRASH) | (1u << NEM_CRASH_MAJORITY) | (1u << NEM_CRASH_ALL))

/* Parses "kill,pause,..." or "all" into a bit set; -1 on an unknown name. */
int nemesis_parse(const char *list, uint32_t *out);
/* members.c: NEM_MEMBER or NEM_TRANSFER. 0 (an event that could not run is
 * logged and skipped) or -1 (harness). */
int nemesis_members(rng *r, int kind);
/* Replaces stopped-or-running node i: member remove, wipe, member add,
 * kvd --join, until it is a voter; one that does not come back counts as an
 * unexpected exit. 0 or -1 (harness). */
int member_replace(int i);
/* diskfault.c: NEM_CORRUPT. */
int nemesis_corrupt(rng *r);

/* Whether every enabled kind has fired at least once. */
bool nemesis_all_fired(void);
/* One nemesis event drawn from r among opt.nemeses, the kinds that have not
 * fired yet first; 0 or -1 (harness). */
int nemesis_step(rng *r);

#endif /* KV_TESTS_JEPSEN_H */
