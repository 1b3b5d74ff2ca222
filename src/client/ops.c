/*
 * libkvclient: membership and operations (client.h, "membership and
 * operations"), on the engine and on connections of their own.
 *
 *   member list      STATUS, following the node's leader_name through the
 *                    membership's addresses until the node that answers
 *                    leads; its membership
 *   member add/remove, transfer-leader, check point
 *                    leader-only requests through the engine: NOTLEADER
 *                    redirects, BUSY (a change in progress) retried with
 *                    backoff until the deadline; a change sent and retried
 *                    may find itself applied (EEXIST / NOTFOUND then mean
 *                    done). transfer-leader then polls STATUS until the
 *                    target leads.
 *   snapshot save    SNAPSHOT_READ pieces from the leader on a connection
 *                    of its own (every piece from one node), into the file
 *                    format of src/snapfile/snapfile.h
 *   check            CHECK_POINT at the leader, then HASH at that index on
 *                    every member at once, each on its own connection
 *
 * Every call is bounded by the client's timeout (kv_snapshot_save: per
 * piece, so a large store streams as long as it makes progress).
 */
#include "client/client_int.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "net/frame.h"
#include "snapfile/snapfile.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NS_PER_MS 1000000ull
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* transfer-leader: STATUS every this often until the target leads. */
#define TRANSFER_POLL_MS 50u
/* check: check points tried in all when a member cannot know the hash at
 * one (it restarted or installed a snapshot past it). */
#define CHECK_ROUNDS 3
/* snapshot save: fresh snapshots taken in all (the one being read went
 * away, or the leader changed) before giving up. */
#define SNAP_STARTS_MAX 8
/* snapshot save: pause after a failed attempt to reach the leader. */
#define SNAP_RETRY_MS 50u

static uint64_t deadline_of(const kv_client *c) {
    return kv_now_ns() + (uint64_t)c->timeout_ms * NS_PER_MS;
}

static void sleep_until(uint64_t until_ns) {
    uint64_t now = kv_now_ns();
    if (until_ns > now)
        (void)poll(NULL, 0, kvc_wait_ms(until_ns, now));
}

static bool is_refusal(int rc) {
    return rc == KV_EAUTH || rc == KV_ECONFIG || rc == KV_EVERSION;
}

/* A node name as in --name: 1..63 bytes, printable, no space, ',' or '='
 * (it goes in --cluster lists). */
/* A node name: 1 to KV_NODE_NAME_BYTES_MAX bytes, no space, control, ','
 * or '='. Every public call taking one starts here: the detail is cleared. */
static bool name_ok(const char *name) {
    kvc_errstr_clear();
    if (name == NULL || name[0] == '\0' || strlen(name) > KV_NODE_NAME_BYTES_MAX) {
        (void)kvc_errstr_set(KV_EINVAL, "node name '%.80s': want 1 to %u bytes", name ? name : "",
                             KV_NODE_NAME_BYTES_MAX);
        return false;
    }
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == ',' || *p == '=') {
            (void)kvc_errstr_set(KV_EINVAL, "node name '%s': no spaces, control characters, "
                                 "',' or '='", name);
            return false;
        }
    return true;
}

/* A member's address: HOST:PORT with a numeric host (the nodes dial it
 * without a resolver). */
static bool address_ok(const char *address) {
    kvc_endpoint ep;
    struct in6_addr a;
    if (address == NULL || strlen(address) >= sizeof((kv_member *)0)->address ||
        kvc_endpoint_parse(address, strlen(address), &ep) != 0) {
        (void)kvc_errstr_set(KV_EINVAL, "address '%.130s': want HOST:PORT (port 1 to 65535)",
                             address ? address : "");
        return false;
    }
    if (inet_pton(AF_INET, ep.host, &a) != 1 && inet_pton(AF_INET6, ep.host, &a) != 1) {
        (void)kvc_errstr_set(KV_EINVAL, "address '%s': the host must be a numeric IP address "
                             "(such as 127.0.0.1), not a name", address);
        return false;
    }
    return true;
}

