/*
 * kvcli: leases (lease grant/keepalive/revoke/list) and the lock built on
 * them (lock NAME -- COMMAND).
 *
 * Exit codes as for every command (kvcli.h). What they mean here:
 *   lease grant: 0 and the id alone on a line; 2 a ttl out of range.
 *   lease keepalive: runs until SIGINT or SIGTERM (0) or until the lease
 *     is gone (1: it expired or was revoked).
 *   lease revoke: 0 done; 1 no such lease.
 *   lock: the command's exit status (128 + N when killed by signal N);
 *     1 when the lease was lost while the command ran (the command is sent
 *     SIGTERM: the lock is no longer held); 3/4 as any call.
 *
 * The lock (docs/recipes.md): a lease of --ttl seconds (default 10) kept
 * alive from a thread every ttl/3; key lock/NAME created with the lease
 * only if it is absent, by a transaction (version("lock/NAME") = 0 -> put
 * it with the lease, else get it: one entry); while another holds it, a
 * watch of the key from the holder's revision on until its DELETE (a get
 * every LOCK_POLL_MS when the watch cannot be had), then again.
 * When the command exits the lease is revoked (the key goes with it). If
 * kvcli dies, keepalives stop and the leader expires the lease: the lock is
 * free again within the ttl plus an election timeout.
 */
#include "kvcli/kvcli.h"

#include "kv/limits.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOCK_TTL_DEFAULT 10
#define LOCK_POLL_MS 200u
/* keepalive: pause after a failed keepalive (no leader, a node down) */
#define LEASE_RETRY_MS 200u
#define LOCK_KEY_PREFIX "lock/"

/* ---- signals ---------------------------------------------------------- */

static volatile sig_atomic_t lease__signal; /* the SIGINT or SIGTERM that came */

static void lease__on_signal(int sig) {
    lease__signal = sig;
}

/* The handlers before a command caught the signals (the shell runs more
 * commands after it). */
typedef struct lease_sigs {
    struct sigaction intr, term;
} lease_sigs;

/* SIGINT and SIGTERM set lease__signal (no SA_RESTART: a sleep ends) until
 * lease__restore_signals. */
static void lease__catch_signals(lease_sigs *old) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = lease__on_signal;
    sigemptyset(&sa.sa_mask);
    lease__signal = 0;
    sigaction(SIGINT, &sa, &old->intr);
    sigaction(SIGTERM, &sa, &old->term);
}

static void lease__restore_signals(const lease_sigs *old) {
    sigaction(SIGINT, &old->intr, NULL);
    sigaction(SIGTERM, &old->term, NULL);
}

/* Sleeps ms, or less when a signal comes. */
static void lease__sleep_ms(uint64_t ms) {
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000u), .tv_nsec = (long)(ms % 1000u) * 1000000L};
    (void)nanosleep(&ts, NULL);
}

/* ---- arguments ---------------------------------------------------------- */

static int lease__num(kvcli_ctx *ctx, const char *cmd, const char *what, const char *s,
                      uint64_t max, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 || v > max)
        return kvcli_usage_error(ctx, cmd, "%s wants a number from 1 to %" PRIu64 ", not '%s'",
                                 what, max, s);
    *out = v;
    return 0;
}

/* ---- lease subcommands ---------------------------------------------------- */

static int lease__grant(kvcli_ctx *ctx, kv_client *c, const char *arg) {
    uint64_t ttl = 0, id = 0;
    int rc = lease__num(ctx, "lease grant", "TTL (seconds)", arg, KV_LEASE_TTL_MAX, &ttl);
    if (rc != 0)
        return rc;
    rc = kv_lease_grant(c, (int64_t)ttl, &id);
    if (rc != 0)
        return kvcli_fail(ctx, "lease grant", rc, true);
    if (ctx->json)
        fprintf(ctx->out, "{\"id\":%" PRIu64 ",\"ttl\":%" PRIu64 "}\n", id, ttl);
    else
        fprintf(ctx->out, "%" PRIu64 "\n", id);
    return KVCLI_EXIT_OK;
}

