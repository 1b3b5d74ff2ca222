/* The address book: who the members are, their names and addresses.
 *
 * Raft's membership knows node ids only; names and addresses travel through
 * the log too, so every node's book (stored in the state machine as a
 * kv.Membership with each CONF entry) is the same at the same index:
 *   MEMBER entry (member add)  the name and address of a node about to join
 *                              (listed as joining)
 *   CONF entry                 voters and learners; names from the book
 */
#include "server/server_int.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static server_member *book_find(const server_member *book, size_t count, uint64_t id) {
    for (size_t i = 0; i < count; i++)
        if (book[i].id == id)
            return (server_member *)&book[i];
    return NULL;
}

static const server_member *known_find(const server *s, uint64_t id) {
    for (size_t i = 0; i < s->known_count; i++)
        if (s->known[i].id == id)
            return &s->known[i];
    return NULL;
}

/* The book first; then what this node learned outside the log (--cluster,
 * --join), which is never stored with the membership. */
const server_member *server_member_by_id(const server *s, uint64_t id) {
    const server_member *m = book_find(s->members, s->members_count, id);
    return m != NULL ? m : known_find(s, id);
}

void server_members_know(server *s, const server_member *m) {
    for (size_t i = 0; i < s->known_count; i++)
        if (s->known[i].id == m->id) {
            s->known[i] = *m;
            return;
        }
    if (s->known_count < SERVER_BOOK_MAX)
        s->known[s->known_count++] = *m;
}

const server_member *server_member_by_name(const server *s, const char *name) {
    return server_member_by_id(s, server_node_id(name));
}

bool server_name_valid(const char *name) {
    size_t n = strlen(name);
    return n > 0 && n <= KV_NODE_NAME_BYTES_MAX && strpbrk(name, ",= \t\n") == NULL;
}

/* Sets the name's entry of book[0..*count) (added when new); NULL when
 * the name or address does not fit or the book is full. */
static server_member *book_put(server_member *book, size_t *count, const char *name, size_t nlen,
                               const char *addr, size_t alen) {
    if (nlen == 0 || nlen > KV_NODE_NAME_BYTES_MAX || alen >= SERVER_ADDR_BYTES)
        return NULL;
    char nm[KV_NODE_NAME_BYTES_MAX + 1];
    memcpy(nm, name, nlen);
    nm[nlen] = 0;
    uint64_t id = server_node_id(nm);
    server_member *m = book_find(book, *count, id);
    if (m == NULL) {
        if (*count == SERVER_BOOK_MAX)
            return NULL;
        m = &book[(*count)++];
        memset(m, 0, sizeof(*m));
    }
    memcpy(m->name, nm, nlen + 1);
    memcpy(m->addr, addr, alen);
    m->addr[alen] = 0;
    m->id = id;
    return m;
}

int server_book_parse(const char *spec, server_member book[SERVER_BOOK_MAX], size_t *count) {
    *count = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t nlen = eq ? (size_t)(eq - p) : 0;
        size_t before = *count;
        if (eq == NULL || len - nlen - 1 == 0 ||
            book_put(book, count, p, nlen, eq + 1, len - nlen - 1) == NULL || *count == before) {
            fprintf(stderr,
                    "kvd: --cluster: bad member '%.*s' (want NAME=HOST:PORT, names unique)\n",
                    (int)len, p);
            return KV_EINVAL;
        }
        p = end ? end + 1 : p + len;
    }
    assert(*count <= SERVER_BOOK_MAX);
    return *count > 0 && *count <= KV_NODES_MAX ? 0 : KV_EINVAL;
}

int server_members_parse(server *s, const char *spec) {
    return server_book_parse(spec, s->members, &s->members_count);
}

void server_members_from_pb(server *s, const Kv__Membership *m) {
    s->members_count = 0;
    for (size_t i = 0; i < m->n_members; i++) {
        const Kv__Member *x = m->members[i];
        server_member *b = book_put(s->members, &s->members_count, x->name, strlen(x->name),
                                    x->address, strlen(x->address));
        if (b == NULL) {
            KV_LOGW("CONFIG", "membership: skipping member '%s' at '%s'", x->name, x->address);
            continue;
        }
        b->id = x->id ? x->id : b->id;
        b->learner = x->learner;
        b->joining = x->joining;
    }
}

int server_book_encode(const server_member *book, size_t count, uint64_t index, uint8_t **buf,
                       size_t *len) {
    assert(count <= SERVER_BOOK_MAX);
    Kv__Member mem[SERVER_BOOK_MAX];
    Kv__Member *ptrs[SERVER_BOOK_MAX];
    for (size_t i = 0; i < count; i++) {
        kv__member__init(&mem[i]);
        mem[i].id = book[i].id;
        mem[i].name = (char *)book[i].name;
        mem[i].address = (char *)book[i].addr;
        mem[i].learner = book[i].learner;
        mem[i].joining = book[i].joining;
        ptrs[i] = &mem[i];
    }
    Kv__Membership m = KV__MEMBERSHIP__INIT;
    m.members = ptrs;
    m.n_members = count;
    m.index = index;
    *len = kv__membership__get_packed_size(&m);
    *buf = malloc(*len ? *len : 1);
    if (*buf == NULL)
        return KV_ENOMEM;
    kv__membership__pack(&m, *buf);
    return 0;
}

