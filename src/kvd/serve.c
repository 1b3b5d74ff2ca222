/* kvd's server mode: flags and the config file, then server_run(). */
#include "kvd/serve.h"

#include "kvd/check.h"
#include "kv/limits.h"
#include "server/server.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every setting, by its flag name; the config file uses the same names. */
typedef struct setting {
    const char *name;
    bool takes_value;
    const char *help;
} setting;

static const setting settings[] = {
    {"name", true, "this node's name (a member of --cluster)"},
    {"data-dir", true, "where the log, hard state, state machine and snapshots live"},
    {"listen", true, "HOST:PORT for clients and peers (default: this node's --cluster address)"},
    {"cluster", true, "NAME=HOST:PORT,... the founding members (used on the first start only)"},
    {"metrics", true, "HOST:PORT to serve /metrics and /health on"},
    {"config", true, "a file of 'key = value' lines, keys as these flags"},
    {"token-file", true, "a file holding the cluster token (first line)"},
    {"snapshot-entries", true, "take a snapshot every N applied entries (default 10000)"},
    {"snapshot-bytes", true, "or every N bytes of applied entries (default 64 MiB)"},
    {"snapshots-keep", true, "snapshots kept on disk (default 2)"},
    {"tick-ms", true, "one Raft tick in milliseconds (default 50)"},
    {"election-ticks", true, "election timeout in ticks (default 10)"},
    {"join", true, "HOST:PORT of a member: a new node joins that cluster (after member add)"},
    {"cluster-token", true, "kvd init: the cluster id is derived from it and --cluster"},
    {"cluster-id", true, "kvd init: adopt this cluster id (32 hex digits)"},
    {"from", true, "kvd restore: the snapshot file to restore"},
    {"quota-bytes", true, "disk quota of the data dir; past it writes get NOSPACE (default 8 GiB)"},
    {"slow-fsync-ms", true, "a log fsync slower than this is logged (SLOWDISK) and counted (default 100)"},
    {"wal-segment-bytes", true, "log segment size (default 64 MiB; small ones for tests)"},
    {"unsafe-no-fsync", false, "do not fsync: acknowledged writes are LOST at a crash (tests only)"},
};
#define SETTINGS_COUNT (sizeof(settings) / sizeof(settings[0]))

typedef struct values {
    char *v[SETTINGS_COUNT];
} values;

void kvd_serve_usage(FILE *out) {
    fprintf(out, "usage: kvd --name NAME --data-dir DIR --listen HOST:PORT \\\n"
                 "           --cluster N1=HOST:PORT,N2=HOST:PORT,N3=HOST:PORT [flags]\n\n");
    for (size_t i = 0; i < SETTINGS_COUNT; i++)
        fprintf(out, "  --%-18s %s\n", settings[i].name, settings[i].help);
}