static int lease__revoke(kvcli_ctx *ctx, kv_client *c, uint64_t id) {
    int rc = kv_lease_revoke(c, id);
    if (rc == KV_ENOTFOUND && !ctx->json) {
        fprintf(ctx->err, "kvcli: lease revoke: no lease %" PRIu64 "\n", id);
        return KVCLI_EXIT_NO;
    }
    if (rc != 0)
        return kvcli_fail(ctx, "lease revoke", rc, true);
    fputs(ctx->json ? "{\"ok\":true}\n" : "OK\n", ctx->out);
    return KVCLI_EXIT_OK;
}

/* The first keepalive tells the ttl; then one every ttl/3. A failure other
 * than NOTFOUND (no leader for a while) is retried every LEASE_RETRY_MS:
 * the lease may still be alive (a new leader gives it its whole ttl), and
 * only a leader can tell. */
static int lease__keepalive(kvcli_ctx *ctx, kv_client *c, uint64_t id) {
    uint64_t period_ms = 1000;
    bool first = true, failing = false;
    while (lease__signal == 0) {
        int64_t remaining = -1;
        int rc = kv_lease_keepalive(c, id, &remaining);
        if (rc == KV_ENOTFOUND) {
            if (!ctx->json)
                fprintf(ctx->err,
                        "kvcli: lease keepalive: lease %" PRIu64 " is gone (expired or revoked)\n",
                        id);
            return ctx->json ? kvcli_fail(ctx, "lease keepalive", rc, false) : KVCLI_EXIT_NO;
        }
        if (rc == 0 && first && remaining > 0) {
            period_ms = (uint64_t)remaining * 1000u / 3u;
            first = false;
        }
        if (rc == 0 && ctx->json)
            fprintf(ctx->out, "{\"id\":%" PRIu64 ",\"remaining\":%" PRId64 "}\n", id, remaining);
        fflush(ctx->out);
        if (rc != 0 && !failing && lease__signal == 0) /* said once per outage */
            fprintf(ctx->err, "kvcli: lease keepalive: %s (%s); retrying\n", kv_errword(rc),
                    kv_errstr());
        if (rc == 0 && failing)
            fprintf(ctx->err, "kvcli: lease keepalive: lease %" PRIu64 " kept alive again\n", id);
        failing = rc != 0;
        lease__sleep_ms(failing ? LEASE_RETRY_MS : period_ms);
    }
    return KVCLI_EXIT_OK;
}

static int lease__list(kvcli_ctx *ctx, kv_client *c) {
    kv_lease *ls = NULL;
    size_t n = 0;
    int rc = kv_lease_list(c, &ls, &n);
    if (rc != 0)
        return kvcli_fail(ctx, "lease list", rc, false);
    if (!ctx->json)
        fputs("ID\tTTL\tREMAINING\tKEYS\n", ctx->out);
    for (size_t i = 0; i < n; i++) {
        const char *fmt = ctx->json ? "{\"id\":%" PRIu64 ",\"ttl\":%" PRId64
                                      ",\"remaining\":%" PRId64 ",\"keys\":%" PRIu64 "}\n"
                                    : "%" PRIu64 "\t%" PRId64 "\t%" PRId64 "\t%" PRIu64 "\n";
        fprintf(ctx->out, fmt, ls[i].id, ls[i].ttl, ls[i].remaining, ls[i].keys);
    }
    kv_free(ls);
    return KVCLI_EXIT_OK;
}

