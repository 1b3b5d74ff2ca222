/*
 * kvd's modes that work on a data dir (kvd, kvd init, kvd restore, kvd
 * recover): one table of settings drives the command line (getopt_long),
 * the config file, validation, --help and --print-config.
 *
 * Rules (docs/deploy.md, "One config file per node", says the same to users):
 *
 *  1. Every setting is one row of `settings`: its flag name (also its key in
 *     the config file), its type and range, the field it fills (offsetof),
 *     its default, the modes that accept it, its help.
 *  2. Nothing touches the data dir until every value is parsed and checked:
 *     kvd_serve() resolves the whole configuration first; a bad value exits
 *     KVD_EXIT_USAGE with one line naming the flag (FILE:LINE and the key for
 *     a config file line) and what it accepts.
 *  3. A flag on the command line wins over the config file, wherever
 *     --config stands. A flag given twice, or a key given twice in the file,
 *     is an error (which one was meant?). Flags are never abbreviated.
 *  4. A bool never guesses: `--flag` alone or `--flag=true` is true,
 *     `--flag=false` is false, anything else is an error; in the file only
 *     `key = true` or `key = false`.
 *  5. The config file: `key = value` lines. `#` starts a comment at the start
 *     of a line, or after a value when whitespace precedes it
 *     (`tick-ms = 20 # faster`). An unquoted value cannot hold `#`; a value
 *     that does is written in double quotes (`token-file = "/etc/kv/#1"`),
 *     which hold any bytes but `"` (no escapes). Unknown keys are errors;
 *     keys of another mode are checked and ignored, so that one file serves
 *     kvd, kvd init, kvd restore and kvd recover alike.
 *  6. Each mode accepts only its own flags on the command line.
 */
#include "kvd/serve.h"

#include "kvd/admin.h"
#include "kvd/check.h"
#include "kv/limits.h"
#include "server/server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address is kept in 128 bytes by the server's member book and by the
 * net layer (SERVER_ADDR_BYTES, NET_ADDR_BYTES_MAX), with its NUL. */
#define KVD_ADDR_BYTES_MAX 127u
/* A path: what open(2) takes (PATH_MAX, with its NUL). */
#define KVD_PATH_BYTES_MAX 4095u
/* --cluster-token: enough for a UUID or a phrase; it only seeds the id. */
#define KVD_CLUSTER_TOKEN_BYTES_MAX 255u
/* One config file line; a longer one is an error, never cut. */
#define KVD_CONFIG_LINE_BYTES_MAX 8192u
/* --cluster: one more comma-separated address than a member's. */
#define KVD_CLUSTER_BYTES_MAX                                                                      \
    (KV_NODES_MAX * (KV_NODE_NAME_BYTES_MAX + 1u + KVD_ADDR_BYTES_MAX + 1u))

/* What kvd_serve resolves: the server's config and kvd's own settings.
 * Every string points into a kvd_value's text (owned by kvd_parse). */
typedef struct kvd_settings {
    server_config cfg;
    const char *config;     /* --config FILE */
    const char *token_file; /* --token-file: read into cfg.token */
    const char *from;       /* kvd restore --from FILE */
    bool print_config;      /* print the resolved config and exit */
    bool help;
} kvd_settings;

typedef enum kvd_type {
    KVD_T_STRING,  /* 1 to KVD_PATH_BYTES_MAX bytes, no control characters */
    KVD_T_NAME,    /* a node name: 1-63 bytes, no ',', '=', space or control */
    KVD_T_ADDR,    /* IPV4:PORT or [IPV6]:PORT, port 1-65535 */
    KVD_T_LISTEN,  /* the same, or :PORT (every interface) */
    KVD_T_CLUSTER, /* NAME=ADDR,... 1 to KV_NODES_MAX members, names unique */
    KVD_T_TOKEN,   /* 1-255 printable bytes, no whitespace */
    KVD_T_HEX32,   /* exactly 32 hex digits */
    KVD_T_NUMBER,  /* decimal digits, from min to max; a u32 or u64 field */
    KVD_T_BOOL,    /* true or false */
} kvd_type;

#define M_SERVE (1u << KVD_MODE_SERVE)
#define M_INIT (1u << KVD_MODE_INIT)
#define M_RESTORE (1u << KVD_MODE_RESTORE)
#define M_RECOVER (1u << KVD_MODE_RECOVER)
#define M_ALL (M_SERVE | M_INIT | M_RESTORE | M_RECOVER)

typedef struct setting {
    const char *name; /* the flag without "--", the config file key */
    kvd_type type;
    size_t offset, size; /* the field of kvd_settings it fills */
    uint64_t min, max;   /* KVD_T_NUMBER */
    uint64_t def;        /* KVD_T_NUMBER and KVD_T_BOOL; strings: NULL */
    unsigned modes;      /* M_* that accept it */
    bool cli_only;       /* not a config file key */
    const char *arg;     /* its value in --help */
    const char *help;
} setting;

