/*
 * libkvclient: the C client of a kv cluster.
 *
 *   kv_client *c;
 *   int rc = kv_client_open(&c, "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001", NULL);
 *   rc = kv_put(c, "k", 1, "v", 1);
 *   void *v; size_t vlen;
 *   rc = kv_get(c, "k", 1, &v, &vlen);   ... kv_free(v);
 *   kv_client_close(c);
 *
 * Build: cc app.c $(pkg-config --cflags --libs kvclient)
 *    or, in CMake: find_package(kvclient) and link kvclient::kvclient (or
 *    kvclient::kvclient_static). C++ includes this header as it is.
 *
 * ERRORS. Every call returns 0 or a negative KV_E* code (kv/errors.h;
 * kv_strerror() gives words, kv_errword() the code word):
 *   KV_ENOTFOUND    get/del: the key is absent
 *   KV_ECOMPARE     cas: the current value differs (or exists, for "absent")
 *   KV_ETOOBIG      key over KV_KEY_BYTES_MAX or value over KV_VALUE_BYTES_MAX
 *                   (checked before sending; nothing is stored)
 *   KV_EBUSY        the cluster is overloaded and refused the request (it
 *                   was not applied); try again later
 *   KV_ENOSPACE     the cluster's disk quota is reached; writes are refused
 *   KV_EUNAVAILABLE no node could be reached or no leader was found within
 *                   the timeout; the request was never accepted by a leader
 *   KV_ETIMEOUT     the outcome is UNKNOWN: the write may or may not have
 *                   been applied (never reported as failed when it may have
 *                   succeeded)
 *   KV_EAUTH, KV_ECONFIG, KV_EVERSION  the handshake was refused (wrong
 *                   token, another cluster, another wire version)
 *   KV_EINVAL       bad arguments
 * kv_errstr() says more about the last failure on the calling thread:
 * which limit was exceeded, which file was missing, which argument is bad.
 *
 * RETRIES AND EXACTLY ONCE. The client finds the leader, follows NOTLEADER
 * redirects and reconnects on its own, within opts.timeout_ms per call.
 * Writes are made in sessions (each registered through the log): each
 * carries (client id, sequence number) and a retry reuses the number, so a
 * write is applied at most once even when it is sent twice. A session keeps
 * only the reply to its last write, so a client gives each write in flight
 * a session of its own: it registers a new one when all of its sessions
 * have a write in flight, up to 64; past 64 writes in flight at once,
 * writes share sessions (see the asynchronous form's note on leader
 * changes).
 *
 * READS are linearizable (the leader confirms its leadership with a quorum
 * before answering) unless the _stale form is used, which any node answers
 * from what it has applied (possibly behind).
 *
 * THREADS. A kv_client may be shared by any number of threads. The data
 * calls (kv_put, kv_get, kv_get_stale, kv_del, kv_cas, kv_cas_ex, kv_scan)
 * run at the same time from many threads on the client's one connection:
 * each call's request is sent at once by its own thread, with the others'
 * in flight, and the thread sleeps until its answer. One of the waiting
 * threads reads the connection for all and wakes the others (the library
 * starts no thread); a lone thread's call costs a send, a poll and a recv.
 * Each call keeps its own timeout. On a leader change or a lost connection,
 * every request in flight is resent, in the order first sent, with its own
 * (client id, seq), to the next leader: a write applied before the change
 * gets its stored reply (0, or what it answered then), never a second
 * application; a write whose outcome cannot be learned before its call's
 * deadline returns KV_ETIMEOUT, never a "failed" code; a request never
 * accepted by a leader returns KV_EUNAVAILABLE (or KV_EBUSY). At most
 * max_inflight (1024) calls at once; one more returns KV_EBUSY at once.
 * The asynchronous form and the operator calls (kv_node_status,
 * kv_member_*, kv_transfer_leader, kv_snapshot_save, kv_check) need the
 * client to themselves: called while another thread's call runs they return
 * KV_EBUSY, and while one of them runs (or asynchronous requests wait)
 * other threads' calls return KV_EBUSY; nothing is sent. kv_client_endpoint
 * answers with a copy of the calling thread's. kv_client_close: once no
 * other thread uses the client. kv_errstr is per thread: it tells about the
 * calling thread's last call. kv_free and kv_strerror may be called from
 * any thread.
 */