static const kv_member *member_named(const kvc_result *res, const char *name) {
    for (size_t i = 0; i < res->members_count; i++)
        if (strcmp(res->members[i].name, name) == 0)
            return &res->members[i];
    return NULL;
}

/* ---- the leader's STATUS ----------------------------------------------------- */

/* STATUS of the current node (the engine's connection). */
static int status_here(kv_client *c, uint64_t deadline, kvc_result *res) {
    *res = (kvc_result){.want_members = true};
    int rc;
    kvc_slot *s = kvc_sync_begin(c, KV__REQUEST__TYPE__STATUS, res, &rc);
    if (s == NULL)
        return rc;
    rc = kvc_sync_run(c, s, res, deadline);
    if (rc != 0) {
        free(res->members);
        res->members = NULL;
        res->members_count = 0;
    }
    return rc;
}

/* The leader's STATUS: asks the current node; while it names another
 * leader, goes there (its address from the membership); while it knows
 * none, tries the next endpoint after a pause. On 0 the engine's
 * connection is at the leader and res->members is malloc'd (the caller
 * frees it). */
static int leader_status(kv_client *c, uint64_t deadline, kvc_result *res) {
    uint32_t hops = 0, pause_ms = KVC_PAUSE_MS_MIN;
    for (;;) {
        int rc = status_here(c, deadline, res);
        if (rc != 0)
            return rc;
        if (res->leader_name[0] != '\0' && strcmp(res->leader_name, res->node_name) == 0) {
            if (!res->has_membership) {
                free(res->members);
                res->members = NULL;
                return KV_EPROTO; /* a node that does not say its membership */
            }
            if (c->conn.fd >= 0 && strcmp(c->cur_text, res->endpoint) == 0)
                c->is_leader = true;
            return 0;
        }
        char addr[sizeof res->members[0].address] = "";
        const kv_member *m = res->leader_name[0] ? member_named(res, res->leader_name) : NULL;
        if (m != NULL)
            snprintf(addr, sizeof addr, "%s", m->address);
        free(res->members);
        res->members = NULL;
        if (kv_now_ns() >= deadline)
            return KV_EUNAVAILABLE;
        /* Two nodes naming each other must not spin: a few hops at once,
         * then pauses, growing (every answer resets the engine's). */
        c->redirects_in_row = addr[0] ? hops++ : 0;
        c->pause_ms = pause_ms;
        if (addr[0] == '\0' || hops > KVC_REDIRECTS_FREE)
            pause_ms = MIN(2 * pause_ms, KVC_PAUSE_MS_MAX);
        kvc_move(c, addr[0] ? addr : NULL);
    }
}

static int member_list_alone(kv_client *c, kv_member **members, size_t *count) {
    kvc_errstr_clear();
    if (members == NULL || count == NULL)
        return KV_EINVAL;
    *members = NULL;
    *count = 0;
    if (c == NULL)
        return KV_EINVAL;
    kvc_result res;
    int rc = leader_status(c, deadline_of(c), &res);
    if (rc != 0)
        return rc;
    *members = res.members;
    *count = res.members_count;
    return 0;
}

/* ---- changes ------------------------------------------------------------------ */

static int run_change(kv_client *c, Kv__Request__Type type, const char *name, const char *address,
                      uint64_t deadline, kvc_result *res) {
    *res = (kvc_result){0};
    int rc;
    kvc_slot *s = kvc_sync_begin(c, type, res, &rc);
    if (s == NULL)
        return rc;
    s->name = name;
    s->address = address;
    return kvc_sync_run(c, s, res, deadline);
}

static int member_add_alone(kv_client *c, const char *name, const char *address) {
    if (c == NULL || !name_ok(name) || !address_ok(address))
        return KV_EINVAL;
    uint64_t deadline = deadline_of(c);
    kvc_result res;
    int rc = run_change(c, KV__REQUEST__TYPE__MEMBER_ADD, name, address, deadline, &res);
    if (rc == KV_EEXIST && res.unknown) {
        /* An attempt whose answer was lost may have added it: done when
         * the member is there with this address; unknown when that cannot
         * be told. */
        kvc_result st;
        rc = leader_status(c, deadline, &st);
        if (rc == 0) {
            const kv_member *m = member_named(&st, name);
            rc = m != NULL && strcmp(m->address, address) == 0 ? 0 : KV_EEXIST;
            free(st.members);
        } else {
            rc = KV_ETIMEOUT;
        }
    }
    return rc;
}