#define F(field) offsetof(kvd_settings, field), sizeof(((kvd_settings *)0)->field)
#define STR(n, t, field, modes, arg, help)                                                         \
    { n, t, F(field), 0, 0, 0, modes, false, arg, help }
#define NUM(n, field, lo, hi, def, help)                                                           \
    { n, KVD_T_NUMBER, F(field), lo, hi, def, M_SERVE, false, "N", help }

static const setting settings[] = {
    {"config", KVD_T_STRING, F(config), 0, 0, 0, M_ALL, true, "FILE",
     "read 'key = value' lines, keys as these flags; the command line wins"},
    STR("name", KVD_T_NAME, cfg.name, M_ALL, "N",
        "this node's name (1-63 bytes, no ',' '=' or space)"),
    STR("data-dir", KVD_T_STRING, cfg.data_dir, M_ALL, "DIR",
        "where the log, hard state, state machine and snapshots live"),
    STR("listen", KVD_T_LISTEN, cfg.listen, M_SERVE | M_INIT, "HOST:PORT",
        "for clients and peers (default: this node's --cluster address)"),
    STR("cluster", KVD_T_CLUSTER, cfg.cluster, M_SERVE | M_INIT | M_RESTORE, "N1=HOST:PORT,...",
        "the founding members (read on the first start only)"),
    STR("join", KVD_T_ADDR, cfg.join, M_SERVE, "HOST:PORT",
        "a member: a new node joins its cluster (after kvcli member add)"),
    STR("metrics", KVD_T_ADDR, cfg.metrics, M_SERVE, "HOST:PORT",
        "serve /metrics and /health here"),
    STR("token-file", KVD_T_STRING, token_file, M_SERVE, "FILE",
        "the cluster's shared secret: the file's first line"),
    STR("cluster-token", KVD_T_TOKEN, cfg.cluster_token, M_INIT, "TOKEN",
        "the new cluster's id is derived from it and --cluster (the same on every founder)"),
    STR("cluster-id", KVD_T_HEX32, cfg.cluster_id, M_INIT, "HEX32",
        "adopt this cluster id (32 hex digits) instead"),
    STR("from", KVD_T_STRING, from, M_RESTORE, "FILE", "the snapshot file (kvcli snapshot save)"),
    NUM("snapshot-entries", cfg.snapshot_entries, 10, UINT32_MAX, SERVER_SNAPSHOT_ENTRIES_DEFAULT,
        "take a snapshot every N applied entries"),
    NUM("snapshot-bytes", cfg.snapshot_bytes, 4096, 1ull << 40, SERVER_SNAPSHOT_BYTES_DEFAULT,
        "or every N bytes of applied entries"),
    NUM("snapshots-keep", cfg.snapshots_keep, 1, 100, KV_SNAPSHOTS_KEEP_DEFAULT,
        "snapshots kept on disk"),
    NUM("tick-ms", cfg.tick_ms, 1, 10000, SERVER_TICK_MS_DEFAULT, "one Raft tick, milliseconds"),
    NUM("election-ticks", cfg.election_ticks, 3, 1000, SERVER_ELECTION_TICKS_DEFAULT,
        "election timeout in ticks"),
    NUM("quota-bytes", cfg.quota_bytes, 1, UINT64_MAX, SERVER_QUOTA_BYTES_DEFAULT,
        "disk quota of the data dir; past it writes get NOSPACE"),
    NUM("slow-fsync-ms", cfg.slow_fsync_ms, 1, 600000, 100,
        "a log fsync slower than this is logged (SLOWDISK) and counted"),
    NUM("wal-segment-bytes", cfg.wal_segment_bytes, KV_WAL_SEGMENT_BYTES_MIN, 1ull << 40,
        KV_WAL_SEGMENT_BYTES_DEFAULT, "log segment size (small ones for tests)"),
    NUM("wal-queue-bytes", cfg.wal_queue_bytes, KV_WAL_RECORD_BYTES_MAX, KV_WAL_QUEUE_BYTES_MAX,
        KV_WAL_QUEUE_BYTES_MAX,
        "bytes queued for the log writer; past them writes get BUSY (small ones for tests)"),
    {"read-lease", KVD_T_BOOL, F(cfg.read_lease), 0, 0, false, M_SERVE, false, "[=true|false]",
     "serve linearizable reads on the leader's lease, without a heartbeat round;\n"
     "      assumes clock rates do not drift by more than the election timeout allows\n"
     "      (docs/deploy.md); the same on every node"},
    {"unsafe-no-fsync", KVD_T_BOOL, F(cfg.unsafe_no_fsync), 0, 0, false, M_SERVE, false,
     "[=true|false]", "do not fsync: acknowledged writes are LOST at a crash (tests only)"},
    {"print-config", KVD_T_BOOL, F(print_config), 0, 0, false, M_ALL, true, "",
     "print the resolved settings as a config file and exit; touches nothing"},
    {"help", KVD_T_BOOL, F(help), 0, 0, false, M_ALL, true, "", "this text"},
};
#define SETTINGS_COUNT (sizeof(settings) / sizeof(settings[0]))
#define KVD_OPT_BASE 256 /* getopt_long's val of settings[i] is KVD_OPT_BASE + i */

