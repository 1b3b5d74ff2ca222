/*
 * kv-jepsen: after the run: the set workload's final read and the history
 * file (see jepsen.h).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "jepsen.h"
#include "kv/client.h"

/* found[client][n]: element js<client>-<n> is in the final read. */
static uint8_t *found[CLIENTS_MAX];

/* Marks one key of the final read; false when it was never attempted. */
static bool final_mark(const kv_pair *p) {
    char key[64];
    if (p->key_len >= sizeof key)
        return false;
    memcpy(key, p->key, p->key_len);
    key[p->key_len] = 0;
    int c;
    uint32_t n;
    char tail;
    if (sscanf(key, "js%d-%" SCNu32 "%c", &c, &n, &tail) != 2 || c < 0 || c >= opt.clients ||
        !clients[c].set_client || n >= clients[c].adds_count) {
        logf_("final read: %s was never added", key);
        return false;
    }
    found[c][n] = 1;
    return true;
}

/* One linearizable scan of every "js" key; 0, or the error of the page that
 * failed. *never counts keys that were never attempted. */
static int final_scan(kv_client *c, uint64_t *never, uint64_t *elements) {
    char last[64] = "";
    size_t last_len = 0;
    bool more = true;
    *never = *elements = 0;
    for (int i = 0; i < opt.clients; i++)
        if (found[i] != NULL)
            memset(found[i], 0, clients[i].adds_count);
    while (more) {
        kv_pair *pairs = NULL;
        size_t count = 0;
        int rc = kv_scan(c, "js", 2, last_len ? last : NULL, last_len, 1000, &pairs, &count, &more);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < count; i++) {
            *never += final_mark(&pairs[i]) ? 0 : 1;
            (*elements)++;
        }
        if (count > 0 && pairs[count - 1].key_len < sizeof last) {
            last_len = pairs[count - 1].key_len;
            memcpy(last, pairs[count - 1].key, last_len);
        }
        kv_pairs_free(pairs, count);
    }
    return 0;
}

/* kv_check until every member answers (up to 30 s): 0 agree, KV_ECORRUPT
 * when one differs, else the last error. */
int final_compare_nodes(kv_client *c) {
    int rc = KV_EUNAVAILABLE;
    for (int tries = 0; tries < 30 && rc != 0 && rc != KV_ECORRUPT; tries++) {
        uint64_t index = 0;
        kv_check_node *cn = NULL;
        size_t count = 0;
        rc = kv_check(c, &index, &cn, &count);
        for (size_t i = 0; rc != 0 && i < count; i++)
            logf_("final check at index %" PRIu64 ": %s %s", index, cn[i].name,
                  kv_errword(cn[i].status));
        kv_free(cn);
        if (rc != 0 && rc != KV_ECORRUPT)
            sleep_ms(1000);
    }
    return rc;
}

/* Compares the adds with the final read: lost acknowledged adds, present
 * adds that definitely failed. */
static void final_compare_adds(uint64_t *lost, uint64_t *phantom) {
    for (int i = 0; i < opt.clients; i++) {
        const client_ctx *cx = &clients[i];
        for (uint32_t n = 0; cx->set_client && n < cx->adds_count; n++) {
            const set_add *a = &cx->adds[n];
            if (a->outcome == 1 && !found[i][n]) {
                if (++*lost <= 20)
                    logf_("LOST: js%d-%" PRIu32 " acknowledged at t=%.3f is not in the final read",
                          i, n, (double)(a->complete - t0_ns) / 1e9);
            } else if (a->outcome == -1 && found[i][n]) {
                if (++*phantom <= 20)
                    logf_("PHANTOM: js%d-%" PRIu32 " was refused (not applied) but is present", i,
                          n);
            }
        }
    }
}

