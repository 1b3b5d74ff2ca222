/*
 * kv-jepsen: the watch workload (--workload watch; see jepsen.h).
 *
 * The set workload's clients add keys "js<client>-<n>" (each put once,
 * value "1") while one watcher thread runs kv_watch on the prefix "js" from
 * revision 1, through the nemeses: it starts on the leader, and kill -9 of
 * it (kill-all, kill-majority, ...) makes it reconnect elsewhere and resume.
 * After healing, watch_final_check compares its stream with a linearizable
 * scan of the prefix:
 *   - the same keys: none missing (committed but never delivered) and none
 *     phantom (delivered but not in the store);
 *   - each key once (nothing repeated across reconnections);
 *   - in order: revisions strictly increasing, and no add that completed
 *     before another was invoked delivered after it (real time);
 *   - each event a PUT of "1" creating its key (version 1, create_rev =
 *     its revision).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "jepsen.h"
#include "kv/client.h"

typedef struct watch_ev {
    int c; /* the client of key js<c>-<n>, -1: not one of ours */
    uint32_t n;
    uint64_t rev;
    bool bad; /* not a PUT of "1" creating the key */
} watch_ev;

static struct {
    pthread_t th;
    bool started;
    atomic_bool stop;
    atomic_size_t count; /* events recorded (the thread appends, main reads) */
    watch_ev *evs;       /* [cap], allocated before the thread starts */
    size_t cap;
    int rc; /* kv_watch's return: 1 when stopped by us */
    char err[256];
} W;

static int watch_event(void *arg, const kv_event *ev) {
    (void)arg;
    if (ev == NULL)
        return atomic_load(&W.stop) ? 1 : 0;
    size_t i = atomic_load(&W.count);
    if (i == W.cap) {
        snprintf(W.err, sizeof W.err, "more than %zu events", W.cap);
        return 2;
    }
    watch_ev *e = &W.evs[i];
    char key[64], tail;
    e->c = -1;
    e->rev = ev->revision;
    e->bad = ev->type != KV_EVENT_PUT || ev->value_len != 1 || memcmp(ev->value, "1", 1) != 0 ||
             ev->version != 1 || ev->create_rev != ev->revision;
    if (ev->key_len < sizeof key) {
        memcpy(key, ev->key, ev->key_len);
        key[ev->key_len] = 0;
        int c;
        uint32_t n;
        if (sscanf(key, "js%d-%" SCNu32 "%c", &c, &n, &tail) == 2 && c >= 0 && c < opt.clients)
            e->c = c, e->n = n;
    }
    atomic_store(&W.count, i + 1);
    return atomic_load(&W.stop) ? 1 : 0;
}

/* The leader's address first, then the others: the watcher starts on the
 * node the nemesis most likes to kill. */
static void watch_endpoints(char *out, size_t n) {
    int lead = find_leader();
    size_t len = 0;
    char a[64];
    if (lead >= 0) {
        node_addr(lead, a, sizeof a);
        len += (size_t)snprintf(out, n, "%s", a);
    }
    for (int i = 0; i < opt.nodes; i++) {
        if (i == lead)
            continue;
        node_addr(i, a, sizeof a);
        len += (size_t)snprintf(out + len, n - len, "%s%s", len ? "," : "", a);
    }
}

static void *watch_main(void *arg) {
    const char *eps = arg;
    kv_client *c = NULL;
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 1000;
    o.connect_timeout_ms = 300;
    int rc = kv_client_open(&c, eps, &o);
    if (rc == 0) {
        rc = kv_watch(c, "js", 2, 1, watch_event, NULL);
        if (rc < 0)
            snprintf(W.err, sizeof W.err, "kv_watch: %s: %s", kv_errword(rc), kv_errstr());
        kv_client_close(c);
    } else {
        snprintf(W.err, sizeof W.err, "kv_client_open: %s", kv_errword(rc));
    }
    W.rc = rc;
    return NULL;
}

int watch_start(void) {
    static char eps[512];
    watch_endpoints(eps, sizeof eps);
    W.cap = (size_t)opt.clients * SET_ADDS_MAX + 16;
    W.evs = calloc(W.cap, sizeof(*W.evs));
    if (W.evs == NULL || pthread_create(&W.th, NULL, watch_main, eps) != 0)
        return -1;
    W.started = true;
    logf_("watcher started on %s", eps);
    return 0;
}

/* One linearizable scan of "js": in[c][n] set for each key found; *total
 * their number. 0 or the failing page's error. */