/* One value as given: owned text, and where it came from (file NULL: the
 * command line). */
typedef struct kvd_value {
    char *text;
    const char *file;
    int line;
} kvd_value;

typedef struct kvd_parse {
    enum kvd_mode mode;
    kvd_value cli[SETTINGS_COUNT];
    kvd_value file[SETTINGS_COUNT];
    kvd_settings set;
    char *listen; /* derived from --cluster when --listen is absent; owned */
    char *token;  /* read from --token-file; owned */
} kvd_parse;

static const char *mode_cmd(enum kvd_mode mode) {
    switch (mode) {
    case KVD_MODE_SERVE:
        return "kvd";
    case KVD_MODE_INIT:
        return "kvd init";
    case KVD_MODE_RESTORE:
        return "kvd restore";
    case KVD_MODE_RECOVER:
        return "kvd recover";
    }
    assert(0);
    return "kvd";
}

static bool mode_accepts(enum kvd_mode mode, const setting *s) {
    return (s->modes & (1u << mode)) != 0;
}

/* Our bugs, not the user's: the table must be consistent. */
static void settings_assert(void) {
    for (size_t i = 0; i < SETTINGS_COUNT; i++) {
        const setting *s = &settings[i];
        assert(s->modes != 0 && (s->modes & ~M_ALL) == 0);
        assert(s->offset + s->size <= sizeof(kvd_settings));
        if (s->type == KVD_T_NUMBER) {
            assert(s->size == sizeof(uint32_t) || s->size == sizeof(uint64_t));
            assert(s->min <= s->def && s->def <= s->max);
            assert(s->size == sizeof(uint64_t) || s->max <= UINT32_MAX);
        } else if (s->type == KVD_T_BOOL) {
            assert(s->size == sizeof(bool) && s->def <= 1);
        } else {
            assert(s->size == sizeof(const char *));
        }
        for (size_t j = 0; j < i; j++)
            assert(strcmp(settings[j].name, s->name) != 0);
    }
}

static const setting *setting_find(const char *name, size_t len) {
    for (size_t i = 0; i < SETTINGS_COUNT; i++)
        if (strlen(settings[i].name) == len && memcmp(settings[i].name, name, len) == 0)
            return &settings[i];
    return NULL;
}

/* ---- fields ------------------------------------------------------------- */

static void field_set_number(kvd_settings *set, const setting *s, uint64_t x) {
    assert(s->type == KVD_T_NUMBER && x >= s->min && x <= s->max);
    char *f = (char *)set + s->offset;
    if (s->size == sizeof(uint32_t)) {
        uint32_t v = (uint32_t)x;
        memcpy(f, &v, sizeof v);
    } else {
        memcpy(f, &x, sizeof x);
    }
}

static uint64_t field_number(const kvd_settings *set, const setting *s) {
    assert(s->type == KVD_T_NUMBER);
    const char *f = (const char *)set + s->offset;
    if (s->size == sizeof(uint32_t)) {
        uint32_t v;
        memcpy(&v, f, sizeof v);
        return v;
    }
    uint64_t v;
    memcpy(&v, f, sizeof v);
    return v;
}

static void field_set_bool(kvd_settings *set, const setting *s, bool v) {
    assert(s->type == KVD_T_BOOL && s->size == sizeof v);
    memcpy((char *)set + s->offset, &v, sizeof v);
}

static bool field_bool(const kvd_settings *set, const setting *s) {
    assert(s->type == KVD_T_BOOL);
    bool v;
    memcpy(&v, (const char *)set + s->offset, sizeof v);
    return v;
}

/* The string field of s; it stays owned by the kvd_value it came from. */
static void field_set_string(kvd_settings *set, const setting *s, const char *v) {
    assert(s->type != KVD_T_NUMBER && s->type != KVD_T_BOOL && s->size == sizeof v);
    memcpy((char *)set + s->offset, &v, sizeof v);
}

static const char *field_string(const kvd_settings *set, const setting *s) {
    const char *v;
    memcpy(&v, (const char *)set + s->offset, sizeof v);
    return v;
}

/* The defaults: the server's, then the table's (which must agree). */
static void settings_default(kvd_settings *set) {
    memset(set, 0, sizeof *set);
    server_config_default(&set->cfg);
    for (size_t i = 0; i < SETTINGS_COUNT; i++) {
        const setting *s = &settings[i];
        if (s->type == KVD_T_NUMBER) {
            uint64_t server_def = field_number(set, s);
            assert(server_def == 0 || server_def == s->def); /* 0: the server's "default" */
            field_set_number(set, s, s->def);
        } else if (s->type == KVD_T_BOOL) {
            assert(!field_bool(set, s));
            field_set_bool(set, s, s->def != 0);
        } else {
            assert(field_string(set, s) == NULL);
        }
    }
}

