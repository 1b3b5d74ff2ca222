/*
 * kv-jepsen: a real-process linearizability test of kv.
 *
 * Starts a 3-node kvd cluster (fork/exec), runs C client threads doing
 * random put/get/cas on a few keys through libkvclient while a seeded
 * nemesis kills (-9), pauses (SIGSTOP/SIGCONT) and restarts nodes, then
 * checks the recorded history with the linearizability checker
 * (tests/raft/linz.h).
 *
 *   kv-jepsen --bin DIR --dir TMP [--seed S] [--seconds N] [--clients C]
 *             [--keys K] [--port-base P] [--control-stale] [--keep]
 *
 * Exit: 0 linearizable, 1 violation (the checker's report is printed),
 * 2 checker budget exceeded (UNKNOWN), 3 the harness failed (the cluster did
 * not come up, bad arguments).
 *
 * The seed fixes the nemesis schedule and the clients' choices of operations
 * and values; thread timing is not reproducible, so a replay reruns the same
 * schedule, not the same interleaving.
 *
 * Recording (linz.h's rules): KV_ETIMEOUT (and any error that does not say
 * "not applied") -> unknown outcome (LINZ_TIME_INF); KV_EUNAVAILABLE and
 * KV_EBUSY -> not recorded; KV_ECOMPARE -> cas completed with ok = false;
 * get KV_ENOTFOUND -> read of absent; a failed get is not recorded.
 *
 * --control-stale: gets use kv_get_stale through a client pinned to one node
 * (client i reads from node i % 3), which may be behind: the checker should
 * then find violations. It shows the test can fail.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv/client.h"
#include "linz.h"

#define NODES 3
#define KEYS_MAX 64
#define CLIENTS_MAX 64
/* Stop issuing operations on a key past this many (the checker searches at
 * most LINZ_KEY_OPS_MAX per key). */
#define KEY_OPS_CAP 3500u
/* Clients pace themselves to about this many operations per key per run. */
#define KEY_OPS_TARGET 2400u

/* ---- options ------------------------------------------------------------ */

static const char *opt_bin;
static const char *opt_dir;
static uint64_t opt_seed;
static int opt_seconds = 10;
static int opt_clients = 5;
static int opt_keys = 3;
static int opt_port_base = 29000;
static bool opt_control_stale;
static bool opt_keep;
static const char *argv0;
static uint64_t think_ms_max; /* think time between ops: uniform [0, this] */

static char run_dir[4096];
static char endpoints[256];
static char cluster_arg[256];

/* ---- time, rng, log ------------------------------------------------------ */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t t0_ns;

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static void logf_(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log_mu);
    double t = (double)(now_ns() - t0_ns) / 1e9;
    printf("[%7.3f] ", t);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&log_mu);
    va_end(ap);
}

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static uint64_t rng_range(rng *r, uint64_t lo, uint64_t hi) {
    return lo + rng_next(r) % (hi - lo + 1);
}

/* ---- nodes --------------------------------------------------------------- */

typedef struct node {
    pid_t pid; /* 0: not running */
    int starts;
} node;

static node nodes[NODES];

static int node_port(int i) {
    return opt_port_base + 1 + i;
}

/* kvd init of node i, a founder of this run's cluster, before its first
 * start: its output goes to fd. 0 when it succeeded. */
static int node_init(int fd, const char *kvd, const char *name, const char *data,
                     const char *listen_) {
    char token[64];
    snprintf(token, sizeof token, "jepsen-%d", (int)getpid());
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execl(kvd, kvd, "init", "--name", name, "--data-dir", data, "--listen", listen_,
              "--cluster", cluster_arg, "--cluster-token", token, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "kv-jepsen: kvd init of %s failed (see its log)\n", name);
        return -1;
    }
    return 0;
}