static int member_remove_alone(kv_client *c, const char *name) {
    if (c == NULL || !name_ok(name))
        return KV_EINVAL;
    kvc_result res;
    int rc = run_change(c, KV__REQUEST__TYPE__MEMBER_REMOVE, name, NULL, deadline_of(c), &res);
    if (rc == KV_ENOTFOUND && res.unknown)
        rc = 0; /* an attempt whose answer was lost removed it */
    return rc;
}

static int transfer_leader_alone(kv_client *c, const char *name) {
    if (c == NULL || !name_ok(name))
        return KV_EINVAL;
    uint64_t deadline = deadline_of(c);
    kvc_result res;
    int rc = run_change(c, KV__REQUEST__TYPE__TRANSFER_LEADER, name, NULL, deadline, &res);
    if (rc != 0)
        return rc;
    /* The transfer started: the node talked to may lead no more. */
    c->is_leader = false;
    for (;;) {
        uint64_t now = kv_now_ns();
        if (now >= deadline)
            return kvc_errstr_set(KV_ETIMEOUT, "%s did not take over within the timeout", name);
        sleep_until(MIN(deadline, now + TRANSFER_POLL_MS * NS_PER_MS));
        kvc_result st;
        if (status_here(c, deadline, &st) != 0)
            continue; /* an election under way: ask again */
        bool done = strcmp(st.leader_name, name) == 0;
        /* raft gives a transfer up after an election timeout */
        bool given_up = !done && strcmp(st.leader_name, st.node_name) == 0 && !st.transferring;
        free(st.members);
        if (done) {
            c->is_leader = strcmp(st.node_name, name) == 0;
            return 0;
        }
        if (given_up)
            return kvc_errstr_set(KV_ETIMEOUT,
                                  "the leader %s gave the transfer up: %s did not take over "
                                  "within an election timeout (is it up and reachable?)",
                                  st.node_name, name);
    }
}

/* ---- snapshot save ----------------------------------------------------------- */