/* ---- values ------------------------------------------------------------- */

static bool has_control(const char *v) {
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return true;
    return false;
}

static bool name_ok(const char *v, size_t len) {
    if (len == 0 || len > KV_NODE_NAME_BYTES_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c == 0x7f || c == ',' || c == '=')
            return false;
    }
    return true;
}

/* IPV4:PORT, [IPV6]:PORT, or (empty_host) :PORT; port 1-65535. */
static bool addr_ok(const char *v, size_t len, bool empty_host) {
    char host[KVD_ADDR_BYTES_MAX + 1];
    if (len == 0 || len > KVD_ADDR_BYTES_MAX)
        return false;
    const char *colon = memrchr(v, ':', len);
    if (colon == NULL)
        return false;
    size_t hl = (size_t)(colon - v), pl = len - hl - 1;
    unsigned port = 0;
    for (size_t i = 0; i < pl && pl <= 5; i++) /* v[len] may be a ',' */
        port = isdigit((unsigned char)colon[1 + i]) ? port * 10 + (unsigned)(colon[1 + i] - '0')
                                                    : 65536;
    if (pl == 0 || pl > 5 || port == 0 || port > 65535)
        return false;
    if (hl == 0)
        return empty_host;
    bool v6 = v[0] == '[';
    if (v6 && (hl < 3 || v[hl - 1] != ']'))
        return false;
    memcpy(host, v + v6, hl - 2 * v6);
    host[hl - 2 * v6] = 0;
    unsigned char buf[16];
    return inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) == 1;
}

/* NAME=ADDR,...: why names what is wrong. */
static bool cluster_ok(const char *v, char *why, size_t cap) {
    const char *names[KV_NODES_MAX];
    size_t lens[KV_NODES_MAX], n = 0;
    for (const char *p = v;;) {
        const char *end = strchrnul(p, ',');
        const char *eq = memchr(p, '=', (size_t)(end - p));
        size_t len = (size_t)(end - p), nl = eq ? (size_t)(eq - p) : 0;
        if (len == 0) {
            snprintf(why, cap, "an empty member (a ',' too many?)");
            return false;
        }
        if (eq == NULL || !addr_ok(eq + 1, len - nl - 1, false)) {
            snprintf(why, cap,
                     "member '%.*s': want NAME=HOST:PORT, HOST a numeric IPv4 address or [IPv6], "
                     "PORT 1-65535",
                     (int)len, p);
            return false;
        }
        if (!name_ok(p, nl)) {
            snprintf(why, cap,
                     "member '%.*s': a name is 1 to %u bytes without ',', '=', spaces or "
                     "control characters",
                     (int)len, p, KV_NODE_NAME_BYTES_MAX);
            return false;
        }
        for (size_t i = 0; i < n; i++)
            if (lens[i] == nl && memcmp(names[i], p, nl) == 0) {
                snprintf(why, cap, "the name '%.*s' is there twice", (int)nl, p);
                return false;
            }
        if (n == KV_NODES_MAX) {
            snprintf(why, cap, "more than %u members", KV_NODES_MAX);
            return false;
        }
        names[n] = p, lens[n++] = nl;
        if (*end == 0)
            return true;
        p = end + 1;
    }
}

static bool number_ok(const setting *s, const char *v, uint64_t *out) {
    size_t len = strlen(v);
    if (len == 0 || len > 20 || strspn(v, "0123456789") != len)
        return false; /* strtoull alone takes "-1", " 5" and "+5" */
    errno = 0;
    unsigned long long x = strtoull(v, NULL, 10);
    if (errno != 0 || x < s->min || x > s->max)
        return false;
    *out = x;
    return true;
}

/* What s accepts, for the error message. */
static void value_want(const setting *s, char *buf, size_t cap) {
    switch (s->type) {
    case KVD_T_STRING:
        snprintf(buf, cap, "want 1 to %u bytes without control characters", KVD_PATH_BYTES_MAX);
        break;
    case KVD_T_NAME:
        snprintf(buf, cap, "want 1 to %u bytes without ',', '=', spaces or control characters",
                 KV_NODE_NAME_BYTES_MAX);
        break;
    case KVD_T_ADDR:
    case KVD_T_LISTEN:
        snprintf(buf, cap, "want HOST:PORT, HOST a numeric IPv4 address or [IPv6]%s, PORT 1-65535",
                 s->type == KVD_T_LISTEN ? " or empty (every interface)" : "");
        break;
    case KVD_T_CLUSTER:
        snprintf(buf, cap, "want NAME=HOST:PORT,... (1 to %u members, names unique)", KV_NODES_MAX);
        break;
    case KVD_T_TOKEN:
        snprintf(buf, cap, "want 1 to %u printable bytes without spaces",
                 KVD_CLUSTER_TOKEN_BYTES_MAX);
        break;
    case KVD_T_HEX32:
        snprintf(buf, cap, "want exactly 32 hex digits");
        break;
    case KVD_T_NUMBER:
        snprintf(buf, cap, "want a whole number from %llu to %llu", (unsigned long long)s->min,
                 (unsigned long long)s->max);
        break;
    case KVD_T_BOOL:
        snprintf(buf, cap, "want true or false");
        break;
    }
}