static int node_start(int i) {
    char name[16], data[4200], listen_[64], logp[4200];
    snprintf(name, sizeof name, "n%d", i + 1);
    snprintf(data, sizeof data, "%s/n%d", run_dir, i + 1);
    snprintf(listen_, sizeof listen_, "127.0.0.1:%d", node_port(i));
    snprintf(logp, sizeof logp, "%s/n%d.log", run_dir, i + 1);
    char kvd[4200];
    snprintf(kvd, sizeof kvd, "%s/kvd", opt_bin);
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "kv-jepsen: %s: %s\n", logp, strerror(errno));
        return -1;
    }
    if (nodes[i].starts == 0 && node_init(fd, kvd, name, data, listen_) != 0) {
        close(fd);
        return -1;
    }
    nodes[i].starts++;
    dprintf(fd, "=== kv-jepsen: start %d of %s at t=%.3f\n", nodes[i].starts, name,
            (double)(now_ns() - t0_ns) / 1e9);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "kv-jepsen: fork: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        /* Dies with the thread that forked it (always the main thread). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        execl(kvd, kvd, "--name", name, "--data-dir", data, "--listen", listen_, "--cluster",
              cluster_arg, "--snapshot-entries", "200", (char *)NULL);
        dprintf(2, "kv-jepsen: exec %s: %s\n", kvd, strerror(errno));
        _exit(127);
    }
    close(fd);
    nodes[i].pid = pid;
    return 0;
}

/* Waits for node i to exit, up to ms; returns its wait status or -1. */
static int node_wait(int i, uint64_t ms) {
    uint64_t deadline = now_ns() + ms * 1000000u;
    for (;;) {
        int st;
        pid_t r = waitpid(nodes[i].pid, &st, WNOHANG);
        if (r == nodes[i].pid) {
            nodes[i].pid = 0;
            return st;
        }
        if (r < 0) {
            nodes[i].pid = 0;
            return -1;
        }
        if (now_ns() >= deadline)
            return -2;
        sleep_ms(10);
    }
}

static void node_kill9(int i) {
    if (nodes[i].pid <= 0)
        return;
    kill(nodes[i].pid, SIGKILL);
    node_wait(i, 10000);
}

/* SIGTERM, wait up to 10 s, then SIGKILL. Returns the wait status. */
static int node_stop(int i) {
    if (nodes[i].pid <= 0)
        return 0;
    kill(nodes[i].pid, SIGCONT);
    kill(nodes[i].pid, SIGTERM);
    int st = node_wait(i, 10000);
    if (st == -2) {
        logf_("nemesis: n%d did not stop within 10 s of SIGTERM: SIGKILL", i + 1);
        kill(nodes[i].pid, SIGKILL);
        st = node_wait(i, 10000);
    }
    return st;
}

static void nodes_kill_all(void) {
    for (int i = 0; i < NODES; i++)
        if (nodes[i].pid > 0) {
            kill(nodes[i].pid, SIGKILL);
            node_wait(i, 5000);
        }
}

/* ---- recording ----------------------------------------------------------- */

enum { K_GET, K_PUT, K_CAS, K_COUNT };
/* ok: completed (get: value or absent; cas: swapped), cmp: cas refused
 * (COMPARE), unknown: recorded with unknown outcome (or an unrecorded
 * failed get), failed: definitely not applied (UNAVAILABLE, BUSY), not
 * recorded. */
typedef struct counts {
    uint64_t ok, absent, cmp, unknown, failed;
} counts;

typedef struct client_ctx {
    int id;
    pthread_t th;
    linz_history h;
    counts c[K_COUNT];
    int errs[32]; /* by -code */
    rng r;
    bool seen_present[KEYS_MAX];
    int64_t seen[KEYS_MAX];
    int fatal;
} client_ctx;

static client_ctx clients[CLIENTS_MAX];
static atomic_bool stop_clients;
static atomic_uint key_ops[KEYS_MAX];
static _Atomic int64_t last_written[KEYS_MAX]; /* 0: none yet */

static void key_name(int k, char *out, size_t n) {
    snprintf(out, n, "jl%d", k);
}

static void note_err(client_ctx *cx, int rc) {
    int i = -rc;
    if (i > 0 && i < 32)
        cx->errs[i]++;
}