static int errno_code(int e) {
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return KV_ENOSPACE;
    case EACCES:
    case EPERM:
    case EROFS:
        return KV_EPERM;
    case ENOENT:
    case ENOTDIR:
        return KV_EMISSING;
    case ENOMEM:
        return KV_ENOMEM;
    default:
        return KV_EIO;
    }
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return errno_code(n < 0 ? errno : EIO);
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int fsync_dir_of(const char *path) {
    char *dir = strdup(path);
    if (dir == NULL)
        return KV_ENOMEM;
    char *slash = strrchr(dir, '/');
    const char *d = slash == NULL ? "." : slash == dir ? "/" : (*slash = '\0', dir);
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? errno_code(errno) : 0;
    if (fd >= 0 && fsync(fd) != 0 && errno != EINVAL)
        rc = errno_code(errno);
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/* One download in progress. */
typedef struct snap_dl {
    int fd;     /* path.tmp */
    kvc_conn k; /* to the node read from */
    char node[KV_NODE_NAME_BYTES_MAX + 1];
    bool started; /* a snapshot is being read (index, term, total known) */
    uint64_t index, term, total, off;
    kv_xxh3_state x; /* of the stream bytes written */
    uint32_t starts; /* fresh snapshots asked for */
} snap_dl;

/* The answer to the first request of a snapshot: the header goes out, the
 * stream begins. */
static int snap_begin(snap_dl *d, const Kv__Response *r) {
    if (++d->starts > SNAP_STARTS_MAX)
        return KV_ESTALE; /* snapshots keep going away under the download */
    if (r->snap_index == 0 || r->snap_total < 4)
        return KV_EPROTO; /* not a snapshot stream (a u32 manifest length first) */
    d->index = r->snap_index;
    d->term = r->snap_term;
    d->total = r->snap_total;
    d->off = 0;
    d->started = true;
    kv_xxh3_free(&d->x);
    if (kv_xxh3_init(&d->x) != 0)
        return KV_ENOMEM;
    if (ftruncate(d->fd, 0) != 0)
        return errno_code(errno);
    uint8_t h[SNAPFILE_HEADER_BYTES];
    snapfile_header_encode(
        h, &(snapfile_info){.index = d->index, .term = d->term, .stream_len = d->total});
    return pwrite_all(d->fd, h, sizeof h, 0);
}

static int snap_piece(snap_dl *d, const Kv__Response *r) {
    size_t len = r->value.len;
    if (len > d->total - d->off || (len == 0 && d->off < d->total))
        return KV_EPROTO; /* past the stream's end, or no progress */
    int rc = len ? pwrite_all(d->fd, r->value.data, len, SNAPFILE_HEADER_BYTES + d->off) : 0;
    if (rc != 0)
        return rc;
    kv_xxh3_update(&d->x, r->value.data, len);
    d->off += len;
    return 0;
}

/* The trailer, synced, renamed, the directory synced. */
static int snap_finish(snap_dl *d, const char *tmp, const char *path) {
    uint8_t t[8];
    kv_put_u64(t, kv_xxh3_digest(&d->x));
    int rc = pwrite_all(d->fd, t, sizeof t, SNAPFILE_HEADER_BYTES + d->total);
    if (rc == 0 && ftruncate(d->fd, (off_t)(SNAPFILE_HEADER_BYTES + d->total + sizeof t)) != 0)
        rc = errno_code(errno);
    if (rc == 0 && fsync(d->fd) != 0)
        rc = errno_code(errno);
    if (close(d->fd) != 0 && rc == 0)
        rc = errno_code(errno);
    d->fd = -1;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = errno_code(errno);
    if (rc == 0)
        rc = fsync_dir_of(path);
    return rc;
}

/* Connects d->k to the leader. A leader other than the node read from so
 * far means a fresh snapshot (a snapshot is read from one node only). */
static int snap_connect(kv_client *c, snap_dl *d, uint64_t deadline) {
    kvc_result st;
    int rc = leader_status(c, deadline, &st);
    if (rc != 0)
        return rc;
    free(st.members);
    if (d->started && strcmp(st.node_name, d->node) != 0)
        d->started = false;
    snprintf(d->node, sizeof d->node, "%s", st.node_name);
    kvc_endpoint ep;
    if (kvc_endpoint_parse(st.endpoint, strlen(st.endpoint), &ep) != 0)
        return KV_EUNAVAILABLE;
    return kvc_side_open(c, &d->k, &ep, deadline);
}

static int snap_run(kv_client *c, snap_dl *d, const char *tmp, const char *path) {
    uint64_t deadline = deadline_of(c); /* moves on with every piece */
    uint32_t busy_ms = KVC_BUSY_MS_MIN;
    for (;;) {
        if (kv_now_ns() >= deadline)
            return KV_EUNAVAILABLE;
        if (d->k.fd < 0) {
            int rc = snap_connect(c, d, deadline);
            if (is_refusal(rc) || rc == KV_ENOMEM || rc == KV_EPROTO)
                return rc;
            if (rc != 0) {
                kvc_conn_close(&d->k);
                sleep_until(MIN(deadline, kv_now_ns() + SNAP_RETRY_MS * NS_PER_MS));
                continue;
            }
        }
        Kv__Request q = KV__REQUEST__INIT;
        q.type = KV__REQUEST__TYPE__SNAPSHOT_READ;
        if (d->started) {
            q.offset = d->off;
            q.index = d->index;
            q.term = d->term;
        }
        Kv__Response *r;
        int rc = kvc_side_call(c, &d->k, &q, deadline, &r);
        if (rc == KV_ENOMEM)
            return rc;
        if (rc != 0) {
            kvc_conn_close(&d->k); /* gone or silent: find the leader again */
            continue;
        }
        switch (r->code) {
        case 0:
            if (!d->started)
                rc = snap_begin(d, r);
            else if ((r->snap_index != 0 && r->snap_index != d->index) ||
                     (r->snap_term != 0 && r->snap_term != d->term) ||
                     (r->snap_total != 0 && r->snap_total != d->total))
                rc = KV_EPROTO; /* another snapshot's piece */
            if (rc == 0)
                rc = snap_piece(d, r);
            busy_ms = KVC_BUSY_MS_MIN;
            deadline = deadline_of(c);
            break;
        case KV_ESTALE: /* that snapshot is gone: a fresh one */
            d->started = false;
            break;
        case KV_EBUSY:
            sleep_until(MIN(deadline, kv_now_ns() + busy_ms * NS_PER_MS));
            busy_ms = MIN(2 * busy_ms, KVC_BUSY_MS_MAX);
            break;
        case KV_ENOTLEADER:
        case KV_EUNAVAILABLE:
            /* Leaders only, after all: from the leader, afresh. */
            d->started = false;
            kvc_conn_close(&d->k);
            if (r->code == KV_ENOTLEADER && r->leader_address && r->leader_address[0])
                kvc_move(c, r->leader_address);
            else
                sleep_until(MIN(deadline, kv_now_ns() + SNAP_RETRY_MS * NS_PER_MS));
            break;
        default:
            rc = r->code;
            break;
        }
        kvc_arena_reset(&c->arena);
        if (rc != 0)
            return rc;
        if (d->started && d->off == d->total)
            return snap_finish(d, tmp, path);
    }
}

static int snapshot_save_alone(kv_client *c, const char *path, uint64_t *index) {
    kvc_errstr_clear();
    if (index != NULL)
        *index = 0;
    if (c == NULL || path == NULL || path[0] == '\0')
        return KV_EINVAL;
    if (c->user_inflight > 0)
        return KV_EBUSY; /* as every synchronous call */
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return KV_ENOMEM;
    snap_dl d = {.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    kvc_conn_init(&d.k);
    int rc = d.fd < 0 ? kvc_errstr_set(errno_code(errno), "%s: %s", tmp, strerror(errno))
             : kv_xxh3_init(&d.x) != 0 ? KV_ENOMEM
                                       : 0;
    if (rc == 0)
        rc = snap_run(c, &d, tmp, path);
    if (d.fd >= 0)
        close(d.fd); /* failed: snap_finish closes it */
    if (rc != 0)
        (void)unlink(tmp);
    if (rc == 0 && index != NULL)
        *index = d.index;
    kv_xxh3_free(&d.x);
    kvc_conn_free(&d.k);
    kvc_arena_reset(&c->arena);
    free(tmp);
    return rc;
}

/* ---- check ------------------------------------------------------------------------ */

/* Connects to node on k and sends it HASH at index with request id id.
 * 0 when sent (k open); otherwise the node's status (a refusal, KV_ENOMEM
 * or KV_EUNAVAILABLE) and k closed. */
static int hash__ask(kv_client *c, kvc_conn *k, const kv_check_node *node, uint64_t id,
                     uint64_t index, uint64_t deadline) {
    assert(k->fd < 0);
    kvc_endpoint ep;
    Kv__Request q = KV__REQUEST__INIT;
    q.type = KV__REQUEST__TYPE__HASH;
    q.index = index;
    q.id = id;
    int rc = kvc_endpoint_parse(node->address, strlen(node->address), &ep);
    if (rc == 0)
        rc = kvc_side_open(c, k, &ep, deadline);
    if (rc == 0)
        rc = kvc_conn_queue(k, KV_FRAME_REQUEST, &q.base);
    if (rc == 0 && kvc_conn_send_all(k, deadline) != 0)
        rc = KV_EUNAVAILABLE;
    if (rc != 0) {
        kvc_conn_close(k);
        return is_refusal(rc) || rc == KV_ENOMEM ? rc : KV_EUNAVAILABLE;
    }
    assert(k->fd >= 0);
    return 0;
}

/* Reads what arrived on k, node's connection, and takes the answer to
 * request id into node's status and hash; replies to anything else are
 * dropped. True when k is done with (answered, or gone before answering:
 * status KV_EUNAVAILABLE), and then closed. */
static bool hash__read(kv_client *c, kvc_conn *k, kv_check_node *node, uint64_t id) {
    assert(k->fd >= 0);
    int rc = kvc_conn_fill(k);
    bool done = false;
    while (!done) {
        uint8_t type;
        const uint8_t *pl;
        uint32_t len;
        int fr = kvc_conn_frame(k, &type, &pl, &len);
        if (fr == 0)
            break;
        if (fr < 0 || type != KV_FRAME_RESPONSE) {
            rc = KV_ECLOSED;
            break;
        }
        Kv__Response *r = kv__response__unpack(&c->arena.alloc, len, pl);
        kvc_conn_consume(k, len);
        if (r != NULL && r->id == id) {
            node->status = r->code;
            node->hash = r->code == 0 ? r->hash : 0;
            done = true;
        }
        kvc_arena_reset(&c->arena);
        if (r == NULL) {
            rc = KV_ECLOSED;
            break;
        }
    }
    if (!done && rc < 0)
        node->status = KV_EUNAVAILABLE; /* it went before answering */
    if (done || rc < 0)
        kvc_conn_close(k);
    return done || rc < 0;
}

/* Polls the open connections of k[0..n) until every one of the waiting
 * has answered or gone, or the deadline; a node still silent then keeps
 * the status KV_ETIMEOUT. */
static void hash__wait(kv_client *c, kvc_conn *k, const uint64_t *ids, kv_check_node *nodes,
                       size_t n, size_t waiting, uint64_t deadline) {
    assert(waiting <= n);
    while (waiting > 0) {
        uint64_t now = kv_now_ns();
        if (now >= deadline)
            break;
        struct pollfd p[KVC_ENDPOINTS_MAX];
        size_t map[KVC_ENDPOINTS_MAX], np = 0;
        for (size_t i = 0; i < n && np < KVC_ENDPOINTS_MAX; i++)
            if (k[i].fd >= 0) {
                map[np] = i;
                p[np++] = (struct pollfd){.fd = k[i].fd, .events = POLLIN};
            }
        assert(np > 0 && np <= waiting); /* every open connection is waited for */
        if (poll(p, np, kvc_wait_ms(deadline, now)) <= 0)
            continue;
        for (size_t j = 0; j < np; j++)
            if (p[j].revents != 0 && hash__read(c, &k[map[j]], &nodes[map[j]], ids[map[j]]))
                waiting--;
    }
}

/* HASH at index on every node at once, each on its own connection; fills
 * status and hash. */
static void ask_hashes(kv_client *c, kv_check_node *nodes, size_t n, uint64_t index,
                       uint64_t deadline) {
    kvc_conn *k = calloc(n, sizeof *k);
    uint64_t *ids = calloc(n, sizeof *ids);
    if (k == NULL || ids == NULL) {
        for (size_t i = 0; i < n; i++)
            nodes[i].status = KV_ENOMEM;
        free(k);
        free(ids);
        return;
    }
    size_t waiting = 0;
    for (size_t i = 0; i < n; i++) {
        kvc_conn_init(&k[i]);
        ids[i] = kvc_side_id(c);
        int rc = hash__ask(c, &k[i], &nodes[i], ids[i], index, deadline);
        nodes[i].status = rc == 0 ? KV_ETIMEOUT : rc; /* KV_ETIMEOUT until it answers */
        waiting += rc == 0;
    }
    hash__wait(c, k, ids, nodes, n, waiting, deadline);
    for (size_t i = 0; i < n; i++)
        kvc_conn_free(&k[i]);
    free(k);
    free(ids);
}

/* The reference: the hash most members have; a tie goes to the leader's. */
static int judge(kv_check_node *nodes, size_t n, uint64_t leader_hash) {
    size_t best = 0;
    uint64_t ref = leader_hash;
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].status != 0)
            continue;
        size_t votes = 0;
        for (size_t j = 0; j < n; j++)
            votes += nodes[j].status == 0 && nodes[j].hash == nodes[i].hash;
        if (votes > best || (votes == best && nodes[i].hash == leader_hash)) {
            best = votes;
            ref = nodes[i].hash;
        }
    }
    bool differs = false, missing = false;
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].status == 0 && nodes[i].hash != ref) {
            nodes[i].status = KV_ECORRUPT;
            differs = true;
        } else if (nodes[i].status != 0) {
            missing = true;
        }
    }
    return differs ? KV_ECORRUPT : missing ? KV_EUNAVAILABLE : 0;
}