/* Checks v against s and stores it in set; v must outlive set. Returns false
 * with why set when v is not accepted. */
static bool value_parse(const setting *s, const char *v, kvd_settings *set, char *why, size_t cap) {
    size_t len = strlen(v);
    uint64_t x = 0;
    bool ok = false;
    switch (s->type) {
    case KVD_T_STRING:
        ok = len > 0 && len <= KVD_PATH_BYTES_MAX && !has_control(v);
        break;
    case KVD_T_NAME:
        ok = name_ok(v, len);
        break;
    case KVD_T_ADDR:
    case KVD_T_LISTEN:
        ok = addr_ok(v, len, s->type == KVD_T_LISTEN);
        break;
    case KVD_T_CLUSTER:
        if (len > KVD_CLUSTER_BYTES_MAX)
            break;
        if (!cluster_ok(v, why, cap))
            return false;
        ok = true;
        break;
    case KVD_T_TOKEN:
        ok = len > 0 && len <= KVD_CLUSTER_TOKEN_BYTES_MAX;
        for (size_t i = 0; ok && i < len; i++)
            ok = isgraph((unsigned char)v[i]);
        break;
    case KVD_T_HEX32:
        ok = len == 32 && strspn(v, "0123456789abcdefABCDEF") == 32;
        break;
    case KVD_T_NUMBER:
        if ((ok = number_ok(s, v, &x)))
            field_set_number(set, s, x);
        return ok || (value_want(s, why, cap), false);
    case KVD_T_BOOL:
        if ((ok = strcmp(v, "true") == 0 || strcmp(v, "false") == 0))
            field_set_bool(set, s, v[0] == 't');
        return ok || (value_want(s, why, cap), false);
    }
    if (ok)
        field_set_string(set, s, v);
    else
        value_want(s, why, cap);
    return ok;
}

static void value_free(kvd_value *v) {
    free(v->text);
    memset(v, 0, sizeof *v);
}

/* ---- the command line ----------------------------------------------------- */

static int cli_error(const kvd_parse *p, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", mode_cmd(p->mode));
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (%s --help lists the flags)\n", mode_cmd(p->mode));
    return -1;
}

/* "kvd, kvd init" for the modes of s. */
static void modes_text(const setting *s, char *buf, size_t cap) {
    buf[0] = 0;
    for (int m = KVD_MODE_SERVE; m <= KVD_MODE_INIT; m++)
        if (s->modes & (1u << m))
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "",
                     mode_cmd((enum kvd_mode)m));
}

/* Flag i was given: tok is its argv word ("--name" or "--name=v"), v its
 * value (NULL: none). Checks and stores it. */
static int cli_flag(kvd_parse *p, size_t i, const char *tok, const char *v, bool separate) {
    const setting *s = &settings[i];
    char why[256];
    const char *eq = strchr(tok, '=');
    size_t len = eq ? (size_t)(eq - tok) : strlen(tok);
    if (len != strlen(s->name) + 2) /* getopt_long takes a prefix: "--tick" */
        return cli_error(p, "unknown flag '%.*s' (flags are never abbreviated)", (int)len, tok);
    if (!mode_accepts(p->mode, s)) {
        modes_text(s, why, sizeof why);
        return cli_error(p, "--%s is not a flag of %s; it belongs to %s", s->name,
                         mode_cmd(p->mode), why);
    }
    if (p->cli[i].text != NULL)
        return cli_error(p, "--%s is given twice", s->name);
    if (separate && strncmp(v, "--", 2) == 0)
        return cli_error(p, "--%s needs a value, not the flag '%s' (write --%s=%s if you mean it)",
                         s->name, v, s->name, v);
    if (v == NULL) {
        assert(s->type == KVD_T_BOOL);
        v = "true";
    }
    p->cli[i].text = strdup(v);
    if (p->cli[i].text == NULL)
        return cli_error(p, "out of memory");
    if (!value_parse(s, p->cli[i].text, &p->set, why, sizeof why)) {
        fprintf(stderr, "%s: --%s '%s': %s\n", mode_cmd(p->mode), s->name, v, why);
        return -1;
    }
    return 0;
}