#ifndef KV_CLIENT_H
#define KV_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/errors.h"
#include "kv/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; kv_version() gives the library's (they
 * differ when a program runs against another build than it was compiled
 * with; the soname, libkvclient.so.0, changes only when the ABI breaks). */
#define KV_VERSION_MAJOR 0
#define KV_VERSION_MINOR 1
#define KV_VERSION_PATCH 0
#define KV_VERSION_STRING "0.1.0"
/* One number to compare: 0.1.0 is 100, 1.2.3 is 10203. */
#define KV_VERSION_NUMBER (KV_VERSION_MAJOR * 10000 + KV_VERSION_MINOR * 100 + KV_VERSION_PATCH)

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). */
const char *kv_version(void);
/* The library's KV_VERSION_NUMBER. */
int kv_version_number(void);

/* Detail of the last call on the calling thread that failed, as one line
 * for a person: "value of 1048577 bytes is over KV_VALUE_BYTES_MAX
 * (1048576)", "token file /etc/kv/token: No such file or directory",
 * "address 'localhost:27004': the host must be a numeric IPv4 address".
 * Where the failure left no detail, kv_strerror of its code; "" before any
 * failure. Never NULL; thread-local storage, valid until the thread's next
 * kv_* call. Read it right after the failed call. */
const char *kv_errstr(void);

typedef struct kv_client kv_client;

/* Options, frozen as they are: this struct's size is part of the ABI of
 * libkvclient.so.0, so it never grows. Options added later are set on a
 * kv_options object (below), which can. */
struct kv_client_options {
    uint32_t timeout_ms;         /* per call, retries included; default 5000 (0: default) */
    uint32_t connect_timeout_ms; /* per connection attempt; default 1000 (0: default) */
    const char *token;           /* the cluster token, or NULL */
    const char *token_file;      /* read the token from this file (first line), or NULL */
};

/* Fills o with the defaults. */
void kv_client_options_init(struct kv_client_options *o);

/* Connects to one of the comma-separated "host:port" endpoints. opts may
 * be NULL. Fails with KV_EUNAVAILABLE when none answers within the
 * timeout, KV_EINVAL for a malformed endpoint list (nothing connects). */
int kv_client_open(kv_client **out, const char *endpoints, const struct kv_client_options *opts);
void kv_client_close(kv_client *c);

/* Options that can grow: an opaque object with one setter per option (new
 * options are new setters; the object's size is the library's business).
 *   kv_options *o = kv_options_new();
 *   kv_options_set_timeout_ms(o, 2000);
 *   rc = kv_client_open_ex(&c, "10.0.0.1:7001", o);
 *   kv_options_free(o);
 * kv_options_new returns NULL when out of memory; the object holds the
 * defaults until set. Strings are copied. Setters return 0, KV_EINVAL (o
 * NULL, a value out of range: timeouts are 1 ms to 1 day) or KV_ENOMEM. */
typedef struct kv_options kv_options;
kv_options *kv_options_new(void);
void kv_options_free(kv_options *o);
int kv_options_set_timeout_ms(kv_options *o, uint32_t ms);
int kv_options_set_connect_timeout_ms(kv_options *o, uint32_t ms);
int kv_options_set_token(kv_options *o, const char *token);           /* NULL: none */
int kv_options_set_token_file(kv_options *o, const char *path);       /* NULL: none */
/* kv_client_open with an options object (NULL: the defaults); o may be
 * freed once it returns. */
int kv_client_open_ex(kv_client **out, const char *endpoints, const kv_options *o);

int kv_put(kv_client *c, const void *key, size_t key_len, const void *value, size_t value_len);
/* *value is malloc'd, the caller frees it with kv_free (NULL when len 0). */
int kv_get(kv_client *c, const void *key, size_t key_len, void **value, size_t *value_len);
/* As kv_get, answered by any node from what it applied; *applied_index
 * (may be NULL) gets that node's applied index. */
