/*
 * kvcli txn: a transaction read from stdin in etcdctl's interactive form,
 *
 *   value("k") = "v"          compares, one a line: value, version,
 *   version("k") = 0          create, mod or lease of a key; = != < >;
 *   mod("k") < 42             a number bare or quoted, a value quoted
 *                             (blank line)
 *   put k v                   the success ops: put KEY VALUE [--lease ID], del KEY,
 *   get k                     get KEY (quoted as kvcli's shell quotes)
 *                             (blank line)
 *   del k                     the failure ops, to the end
 *
 * Prints SUCCESS or FAILURE, then each op's result after a blank line (OK
 * for a put, 1 or 0 for a del, the key and value lines for a get; nothing
 * for a get of an absent key). Exit 0 on SUCCESS, 1 on FAILURE, 2 for a
 * line that does not parse (named by its number).
 */
#include "kvcli/kvcli.h"

#include "kv/limits.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The longest input line: a put of the largest value with every byte
 * written as \xNN, and the key the same. */
#define TXN_LINE_BYTES_MAX (4u * (KV_VALUE_BYTES_MAX + KV_KEY_BYTES_MAX) + 64u)
/* Lines read in all: every op and compare, the blank lines, and room for
 * trailing blank ones. */
#define TXN_LINES_MAX (KV_TXN_OPS_MAX + 16u)

void kvcli_json_keyinfo(FILE *f, const kv_keyinfo *i) {
    fprintf(f,
            "\"create_rev\":%" PRIu64 ",\"mod_rev\":%" PRIu64 ",\"version\":%" PRIu64
            ",\"lease\":%" PRIu64,
            i->create_rev, i->mod_rev, i->version, i->lease);
}

/* What parsing keeps of each op, for printing its result. */
typedef struct txn_op {
    enum { OP_PUT, OP_DEL, OP_GET } type;
    char *key; /* malloc'd */
    size_t key_len;
} txn_op;

typedef struct txn_parse {
    kvcli_ctx *ctx;
    kv_txn *t;
    txn_op ops[2][KV_TXN_OPS_MAX]; /* [0]: failure, [1]: success */
    size_t n_ops[2];
    unsigned line; /* 1-based, for the messages */
} txn_parse;

__attribute__((format(printf, 2, 3))) static int parse_error(txn_parse *p, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kvcli_usage_error(p->ctx, "txn", "line %u: %s", p->line, msg);
}

static int parse_number(txn_parse *p, const char *w, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(w, &end, 10);
    if (errno != 0 || end == w || *end != '\0' || w[0] == '-')
        return parse_error(p, "'%s' is not a number (0 to 2^64-1)", w);
    *out = v;
    return 0;
}

static int parse_op_word(txn_parse *p, const char *w, enum kv_cmp_result *r) {
    static const struct {
        const char *w;
        enum kv_cmp_result r;
    } ops[] = {{"=", KV_CMP_EQUAL},
               {"==", KV_CMP_EQUAL},
               {"!=", KV_CMP_NOT_EQUAL},
               {"<", KV_CMP_LESS},
               {">", KV_CMP_GREATER}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(w, ops[i].w) == 0) {
            *r = ops[i].r;
            return 0;
        }
    return parse_error(p, "unknown operator '%s' (want = != < >)", w);
}

/* value("k") = "v": after kvcli_split the first word is value(k), its key
 * everything between the first '(' and the last ')'. */
static int parse_compare(txn_parse *p, char **w, const size_t *len, int n) {
    static const char *names[] = {"value", "version", "create", "mod", "lease"};
    if (n != 3)
        return parse_error(p, "a compare is TARGET(\"KEY\") OP OPERAND, three words apart");
    char *open = memchr(w[0], '(', len[0]);
    if (open == NULL || len[0] < 3 || w[0][len[0] - 1] != ')')
        return parse_error(p, "'%s' is not TARGET(\"KEY\")", w[0]);
    size_t tlen = (size_t)(open - w[0]);
    int target = -1;
    for (int i = 0; i < 5; i++)
        if (strlen(names[i]) == tlen && memcmp(w[0], names[i], tlen) == 0)
            target = i;
    if (target < 0)
        return parse_error(p,
                           "unknown compare target in '%s' (want value, version, create, "
                           "mod or lease)",
                           w[0]);
    enum kv_cmp_result r = KV_CMP_EQUAL;
    int rc = parse_op_word(p, w[1], &r);
    uint64_t number = 0;
    if (rc == 0 && target != KV_CMP_VALUE)
        rc = parse_number(p, w[2], &number);
    if (rc != 0)
        return rc;
    const char *key = open + 1;
    size_t klen = len[0] - tlen - 2;
    rc = kv_txn_compare(p->t, (enum kv_cmp_target)target, r, key, klen, w[2], len[2], number);
    if (rc != 0)
        return parse_error(p, "%s", kv_errstr());
    return 0;
}

