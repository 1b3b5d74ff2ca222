/*
 * kvcli: the data commands (put, get, del, cas, scan, help) and the table
 * of every command.
 */
#include "kvcli/kvcli.h"

#include "kv/limits.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- arguments ---------------------------------------------------------- */

/* A command's parsed arguments: the flags it knows and its positionals. */
typedef struct cmd_args {
    int count;
    char *pos[KVCLI_ARGS_MAX];
    size_t len[KVCLI_ARGS_MAX]; /* pos[i]'s bytes (a word may hold \x00) */
    bool stale;     /* --stale */
    bool absent;    /* --absent */
    bool has_limit; /* --limit N */
    uint32_t limit;
    bool prefix;    /* --prefix (del) */
    uint64_t lease; /* --lease ID (0: none) */
} cmd_args;

enum { FLAG_STALE = 1, FLAG_ABSENT = 2, FLAG_LIMIT = 4, FLAG_PREFIX = 8, FLAG_LEASE = 16 };

static int args__lease(kvcli_ctx *ctx, const char *cmd, const char *s, cmd_args *a) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0)
        return kvcli_usage_error(ctx, cmd, "--lease wants a lease id (kvcli lease grant), not '%s'",
                                 s);
    a->lease = v;
    return 0;
}

static int args__limit(kvcli_ctx *ctx, const char *cmd, const char *s, cmd_args *a) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 || v > UINT32_MAX)
        return kvcli_usage_error(ctx, cmd, "--limit wants a number from 1 to %u, not '%s'",
                                 UINT32_MAX, s);
    a->has_limit = true;
    a->limit = (uint32_t)v;
    return 0;
}

/* Separates the flags in `allowed` from the positionals; "--" ends flags.
 * Anything else starting with "--" is a usage error naming it. */
static int args__parse(kvcli_ctx *ctx, int argc, char **argv, unsigned allowed, cmd_args *a) {
    assert(argc >= 1 && argc <= KVCLI_ARGS_MAX);
    memset(a, 0, sizeof *a);
    bool flags = true;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (flags && strcmp(s, "--") == 0) {
            flags = false;
        } else if (flags && (allowed & FLAG_STALE) && strcmp(s, "--stale") == 0) {
            a->stale = true;
        } else if (flags && (allowed & FLAG_ABSENT) && strcmp(s, "--absent") == 0) {
            a->absent = true;
        } else if (flags && (allowed & FLAG_PREFIX) && strcmp(s, "--prefix") == 0) {
            a->prefix = true;
        } else if (flags && (allowed & FLAG_LIMIT) && strcmp(s, "--limit") == 0) {
            if (i + 1 == argc)
                return kvcli_usage_error(ctx, argv[0], "--limit wants a number");
            if (args__limit(ctx, argv[0], argv[++i], a) != 0)
                return KVCLI_EXIT_USAGE;
        } else if (flags && (allowed & FLAG_LIMIT) && strncmp(s, "--limit=", 8) == 0) {
            if (args__limit(ctx, argv[0], s + 8, a) != 0)
                return KVCLI_EXIT_USAGE;
        } else if (flags && (allowed & FLAG_LEASE) && strcmp(s, "--lease") == 0) {
            if (i + 1 == argc)
                return kvcli_usage_error(ctx, argv[0], "--lease wants a lease id");
            if (args__lease(ctx, argv[0], argv[++i], a) != 0)
                return KVCLI_EXIT_USAGE;
        } else if (flags && strncmp(s, "--", 2) == 0) {
            return kvcli_usage_error(ctx, argv[0], "unknown flag '%s'", s);
        } else {
            a->len[a->count] = ctx->argl != NULL ? ctx->argl[i] : strlen(s);
            a->pos[a->count++] = argv[i];
        }
    }
    return 0;
}