int server_members_encode(const server *s, uint64_t index, uint8_t **buf, size_t *len) {
    return server_book_encode(s->members, s->members_count, index, buf, len);
}

static void book_del(server *s, size_t i) {
    s->members[i] = s->members[--s->members_count];
}

void server_members_joining(server *s, const char *name, const char *addr) {
    const server_member *cur = server_member_by_name(s, name);
    if (cur != NULL && !cur->joining)
        return; /* already a member: a stale announcement */
    if (addr[0] == 0) {
        if (cur != NULL)
            book_del(s, (size_t)(cur - s->members));
        return;
    }
    server_member *m =
        book_put(s->members, &s->members_count, name, strlen(name), addr, strlen(addr));
    if (m != NULL) {
        m->joining = true;
        m->learner = false;
    }
}

void server_members_conf(server *s, const raft_membership *rm) {
    /* mark every entry as not a member, then set the ones rm names */
    for (size_t i = 0; i < s->members_count; i++)
        s->members[i].learner = false;
    bool in[SERVER_BOOK_MAX] = {0};
    for (int pass = 0; pass < 2; pass++) {
        uint32_t cnt = pass == 0 ? rm->voters_count : rm->learners_count;
        const uint64_t *ids = pass == 0 ? rm->voters : rm->learners;
        for (uint32_t j = 0; j < cnt; j++) {
            server_member *m = book_find(s->members, s->members_count, ids[j]);
            if (m == NULL) {
                if (s->members_count == SERVER_BOOK_MAX)
                    continue;
                /* a joining node replaying the log from its start knows the
                 * founders from --join; otherwise unnamed (cannot happen
                 * through member add) */
                const server_member *k = known_find(s, ids[j]);
                m = &s->members[s->members_count++];
                memset(m, 0, sizeof(*m));
                if (k != NULL)
                    *m = *k;
                m->id = ids[j];
                if (k == NULL)
                    KV_LOGW("CONFIG", "member %016llx has no name or address",
                            (unsigned long long)ids[j]);
            }
            m->learner = pass == 1;
            m->joining = false;
            in[m - s->members] = true;
        }
    }
    /* members no longer in rm leave the book; joining ones stay */
    for (size_t i = s->members_count; i-- > 0;)
        if (!in[i] && !s->members[i].joining)
            book_del(s, i);
}

void server_members_to_raft(const Kv__Membership *m, raft_membership *out) {
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < m->n_members; i++) {
        const Kv__Member *x = m->members[i];
        if (x->joining)
            continue;
        if (x->learner && out->learners_count < KV_NODES_MAX)
            out->learners[out->learners_count++] = x->id;
        else if (!x->learner && out->voters_count < KV_NODES_MAX)
            out->voters[out->voters_count++] = x->id;
    }
}

bool server_is_member(const server *s, uint64_t id) {
    raft_membership rm;
    raft_membership_get(s->r, &rm);
    for (uint32_t i = 0; i < rm.voters_count; i++)
        if (rm.voters[i] == id)
            return true;
    for (uint32_t i = 0; i < rm.learners_count; i++)
        if (rm.learners[i] == id)
            return true;
    return false;
}

/* Whether id must stay reachable: a member of the latest membership in the
 * log (applied or not), or the leader. */
static bool peer_needed(const server *s, uint64_t id) {
    return s->r != NULL && (id == raft_leader(s->r) || server_is_member(s, id));
}

static void peer_declare(server *s, const server_member *m) {
    if (m->id == s->id || m->addr[0] == 0)
        return;
    bool known = false;
    for (size_t j = 0; j < s->peers_count; j++)
        known |= s->peer_ids[j] == m->id;
    if (!known && s->peers_count < SERVER_BOOK_MAX)
        s->peer_ids[s->peers_count++] = m->id;
    net_peer_add(s->net, m->id, m->name, m->addr);
}

void server_peers_sync(server *s) {
    if (s->net == NULL)
        return;
    /* forget peers nobody names any more (docs/rules.md: never the leader or a
     * member of the log's latest membership, which a node replaying old
     * entries has not applied yet) */
    for (size_t i = 0; i < s->peers_count;) {
        uint64_t id = s->peer_ids[i];
        if (server_member_by_id(s, id) == NULL && !peer_needed(s, id)) {
            net_peer_remove(s->net, s->peer_ids[i]);
            s->peer_ids[i] = s->peer_ids[--s->peers_count];
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < s->known_count; i++)
        if (book_find(s->members, s->members_count, s->known[i].id) == NULL)
            peer_declare(s, &s->known[i]);
    for (size_t i = 0; i < s->members_count; i++)
        peer_declare(s, &s->members[i]);
}

Kv__Membership *server_members_stored(sm *db) {
    uint8_t *buf;
    size_t len;
    if (sm_membership(db, &buf, &len) != 0)
        return NULL;
    Kv__Membership *m = kv__membership__unpack(NULL, len, buf);
    free(buf);
    return m;
}