int kvcli_cmd_lease(kvcli_ctx *ctx, int argc, char **argv) {
    static const char *subs[] = {"grant", "keepalive", "revoke", "list"};
    static const int wants[] = {3, 3, 3, 2};
    int k = -1;
    for (int i = 0; argc >= 2 && i < 4; i++)
        if (strcmp(argv[1], subs[i]) == 0)
            k = i;
    if (k < 0)
        return kvcli_usage_error(ctx, argv[0], "wants grant, keepalive, revoke or list%s%s%s",
                                 argc >= 2 ? ", not '" : "", argc >= 2 ? argv[1] : "",
                                 argc >= 2 ? "'" : "");
    if (argc != wants[k])
        return kvcli_usage_error(ctx, argv[0], "%s wants %d argument%s, got %d", subs[k],
                                 wants[k] - 2, wants[k] == 3 ? "" : "s", argc - 2);
    uint64_t id = 0;
    if ((k == 1 || k == 2) &&
        lease__num(ctx, argv[0], "the lease ID", argv[2], UINT64_MAX, &id) != 0)
        return KVCLI_EXIT_USAGE;
    kv_client *c;
    int rc = kvcli_client(ctx, argv[0], &c);
    if (rc != 0)
        return rc;
    switch (k) {
    case 0:
        return lease__grant(ctx, c, argv[2]);
    case 1: {
        lease_sigs old;
        lease__catch_signals(&old);
        rc = lease__keepalive(ctx, c, id);
        lease__restore_signals(&old);
        return rc;
    }
    case 2:
        return lease__revoke(ctx, c, id);
    default:
        return lease__list(ctx, c);
    }
}

/* ---- lock ------------------------------------------------------------------ */

typedef struct lock_state {
    kv_client *c;
    uint64_t lease;
    uint64_t period_ms;
    atomic_bool stop; /* the main thread is done with the lease */
    atomic_bool lost; /* the lease is gone (NOTFOUND): the lock is not held */
    pid_t child;      /* set once the command runs (0 before) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} lock_state;

/* The keepalive thread: one every period until stopped or the lease is
 * gone; then the command (if it runs) is told to stop. */
static void *lock__keepalive(void *arg) {
    lock_state *ls = arg;
    pthread_mutex_lock(&ls->mu);
    while (!atomic_load(&ls->stop)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + ls->period_ms * 1000000u;
        until.tv_sec += (time_t)(ns / 1000000000u);
        until.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&ls->cv, &ls->mu, &until);
        if (atomic_load(&ls->stop))
            break;
        pthread_mutex_unlock(&ls->mu);
        int rc = kv_lease_keepalive(ls->c, ls->lease, NULL);
        pthread_mutex_lock(&ls->mu);
        if (rc == KV_ENOTFOUND) {
            atomic_store(&ls->lost, true);
            if (ls->child > 0)
                kill(ls->child, SIGTERM);
            break;
        }
    }
    pthread_mutex_unlock(&ls->mu);
    return NULL;
}

/* One attempt, as one transaction: if version(key) = 0 (absent), put key
 * = holder with the lease, else get key. *held when the key is ours after
 * it: created now, or by an earlier attempt whose answer was lost (the
 * holder's value names the lease and pid); else *rev is the holder's
 * revision, to watch from. */
static int lock__try(lock_state *ls, const char *key, const char *holder, bool *held,
                     uint64_t *rev) {
    size_t klen = strlen(key), hlen = strlen(holder);
    *held = false;
    *rev = 0;
    kv_txn *t = kv_txn_new();
    if (t == NULL)
        return KV_ENOMEM;
    int rc = kv_txn_compare(t, KV_CMP_VERSION, KV_CMP_EQUAL, key, klen, NULL, 0, 0);
    if (rc == 0)
        rc = kv_txn_put(t, true, key, klen, holder, hlen, ls->lease);
    if (rc == 0)
        rc = kv_txn_get(t, false, key, klen);
    bool ok = false;
    kv_txn_result *res = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = kv_txn_commit(ls->c, t, &ok, &res, &n);
    bool got = rc == 0 && !ok && n == 1 && res[0].code == 0;
    if (rc == 0)
        *held = ok || (got && res[0].value_len == hlen && memcmp(res[0].value, holder, hlen) == 0);
    if (got)
        *rev = res[0].info.mod_rev;
    kv_txn_results_free(res, n);
    kv_txn_free(t);
    return rc;
}

typedef struct lock_watch {
    lock_state *ls;
    const char *key;
    size_t klen;
} lock_watch;

/* Stops the watch at the DELETE of the key itself (the prefix also
 * matches longer names), or, when idle, once kvcli is told to stop. */