static int args__want(kvcli_ctx *ctx, const char *cmd, const cmd_args *a, int want) {
    assert(a->count >= 0 && a->count < KVCLI_ARGS_MAX);
    assert(want > 0);
    if (a->count == want)
        return 0;
    return kvcli_usage_error(ctx, cmd, "wants %d argument%s, got %d", want, want == 1 ? "" : "s",
                             a->count);
}

/* A value argument: "-" reads all of stdin (binary safe), anything else is
 * the bytes of the word. At most KV_VALUE_BYTES_MAX + 1 bytes are read, so
 * an endless stdin still ends in TOOBIG from the client, not in memory
 * growth. *buf gets what to free (NULL for a word). */
static int args__value(kvcli_ctx *ctx, const char *cmd, char *word, size_t word_len, char **val,
                       size_t *len, char **buf) {
    assert(word != NULL && val != NULL && len != NULL && buf != NULL);
    *buf = NULL;
    if (word_len != 1 || word[0] != '-') {
        *val = word;
        *len = word_len;
        return 0;
    }
    if (ctx->stdin_is_commands)
        return kvcli_usage_error(ctx, cmd,
                                 "'-' (read the value from stdin) cannot be used "
                                 "while commands come from stdin");
    size_t cap = (size_t)KV_VALUE_BYTES_MAX + 1;
    char *b = malloc(cap);
    if (b == NULL)
        return kvcli_fail(ctx, cmd, KV_ENOMEM, false);
    size_t n = fread(b, 1, cap, stdin);
    if (ferror(stdin)) {
        free(b);
        fprintf(ctx->err, "kvcli: %s: reading the value from stdin: %s\n", cmd, strerror(errno));
        return KVCLI_EXIT_REFUSED;
    }
    assert(n <= cap);
    *val = *buf = b;
    *len = n;
    return 0;
}

/* The first positional is a key: 1 to KV_KEY_BYTES_MAX bytes (the client
 * would refuse an empty one with INVALID, a long one with TOOBIG: said here
 * with the reason instead). A scan's prefix may be empty. */
static int args__key(kvcli_ctx *ctx, const char *cmd, const cmd_args *a, bool empty_ok) {
    assert(a->count >= 1);
    if (a->len[0] == 0 && !empty_ok)
        return kvcli_usage_error(ctx, cmd, "an empty key: a key is 1 to %u bytes", KV_KEY_BYTES_MAX);
    return 0;
}

/* The start of a command that takes want words and talks to the cluster:
 * flags, the number of words, the key, then the client. */
static int args__begin(kvcli_ctx *ctx, int argc, char **argv, unsigned flags, int want, cmd_args *a,
                       kv_client **c) {
    int rc = args__parse(ctx, argc, argv, flags, a);
    if (rc == 0)
        rc = args__want(ctx, argv[0], a, want);
    if (rc == 0)
        rc = args__key(ctx, argv[0], a, (flags & FLAG_LIMIT) != 0);
    if (rc == 0)
        rc = kvcli_client(ctx, argv[0], c);
    return rc;
}

static int print_ok(kvcli_ctx *ctx) {
    fputs(ctx->json ? "{\"ok\":true}\n" : "OK\n", ctx->out);
    return KVCLI_EXIT_OK;
}

/* ---- commands ----------------------------------------------------------- */

static int cmd_put(kvcli_ctx *ctx, int argc, char **argv) {
    cmd_args a;
    kv_client *c;
    int rc = args__parse(ctx, argc, argv, FLAG_LEASE, &a);
    if (rc == 0)
        rc = args__want(ctx, argv[0], &a, 2);
    if (rc == 0)
        rc = args__key(ctx, argv[0], &a, false);
    if (rc != 0)
        return rc;
    char *val, *buf;
    size_t len;
    if ((rc = args__value(ctx, argv[0], a.pos[1], a.len[1], &val, &len, &buf)) != 0)
        return rc;
    if ((rc = kvcli_client(ctx, argv[0], &c)) == 0) {
        rc = a.lease != 0 ? kv_put_lease(c, a.pos[0], a.len[0], val, len, a.lease)
                          : kv_put(c, a.pos[0], a.len[0], val, len);
        if (rc == KV_ENOTFOUND && !ctx->json) { /* the only NOTFOUND of a put */
            fprintf(ctx->err, "kvcli: put: lease %llu not found (expired or revoked)\n",
                    (unsigned long long)a.lease);
            rc = KVCLI_EXIT_NO;
        } else {
            rc = rc == 0 ? print_ok(ctx) : kvcli_fail(ctx, argv[0], rc, true);
        }
    }
    free(buf);
    return rc;
}