int kv_get_stale(kv_client *c, const void *key, size_t key_len, void **value, size_t *value_len,
                 uint64_t *applied_index);
/* KV_ENOTFOUND if absent. */
int kv_del(kv_client *c, const void *key, size_t key_len);
/* expected NULL: the key must be absent. KV_ECOMPARE if it differs. */
int kv_cas(kv_client *c, const void *key, size_t key_len, const void *expected,
           size_t expected_len, const void *value, size_t value_len);
/* kv_cas that also tells, on KV_ECOMPARE, the current value: *current
 * (malloc'd, kv_free; NULL when absent) and *present. Either pointer may be
 * NULL. */
int kv_cas_ex(kv_client *c, const void *key, size_t key_len, const void *expected,
              size_t expected_len, const void *value, size_t value_len, void **current,
              size_t *current_len, bool *present);

typedef struct kv_pair {
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
} kv_pair;

/* Keys starting with prefix and greater than start_after (NULL/0: from the
 * first), in key order, at most limit (0: the node's limit, 10000) and about
 * 1 MiB per call. *more is true when more keys follow: call again with
 * start_after = the last key. *pairs is owned by the caller:
 * kv_pairs_free(*pairs, *count). Linearizable. */
int kv_scan(kv_client *c, const void *prefix, size_t prefix_len, const void *start_after,
            size_t start_after_len, uint32_t limit, kv_pair **pairs, size_t *count, bool *more);
void kv_pairs_free(kv_pair *pairs, size_t count);

void kv_free(void *p);

/* The endpoint currently talked to ("host:port"), or NULL; and whether it
 * is the leader as far as the client knows. A copy for the calling thread,
 * valid until its next call of this function. */
const char *kv_client_endpoint(const kv_client *c, bool *is_leader);

/* ---- asynchronous form: many requests in flight on one connection ------- */

/* A finished request: status as the synchronous call would return; value
 * (GET) is borrowed for the callback only. */
typedef void (*kv_done_fn)(void *arg, int status, const void *value, size_t value_len);

/* Queue a put / get; returns 0 (cb will be called exactly once from
 * kv_client_poll), KV_EBUSY when max_inflight requests already wait (poll
 * first) or another thread's synchronous call runs, KV_ETOOBIG, KV_EINVAL.
 * Data is copied. Writes go on the wire in the order queued, each numbered
 * in one of the client's sessions (one with no write in flight while there
 * are fewer than 64 in flight). The asynchronous form is for one thread at
 * a time (callbacks run in the thread that polls). */
int kv_put_async(kv_client *c, const void *key, size_t key_len, const void *value,
                 size_t value_len, kv_done_fn cb, void *arg);
int kv_get_async(kv_client *c, const void *key, size_t key_len, kv_done_fn cb, void *arg);
/* Sends what is queued and waits up to timeout_ms for answers, calling
 * callbacks; returns the number of requests completed (>= 0) or a negative
 * KV_E* code for a fault of the client itself. Requests past their deadline
 * complete with KV_ETIMEOUT (writes) or KV_EUNAVAILABLE (reads). */
int kv_client_poll(kv_client *c, int timeout_ms);
/* Requests queued or in flight. */
size_t kv_client_inflight(const kv_client *c);
/* Most requests in flight at once (default and at most 1024). */
void kv_client_set_max_inflight(kv_client *c, uint32_t n);
/* Mixing the forms: a synchronous call (or kv_node_status(c, NULL, ...)
 * without a connection to spare) while asynchronous requests wait returns
 * KV_EBUSY: poll them to completion first. A callback may queue more
 * requests; kv_client_poll or a synchronous call from a callback returns
 * KV_EINVAL. kv_client_close drops what is still queued or in flight
 * without calling the callbacks. After a leader change, a write that shared
 * its session with a newer one (more than 64 writes in flight, or while the
 * client registers its sessions) and was resent behind it after the newer
 * one was applied completes with KV_ETIMEOUT (the session keeps only its
 * last reply): it may have been applied. */

/* ---- revisions and transactions (docs/protocol.md) ---------------------- */