/* Parses argv (argv[0] is the command) into p->cli and p->set. */
static int cli_parse(kvd_parse *p, int argc, char **argv) {
    struct option opts[SETTINGS_COUNT + 1];
    for (size_t i = 0; i < SETTINGS_COUNT; i++) {
        bool b = settings[i].type == KVD_T_BOOL;
        opts[i] = (struct option){settings[i].name, b ? optional_argument : required_argument, NULL,
                                  KVD_OPT_BASE + (int)i};
    }
    opts[SETTINGS_COUNT] = (struct option){NULL, 0, NULL, 0};
    optind = 0; /* a fresh scan; "+": stop at the first non-flag, no reordering */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (c == 'h') {
            p->set.help = true;
        } else if (c == ':') {
            int i = optopt - KVD_OPT_BASE;
            if (i < 0 || (size_t)i >= SETTINGS_COUNT)
                return cli_error(p, "'%s' needs a value", argv[optind - 1]);
            return cli_error(p, "--%s needs a value", settings[i].name);
        } else if (c == '?') {
            return cli_error(p, "unknown flag '%s'", argv[optind - 1]);
        } else {
            size_t i = (size_t)(c - KVD_OPT_BASE);
            assert(i < SETTINGS_COUNT);
            bool separate = optarg != NULL && optarg == argv[optind - 1];
            const char *tok = argv[optind - 1 - separate];
            if (cli_flag(p, i, tok, optarg, separate) != 0)
                return -1;
        }
    }
    if (optind < argc)
        return cli_error(p, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* ---- the config file -------------------------------------------------------- */

static int file_error(const char *path, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "kvd: %s:%d: ", path, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

/* The value after '=': "quoted" (any bytes but '"'), or up to a comment
 * (whitespace then '#'); returns NULL with why set if malformed. */
static char *file_value(char *s, const char **why) {
    s = trim(s);
    char *rest;
    if (*s == '"') {
        char *q = strchr(s + 1, '"');
        if (q == NULL)
            return *why = "a quoted value has no closing '\"'", NULL;
        *q = 0;
        rest = trim(q + 1);
        if (*rest != 0 && *rest != '#')
            return *why = "only a '# comment' may follow a quoted value", NULL;
        return s + 1;
    }
    char *hash = strchr(s, '#');
    if (hash != NULL) {
        if (hash == s)
            return *why = "needs a value before the comment", NULL;
        if (hash[-1] != ' ' && hash[-1] != '\t')
            return *why = "'#' inside a value: put the value in double quotes, or a space "
                          "before a comment",
                   NULL;
        *hash = 0;
        s = trim(s);
    }
    if (strchr(s, '"') != NULL)
        return *why = "a '\"' inside a value: only a whole value is quoted", NULL;
    return *s ? s : (*why = "needs a value ('key = value')", NULL);
}

/* One line of the file, without its newline. */
static int file_line(kvd_parse *p, const char *path, int lineno, char *line) {
    char *l = trim(line);
    if (*l == 0 || *l == '#')
        return 0;
    char *eq = strchr(l, '=');
    if (eq == NULL)
        return file_error(path, lineno, "'%s': want 'key = value'", l);
    *eq = 0;
    char *key = trim(l);
    const setting *s = setting_find(key, strlen(key));
    if (s == NULL || s->cli_only)
        return file_error(path, lineno,
                          "unknown key '%s' (keys are kvd's flags without '--'; "
                          "kvd --help lists them)",
                          key);
    size_t i = (size_t)(s - settings);
    if (p->file[i].text != NULL)
        return file_error(path, lineno, "'%s' is given twice (first on line %d)", key,
                          p->file[i].line);
    const char *why = NULL;
    char *v = file_value(eq + 1, &why);
    if (v == NULL)
        return file_error(path, lineno, "%s: %s", key, why);
    char want[256];
    kvd_settings scratch; /* every key is checked, also one of another mode */
    if (!value_parse(s, v, &scratch, want, sizeof want))
        return file_error(path, lineno, "%s '%s': %s", key, v, want);
    p->file[i] = (kvd_value){strdup(v), path, lineno};
    if (p->file[i].text == NULL)
        return file_error(path, lineno, "out of memory");
    if (p->cli[i].text == NULL && mode_accepts(p->mode, s)) { /* the command line wins */
        bool ok = value_parse(s, p->file[i].text, &p->set, want, sizeof want);
        assert(ok); /* as in scratch */
    }
    return 0;
}

/* Loads path into p->file, and into p->set where the command line did not
 * set the key. Reports every bad line (up to 20), then fails. */
static int file_load(kvd_parse *p, const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: --config %s: %s\n", mode_cmd(p->mode), path, strerror(errno));
        return -1;
    }
    char line[KVD_CONFIG_LINE_BYTES_MAX + 2];
    int lineno = 0, errors = 0;
    while (errors < 20 && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\n') {
            line[--len] = 0;
        } else if (!feof(f)) {
            errors++;
            file_error(path, lineno, "longer than %u bytes", KVD_CONFIG_LINE_BYTES_MAX);
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            continue;
        }
        if (strlen(line) != len) {
            errors++;
            file_error(path, lineno, "holds a NUL byte");
            continue;
        }
        errors += file_line(p, path, lineno, line) != 0;
    }
    if (ferror(f))
        errors += file_error(path, lineno, "read error: %s", strerror(errno)) != 0;
    fclose(f);
    return errors ? -1 : 0;
}