static int cmd_get(kvcli_ctx *ctx, int argc, char **argv) {
    cmd_args a;
    kv_client *c;
    int rc = args__begin(ctx, argc, argv, FLAG_STALE, 1, &a, &c);
    if (rc != 0)
        return rc;
    const char *key = a.pos[0];
    size_t klen = a.len[0];
    void *v = NULL;
    size_t vlen = 0;
    kv_keyinfo info;
    if (a.stale)
        rc = kv_get_stale_ex(c, key, klen, &v, &vlen, NULL, &info);
    else
        rc = kv_get_ex(c, key, klen, &v, &vlen, &info);
    if (rc != 0)
        return kvcli_fail(ctx, argv[0], rc, false);
    if (ctx->json) {
        fputc('{', ctx->out);
        kvcli_json_bytes(ctx->out, "key", key, klen);
        fputc(',', ctx->out);
        kvcli_json_bytes(ctx->out, "value", v, vlen);
        fputc(',', ctx->out);
        kvcli_json_keyinfo(ctx->out, &info);
        fputs("}\n", ctx->out);
    } else if (ctx->exact) {
        if (vlen > 0) /* an empty value comes back as NULL */
            fwrite(v, 1, vlen, ctx->out);
    } else {
        kvcli_escape(ctx->out, v, vlen);
        fputc('\n', ctx->out);
    }
    kv_free(v);
    return KVCLI_EXIT_OK;
}

/* del --prefix P: every key starting with P (P may be empty: every key,
 * but only when asked for by --prefix ''); prints the count. */
static int del__prefix(kvcli_ctx *ctx, const char *cmd, kv_client *c, const cmd_args *a) {
    uint64_t n = 0;
    int rc = kv_del_prefix(c, a->pos[0], a->len[0], &n);
    if (rc != 0) {
        if (n > 0) /* entries before the failure were applied */
            fprintf(ctx->err, "kvcli: del: %" PRIu64 " keys deleted before the failure\n", n);
        return kvcli_fail(ctx, cmd, rc, true);
    }
    if (ctx->json)
        fprintf(ctx->out, "{\"deleted\":%" PRIu64 "}\n", n);
    else
        fprintf(ctx->out, "%" PRIu64 "\n", n);
    return KVCLI_EXIT_OK;
}

static int cmd_del(kvcli_ctx *ctx, int argc, char **argv) {
    cmd_args a;
    kv_client *c;
    int rc = args__parse(ctx, argc, argv, FLAG_PREFIX, &a);
    if (rc == 0)
        rc = args__want(ctx, argv[0], &a, 1);
    if (rc == 0)
        rc = args__key(ctx, argv[0], &a, a.prefix);
    if (rc == 0)
        rc = kvcli_client(ctx, argv[0], &c);
    if (rc != 0)
        return rc;
    if (a.prefix)
        return del__prefix(ctx, argv[0], c, &a);
    rc = kv_del(c, a.pos[0], a.len[0]);
    return rc == 0 ? print_ok(ctx) : kvcli_fail(ctx, argv[0], rc, true);
}

/* Shown values are cut here: a mismatch message is for a person. */
#define CMD_SHOW_BYTES_MAX 1024u

