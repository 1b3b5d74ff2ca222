/*
 * src/server: one kv node. Wires the network (src/net), the Raft core
 * (src/raft) and storage (src/storage) on one libuv loop, as in
 * docs/architecture.md:
 *
 *   client request -> proposal (leader) or ReadIndex wait
 *   every loop turn: while raft has a Ready:
 *       hard state durable (term/vote) -> snapshot install -> chunk store
 *       -> send messages -> append entries to the log (asynchronous, group
 *       commit; the log's threads report durability back through uv_async)
 *       -> apply committed entries to RocksDB -> serve confirmed reads
 *       -> advance
 *   replies go out only after an entry is committed and applied.
 *
 * Fail-stop: a failed fsync or write, or corruption found while running,
 * ends the process with the matching exit code (enum kvd_exit) after one log
 * line with the code word; systemd restarts it.
 */
#ifndef KV_SERVER_SERVER_H
#define KV_SERVER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#define KV_VERSION_STRING "0.1.0"

/* kvd's exit codes, the same in every mode (kvd, init, restore, recover,
 * check). The numbers never change: deploy/kvd@.service
 * (RestartPreventExitStatus), docs/deploy.md and the tests depend on them.
 * They are named after the binary that exits with them; the server is
 * where they are decided (server_exit_code, and the fail-stop paths). */
enum kvd_exit {
    KVD_EXIT_OK = 0,      /* done, or a clean stop (SIGTERM) */
    KVD_EXIT_USAGE = 2,   /* a bad flag, config value or cluster description */
    KVD_EXIT_LOCKED = 3,  /* another kvd holds the data dir */
    KVD_EXIT_CORRUPT = 4, /* corrupt data (kvd check names the file and offset) */
    KVD_EXIT_IO = 5,      /* a fatal I/O error (a failed write or fsync, ...) */
};

/* The exit code that a KV_E* error rc (0: none) ends kvd with: corruption
 * (KV_ECORRUPT, KV_EMISSING, KV_EVERSION) KVD_EXIT_CORRUPT, KV_ELOCKED
 * KVD_EXIT_LOCKED, a bad configuration (KV_EINVAL, KV_ECONFIG)
 * KVD_EXIT_USAGE, anything else KVD_EXIT_IO. */
int server_exit_code(int rc);

/* Defaults of the flags. */
#define SERVER_TICK_MS_DEFAULT 50u
#define SERVER_ELECTION_TICKS_DEFAULT 10u
#define SERVER_SNAPSHOT_ENTRIES_DEFAULT 10000u
#define SERVER_SNAPSHOT_BYTES_DEFAULT (64ull << 20)
#define SERVER_QUOTA_BYTES_DEFAULT (8ull << 30)
/* kvd --join waits this long for a cluster without a leader (an election,
 * a healing partition) before it gives up with exit 5. */
#define SERVER_JOIN_WAIT_MS 60000u

typedef struct server_config {
    const char *name;        /* this node's name (--name) */
    const char *data_dir;    /* --data-dir */
    const char *listen;      /* host:port for clients and peers */
    const char *cluster;     /* n1=host:port,...; used to bootstrap an empty data dir */
    const char *metrics;     /* host:port for /metrics and /health, or NULL */
    const char *token;       /* the cluster token (read from --token-file), or NULL */
    const char *join;        /* host:port of a member: join that cluster, or NULL */
    const char *cluster_token; /* kvd init: the cluster id is derived from it, or NULL */
    const char *cluster_id;    /* kvd init: adopt this cluster id (32 hex digits), or NULL */
    uint64_t quota_bytes;    /* disk quota of the data dir (NOSPACE past it) */
    uint64_t wal_segment_bytes; /* 0: the default (tests make it small) */
    uint64_t wal_queue_bytes;   /* 0: the default (tests make it small) */
    uint32_t slow_fsync_ms;     /* log fsyncs slower than this are logged and counted */
    bool unsafe_no_fsync;    /* syncs do nothing: for tests only */
    uint64_t snapshot_entries; /* snapshot every N applied entries */
    uint64_t snapshot_bytes;   /* or every N bytes of applied entries */
    uint32_t snapshots_keep;   /* snapshots kept on disk */
    uint32_t tick_ms;          /* one Raft tick */
    uint32_t election_ticks;   /* election timeout in ticks */
    bool read_lease;           /* linearizable reads on the leader's lease
                                  (no heartbeat round per read batch); assumes
                                  the nodes' clocks tick at the same rate */
} server_config;

/* Fills cfg with the defaults (strings NULL). */
void server_config_default(server_config *cfg);

/* Runs the node until SIGTERM/SIGINT (returns KVD_EXIT_OK) or a fault it
 * cannot handle: KVD_EXIT_USAGE (bad configuration, e.g. a bad --cluster or
 * an empty data dir without one), KVD_EXIT_LOCKED (another kvd holds the data
 * dir), KVD_EXIT_CORRUPT (the caller then prints the problems as kvd check
 * does), KVD_EXIT_IO. Faults found while serving exit the process directly. */
int server_run(const server_config *cfg);

/* Node ids are derived from names: nonzero, the same on every node. */
uint64_t server_node_id(const char *name);

#endif /* KV_SERVER_SERVER_H */