/* A key's revisions. Revisions are log indexes: mod_rev is the index of the
 * entry that last wrote the key, create_rev of the one that created it
 * (since it was last absent), version counts its writes since then (1 after
 * creation); lease is the lease it is attached to (0: none). */
typedef struct kv_keyinfo {
    uint64_t create_rev, mod_rev, version, lease;
} kv_keyinfo;

/* kv_get that also fills *info (may be NULL). */
int kv_get_ex(kv_client *c, const void *key, size_t key_len, void **value, size_t *value_len,
              kv_keyinfo *info);
/* kv_get_stale that also fills *info (may be NULL): the revisions as the
 * answering node applied them. */
int kv_get_stale_ex(kv_client *c, const void *key, size_t key_len, void **value,
                    size_t *value_len, uint64_t *applied_index, kv_keyinfo *info);
/* kv_scan that also gives each pair's revisions: *infos (may be NULL) is
 * malloc'd, parallel to *pairs (kv_free; NULL when *count is 0). */
int kv_scan_ex(kv_client *c, const void *prefix, size_t prefix_len, const void *start_after,
               size_t start_after_len, uint32_t limit, kv_pair **pairs, kv_keyinfo **infos,
               size_t *count, bool *more);
/* Deletes every key starting with prefix (prefix_len 0: every key), in
 * entries of at most KV_DELETE_PREFIX_KEYS_MAX keys each, until none is
 * left; *deleted (may be NULL) gets the count. Each entry is atomic, the
 * whole is not: a failure part-way leaves the keys of the entries applied
 * deleted (*deleted counts them). Exactly once per entry, as kv_put. */
int kv_del_prefix(kv_client *c, const void *prefix, size_t prefix_len, uint64_t *deleted);

/* A transaction, built up and then committed as one log entry: if every
 * compare holds, the success ops run in order, else the failure ops. At
 * most KV_TXN_OPS_MAX compares and ops together, and KV_COMMAND_BYTES_MAX
 * encoded (KV_ETOOBIG from the call that adds one too many; the commit
 * checks the bytes). The kv_txn copies the keys and values given. Not for
 * two threads at once; it may be committed many times. */
typedef struct kv_txn kv_txn;
kv_txn *kv_txn_new(void); /* NULL: out of memory */
void kv_txn_free(kv_txn *t);

enum kv_cmp_target {
    KV_CMP_VALUE,   /* the value (an absent key has none: only NOT_EQUAL holds) */
    KV_CMP_VERSION, /* number: version (absent: 0) */
    KV_CMP_CREATE,  /* number: create_rev (absent: 0) */
    KV_CMP_MOD,     /* number: mod_rev (absent: 0) */
    KV_CMP_LEASE    /* number: lease (absent or none: 0) */
};
enum kv_cmp_result {
    KV_CMP_EQUAL,
    KV_CMP_NOT_EQUAL,
    KV_CMP_LESS,   /* the key's is less than the one given */
    KV_CMP_GREATER /* the key's is greater */
};
/* A compare of key: against value for KV_CMP_VALUE, against number for the
 * others (value ignored). 0, KV_EINVAL, KV_ETOOBIG, KV_ENOMEM. */
int kv_txn_compare(kv_txn *t, enum kv_cmp_target target, enum kv_cmp_result result, const void *key,
                   size_t key_len, const void *value, size_t value_len, uint64_t number);
/* Ops, on the success (on_success true) or the failure list. lease: attach
 * the key to it (0: none). */
int kv_txn_put(kv_txn *t, bool on_success, const void *key, size_t key_len, const void *value,
               size_t value_len, uint64_t lease);
int kv_txn_del(kv_txn *t, bool on_success, const void *key, size_t key_len);
int kv_txn_get(kv_txn *t, bool on_success, const void *key, size_t key_len);

/* One op's outcome, in the order of the ops that ran. code: 0, or
 * KV_ENOTFOUND (a get or a del of an absent key). A get's value (malloc'd,
 * NULL when empty) and info. */
typedef struct kv_txn_result {
    int code;
    void *value;
    size_t value_len;
    kv_keyinfo info;
} kv_txn_result;