static int cas__mismatch(kvcli_ctx *ctx, bool absent, bool present, const void *cur,
                         size_t cur_len) {
    if (ctx->json) {
        fprintf(ctx->out, "{\"error\":\"COMPARE\",\"present\":%s", present ? "true" : "false");
        if (present) {
            fputc(',', ctx->out);
            kvcli_json_bytes(ctx->out, "current", cur, cur_len);
        }
        fputs("}\n", ctx->out);
        return KVCLI_EXIT_NO;
    }
    if (!present) {
        fputs("compare failed: key is absent\n", ctx->err);
        return KVCLI_EXIT_NO;
    }
    const char *what = absent ? "key exists, current value is" : "current value is";
    fprintf(ctx->err, "compare failed: %s ", what);
    kvcli_escape(ctx->err, cur, cur_len < CMD_SHOW_BYTES_MAX ? cur_len : CMD_SHOW_BYTES_MAX);
    if (cur_len > CMD_SHOW_BYTES_MAX)
        fprintf(ctx->err, "... (%zu bytes)", cur_len);
    fputc('\n', ctx->err);
    return KVCLI_EXIT_NO;
}

static int cmd_cas(kvcli_ctx *ctx, int argc, char **argv) {
    cmd_args a;
    kv_client *c;
    int rc = args__parse(ctx, argc, argv, FLAG_ABSENT | FLAG_LEASE, &a);
    if (rc == 0 && a.lease != 0 && !a.absent)
        rc = kvcli_usage_error(ctx, argv[0], "--lease goes with --absent only");
    if (rc == 0)
        rc = args__want(ctx, argv[0], &a, a.absent ? 2 : 3);
    if (rc == 0)
        rc = args__key(ctx, argv[0], &a, false);
    if (rc != 0)
        return rc;
    const char *key = a.pos[0];
    const char *exp = a.absent ? NULL : a.pos[1];
    size_t exp_len = a.absent ? 0 : a.len[1];
    int vi = a.absent ? 1 : 2;
    char *val, *buf;
    size_t len;
    if ((rc = args__value(ctx, argv[0], a.pos[vi], a.len[vi], &val, &len, &buf)) != 0)
        return rc;
    if ((rc = kvcli_client(ctx, argv[0], &c)) != 0) {
        free(buf);
        return rc;
    }
    void *cur = NULL;
    size_t cur_len = 0;
    bool present = false;
    if (a.lease != 0) {
        rc = kv_create_lease(c, key, a.len[0], val, len, a.lease);
        if (rc == KV_ECOMPARE) /* the current value, for the message */
            present = kv_get(c, key, a.len[0], &cur, &cur_len) == 0;
    } else {
        rc = kv_cas_ex(c, key, a.len[0], exp, exp_len, val, len, &cur, &cur_len, &present);
    }
    free(buf);
    if (rc == 0)
        rc = print_ok(ctx);
    else if (rc == KV_ECOMPARE)
        rc = cas__mismatch(ctx, a.absent, present, cur, cur_len);
    else
        rc = kvcli_fail(ctx, argv[0], rc, true);
    kv_free(cur);
    return rc;
}

static void scan__print(kvcli_ctx *ctx, const kv_pair *p, const kv_keyinfo *info) {
    assert(p->key != NULL || p->key_len == 0);
    assert(p->value != NULL || p->value_len == 0);
    if (ctx->json) {
        fputc('{', ctx->out);
        kvcli_json_bytes(ctx->out, "key", p->key, p->key_len);
        fputc(',', ctx->out);
        kvcli_json_bytes(ctx->out, "value", p->value, p->value_len);
        fputc(',', ctx->out);
        kvcli_json_keyinfo(ctx->out, info);
        fputs("}\n", ctx->out);
    } else {
        kvcli_escape(ctx->out, p->key, p->key_len);
        fputc('\t', ctx->out);
        kvcli_escape(ctx->out, p->value, p->value_len);
        fputc('\n', ctx->out);
    }
}

/* Keeps the last key of a page as the next page's start (owned copy). */
static int scan__keep_last(char **after, size_t *after_len, const kv_pair *last) {
    assert(last->key != NULL || last->key_len == 0);
    char *k = malloc(last->key_len ? last->key_len : 1);
    if (k == NULL)
        return KV_ENOMEM;
    memcpy(k, last->key, last->key_len);
    free(*after);
    *after = k;
    *after_len = last->key_len;
    return 0;
}