static int lock__on_event(void *arg, const kv_event *ev) {
    lock_watch *w = arg;
    if (lease__signal != 0 || atomic_load(&w->ls->lost))
        return 1;
    return ev != NULL && ev->type == KV_EVENT_DELETE && ev->key_len == w->klen &&
           memcmp(ev->key, w->key, w->klen) == 0;
}

/* Waits for the key, held at revision rev, to go: a watch from the next
 * revision (so a delete in between is seen too); without one (rev 0, or the
 * watch failed), a get every LOCK_POLL_MS. */
static void lock__wait_gone(lock_state *ls, const char *key, uint64_t rev) {
    lock_watch w = {.ls = ls, .key = key, .klen = strlen(key)};
    if (rev != 0 && kv_watch(ls->c, key, w.klen, rev + 1, lock__on_event, &w) == 1)
        return;
    void *v = NULL;
    size_t vlen = 0;
    while (lease__signal == 0 && !atomic_load(&ls->lost) &&
           kv_get(ls->c, key, w.klen, &v, &vlen) != KV_ENOTFOUND) {
        kv_free(v);
        v = NULL;
        lease__sleep_ms(LOCK_POLL_MS);
    }
}

/* Takes lock/NAME with the lease: 0 once held, KVCLI_EXIT_* otherwise.
 * While another holds it, waits for the key to go, then tries again. */
static int lock__acquire(kvcli_ctx *ctx, lock_state *ls, const char *key, const char *holder) {
    bool said = false;
    while (lease__signal == 0 && !atomic_load(&ls->lost)) {
        bool held = false;
        uint64_t rev = 0;
        int rc = lock__try(ls, key, holder, &held, &rev);
        if (rc == 0 && held)
            return 0;
        if (rc != 0 && rc != KV_ETIMEOUT && rc != KV_EUNAVAILABLE)
            return kvcli_fail(ctx, "lock", rc, true);
        if (rc == 0 && !said) {
            fprintf(ctx->err, "kvcli: lock: %s is held; waiting\n", key);
            said = true;
        }
        lock__wait_gone(ls, key, rev);
    }
    if (atomic_load(&ls->lost)) {
        fprintf(ctx->err, "kvcli: lock: lease %" PRIu64 " lost while waiting\n", ls->lease);
        return KVCLI_EXIT_NO;
    }
    return 128 + (int)lease__signal;
}

/* Runs argv as a child; its exit status as kvcli's (128 + N for signal N).
 * SIGINT and SIGTERM are passed on to it. */
static int lock__run(kvcli_ctx *ctx, lock_state *ls, char **argv) {
    fflush(ctx->out);
    fflush(ctx->err);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(ctx->err, "kvcli: lock: fork: %s\n", strerror(errno));
        return KVCLI_EXIT_REFUSED;
    }
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execvp(argv[0], argv);
        fprintf(stderr, "kvcli: lock: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    pthread_mutex_lock(&ls->mu);
    ls->child = pid;
    bool lost = atomic_load(&ls->lost);
    pthread_mutex_unlock(&ls->mu);
    if (lost)
        kill(pid, SIGTERM);
    int status = 0, passed = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return KVCLI_EXIT_REFUSED;
        if (lease__signal != 0 && passed == 0) {
            passed = lease__signal;
            kill(pid, passed);
        }
    }
    pthread_mutex_lock(&ls->mu);
    ls->child = 0;
    pthread_mutex_unlock(&ls->mu);
    if (atomic_load(&ls->lost)) {
        fprintf(ctx->err,
                "kvcli: lock: lease %" PRIu64 " expired while the command ran: the "
                "lock was lost\n",
                ls->lease);
        return KVCLI_EXIT_NO;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* --ttl N before the name; the name; "--"; the command. */
static int lock__args(kvcli_ctx *ctx, int argc, char **argv, uint64_t *ttl, const char **name,
                      int *cmd_at) {
    *ttl = LOCK_TTL_DEFAULT;
    *name = NULL;
    *cmd_at = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            *cmd_at = i + 1;
            break;
        }
        if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            if (lease__num(ctx, argv[0], "--ttl", argv[++i], KV_LEASE_TTL_MAX, ttl) != 0)
                return KVCLI_EXIT_USAGE;
        } else if (strncmp(argv[i], "--", 2) == 0) {
            return kvcli_usage_error(ctx, argv[0], "unknown flag '%s'", argv[i]);
        } else if (*name == NULL) {
            *name = argv[i];
        } else {
            return kvcli_usage_error(ctx, argv[0], "one NAME, then -- and the command");
        }
    }
    if (*name == NULL || (*name)[0] == '\0')
        return kvcli_usage_error(ctx, argv[0], "wants a lock NAME");
    if (*cmd_at < 0 || *cmd_at >= argc)
        return kvcli_usage_error(ctx, argv[0], "wants -- and a COMMAND after the name");
    if (strlen(*name) + sizeof LOCK_KEY_PREFIX > KV_KEY_BYTES_MAX)
        return kvcli_usage_error(ctx, argv[0], "a name of at most %zu bytes",
                                 KV_KEY_BYTES_MAX - sizeof LOCK_KEY_PREFIX);
    return 0;
}