/* Commits t: 0 and *succeeded (whether every compare held) with one result
 * per op that ran (*results malloc'd, kv_txn_results_free; results may be
 * NULL when not wanted), or an error as kv_put's (KV_ETIMEOUT: the outcome
 * is unknown; KV_EINVAL/KV_ETOOBIG with kv_errstr naming the op when the
 * cluster refused it: nothing changed). Retried in one session like a put:
 * applied exactly once. */
int kv_txn_commit(kv_client *c, const kv_txn *t, bool *succeeded, kv_txn_result **results,
                  size_t *count);
void kv_txn_results_free(kv_txn_result *r, size_t count);

/* ---- watch ---------------------------------------------------------------- */

/* The events on keys starting with a prefix, from a revision on (a key's
 * revisions are log indexes: docs/protocol.md). */
enum kv_event_type { KV_EVENT_PUT = 0, KV_EVENT_DELETE = 1 };
typedef struct kv_event {
    enum kv_event_type type;
    const void *key; /* valid during the callback only */
    size_t key_len;
    const void *value; /* PUT: the new value; DELETE: empty */
    size_t value_len;
    uint64_t revision;   /* of the write (its mod revision) */
    uint64_t create_rev; /* PUT: the key's create revision */
    uint64_t version;    /* PUT: writes since its creation (1: created here) */
    uint64_t lease;      /* PUT: the lease it is attached to, 0: none */
} kv_event;

/* ev NULL: no event for about a second (the callback can decide to stop).
 * Non-zero return stops. */
typedef int (*kv_watch_fn)(void *arg, const kv_event *ev);

/* Calls fn for every event on keys starting with prefix[0..prefix_len)
 * (0 bytes: every key) from revision from_rev on (0: from the next write),
 * once each and in revision order (the events of one transaction in their
 * order), until fn returns non-zero, which kv_watch returns. It blocks the
 * calling thread on a connection of its own (c gives the endpoints, the
 * token and the connect timeout; c's other calls go on meanwhile, from
 * other threads). Any node serves it from what it applied; when the
 * connection is lost, the node dies or the node cancels the watch (CANCELED:
 * it fell behind), it reconnects (to any node, with backoff) and resumes
 * after the last event delivered: no event is missed or repeated.
 * KV_ECOMPACTED when the events it must resume from are no longer kept
 * (kv_errstr names the oldest revision kept; KV_WATCH_HISTORY_REVS);
 * KV_EAUTH, KV_ECONFIG, KV_EVERSION when a node refuses the handshake;
 * KV_EINVAL, KV_ETOOBIG (prefix over KV_KEY_BYTES_MAX) for bad arguments. */
int kv_watch(kv_client *c, const void *prefix, size_t prefix_len, uint64_t from_rev,
             kv_watch_fn fn, void *arg);

/* ---- leases --------------------------------------------------------------- */

/* A lease: keys attached to it are deleted, through the log on every node,
 * when it is revoked or when the leader sees no keepalive for ttl seconds
 * (docs/protocol.md "Leases"). A leader that takes over gives every lease
 * its whole ttl again, so a lease never expires early; once keepalives
 * stop, its keys are gone within ttl plus an election timeout. */
typedef struct kv_lease {
    uint64_t id;       /* never 0 */
    int64_t ttl;       /* seconds granted */
    int64_t remaining; /* seconds left as the leader counts (-1: not known) */
    uint64_t keys;     /* keys attached */
} kv_lease;

/* A new lease of ttl_seconds (1..KV_LEASE_TTL_MAX): its id in *id. A write
 * (exactly once in a session). KV_EINVAL for a ttl out of range, KV_ETOOBIG
 * when KV_LEASES_MAX leases exist. */
int kv_lease_grant(kv_client *c, int64_t ttl_seconds, uint64_t *id);
/* Deletes the lease and every key attached to it, in one entry.
 * KV_ENOTFOUND when there is no such lease (expired, or revoked). */
int kv_lease_revoke(kv_client *c, uint64_t id);
/* One keepalive: the leader restarts the lease's ttl; *remaining (may be
 * NULL) the seconds it has now. KV_ENOTFOUND when the lease is gone
 * (expired: its keys are deleted or about to be). Keep a lease alive by
 * calling this well within its ttl (kvcli: every ttl/3). */
