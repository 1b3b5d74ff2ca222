/*
 * kvcli status: one row per node of the cluster list, from each node's own
 * STATUS answer (kv_node_status), plus what only the whole table shows: how
 * far each node's applied index trails the leader's commit index.
 */
#include "kvcli/kvcli.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_FIELDS_MAX 32

/* A node whose applied index trails the leader's commit by more than this
 * is "behind", not "ok": a rolling restart waits for it to catch up (a
 * thousand entries is well under a second of replication, and far more
 * than a healthy follower trails by under load). */
#define STATUS_LAG_ENTRIES_MAX 1000u

typedef struct node_row {
    char endpoint[256]; /* as given in the cluster list */
    char *line;         /* the node's status line (kv_free), NULL if it failed */
    int rc;             /* kv_node_status's result */
    int nfields;
    char *keys[STATUS_FIELDS_MAX];
    char *vals[STATUS_FIELDS_MAX];
} node_row;

/* Splits "k=v k=v ..." in place. A value runs to the next " word=", so a
 * warning with spaces in it stays whole. */
static void row__parse(node_row *r) {
    assert(r->line != NULL);
    char *s = r->line;
    r->nfields = 0;
    while (*s != '\0' && r->nfields < STATUS_FIELDS_MAX) {
        while (*s == ' ')
            s++;
        char *eq = s;
        while (*eq == '_' || (*eq >= 'a' && *eq <= 'z') || (*eq >= '0' && *eq <= '9'))
            eq++;
        if (*eq != '=' || eq == s)
            break; /* not a key: the rest is not ours to read */
        *eq = '\0';
        r->keys[r->nfields] = s;
        r->vals[r->nfields++] = eq + 1;
        char *next = eq + 1;
        for (;; next++) {
            next = strchr(next, ' ');
            if (next == NULL)
                break;
            char *k = next + 1;
            while (*k == '_' || (*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9'))
                k++;
            if (*k == '=' && k > next + 1)
                break;
        }
        if (next == NULL)
            break;
        *next = '\0';
        s = next + 1;
    }
}

static const char *row__get(const node_row *r, const char *key) {
    assert(r->line != NULL && r->nfields <= STATUS_FIELDS_MAX);
    for (int i = 0; i < r->nfields; i++)
        if (strcmp(r->keys[i], key) == 0)
            return r->vals[i];
    return NULL;
}

/* A decimal field, or false when missing or malformed. */
static bool row__u64(const node_row *r, const char *key, uint64_t *v) {
    const char *s = row__get(r, key);
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *v = x;
    return true;
}

static bool row__has_leader(const node_row *r) {
    if (r->line == NULL)
        return false;
    const char *role = row__get(r, "role");
    if (role != NULL && strcmp(role, "leader") == 0)
        return true;
    const char *l = row__get(r, "leader");
    return l != NULL && *l != '\0' && strcmp(l, "-") != 0 && strcmp(l, "none") != 0 &&
           strcmp(l, "0") != 0 && strcmp(l, "(none)") != 0;
}

static bool row__unsafe(const node_row *r) {
    const char *u = row__get(r, "unsafe_no_fsync");
    return u != NULL && (strcmp(u, "1") == 0 || strcmp(u, "true") == 0 || strcmp(u, "yes") == 0);
}

/* One word (no spaces: scripts split the table on them). Anything but "ok"
 * makes status exit 3. */
static const char *row__health(const node_row *r, bool behind) {
    if (r->line == NULL)
        return r->rc == KV_EUNAVAILABLE || r->rc == KV_ETIMEOUT || r->rc == KV_ECLOSED
                   ? "unreachable"
                   : kv_errword(r->rc);
    if (!row__has_leader(r))
        return row__unsafe(r) ? "no-leader,UNSAFE-NO-FSYNC" : "no-leader";
    if (row__unsafe(r))
        return "UNSAFE-NO-FSYNC";
    return behind ? "behind" : "ok";
}

/* The leader's row: role=leader, the highest term if two claim it. */
static const node_row *rows__leader(const node_row *rows, int n) {
    const node_row *best = NULL;
    uint64_t best_term = 0;
    for (int i = 0; i < n; i++) {
        const char *role = rows[i].line ? row__get(&rows[i], "role") : NULL;
        uint64_t term = 0;
        if (role == NULL || strcmp(role, "leader") != 0)
            continue;
        (void)row__u64(&rows[i], "term", &term);
        if (best == NULL || term > best_term)
            best = &rows[i], best_term = term;
    }
    return best;
}

/* The table's cells for one row; "-" where unknown. lag is written to buf. */
#define STATUS_COLS 9
static void row__cells(const node_row *r, const node_row *leader, char *lag, size_t lag_cap,
                       const char **cells) {
    static const char *keys[STATUS_COLS] = {"name",    "address", "role", "term",   "commit",
                                            "applied", NULL,      NULL,   "version"};
    for (int i = 0; i < STATUS_COLS; i++) {
        const char *v = keys[i] && r->line ? row__get(r, keys[i]) : NULL;
        cells[i] = v != NULL && *v != '\0' ? v : "-";
    }
    if (r->line == NULL)
        cells[1] = r->endpoint;
    uint64_t commit, applied, behind = 0;
    snprintf(lag, lag_cap, "-");
    if (leader != NULL && r->line != NULL && row__u64(leader, "commit", &commit) &&
        row__u64(r, "applied", &applied)) {
        behind = commit > applied ? commit - applied : 0;
        snprintf(lag, lag_cap, "%" PRIu64, behind);
    }
    cells[6] = lag;
    cells[7] = row__health(r, behind > STATUS_LAG_ENTRIES_MAX);
}

static void status__json(kvcli_ctx *ctx, const node_row *r, const char **cells) {
    static const char *names[STATUS_COLS] = {"name",    "address", "role",   "term",   "commit",
                                             "applied", "lag",     "health", "version"};
    static const bool numeric[STATUS_COLS] = {false, false, false, true, true,
                                              true,  true,  false, false};
    fputc('{', ctx->out);
    for (int i = 0; i < STATUS_COLS; i++) {
        fprintf(ctx->out, "%s\"%s\":", i ? "," : "", names[i]);
        if (strcmp(cells[i], "-") == 0)
            fputs("null", ctx->out);
        else if (numeric[i])
            fputs(cells[i], ctx->out);
        else
            kvcli_json_str(ctx->out, cells[i], strlen(cells[i]));
    }
    const char *w = r->line ? row__get(r, "warning") : NULL;
    if (w != NULL) {
        fputs(",\"warning\":", ctx->out);
        kvcli_json_str(ctx->out, w, strlen(w));
    }
    fputs("}\n", ctx->out);
}

/* Prints the table (or JSON rows); returns how many nodes are not "ok". */
static int status__table(kvcli_ctx *ctx, const node_row *rows, int n) {
    assert(n > 0 && n <= (int)KV_NODES_MAX);
    static const char *head[STATUS_COLS] = {"NAME",    "ADDRESS", "ROLE",   "TERM",   "COMMIT",
                                            "APPLIED", "LAG",     "HEALTH", "VERSION"};
    const node_row *leader = rows__leader(rows, n);
    char lag[KV_NODES_MAX][24];
    const char *cells[KV_NODES_MAX][STATUS_COLS];
    int width[STATUS_COLS];
    for (int c = 0; c < STATUS_COLS; c++)
        width[c] = (int)strlen(head[c]);
    int unhealthy = 0;
    for (int i = 0; i < n; i++) {
        row__cells(&rows[i], leader, lag[i], sizeof lag[i], cells[i]);
        unhealthy += strcmp(cells[i][7], "ok") != 0;
        for (int c = 0; c < STATUS_COLS; c++)
            if ((int)strlen(cells[i][c]) > width[c])
                width[c] = (int)strlen(cells[i][c]);
    }
    if (ctx->json) {
        for (int i = 0; i < n; i++)
            status__json(ctx, &rows[i], cells[i]);
        return unhealthy;
    }
    for (int c = 0; c < STATUS_COLS; c++)
        fprintf(ctx->out, "%-*s%s", c + 1 < STATUS_COLS ? width[c] : 0, head[c],
                c + 1 < STATUS_COLS ? "  " : "\n");
    for (int i = 0; i < n; i++)
        for (int c = 0; c < STATUS_COLS; c++)
            fprintf(ctx->out, "%-*s%s", c + 1 < STATUS_COLS ? width[c] : 0, cells[i][c],
                    c + 1 < STATUS_COLS ? "  " : "\n");
    for (int i = 0; i < n; i++) {
        const char *w = rows[i].line ? row__get(&rows[i], "warning") : NULL;
        if (w != NULL)
            fprintf(ctx->out, "warning: %s: %s\n", cells[i][0], w);
    }
    return unhealthy;
}

/* Splits the cluster list into rows; a usage error when it is malformed. */
static int status__endpoints(kvcli_ctx *ctx, const char *cmd, node_row *rows, int *n) {
    const char *s = ctx->cluster;
    *n = 0;
    while (*s != '\0') {
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof rows[0].endpoint || memchr(s, ':', len) == NULL)
            return kvcli_usage_error(ctx, cmd, "bad cluster address list '%s'", ctx->cluster);
        if (*n == (int)KV_NODES_MAX)
            return kvcli_usage_error(ctx, cmd, "more than %u addresses in the cluster list",
                                     KV_NODES_MAX);
        memcpy(rows[*n].endpoint, s, len);
        rows[*n].endpoint[len] = '\0';
        (*n)++;
        s += len + (s[len] == ',');
    }
    assert(*n <= (int)KV_NODES_MAX);
    return *n > 0 ? 0 : kvcli_usage_error(ctx, cmd, "empty cluster address list");
}

int kvcli_cmd_status(kvcli_ctx *ctx, int argc, char **argv) {
    assert(ctx != NULL && argc >= 1);
    if (argc != 1)
        return kvcli_usage_error(ctx, argv[0], "wants no arguments, got %d", argc - 1);
    node_row rows[KV_NODES_MAX];
    memset(rows, 0, sizeof rows);
    int n;
    int rc = status__endpoints(ctx, argv[0], rows, &n);
    if (rc != 0)
        return rc;
    /* No node answering at all is a row of "unreachable"s, not an error. */
    kv_client *c = NULL;
    if (ctx->client == NULL) {
        rc = kv_client_open(&c, ctx->cluster, &ctx->opts);
        if (rc == KV_EINVAL)
            return kvcli_usage_error(ctx, argv[0], "bad cluster address list '%s'", ctx->cluster);
        if (rc != 0 && rc != KV_EUNAVAILABLE && rc != KV_ETIMEOUT)
            return kvcli_fail(ctx, argv[0], rc, false);
        ctx->client = rc == 0 ? c : NULL;
    }
    c = ctx->client;
    bool leader = false;
    for (int i = 0; i < n; i++) {
        rows[i].rc = c ? kv_node_status(c, rows[i].endpoint, &rows[i].line) : KV_EUNAVAILABLE;
        if (rows[i].rc != 0)
            rows[i].line = NULL;
        else
            row__parse(&rows[i]);
        leader = leader || row__has_leader(&rows[i]);
    }
    assert(n > 0 && n <= (int)KV_NODES_MAX);
    int unhealthy = status__table(ctx, rows, n);
    for (int i = 0; i < n; i++)
        kv_free(rows[i].line);
    /* 0 only when every node answers, knows the leader, keeps up and
     * syncs its disk: a script's (and docs/deploy.md's) health check. */
    assert(unhealthy > 0 || leader);
    if (unhealthy > 0 && !ctx->json) {
        fflush(ctx->out);
        fprintf(ctx->err, "kvcli: status: %d of %d nodes not ok%s\n", unhealthy, n,
                leader ? "" : "; no leader known");
    }
    return unhealthy == 0 ? KVCLI_EXIT_OK : KVCLI_EXIT_UNAVAILABLE;
}