/* Pages through the prefix until no more keys follow or the limit; *left
 * is set when the limit stopped it with keys left. */
static int scan__pages(kvcli_ctx *ctx, kv_client *c, const char *prefix, size_t prefix_len,
                       const cmd_args *a, bool *left) {
    char *after = NULL;
    size_t after_len = 0, shown = 0;
    bool more = true;
    int rc = 0;
    assert(prefix != NULL && (!a->has_limit || a->limit > 0));
    while (rc == 0 && more && (!a->has_limit || shown < a->limit)) {
        uint32_t page = a->has_limit ? (uint32_t)(a->limit - shown) : 0;
        kv_pair *pairs = NULL;
        kv_keyinfo *infos = NULL;
        size_t count = 0;
        rc = kv_scan_ex(c, prefix, prefix_len, after, after_len, page, &pairs,
                        ctx->json ? &infos : NULL, &count, &more);
        if (rc != 0)
            break;
        for (size_t i = 0; i < count && (!a->has_limit || shown < a->limit); i++, shown++)
            scan__print(ctx, &pairs[i], infos ? &infos[i] : &(kv_keyinfo){0});
        kv_free(infos);
        if (more && count == 0)
            rc = KV_EPROTO; /* "more" without progress would loop forever */
        else if (count > 0)
            rc = scan__keep_last(&after, &after_len, &pairs[count - 1]);
        kv_pairs_free(pairs, count);
    }
    free(after);
    assert(!a->has_limit || shown <= a->limit);
    *left = rc == 0 && more;
    assert(!*left || (a->has_limit && shown == a->limit));
    return rc;
}

static int cmd_scan(kvcli_ctx *ctx, int argc, char **argv) {
    cmd_args a;
    kv_client *c;
    int rc = args__begin(ctx, argc, argv, FLAG_LIMIT, 1, &a, &c);
    if (rc != 0)
        return rc;
    bool left = false;
    rc = scan__pages(ctx, c, a.pos[0], a.len[0], &a, &left);
    if (rc != 0)
        return kvcli_fail(ctx, argv[0], rc, false);
    /* Keys left past --limit are said apart from the rows: on stderr in
     * text (stdout stays the rows alone), as a last object in JSON. */
    if (left && ctx->json)
        fputs("{\"more\":true}\n", ctx->out);
    else if (left)
        fprintf(ctx->err, "kvcli: scan: more keys follow (--limit %u reached)\n", a.limit);
    return KVCLI_EXIT_OK;
}