/* Parses a decimal value read back; false if it is not one of ours. */
static bool parse_value(const void *v, size_t n, int64_t *out) {
    char buf[32];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, v, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || *end != 0 || x <= 0)
        return false;
    *out = (int64_t)x;
    return true;
}

static int open_client(kv_client **out, const char *eps) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 1000;
    o.connect_timeout_ms = 300;
    while (!atomic_load(&stop_clients)) {
        int rc = kv_client_open(out, eps, &o);
        if (rc == 0)
            return 0;
        sleep_ms(50);
    }
    return -1;
}

static void *client_main(void *arg) {
    client_ctx *cx = arg;
    kv_client *c = NULL, *reader = NULL;
    if (open_client(&c, endpoints) != 0)
        return NULL;
    if (opt_control_stale) {
        char ep[64];
        snprintf(ep, sizeof ep, "127.0.0.1:%d", node_port(cx->id % NODES));
        if (open_client(&reader, ep) != 0) {
            kv_client_close(c);
            return NULL;
        }
    }
    uint64_t counter = 0;
    while (!atomic_load(&stop_clients)) {
        int k = (int)rng_range(&cx->r, 0, (uint64_t)opt_keys - 1);
        if (atomic_fetch_add(&key_ops[k], 1) >= KEY_OPS_CAP) {
            sleep_ms(5);
            continue;
        }
        char key[16];
        key_name(k, key, sizeof key);
        uint64_t pick = rng_range(&cx->r, 0, 99);
        int kind = pick < 40 ? K_GET : pick < 70 ? K_PUT : K_CAS;
        /* Unique values: client id in the high bits, a counter below. */
        int64_t val = (int64_t)(((uint64_t)(cx->id + 1) << 40) | ++counter);
        char vbuf[32];
        int vlen = snprintf(vbuf, sizeof vbuf, "%" PRId64, val);
        size_t idx;
        int rc;
        if (kind == K_GET) {
            void *v = NULL;
            size_t vn = 0;
            uint64_t t1 = now_ns();
            if (opt_control_stale)
                rc = kv_get_stale(reader, key, strlen(key), &v, &vn, NULL);
            else
                rc = kv_get(c, key, strlen(key), &v, &vn);
            uint64_t t2 = now_ns();
            if (rc == 0 || rc == KV_ENOTFOUND) {
                linz_value obs = linz_absent();
                if (rc == 0) {
                    int64_t x;
                    if (!parse_value(v, vn, &x)) {
                        logf_("client %d: get %s returned a value not written by this test "
                              "(%zu bytes)",
                              cx->id, key, vn);
                        cx->fatal = 1;
                        kv_free(v);
                        break;
                    }
                    obs = linz_val(x);
                    cx->seen_present[k] = true;
                    cx->seen[k] = x;
                    cx->c[kind].ok++;
                } else {
                    cx->seen_present[k] = false;
                    cx->c[kind].absent++;
                }
                if (linz_invoke_read(&cx->h, (uint32_t)cx->id, key, t1, &idx) != 0)
                    abort();
                linz_complete_read(&cx->h, idx, t2, obs);
            } else {
                /* A read that failed constrains nothing: not recorded. */
                note_err(cx, rc);
                if (rc == KV_EUNAVAILABLE || rc == KV_EBUSY)
                    cx->c[kind].failed++;
                else
                    cx->c[kind].unknown++;
            }
            kv_free(v);
        } else if (kind == K_PUT) {
            atomic_store(&last_written[k], val);
            uint64_t t1 = now_ns();
            rc = kv_put(c, key, strlen(key), vbuf, (size_t)vlen);
            uint64_t t2 = now_ns();
            if (rc == KV_EUNAVAILABLE || rc == KV_EBUSY) {
                note_err(cx, rc);
                cx->c[kind].failed++;
            } else {
                linz_op op;
                memset(&op, 0, sizeof op);
                if (linz_invoke_write(&cx->h, (uint32_t)cx->id, key, val, t1, &idx) != 0)
                    abort();
                if (rc == 0) {
                    linz_complete_write(&cx->h, idx, t2);
                    cx->c[kind].ok++;
                    cx->seen_present[k] = true;
                    cx->seen[k] = val;
                } else {
                    note_err(cx, rc);
                    cx->c[kind].unknown++;
                }
            }
        } else {
            /* Expected: what this client last saw (50%), the latest value any
             * client started writing (35%), or absent (15%). */
            uint64_t e = rng_range(&cx->r, 0, 99);
            linz_value expect;
            if (e < 50 && cx->seen_present[k])
                expect = linz_val(cx->seen[k]);
            else if (e < 85 && atomic_load(&last_written[k]) != 0)
                expect = linz_val(atomic_load(&last_written[k]));
            else
                expect = linz_absent();
            char ebuf[32];
            int elen = expect.present ? snprintf(ebuf, sizeof ebuf, "%" PRId64, expect.value) : 0;
            atomic_store(&last_written[k], val);
            uint64_t t1 = now_ns();
            rc = kv_cas(c, key, strlen(key), expect.present ? ebuf : NULL, (size_t)elen, vbuf,
                        (size_t)vlen);
            uint64_t t2 = now_ns();
            if (rc == KV_EUNAVAILABLE || rc == KV_EBUSY) {
                note_err(cx, rc);
                cx->c[kind].failed++;
            } else {
                if (linz_invoke_cas(&cx->h, (uint32_t)cx->id, key, expect, val, t1, &idx) != 0)
                    abort();
                if (rc == 0) {
                    linz_complete_cas(&cx->h, idx, t2, true);
                    cx->c[kind].ok++;
                    cx->seen_present[k] = true;
                    cx->seen[k] = val;
                } else if (rc == KV_ECOMPARE) {
                    linz_complete_cas(&cx->h, idx, t2, false);
                    cx->c[kind].cmp++;
                } else {
                    note_err(cx, rc);
                    cx->c[kind].unknown++;
                }
            }
        }
        /* A little think time keeps the history within the checker's reach. */
        sleep_ms(rng_range(&cx->r, 0, think_ms_max));
    }
    kv_client_close(c);
    if (reader != NULL)
        kv_client_close(reader);
    return NULL;
}