static int check_alone(kv_client *c, uint64_t *index, kv_check_node **nodes, size_t *count) {
    kvc_errstr_clear();
    if (index != NULL)
        *index = 0;
    if (nodes == NULL || count == NULL)
        return KV_EINVAL;
    *nodes = NULL;
    *count = 0;
    if (c == NULL)
        return KV_EINVAL;
    uint64_t deadline = deadline_of(c);
    kv_check_node *out = NULL;
    size_t n = 0;
    uint64_t at = 0, leader_hash = 0;
    for (int round = 0; round < CHECK_ROUNDS; round++) {
        kvc_result cp = {0};
        int rc;
        kvc_slot *s = kvc_sync_begin(c, KV__REQUEST__TYPE__CHECK_POINT, &cp, &rc);
        if (s != NULL)
            rc = kvc_sync_run(c, s, &cp, deadline);
        kvc_result st;
        if (rc == 0)
            rc = leader_status(c, deadline, &st);
        if (rc != 0) {
            if (out == NULL)
                return rc;
            break; /* judge the last round's answers */
        }
        free(out);
        out = calloc(st.members_count + 1, sizeof *out);
        if (out == NULL) {
            free(st.members);
            return KV_ENOMEM;
        }
        n = 0;
        for (size_t i = 0; i < st.members_count; i++) {
            if (st.members[i].joining)
                continue; /* not a member yet: it may never see the check point */
            snprintf(out[n].name, sizeof out[n].name, "%s", st.members[i].name);
            snprintf(out[n].address, sizeof out[n].address, "%s", st.members[i].address);
            n++;
        }
        free(st.members);
        at = cp.index;
        leader_hash = cp.hash;
        ask_hashes(c, out, n, at, deadline);
        bool cannot_know = false;
        for (size_t i = 0; i < n; i++)
            cannot_know |= out[i].status == KV_ENOTFOUND;
        if (!cannot_know || kv_now_ns() >= deadline)
            break;
    }
    if (index != NULL)
        *index = at;
    int rc = judge(out, n, leader_hash);
    *nodes = out;
    *count = n;
    return rc;
}