/* A put's optional lease: "--lease ID" or "--lease=ID" after its value
 * (words w[3..n)); *lease 0 without one. */
static int parse_put_lease(txn_parse *p, char **w, int n, uint64_t *lease) {
    *lease = 0;
    const char *v = n == 5 && strcmp(w[3], "--lease") == 0        ? w[4]
                    : n == 4 && strncmp(w[3], "--lease=", 8) == 0 ? w[3] + 8
                                                                  : NULL;
    if (n == 3)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long x = v != NULL ? strtoull(v, &end, 10) : 0;
    if (v == NULL || errno != 0 || end == v || *end != '\0' || v[0] == '-' || x == 0)
        return parse_error(p, "put wants a key and a value, then --lease ID if any");
    *lease = x;
    return 0;
}

static int parse_op(txn_parse *p, bool success, char **w, const size_t *len, int n) {
    int type = strcmp(w[0], "put") == 0                                  ? OP_PUT
               : strcmp(w[0], "del") == 0 || strcmp(w[0], "delete") == 0 ? OP_DEL
               : strcmp(w[0], "get") == 0                                ? OP_GET
                                                                         : -1;
    if (type < 0)
        return parse_error(p, "unknown op '%s' (want put KEY VALUE, del KEY or get KEY)", w[0]);
    uint64_t lease = 0;
    if (type == OP_PUT && n > 3 && parse_put_lease(p, w, n, &lease) != 0)
        return KVCLI_EXIT_USAGE;
    if (type == OP_PUT ? n < 3 : n != 2) /* a put's extra words: its lease, checked above */
        return parse_error(p, "%s wants %s", type == OP_PUT ? "put" : w[0],
                           type == OP_PUT ? "a key and a value" : "a key");
    int rc = type == OP_PUT   ? kv_txn_put(p->t, success, w[1], len[1], w[2], len[2], lease)
             : type == OP_DEL ? kv_txn_del(p->t, success, w[1], len[1])
                              : kv_txn_get(p->t, success, w[1], len[1]);
    if (rc != 0)
        return parse_error(p, "%s", kv_errstr());
    txn_op *o = &p->ops[success][p->n_ops[success]];
    o->key = malloc(len[1] ? len[1] : 1);
    if (o->key == NULL)
        return kvcli_fail(p->ctx, "txn", KV_ENOMEM, false);
    memcpy(o->key, w[1], len[1]);
    o->key_len = len[1];
    o->type = type;
    p->n_ops[success]++; /* kv_txn_put counted it under KV_TXN_OPS_MAX */
    return 0;
}

/* One line of section sec (0 compares, 1 success, 2 failure). */
static int parse_line(txn_parse *p, int sec, char *line) {
    char *w[KVCLI_ARGS_MAX];
    size_t len[KVCLI_ARGS_MAX];
    const char *why = NULL;
    int n = kvcli_split(line, w, len, KVCLI_ARGS_MAX, &why);
    if (n < 0)
        return parse_error(p, "%s", why);
    assert(n > 0); /* blank lines end sections before here */
    return sec == 0 ? parse_compare(p, w, len, n) : parse_op(p, sec == 1, w, len, n);
}

static bool blank(const char *s) {
    return s[strspn(s, " \t\r\n")] == '\0';
}

/* The txn's next line into *line (getline's contract): from stdin, or in
 * the shell typed after a prompt naming the section. -1 at the end. */
static ssize_t next_line(txn_parse *p, int sec, char **line, size_t *cap) {
    if (!p->ctx->shell)
        return getline(line, cap, stdin);
    static const char *prompts[3] = {"txn compares> ", "txn success> ", "txn failure> "};
    char *typed = kvcli_shell_line(prompts[sec < 2 ? sec : 2]);
    if (typed == NULL)
        return -1;
    free(*line); /* the typed line becomes the buffer */
    *line = typed;
    *cap = strlen(typed) + 1;
    return (ssize_t)(*cap - 1);
}

/* Reads the txn into p->t: sections split by one blank line each. Alone
 * (`kvcli txn < FILE`) the txn is stdin to its end. Among other
 * commands (commands on stdin, the shell) it ends at the blank line after
 * the failure ops; on commands from stdin a line that does not parse skips
 * the rest of the txn, so none of its lines runs as a command, and in the
 * shell it ends the txn at once (as Ctrl-D does: nothing is sent). */