/* ---- nemesis ------------------------------------------------------------- */

/* The leader's index, from kv_node_status on each node; -1 if none found. */
static int find_leader(void) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 500;
    o.connect_timeout_ms = 200;
    int found = -1;
    for (int i = 0; i < NODES && found < 0; i++) {
        char ep[64];
        snprintf(ep, sizeof ep, "127.0.0.1:%d", node_port(i));
        kv_client *c;
        if (kv_client_open(&c, ep, &o) != 0)
            continue;
        char *line = NULL;
        if (kv_node_status(c, ep, &line) == 0 && line != NULL) {
            if (strstr(line, "role=leader") != NULL)
                found = i;
            kv_free(line);
        }
        kv_client_close(c);
    }
    return found;
}

static int nemesis_counts[3];

static int nemesis_step(rng *r) {
    int action = (int)rng_range(r, 0, 2);
    nemesis_counts[action]++;
    if (action == 0) {
        int i = (int)rng_range(r, 0, NODES - 1);
        uint64_t down = rng_range(r, 500, 1000);
        logf_("nemesis: kill -9 n%d, restart in %" PRIu64 " ms", i + 1, down);
        node_kill9(i);
        sleep_ms(down);
        if (node_start(i) != 0)
            return -1;
    } else if (action == 1) {
        int i = find_leader();
        const char *what = "leader";
        int rnd = (int)rng_range(r, 0, NODES - 1); /* drawn always: keeps the stream */
        if (i < 0) {
            i = rnd;
            what = "random node (no leader found)";
        }
        uint64_t pause = rng_range(r, 1000, 3000);
        logf_("nemesis: SIGSTOP %s n%d for %" PRIu64 " ms", what, i + 1, pause);
        kill(nodes[i].pid, SIGSTOP);
        sleep_ms(pause);
        kill(nodes[i].pid, SIGCONT);
        logf_("nemesis: SIGCONT n%d", i + 1);
    } else {
        logf_("nemesis: restart all nodes in turn");
        for (int i = 0; i < NODES; i++) {
            int st = node_stop(i);
            if (st > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                logf_("nemesis: n%d stopped with status 0x%x", i + 1, st);
            if (node_start(i) != 0)
                return -1;
            sleep_ms(rng_range(r, 300, 700));
        }
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: kv-jepsen --bin DIR --dir TMP [--seed S] [--seconds N] [--clients C]\n"
            "                 [--keys K] [--port-base P] [--control-stale] [--keep]\n"
            "  --bin DIR        where kvd lives\n"
            "  --dir TMP        a run directory is made under it (removed on success\n"
            "                   unless --keep)\n"
            "  --seed S         nemesis and client choices (default: from the time)\n"
            "  --seconds N      nemesis time (default 10); clients run 2 s more\n"
            "  --clients C      client threads (default 5)\n"
            "  --keys K         registers (default 3)\n"
            "  --port-base P    nodes listen on P+1..P+3 (default 29000)\n"
            "  --control-stale  gets use kv_get_stale on one node: should FAIL\n");
}

static int parse_int(const char *name, const char *s, long lo, long hi, long *out) {
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

static int rm_rf(const char *path) {
    pid_t p = fork();
    if (p == 0) {
        execlp("rm", "rm", "-rf", path, (char *)NULL);
        _exit(127);
    }
    int st;
    if (p < 0 || waitpid(p, &st, 0) != p)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    argv0 = argv[0];
    t0_ns = now_ns();
    bool seed_given = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--control-stale") == 0) {
            opt_control_stale = true;
            continue;
        } else if (strcmp(a, "--keep") == 0) {
            opt_keep = true;
            continue;
        }
        if (v == NULL) {
            usage(stderr);
            return 3;
        }
        i++;
        if (strcmp(a, "--bin") == 0)
            opt_bin = v;
        else if (strcmp(a, "--dir") == 0)
            opt_dir = v;
        else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            opt_seed = strtoull(v, &end, 10);
            if (errno != 0 || *end != 0) {
                fprintf(stderr, "kv-jepsen: bad --seed '%s'\n", v);
                return 3;
            }
            seed_given = true;
        } else if (strcmp(a, "--seconds") == 0) {
            if (parse_int(a, v, 1, 3600, &x))
                return 3;
            opt_seconds = (int)x;
        } else if (strcmp(a, "--clients") == 0) {
            if (parse_int(a, v, 1, CLIENTS_MAX, &x))
                return 3;
            opt_clients = (int)x;
        } else if (strcmp(a, "--keys") == 0) {
            if (parse_int(a, v, 1, KEYS_MAX, &x))
                return 3;
            opt_keys = (int)x;
        } else if (strcmp(a, "--port-base") == 0) {
            if (parse_int(a, v, 1024, 65535 - NODES - 1, &x))
                return 3;
            opt_port_base = (int)x;
        } else {
            fprintf(stderr, "kv-jepsen: unknown option '%s'\n", a);
            usage(stderr);
            return 3;
        }
    }
    if (opt_bin == NULL || opt_dir == NULL) {
        usage(stderr);
        return 3;
    }
    if (!seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        opt_seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20);
        opt_seed %= 1000000000000ull;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("kv-jepsen: seed %" PRIu64 "\n", opt_seed);
    printf("kv-jepsen: replay: %s --bin %s --dir %s --seed %" PRIu64
           " --seconds %d --clients %d --keys %d --port-base %d%s\n",
           argv0, opt_bin, opt_dir, opt_seed, opt_seconds, opt_clients, opt_keys, opt_port_base,
           opt_control_stale ? " --control-stale" : "");
    fflush(stdout);

    signal(SIGPIPE, SIG_IGN);
    mkdir(opt_dir, 0755);
    snprintf(run_dir, sizeof run_dir, "%s/jl-%" PRIu64 "-XXXXXX", opt_dir, opt_seed);
    if (mkdtemp(run_dir) == NULL) {
        fprintf(stderr, "kv-jepsen: mkdtemp %s: %s\n", run_dir, strerror(errno));
        return 3;
    }
    printf("kv-jepsen: run dir %s (node logs nI.log)\n", run_dir);
    snprintf(endpoints, sizeof endpoints, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", node_port(0),
             node_port(1), node_port(2));
    snprintf(cluster_arg, sizeof cluster_arg,
             "n1=127.0.0.1:%d,n2=127.0.0.1:%d,n3=127.0.0.1:%d", node_port(0), node_port(1),
             node_port(2));

    for (int i = 0; i < NODES; i++)
        if (node_start(i) != 0) {
            nodes_kill_all();
            return 3;
        }

    /* Wait for a leader: a put must succeed. */
    {
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
            sleep_ms(100);
        }
        if (rc != 0) {
            fprintf(stderr, "kv-jepsen: no leader within 30 s (last: %s); logs in %s\n",
                    kv_errword(rc), run_dir);
            nodes_kill_all();
            return 3;
        }
        logf_("cluster up: %s", endpoints);
    }

    /* Mean think time 2 * run * clients / (keys * target) / 2. */
    think_ms_max = 2ull * (uint64_t)(opt_seconds + 2) * 1000u * (uint64_t)opt_clients /
                   ((uint64_t)opt_keys * KEY_OPS_TARGET);
    rng nem = {opt_seed ^ 0x6e656d65736973ull};
    for (int i = 0; i < opt_clients; i++) {
        clients[i].id = i;
        clients[i].r.s = opt_seed * 0x100000001b3ull + (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
        linz_history_init(&clients[i].h);
        if (pthread_create(&clients[i].th, NULL, client_main, &clients[i]) != 0) {
            fprintf(stderr, "kv-jepsen: pthread_create failed\n");
            nodes_kill_all();
            return 3;
        }
    }

    /* The nemesis runs in the main thread: the nodes die with the thread
     * that forked them (PR_SET_PDEATHSIG), so every fork is made here. */
    uint64_t end = now_ns() + (uint64_t)opt_seconds * 1000000000u;
    int harness_err = 0;
    while (now_ns() < end) {
        sleep_ms(rng_range(&nem, 500, 1500));
        if (now_ns() >= end)
            break;
        if (nemesis_step(&nem) != 0) {
            harness_err = 1;
            break;
        }
    }
    for (int i = 0; i < NODES; i++)
        if (nodes[i].pid <= 0 && node_start(i) != 0)
            harness_err = 1;
    logf_("nemesis done (kill %d, pause %d, restart-all %d); settling 2 s", nemesis_counts[0],
          nemesis_counts[1], nemesis_counts[2]);
    sleep_ms(2000);
    atomic_store(&stop_clients, true);
    for (int i = 0; i < opt_clients; i++)
        pthread_join(clients[i].th, NULL);
    logf_("clients stopped");

    int bad_exit = 0;
    for (int i = 0; i < NODES; i++) {
        int st = node_stop(i);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            logf_("n%d: exit status 0x%x at the final SIGTERM", i + 1, (unsigned)st);
            bad_exit = 1;
        }
    }
    (void)bad_exit;

    /* Merge the histories, sum the counts. */
    linz_history h;
    linz_history_init(&h);
    counts tot[K_COUNT];
    memset(tot, 0, sizeof tot);
    int errs[32] = {0};
    int fatal = 0;
    for (int i = 0; i < opt_clients; i++) {
        client_ctx *cx = &clients[i];
        for (size_t j = 0; j < cx->h.ops_count; j++)
            if (linz_history_add(&h, &cx->h.ops[j], NULL) != 0)
                abort();
        for (int k = 0; k < K_COUNT; k++) {
            tot[k].ok += cx->c[k].ok;
            tot[k].absent += cx->c[k].absent;
            tot[k].cmp += cx->c[k].cmp;
            tot[k].unknown += cx->c[k].unknown;
            tot[k].failed += cx->c[k].failed;
        }
        for (int e = 0; e < 32; e++)
            errs[e] += cx->errs[e];
        fatal |= cx->fatal;
        linz_history_free(&cx->h);
    }
    printf("kv-jepsen: %zu ops recorded on %d keys by %d clients%s\n", h.ops_count, opt_keys,
           opt_clients, opt_control_stale ? " (CONTROL: stale reads)" : "");
    printf("  get: ok %" PRIu64 " (absent %" PRIu64 "), unknown %" PRIu64 ", failed %" PRIu64 "\n",
           tot[K_GET].ok + tot[K_GET].absent, tot[K_GET].absent, tot[K_GET].unknown,
           tot[K_GET].failed);
    printf("  put: ok %" PRIu64 ", unknown %" PRIu64 ", failed %" PRIu64 "\n", tot[K_PUT].ok,
           tot[K_PUT].unknown, tot[K_PUT].failed);
    printf("  cas: ok %" PRIu64 " (swapped %" PRIu64 ", compare-failed %" PRIu64
           "), unknown %" PRIu64 ", failed %" PRIu64 "\n",
           tot[K_CAS].ok + tot[K_CAS].cmp, tot[K_CAS].ok, tot[K_CAS].cmp, tot[K_CAS].unknown,
           tot[K_CAS].failed);
    printf("  (unknown: outcome unknown, recorded open-ended; a failed get is not recorded;\n"
           "   failed: UNAVAILABLE/BUSY, never applied, not recorded)\n");
    printf("  errors:");
    for (int e = 1; e < 32; e++)
        if (errs[e] != 0)
            printf(" %s=%d", kv_errword(-e), errs[e]);
    printf("\n");
    for (int k = 0; k < opt_keys; k++) {
        unsigned n = atomic_load(&key_ops[k]);
        if (n >= KEY_OPS_CAP)
            printf("  note: key jl%d reached the cap of %u ops (clients idled on it)\n", k,
                   KEY_OPS_CAP);
    }

    uint64_t c0 = now_ns();
    linz_result res;
    linz_verdict v = linz_check(&h, &res);
    printf("kv-jepsen: linearizability: %s (%" PRIu64 " steps, %.2f s)\n", linz_verdict_name(v),
           res.steps, (double)(now_ns() - c0) / 1e9);
    int rc = 0;
    if (v == LINZ_FAIL) {
        linz_result_print(&h, &res, stdout);
        rc = 1;
    } else if (v == LINZ_UNKNOWN) {
        printf("kv-jepsen: checker budget exceeded: %s\n", res.reason);
        rc = 2;
    }
    if (fatal && rc == 0)
        rc = 1;
    if (harness_err && rc == 0)
        rc = 3;
    linz_history_free(&h);
    /* The control is expected to fail: its directory goes too. */
    if (!opt_keep && (rc == 0 || (rc == 1 && opt_control_stale && !fatal)))
        rm_rf(run_dir);
    else
        printf("kv-jepsen: kept %s\n", run_dir);
    printf("kv-jepsen: %s (seed %" PRIu64 ", %.1f s)\n",
           rc == 0 ? "PASS" : rc == 1 ? "FAIL: not linearizable" : rc == 2 ? "UNKNOWN" : "ERROR",
           opt_seed, (double)(now_ns() - t0_ns) / 1e9);
    if (rc != 0)
        printf("kv-jepsen: replay: %s --bin %s --dir %s --seed %" PRIu64
               " --seconds %d --clients %d --keys %d --port-base %d%s\n",
               argv0, opt_bin, opt_dir, opt_seed, opt_seconds, opt_clients, opt_keys,
               opt_port_base, opt_control_stale ? " --control-stale" : "");
    return rc;
}