/* ---- the modes' rules ---------------------------------------------------- */

/* The address of name in a valid --cluster list, or NULL; owned by the caller. */
static char *cluster_addr(const char *cluster, const char *name) {
    size_t nlen = strlen(name);
    for (const char *p = cluster; p != NULL && *p;) {
        const char *end = strchrnul(p, ',');
        size_t len = (size_t)(end - p);
        if (len > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=')
            return strndup(p + nlen + 1, len - nlen - 1);
        p = *end ? end + 1 : NULL;
    }
    return NULL;
}

/* The first line of path, trimmed; owned by the caller. NULL: reported. */
static char *token_read(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "kvd: --token-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char line[1024];
    char *tok = NULL;
    if (fgets(line, sizeof line, f) != NULL && *trim(line) != 0)
        tok = strdup(trim(line));
    else
        fprintf(stderr, "kvd: --token-file %s: the first line is empty\n", path);
    fclose(f);
    return tok;
}

static int need(const kvd_parse *p, bool ok, const char *what) {
    if (!ok)
        fprintf(stderr, "%s: %s (%s --help)\n", mode_cmd(p->mode), what, mode_cmd(p->mode));
    return ok ? 0 : -1;
}

/* --listen, or this node's address in --cluster. */
static int listen_resolve(kvd_parse *p) {
    server_config *cfg = &p->set.cfg;
    if (cfg->listen == NULL && cfg->cluster != NULL)
        cfg->listen = p->listen = cluster_addr(cfg->cluster, cfg->name);
    return need(p, cfg->listen != NULL,
                "--listen HOST:PORT is required (or a --cluster naming --name)");
}

static int name_in_cluster(kvd_parse *p) {
    const server_config *cfg = &p->set.cfg;
    char *a = cluster_addr(cfg->cluster, cfg->name);
    free(a);
    if (a == NULL)
        fprintf(stderr, "%s: --name %s is not one of the --cluster members\n", mode_cmd(p->mode),
                cfg->name);
    return a == NULL ? -1 : 0;
}

/* What each mode needs beyond valid values; reads --token-file. */
static int mode_check(kvd_parse *p) {
    server_config *cfg = &p->set.cfg;
    if (need(p, cfg->name != NULL && cfg->data_dir != NULL, "--name and --data-dir are required"))
        return -1;
    switch (p->mode) {
    case KVD_MODE_SERVE:
        if (listen_resolve(p) != 0)
            return -1;
        if (p->set.token_file != NULL && (p->token = token_read(p->set.token_file)) == NULL)
            return -1;
        cfg->token = p->token;
        return 0;
    case KVD_MODE_INIT:
        if (need(p, cfg->cluster != NULL, "--cluster N1=HOST:PORT,... is required") ||
            need(p, cfg->cluster_token == NULL || cfg->cluster_id == NULL,
                 "--cluster-token and --cluster-id exclude each other: give one or neither"))
            return -1;
        return name_in_cluster(p) != 0 ? -1 : listen_resolve(p);
    case KVD_MODE_RESTORE:
        if (need(p, p->set.from != NULL, "--from FILE is required") ||
            need(p, cfg->cluster != NULL,
                 "--cluster N1=HOST:PORT,... (the new cluster) is required"))
            return -1;
        return name_in_cluster(p);
    case KVD_MODE_RECOVER:
        return 0;
    }
    assert(0);
    return -1;
}

/* ---- output -------------------------------------------------------------- */

static void print_setting(const kvd_parse *p, const setting *s, FILE *out) {
    size_t i = (size_t)(s - settings);
    const kvd_value *v = p->cli[i].text ? &p->cli[i] : p->file[i].text ? &p->file[i] : NULL;
    char src[KVD_PATH_BYTES_MAX + 32];
    if (v == NULL)
        snprintf(src, sizeof src, "default");
    else if (v->file == NULL)
        snprintf(src, sizeof src, "command line");
    else
        snprintf(src, sizeof src, "%s:%d", v->file, v->line);
    if (s->type == KVD_T_NUMBER) {
        fprintf(out, "%s = %llu  # %s\n", s->name, (unsigned long long)field_number(&p->set, s),
                src);
    } else if (s->type == KVD_T_BOOL) {
        fprintf(out, "%s = %s  # %s\n", s->name, field_bool(&p->set, s) ? "true" : "false", src);
    } else {
        const char *x = field_string(&p->set, s);
        if (x == NULL)
            fprintf(out, "# %s (not set)\n", s->name);
        else if (strchr(x, '#') != NULL)
            fprintf(out, "%s = \"%s\"  # %s\n", s->name, x, src);
        else
            fprintf(out, "%s = %s  # %s\n", s->name, x,
                    x == p->listen ? "this node's --cluster address" : src);
    }
}

/* The resolved settings of the mode, as a config file it would read back. */
static void print_config(const kvd_parse *p, FILE *out) {
    fprintf(out, "# %s: the resolved settings%s%s\n", mode_cmd(p->mode),
            p->set.config ? " of --config " : "", p->set.config ? p->set.config : "");
    for (size_t i = 0; i < SETTINGS_COUNT; i++)
        if (mode_accepts(p->mode, &settings[i]) && !settings[i].cli_only)
            print_setting(p, &settings[i], out);
}

static const char *mode_synopsis(enum kvd_mode mode) {
    switch (mode) {
    case KVD_MODE_SERVE:
        return "usage: kvd --name N --data-dir DIR --listen HOST:PORT --cluster N1=HOST:PORT,... "
               "[flags]\n"
               "       kvd --name N --data-dir DIR --listen HOST:PORT --join HOST:PORT [flags]\n"
               "       kvd --config FILE [flags]\n"
               "runs a node.\n";
    case KVD_MODE_INIT:
        return "usage: kvd init --name N --data-dir DIR --cluster N1=HOST:PORT,...\n"
               "                [--cluster-token TOKEN | --cluster-id HEX32] [flags]\n"
               "makes DIR the data dir of a founding member of a new cluster (run once on\n"
               "each founder, with the same --cluster and --cluster-token, before the first\n"
               "start); a data dir kvd init did not make is never bootstrapped: a node whose\n"
               "disk was replaced rejoins with --join after kvcli member remove/add.\n";
    case KVD_MODE_RESTORE:
        return "usage: kvd restore --from FILE --data-dir DIR --name N --cluster N1=HOST:PORT,...\n"
               "makes the empty DIR a data dir of a new cluster holding the snapshot FILE\n"
               "(kvcli snapshot save); run it for each node of the new cluster.\n";
    case KVD_MODE_RECOVER:
        return "usage: kvd recover --data-dir DIR --name N\n"
               "turns a survivor's data dir into a one-node cluster of itself.\n";
    }
    assert(0);
    return "";
}

void kvd_serve_usage(FILE *out, enum kvd_mode mode) {
    fputs(mode_synopsis(mode), out);
    fprintf(out, "\nflags (each also a 'key = value' line of --config FILE, but --config,\n"
                 "--print-config and --help):\n");
    for (size_t i = 0; i < SETTINGS_COUNT; i++) {
        const setting *s = &settings[i];
        if (!mode_accepts(mode, s))
            continue;
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", s->name, s->arg[0] && s->arg[0] != '[' ? " " : "",
                 s->arg);
        fprintf(out, "  %-30s %s\n", left, s->help);
        if (s->type == KVD_T_NUMBER)
            fprintf(out, "  %-30s default %llu; %llu to %llu\n", "", (unsigned long long)s->def,
                    (unsigned long long)s->min, (unsigned long long)s->max);
    }
}