static int watch_scan(uint8_t **in, uint64_t *total) {
    kv_client *c;
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 5000;
    int rc = kv_client_open(&c, endpoints, &o);
    if (rc != 0)
        return rc;
    char last[64] = "";
    size_t last_len = 0;
    bool more = true;
    *total = 0;
    while (more && rc == 0) {
        kv_pair *p = NULL;
        size_t count = 0;
        rc = kv_scan(c, "js", 2, last_len ? last : NULL, last_len, 1000, &p, &count, &more);
        for (size_t i = 0; rc == 0 && i < count; i++) {
            int cl;
            uint32_t n;
            char key[64], tail;
            size_t kl = p[i].key_len < sizeof key ? p[i].key_len : sizeof key - 1;
            memcpy(key, p[i].key, kl);
            key[kl] = 0;
            if (sscanf(key, "js%d-%" SCNu32 "%c", &cl, &n, &tail) == 2 && cl >= 0 &&
                cl < opt.clients && n < SET_ADDS_MAX)
                in[cl][n] = 1;
            (*total)++;
        }
        if (rc == 0 && count > 0 && p[count - 1].key_len < sizeof last) {
            last_len = p[count - 1].key_len;
            memcpy(last, p[count - 1].key, last_len);
        }
        kv_pairs_free(p, count);
    }
    kv_client_close(c);
    return rc;
}

/* Waits (up to 30 s) for the watcher to have delivered total events, a
 * little more for anything repeated, then stops it. */
static void watch_drain(uint64_t total) {
    uint64_t deadline = now_ns() + 30ull * 1000000000u;
    while (atomic_load(&W.count) < total && now_ns() < deadline)
        sleep_ms(50);
    sleep_ms(1500);
    atomic_store(&W.stop, true);
    pthread_join(W.th, NULL);
    W.started = false;
}

/* The stream against the store (the file comment). Counts into *bad. */
static void watch_compare(uint8_t **in, uint8_t **seen, uint64_t *bad) {
    size_t count = atomic_load(&W.count);
    uint64_t rev_prev = 0, invoke_max = 0, shown = 0;
    for (size_t i = 0; i < count; i++) {
        const watch_ev *e = &W.evs[i];
        const char *why = NULL;
        const set_add *a = NULL;
        if (e->c < 0 || !clients[e->c].set_client || e->n >= clients[e->c].adds_count)
            why = "a key never added";
        else if ((a = &clients[e->c].adds[e->n]), seen[e->c][e->n]++)
            why = "repeated";
        else if (!in[e->c][e->n])
            why = "phantom (not in the final read)";
        else if (e->rev <= rev_prev)
            why = "out of revision order";
        else if (e->bad)
            why = "not a PUT of \"1\" creating the key";
        else if (a->complete != LINZ_TIME_INF && a->complete < invoke_max)
            why = "delivered after an add invoked after it completed";
        if (a != NULL && a->invoke > invoke_max)
            invoke_max = a->invoke;
        if (e->rev > rev_prev)
            rev_prev = e->rev;
        if (why != NULL) {
            (*bad)++;
            if (shown++ < 10)
                logf_("watch: event %zu (js%d-%" PRIu32 " at revision %" PRIu64 "): %s", i, e->c,
                      e->n, e->rev, why);
        }
    }
    for (int c = 0; c < opt.clients; c++)
        for (uint32_t n = 0; clients[c].set_client && n < SET_ADDS_MAX; n++)
            if (in[c][n] && !seen[c][n]) {
                (*bad)++;
                if (shown++ < 10)
                    logf_("watch: js%d-%" PRIu32 " is in the store, never delivered", c, n);
            }
}

int watch_final_check(uint64_t *events, uint64_t *bad) {
    *events = *bad = 0;
    if (!W.started)
        return -1;
    uint8_t *in[CLIENTS_MAX] = {0}, *seen[CLIENTS_MAX] = {0};
    int rc = 0;
    for (int c = 0; c < opt.clients && rc == 0; c++)
        if ((in[c] = calloc(SET_ADDS_MAX, 1)) == NULL ||
            (seen[c] = calloc(SET_ADDS_MAX, 1)) == NULL)
            rc = -1;
    uint64_t total = 0;
    if (rc == 0 && (rc = watch_scan(in, &total)) != 0)
        logf_("watch: the final scan failed: %s", kv_errword(rc));
    watch_drain(rc == 0 ? total : 0);
    if (W.rc != 1) {
        logf_("watch: the watcher ended on its own: %s", W.err);
        rc = -1;
    }
    *events = atomic_load(&W.count);
    if (rc == 0)
        watch_compare(in, seen, bad);
    logf_("watch: %" PRIu64 " events delivered, %" PRIu64 " keys in the store, %" PRIu64
          " problems",
          *events, total, *bad);
    for (int c = 0; c < opt.clients; c++)
        free(in[c]), free(seen[c]);
    free(W.evs);
    W.evs = NULL;
    return rc == 0 ? 0 : -1;
}