static const kvcli_cmd *cmd__find(const char *name) {
    for (const kvcli_cmd *k = kvcli_commands; k->name != NULL; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

void kvcli_cmd_usage(FILE *f, const kvcli_cmd *k) {
    assert(f != NULL && k != NULL && k->name != NULL);
    fprintf(f, "usage: kvcli %s%s%s\n      %s\n", k->name, k->args[0] ? " " : "", k->args, k->help);
}

static int cmd_help(kvcli_ctx *ctx, int argc, char **argv) {
    if (argc > 2)
        return kvcli_usage_error(ctx, argv[0], "wants at most 1 argument, got %d", argc - 1);
    if (argc == 1) {
        kvcli_usage(ctx->out);
        return KVCLI_EXIT_OK;
    }
    const kvcli_cmd *k = cmd__find(argv[1]);
    if (k == NULL)
        return kvcli_usage_error(ctx, NULL, "help: no command '%s'", argv[1]);
    kvcli_cmd_usage(ctx->out, k);
    return KVCLI_EXIT_OK;
}

const kvcli_cmd kvcli_commands[] = {
    {"put", cmd_put, "KEY VALUE [--lease ID]",
     "store VALUE under KEY (VALUE '-': read it from stdin; --lease: attached to\n"
     "      lease ID, deleted with it)"},
    {"get", cmd_get, "[--stale] KEY", "print KEY's value (--stale: from any node, may lag)"},
    {"del", cmd_del, "KEY | --prefix PREFIX",
     "delete KEY (--prefix: every key starting with PREFIX; prints the count)"},
    {"cas", cmd_cas, "KEY EXPECTED NEW | --absent KEY NEW [--lease ID]",
     "set KEY to NEW if its value is EXPECTED (--absent: if KEY is absent;\n"
     "      --lease: created attached to lease ID)"},
    {"scan", cmd_scan, "PREFIX [--limit N]", "list keys starting with PREFIX: key<TAB>value"},
    {"watch", kvcli_cmd_watch, "PREFIX [--rev R]",
     "print PUT key value / DELETE key per change under PREFIX until interrupted\n"
     "      (--rev R: from revision R on; COMPACTED when R is no longer kept)"},
    {"txn", kvcli_cmd_txn, "",
     "a transaction from stdin, as etcdctl's: compares (value(\"k\") = \"v\",\n"
     "      version/create/mod/lease(\"k\") = != < > N), a blank line, the success ops\n"
     "      (put K V [--lease ID], del K, get K), a blank line, the failure ops;\n"
     "      prints SUCCESS (exit 0) or FAILURE (exit 1) and each op's result; in\n"
     "      the shell or among commands on stdin, the lines that follow, up to the\n"
     "      blank line after the failure ops"},
    {"status", kvcli_cmd_status, "",
     "one row per node: role, term, commit, lag, health; exit 3 unless every\n"
     "      node is ok (answers, knows the leader, lags <= 1000 entries, fsyncs)"},
    {"member", kvcli_cmd_member, "list | add NAME HOST:PORT | remove NAME",
     "the members; add one as a learner, promoted once caught up (start it with\n"
     "      kvd --name NAME --data-dir DIR --listen HOST:PORT --join ANY-MEMBER);\n"
     "      remove one"},
    {"transfer-leader", kvcli_cmd_transfer_leader, "NAME", "make member NAME the leader"},
    {"snapshot", kvcli_cmd_snapshot, "save FILE | verify FILE",
     "save: the whole store from the leader into one checksummed file;\n"
     "      verify: check such a file offline (CORRUPT FILE offset N: exit 4)"},
    {"check", kvcli_cmd_check, "",
     "compare every member's state machine hash at one index (CORRUPT: exit 4)"},
    {"lease", kvcli_cmd_lease, "grant TTL | keepalive ID | revoke ID | list",
     "leases: grant prints a new lease's id; keys put with --lease ID are deleted\n"
     "      when it is revoked or expires (no keepalive for TTL seconds);\n"
     "      keepalive keeps it alive until interrupted (exit 1 when it is gone)"},
    {"lock", kvcli_cmd_lock, "[--ttl SECONDS] NAME -- COMMAND [ARGS...]",
     "run COMMAND holding lock NAME (key lock/NAME on a lease of --ttl seconds,\n"
     "      10 by default); released when COMMAND exits or kvcli dies; exits with\n"
     "      COMMAND's status"},
    {"help", cmd_help, "[COMMAND]", "this text, or one command's"},
    {NULL, NULL, NULL, NULL},
};

int kvcli_run(kvcli_ctx *ctx, int argc, char **argv) {
    assert(ctx != NULL && argc >= 1 && argv[0] != NULL);
    if (argc > KVCLI_ARGS_MAX)
        return kvcli_usage_error(ctx, argv[0], "too many arguments (%d)", argc - 1);
    const kvcli_cmd *k = cmd__find(argv[0]);
    if (k == NULL)
        return kvcli_usage_error(ctx, NULL, "unknown command '%s'", argv[0]);
    /* COMMAND --help (before a "--"): that command's usage. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0) {
            kvcli_cmd_usage(ctx->out, k);
            return KVCLI_EXIT_OK;
        }
    return k->fn(ctx, argc, argv);
}