/* ---- kvd_serve ----------------------------------------------------------- */

static int run(const kvd_parse *p) {
    const server_config *cfg = &p->set.cfg;
    switch (p->mode) {
    case KVD_MODE_INIT:
        return kvd_init(cfg);
    case KVD_MODE_RESTORE:
        return kvd_restore(cfg, p->set.from);
    case KVD_MODE_RECOVER:
        return kvd_recover(cfg);
    case KVD_MODE_SERVE:
        break;
    }
    int rc = server_run(cfg);
    if (rc == KVD_EXIT_CORRUPT) {
        fprintf(stderr, "kvd: %s holds corrupt data; the problems (as kvd check shows them):\n",
                cfg->data_dir);
        kvd_check(cfg->data_dir, stderr);
    }
    return rc;
}

int kvd_serve(int argc, char **argv, enum kvd_mode mode) {
    assert(argc >= 1 && argv != NULL);
    settings_assert();
    kvd_parse p;
    memset(&p, 0, sizeof p);
    p.mode = mode;
    settings_default(&p.set);
    int rc = KVD_EXIT_USAGE;
    if (cli_parse(&p, argc, argv) != 0)
        goto out;
    if (p.set.help) {
        kvd_serve_usage(stdout, mode);
        rc = KVD_EXIT_OK;
        goto out;
    }
    /* Nothing below touches the data dir before run(). */
    if ((p.set.config != NULL && file_load(&p, p.set.config) != 0) || mode_check(&p) != 0)
        goto out;
    if (p.set.print_config) {
        print_config(&p, stdout);
        rc = KVD_EXIT_OK;
        goto out;
    }
    rc = run(&p);
out:
    for (size_t i = 0; i < SETTINGS_COUNT; i++) {
        value_free(&p.cli[i]);
        value_free(&p.file[i]);
    }
    free(p.listen);
    free(p.token);
    return rc;
}