int kv_lease_keepalive(kv_client *c, uint64_t id, int64_t *remaining);
/* Every lease, by id, as the leader has them: *leases malloc'd, owned by
 * the caller (kv_free), *count of them. */
int kv_lease_list(kv_client *c, kv_lease **leases, size_t *count);
/* kv_put that attaches the key to lease (0: none; a put without a lease
 * detaches the key from the one it had). KV_ENOTFOUND when the lease does
 * not exist (nothing is written), KV_ETOOBIG when it has
 * KV_LEASE_KEYS_MAX keys. */
int kv_put_lease(kv_client *c, const void *key, size_t key_len, const void *value,
                 size_t value_len, uint64_t lease);
/* kv_put_lease only when the key is absent (CAS_ABSENT): KV_ECOMPARE when
 * it exists (nothing is written). The building block of a lock: the key
 * lives as long as the lease. */
int kv_create_lease(kv_client *c, const void *key, size_t key_len, const void *value,
                    size_t value_len, uint64_t lease);

/* ---- operators ---------------------------------------------------------- */

/* The status of the node at endpoint ("host:port", NULL: the current one).
 * The returned text is one line of "key=value" pairs:
 *   name= address= role= term= leader= commit= applied= last= snapshot=
 *   version= cluster= unsafe_no_fsync= (and warning= when there is one)
 * e.g. "name=n1 address=10.0.0.1:7001 role=leader term=3 leader=n1 commit=9
 * applied=9 last=9 snapshot=0 version=0.1.0 cluster=a52c... unsafe_no_fsync=false";
 * leader= is empty when none is known; warning=, free text, is last.
 * malloc'd, kv_free it. */
int kv_node_status(kv_client *c, const char *endpoint, char **line);

/* ---- membership and operations (kvcli member / transfer-leader / check) -- */

typedef struct kv_member {
    char name[64];
    char address[128];
    uint64_t id;
    bool learner; /* receives the log, does not vote yet */
    bool joining; /* added by member add, not yet in the log's membership */
} kv_member;

/* The members as the leader knows them. *members is malloc'd (kv_free). */
int kv_member_list(kv_client *c, kv_member **members, size_t *count);
/* Adds node name at address (host:port) as a learner; the leader promotes
 * it to voter once it has caught up. Returns once the learner is in the
 * membership: start the new node (kvd --join) before or after. KV_EEXIST
 * when the name is a member, KV_EBUSY while another change is in progress,
 * KV_EINVAL for a bad name or address. */
int kv_member_add(kv_client *c, const char *name, const char *address);
/* Removes member name. KV_ENOTFOUND when it is not a member. */
int kv_member_remove(kv_client *c, const char *name);
/* Hands leadership to member name; returns once it leads (or KV_ETIMEOUT). */
int kv_transfer_leader(kv_client *c, const char *name);

/* Streams a consistent snapshot of the whole store from the leader into the
 * file path (written as path.tmp, synced, renamed: a file at path is
 * complete). *index (may be NULL) gets the log index it covers. The file is
 * checksummed end to end (src/snapfile/snapfile.h; `kvcli snapshot verify`
 * checks one offline). */
int kv_snapshot_save(kv_client *c, const char *path, uint64_t *index);
typedef struct kv_check_node {
    char name[64];
    char address[128];
    int status;    /* 0 agrees, KV_ECORRUPT differs, or why no hash (UNAVAILABLE, ...) */
    uint64_t hash; /* its state machine's hash at the check's index */
} kv_check_node;

/* Compares the state machines: the leader logs a check point at index I;
 * every member records the hash of its state machine at exactly I; the
 * hashes are compared. *nodes is malloc'd (kv_free). Returns 0 when every
 * member answered and all agree, KV_ECORRUPT when any differs (its status is
 * KV_ECORRUPT: the one that disagrees with the majority), KV_EUNAVAILABLE
 * when a member did not answer. */
int kv_check(kv_client *c, uint64_t *index, kv_check_node **nodes, size_t *count);

#ifdef __cplusplus
}
#endif

#endif /* KV_CLIENT_H */