static int find(const char *name, size_t len) {
    for (size_t i = 0; i < SETTINGS_COUNT; i++)
        if (strlen(settings[i].name) == len && memcmp(settings[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static void set(values *vs, int i, const char *v) {
    free(vs->v[i]);
    vs->v[i] = strdup(v);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static int load_config(values *vs, const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "kvd: --config %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[8192];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        char *l = trim(line);
        if (*l == 0 || *l == '#')
            continue;
        char *eq = strchr(l, '=');
        char *key = l, *val = "true";
        if (eq != NULL) {
            *eq = 0;
            val = trim(eq + 1);
        }
        key = trim(key);
        int i = find(key, strlen(key));
        if (i < 0 || strcmp(key, "config") == 0) {
            fprintf(stderr, "kvd: %s:%d: unknown setting '%s'\n", path, lineno, key);
            rc = -1;
            continue;
        }
        if (settings[i].takes_value && eq == NULL) {
            fprintf(stderr, "kvd: %s:%d: '%s' needs '= value'\n", path, lineno, key);
            rc = -1;
            continue;
        }
        set(vs, i, val);
    }
    fclose(f);
    return rc;
}

static int parse_u64(const char *flag, const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "kvd: --%s '%s': want a number from %llu to %llu\n", flag, v,
                (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

static char *read_token(const char *path) {
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

/* The address of name in a --cluster list, or NULL. */
static char *cluster_addr(const char *cluster, const char *name) {
    size_t nlen = strlen(name);
    for (const char *p = cluster; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=')
            return strndup(p + nlen + 1, len - nlen - 1);
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

int kvd_serve(int argc, char **argv, enum kvd_mode mode) {
    values vs = {0};
    int rc = KVD_EXIT_USAGE;
    char *token = NULL, *listen = NULL;
    /* the config file first: flags given on the command line win */
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && load_config(&vs, argv[i + 1]) != 0)
            goto out;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            kvd_serve_usage(stdout);
            rc = KVD_EXIT_OK;
            goto out;
        }
        const char *eq = strchr(a, '=');
        int k = strncmp(a, "--", 2) == 0 ? find(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2))
                                         : -1;
        if (k < 0) {
            fprintf(stderr, "kvd: unknown flag or argument '%s' (kvd --help lists them)\n", a);
            goto out;
        }
        if (!settings[k].takes_value) {
            set(&vs, k, "true");
        } else if (eq) {
            set(&vs, k, eq + 1);
        } else if (i + 1 < argc) {
            set(&vs, k, argv[++i]);
        } else {
            fprintf(stderr, "kvd: --%s needs a value\n", settings[k].name);
            goto out;
        }
    }
    server_config cfg;
    server_config_default(&cfg);
    cfg.name = vs.v[find("name", 4)];
    cfg.data_dir = vs.v[find("data-dir", 8)];
    cfg.cluster = vs.v[find("cluster", 7)];
    cfg.metrics = vs.v[find("metrics", 7)];
    const char *l = vs.v[find("listen", 6)];
    cfg.join = vs.v[find("join", 4)];
    const char *from = vs.v[find("from", 4)];
    if ((from != NULL) != (mode == KVD_MODE_RESTORE)) {
        fprintf(stderr, mode == KVD_MODE_RESTORE ? "kvd restore: --from FILE is required\n"
                                                 : "kvd: --from belongs to kvd restore\n");
        goto out;
    }
    if (cfg.name == NULL || cfg.data_dir == NULL) {
        fprintf(stderr, "kvd: --name and --data-dir are required (kvd --help)\n");
        goto out;
    }
    if (strlen(cfg.name) > KV_NODE_NAME_BYTES_MAX || strchr(cfg.name, ',') ||
        strchr(cfg.name, '=')) {
        fprintf(stderr, "kvd: --name '%s': at most 63 bytes, no ',' or '='\n", cfg.name);
        goto out;
    }
    listen = l ? strdup(l) : cluster_addr(cfg.cluster, cfg.name);
    if (listen == NULL && (mode == KVD_MODE_SERVE || mode == KVD_MODE_INIT)) {
        fprintf(stderr, "kvd: --listen HOST:PORT is required (or --cluster naming %s)\n",
                cfg.name);
        goto out;
    }
    cfg.listen = listen;
    const char *tf = vs.v[find("token-file", 10)];
    if (tf != NULL && (token = read_token(tf)) == NULL)
        goto out;
    cfg.token = token;
    const char *u = vs.v[find("unsafe-no-fsync", 15)];
    cfg.unsafe_no_fsync = u != NULL && strcmp(u, "false") != 0 && strcmp(u, "0") != 0;
    uint64_t x;
    const char *v;
    if ((v = vs.v[find("snapshot-entries", 16)]) != NULL) {
        if (parse_u64("snapshot-entries", v, 10, UINT32_MAX, &x))
            goto out;
        cfg.snapshot_entries = x;
    }
    if ((v = vs.v[find("snapshot-bytes", 14)]) != NULL) {
        if (parse_u64("snapshot-bytes", v, 4096, 1ull << 40, &x))
            goto out;
        cfg.snapshot_bytes = x;
    }
    if ((v = vs.v[find("snapshots-keep", 14)]) != NULL) {
        if (parse_u64("snapshots-keep", v, 1, 100, &x))
            goto out;
        cfg.snapshots_keep = (uint32_t)x;
    }
    if ((v = vs.v[find("tick-ms", 7)]) != NULL) {
        if (parse_u64("tick-ms", v, 1, 10000, &x))
            goto out;
        cfg.tick_ms = (uint32_t)x;
    }
    if ((v = vs.v[find("election-ticks", 14)]) != NULL) {
        if (parse_u64("election-ticks", v, 3, 1000, &x))
            goto out;
        cfg.election_ticks = (uint32_t)x;
    }
    if ((v = vs.v[find("quota-bytes", 11)]) != NULL) {
        if (parse_u64("quota-bytes", v, 1, UINT64_MAX, &x))
            goto out;
        cfg.quota_bytes = x;
    }
    if ((v = vs.v[find("slow-fsync-ms", 13)]) != NULL) {
        if (parse_u64("slow-fsync-ms", v, 1, 600000, &x))
            goto out;
        cfg.slow_fsync_ms = (uint32_t)x;
    }
    if ((v = vs.v[find("wal-segment-bytes", 17)]) != NULL) {
        if (parse_u64("wal-segment-bytes", v, KV_WAL_SEGMENT_BYTES_MIN, 1ull << 40, &x))
            goto out;
        cfg.wal_segment_bytes = x;
    }
    if (mode == KVD_MODE_RESTORE) {
        if (cfg.cluster == NULL) {
            fprintf(stderr, "kvd restore: --cluster NAME=HOST:PORT,... (the new cluster) is required\n");
            goto out;
        }
        rc = server_restore(&cfg, from);
        goto out;
    }
    if (mode == KVD_MODE_INIT) {
        cfg.cluster_token = vs.v[find("cluster-token", 13)];
        cfg.cluster_id = vs.v[find("cluster-id", 10)];
        rc = server_init(&cfg);
        goto out;
    }
    if (mode == KVD_MODE_RECOVER) {
        rc = server_recover(&cfg);
        goto out;
    }
    rc = server_run(&cfg);
    if (rc == KVD_EXIT_CORRUPT) {
        fprintf(stderr, "kvd: %s holds corrupt data; the problems (as kvd check shows them):\n",
                cfg.data_dir);
        kvd_check(cfg.data_dir, stderr);
    }
out:
    for (size_t i = 0; i < SETTINGS_COUNT; i++)
        free(vs.v[i]);
    free(token);
    free(listen);
    return rc;
}