/* Holds the lock around the command, with the lease kept alive from a
 * thread all along; revokes the lease at the end. */
static int lock__hold(kvcli_ctx *ctx, lock_state *ls, const char *name, char **cmd) {
    char key[KV_KEY_BYTES_MAX + 1], holder[128];
    snprintf(key, sizeof key, "%s%s", LOCK_KEY_PREFIX, name);
    snprintf(holder, sizeof holder, "lease=%" PRIu64 " pid=%ld", ls->lease, (long)getpid());
    pthread_t th;
    if (pthread_create(&th, NULL, lock__keepalive, ls) != 0) {
        fprintf(ctx->err, "kvcli: lock: cannot start the keepalive thread\n");
        return KVCLI_EXIT_REFUSED;
    }
    int rc = lock__acquire(ctx, ls, key, holder);
    if (rc == 0)
        rc = lock__run(ctx, ls, cmd);
    pthread_mutex_lock(&ls->mu);
    atomic_store(&ls->stop, true);
    pthread_cond_signal(&ls->cv);
    pthread_mutex_unlock(&ls->mu);
    pthread_join(th, NULL);
    return rc;
}

int kvcli_cmd_lock(kvcli_ctx *ctx, int argc, char **argv) {
    uint64_t ttl;
    const char *name;
    int cmd_at;
    int rc = lock__args(ctx, argc, argv, &ttl, &name, &cmd_at);
    kv_client *c = NULL;
    if (rc == 0)
        rc = kvcli_client(ctx, argv[0], &c);
    if (rc != 0)
        return rc;
    lease_sigs old;
    lease__catch_signals(&old);
    lock_state ls = {.c = c, .period_ms = ttl * 1000u / 3u};
    pthread_mutex_init(&ls.mu, NULL);
    pthread_cond_init(&ls.cv, NULL);
    rc = kv_lease_grant(c, (int64_t)ttl, &ls.lease);
    /* the command's words, NULL-ended for execvp (argv[argc] may not be
     * NULL: main moves the global flags out of argv) */
    char *cmd[KVCLI_ARGS_MAX + 1];
    int words = argc - cmd_at;
    assert(words >= 1 && words <= KVCLI_ARGS_MAX);
    memcpy(cmd, argv + cmd_at, (size_t)words * sizeof *cmd);
    cmd[words] = NULL;
    if (rc != 0)
        rc = kvcli_fail(ctx, "lock", rc, true);
    else
        rc = lock__hold(ctx, &ls, name, cmd);
    /* the key goes with the lease; a failure here leaves it to expire */
    int rrc = ls.lease != 0 ? kv_lease_revoke(c, ls.lease) : 0;
    if (rrc != 0 && rrc != KV_ENOTFOUND)
        fprintf(ctx->err,
                "kvcli: lock: releasing (revoking lease %" PRIu64 "): %s; it expires "
                "within %" PRIu64 " s\n",
                ls.lease, kv_errword(rrc), ttl);
    pthread_cond_destroy(&ls.cv);
    pthread_mutex_destroy(&ls.mu);
    lease__restore_signals(&old);
    return rc;
}