static int parse_input(txn_parse *p) {
    kvcli_ctx *ctx = p->ctx;
    bool among = ctx->stdin_is_commands || ctx->shell;
    char *line = NULL;
    size_t cap = 0;
    int sec = 0, rc = 0;
    ssize_t got;
    while ((got = next_line(p, sec, &line, &cap)) >= 0) {
        p->line++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (blank(line) && ++sec == 3 && among)
            break;
        if (rc != 0 || blank(line))
            continue; /* skipping to the txn's end; or past a section */
        if (p->line > TXN_LINES_MAX || (size_t)got > TXN_LINE_BYTES_MAX)
            rc = parse_error(p, "%s", p->line > TXN_LINES_MAX ? "too many lines" : "line too long");
        else if (sec > 2)
            rc = parse_error(p, "text after the failure ops (three sections at most)");
        else
            rc = parse_line(p, sec, line);
        if (rc != 0 && (!among || ctx->shell))
            break;
    }
    free(line);
    if (rc == 0 && got < 0 && ctx->shell) {
        fprintf(ctx->err, "kvcli: txn: cancelled: input ended before the blank line after the "
                          "failure ops; nothing was sent\n");
        rc = KVCLI_EXIT_USAGE;
    }
    if (rc == 0 && !ctx->shell && ferror(stdin)) {
        fprintf(ctx->err, "kvcli: txn: reading stdin: %s\n", strerror(errno));
        rc = KVCLI_EXIT_REFUSED;
    }
    return rc;
}

static void print_result(kvcli_ctx *ctx, const txn_op *o, const kv_txn_result *r, bool first) {
    static const char *names[] = {"put", "del", "get"};
    if (ctx->json) {
        fprintf(ctx->out, "%s{\"op\":\"%s\",", first ? "" : ",", names[o->type]);
        kvcli_json_bytes(ctx->out, "key", o->key, o->key_len);
        if (o->type == OP_DEL)
            fprintf(ctx->out, ",\"deleted\":%d", r->code == 0);
        if (o->type == OP_GET && r->code == 0) {
            fputc(',', ctx->out);
            kvcli_json_bytes(ctx->out, "value", r->value, r->value_len);
            fputc(',', ctx->out);
            kvcli_json_keyinfo(ctx->out, &r->info);
        }
        fprintf(ctx->out, ",\"found\":%s}", r->code == 0 ? "true" : "false");
        return;
    }
    fputc('\n', ctx->out);
    if (o->type == OP_PUT)
        fputs("OK\n", ctx->out);
    else if (o->type == OP_DEL)
        fprintf(ctx->out, "%d\n", r->code == 0);
    else if (r->code == 0) {
        kvcli_escape(ctx->out, o->key, o->key_len);
        fputc('\n', ctx->out);
        kvcli_escape(ctx->out, r->value, r->value_len);
        fputc('\n', ctx->out);
    }
}

static int txn_run(txn_parse *p, kv_client *c) {
    kvcli_ctx *ctx = p->ctx;
    bool ok = false;
    kv_txn_result *res = NULL;
    size_t n = 0;
    int rc = kv_txn_commit(c, p->t, &ok, &res, &n);
    if (rc != 0)
        return kvcli_fail(ctx, "txn", rc, true);
    if (n != p->n_ops[ok]) { /* one result per op of the branch that ran */
        kv_txn_results_free(res, n);
        fprintf(ctx->err, "kvcli: txn: %zu results for %zu ops\n", n, p->n_ops[ok]);
        return KVCLI_EXIT_REFUSED;
    }
    if (ctx->json)
        fprintf(ctx->out, "{\"succeeded\":%s,\"results\":[", ok ? "true" : "false");
    else
        fputs(ok ? "SUCCESS\n" : "FAILURE\n", ctx->out);
    for (size_t i = 0; i < n; i++)
        print_result(ctx, &p->ops[ok][i], &res[i], i == 0);
    if (ctx->json)
        fputs("]}\n", ctx->out);
    kv_txn_results_free(res, n);
    return ok ? KVCLI_EXIT_OK : KVCLI_EXIT_NO;
}

int kvcli_cmd_txn(kvcli_ctx *ctx, int argc, char **argv) {
    if (argc != 1)
        return kvcli_usage_error(ctx, argv[0], "takes no arguments (the txn comes on stdin)");
    txn_parse *p = calloc(1, sizeof *p);
    if (p == NULL || (p->t = kv_txn_new()) == NULL) {
        free(p);
        return kvcli_fail(ctx, argv[0], KV_ENOMEM, false);
    }
    p->ctx = ctx;
    int rc = parse_input(p);
    kv_client *c;
    if (rc == 0 && (rc = kvcli_client(ctx, argv[0], &c)) == 0)
        rc = txn_run(p, c);
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < p->n_ops[b]; i++)
            free(p->ops[b][i].key);
    kv_txn_free(p->t);
    free(p);
    return rc;
}