int set_final_check(uint64_t *lost, uint64_t *phantom, uint64_t *elements, bool *diverged) {
    *lost = *phantom = *elements = 0;
    *diverged = false;
    for (int i = 0; i < opt.clients; i++)
        if (clients[i].set_client && (found[i] = calloc(clients[i].adds_count + 1, 1)) == NULL)
            abort();
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 3000;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, endpoints, &o);
    uint64_t never = 0;
    for (int tries = 0; rc == 0 && tries < 10; tries++) {
        rc = final_scan(c, &never, elements);
        if (rc == 0)
            break;
        sleep_ms(1000);
    }
    if (rc == 0) {
        final_compare_adds(lost, phantom);
        *phantom += never;
        int crc = final_compare_nodes(c);
        *diverged = crc == KV_ECORRUPT;
        if (crc != 0)
            logf_("final check: the nodes' state machines %s",
                  crc == KV_ECORRUPT ? "DIFFER" : "could not be compared");
        rc = crc == 0 || crc == KV_ECORRUPT ? 0 : crc;
    }
    if (c != NULL)
        kv_client_close(c);
    for (int i = 0; i < opt.clients; i++) {
        free(found[i]);
        found[i] = NULL;
    }
    if (rc != 0)
        logf_("final read failed: %s", kv_errword(rc));
    return rc == 0 ? 0 : -1;
}

/* ---- the history file ---------------------------------------------------- */

static const char *op_type(const linz_op *op) {
    if (op->complete == LINZ_TIME_INF)
        return "info";
    return op->kind == LINZ_CAS && !op->ok ? "fail" : "ok";
}

typedef struct hline {
    uint64_t invoke;
    char text[200];
} hline;

static int hline_cmp(const void *a, const void *b) {
    const hline *x = a, *y = b;
    return x->invoke < y->invoke ? -1 : x->invoke > y->invoke;
}

/* One line per op of client i into lines (count updated). */
static void history_client(int i, hline *lines, size_t *count) {
    const client_ctx *cx = &clients[i];
    for (size_t j = 0; j < cx->h.ops_count; j++) {
        char buf[180];
        linz_op op = cx->h.ops[j];
        op.invoke -= t0_ns;
        op.complete = op.complete == LINZ_TIME_INF ? op.complete : op.complete - t0_ns;
        hline *l = &lines[(*count)++];
        l->invoke = op.invoke;
        snprintf(l->text, sizeof l->text, "%s %s", op_type(&cx->h.ops[j]),
                 linz_op_format(&op, buf, sizeof buf));
    }
    for (uint32_t n = 0; cx->set_client && n < cx->adds_count; n++) {
        const set_add *a = &cx->adds[n];
        hline *l = &lines[(*count)++];
        l->invoke = a->invoke - t0_ns;
        if (a->outcome == 0)
            snprintf(l->text, sizeof l->text, "info c%d ADD js%d-%" PRIu32 " ? [%" PRIu64 ",inf)",
                     i, i, n, l->invoke);
        else
            snprintf(l->text, sizeof l->text,
                     "%s c%d ADD js%d-%" PRIu32 " %s [%" PRIu64 ",%" PRIu64 "]",
                     a->outcome == 1 ? "ok" : "fail", i, i, n, a->outcome == 1 ? "ok" : "refused",
                     l->invoke, a->complete - t0_ns);
    }
}

int history_write(const char *path) {
    size_t total = 0, count = 0;
    for (int i = 0; i < opt.clients; i++)
        total += clients[i].h.ops_count + clients[i].adds_count;
    hline *lines = malloc((total + 1) * sizeof *lines);
    FILE *f = lines != NULL ? fopen(path, "w") : NULL;
    if (f == NULL) {
        free(lines);
        return -1;
    }
    for (int i = 0; i < opt.clients; i++)
        history_client(i, lines, &count);
    qsort(lines, count, sizeof *lines, hline_cmp);
    fprintf(f,
            "# kv-jepsen history, seed %" PRIu64 ", by invocation: type client op key args "
            "result [invoke,complete] in ns since the start; info = outcome unknown, fail = "
            "no effect\n",
            opt.seed);
    for (size_t k = 0; k < count; k++)
        fprintf(f, "%s\n", lines[k].text);
    free(lines);
    return fclose(f) == 0 ? 0 : -1;
}