/* ---- the client alone ----------------------------------------------------- */

/* Each operator call has the client to itself (share.c, client.h "THREADS"). */
#define KVC_ALONE(call)                                                                            \
    do {                                                                                           \
        kvc_errstr_clear();                                                                        \
        if (c == NULL)                                                                             \
            return call;                                                                           \
        int rc_ = kvc_exclusive_begin(c);                                                          \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
        rc_ = call;                                                                                \
        kvc_exclusive_end(c);                                                                      \
        return rc_;                                                                                \
    } while (0)

int kv_member_list(kv_client *c, kv_member **members, size_t *count) {
    KVC_ALONE(member_list_alone(c, members, count));
}

int kv_member_add(kv_client *c, const char *name, const char *address) {
    KVC_ALONE(member_add_alone(c, name, address));
}

int kv_member_remove(kv_client *c, const char *name) {
    KVC_ALONE(member_remove_alone(c, name));
}

int kv_transfer_leader(kv_client *c, const char *name) {
    KVC_ALONE(transfer_leader_alone(c, name));
}

int kv_snapshot_save(kv_client *c, const char *path, uint64_t *index) {
    KVC_ALONE(snapshot_save_alone(c, path, index));
}

int kv_check(kv_client *c, uint64_t *index, kv_check_node **nodes, size_t *count) {
    KVC_ALONE(check_alone(c, index, nodes, count));
}
