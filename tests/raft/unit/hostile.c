/* hostile: a raft node fed hostile messages, with its invariants checked
 * after every input (hostile.h). */
#include "hostile.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

#define HN_LOG_ENTRIES 8u
#define HN_TERM 5u

static void hn_fail(const hn *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hostile: seed=%" PRIu64 " step=%" PRIu64 ": ", h->seed, h->steps);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (replay: KV_HOSTILE_SEED=%" PRIu64 ")\n", h->seed);
    va_end(ap);
    abort();
}

#define HN_CHECK(h, cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            hn_fail((h), "%s:%d: %s", __FILE__, __LINE__, #cond);                                  \
    } while (0)

uint64_t hn_rand(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int snap_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                     size_t len, size_t *got, uint64_t *total) {
    hn *h = ctx;
    if (index != h->snap_index || term != h->snap_term || offset > sizeof h->snap) {
        return KV_ESTALE;
    }
    size_t k = sizeof h->snap - offset < len ? (size_t)(sizeof h->snap - offset) : len;
    memcpy(buf, h->snap + offset, k);
    *got = k;
    *total = sizeof h->snap;
    return 0;
}

/* ---- the app's side of the Ready loop, checked ---- */

static void check_hs(hn *h, const struct raft_ready *rd) {
    HN_CHECK(h, rd->hs.term >= h->hs.term);
    if (rd->hs.term == h->hs.term && h->hs.vote != 0) {
        HN_CHECK(h, rd->hs.vote == h->hs.vote); /* one vote per term */
    }
    HN_CHECK(h, rd->hs.commit <= raft_persisted_index(h->r));
    h->hs = rd->hs;
}

static void check_msgs(hn *h, const struct raft_ready *rd) {
    for (size_t i = 0; i < rd->msgs_count; i++) {
        const raft_msg *m = &rd->msgs[i];
        HN_CHECK(h, m->from == 1 && m->to != 0 && m->to != 1);
        if (m->type != RAFT_MSG_PREVOTE && m->type != RAFT_MSG_PREVOTE_RESP) {
            HN_CHECK(h, m->term <= h->hs.term);
        }
        if (m->type == RAFT_MSG_VOTE_RESP && !m->reject) {
            HN_CHECK(h, h->hs.vote == m->to && h->hs.term == m->term);
        }
        for (size_t k = 0; k < m->entries_count; k++) {
            HN_CHECK(h, m->entries[k].index == m->index + 1 + k);
        }
        raft_msg *kept = &h->sent[h->sent_count++ % HN_SENT_KEPT];
        *kept = *m;
        kept->entries = NULL;
        kept->snap_data = NULL;
    }
}

static void apply(hn *h, const struct raft_ready *rd) {
    if (rd->has_snapshot) {
        HN_CHECK(h, rd->entries_count == 0 && rd->committed_count == 0);
        h->written_index = rd->snapshot.index;
        h->written_term = rd->snapshot.term;
        h->applied = rd->snapshot.index;
    }
    if (rd->has_chunk) {
        HN_CHECK(h, rd->chunk.offset + rd->chunk.len <= rd->chunk.total_size);
    }
    if (rd->entries_count > 0) {
        HN_CHECK(h, rd->entries[0].index <= h->written_index + 1);
        h->written_index = rd->entries[rd->entries_count - 1].index;
        h->written_term = rd->entries[rd->entries_count - 1].term;
    }
    for (size_t i = 0; i < rd->committed_count; i++) {
        HN_CHECK(h, rd->committed[i].index == h->applied + 1);
        HN_CHECK(h, rd->committed[i].index <= h->written_index);
        h->applied = rd->committed[i].index;
    }
}

static void check_state(hn *h) {
    raft *r = h->r;
    uint64_t commit = raft_commit_index(r), last = raft_last_index(r), t = 0;
    HN_CHECK(h, raft_term(r) >= h->hs.term);
    HN_CHECK(h, commit >= h->max_commit);
    HN_CHECK(h, commit <= last && raft_applied_index(r) <= commit);
    HN_CHECK(h, raft_log_term(r, last, &t) == 0 && t <= raft_term(r));
    HN_CHECK(h, raft_state_role(r) != RAFT_LEADER || raft_leader(r) == 1);
    h->max_commit = commit;
    /* a committed entry never changes */
    uint64_t first = raft_first_index(r);
    for (uint64_t i = first; i <= commit && i <= HN_TRACK; i++) {
        HN_CHECK(h, raft_log_term(r, i, &t) == 0);
        if (h->committed_terms[i] != 0) {
            HN_CHECK(h, h->committed_terms[i] == t);
        }
        h->committed_terms[i] = t;
    }
}

static void hn_ready(hn *h) {
    for (int guard = 0; raft_has_ready(h->r); guard++) {
        HN_CHECK(h, guard < 1000);
        struct raft_ready rd;
        HN_CHECK(h, raft_ready(h->r, &rd) == 0);
        check_hs(h, &rd);
        check_msgs(h, &rd);
        apply(h, &rd);
        raft_advance(h->r, &rd);
        raft_persisted(h->r, h->written_index, h->written_term);
    }
    check_state(h);
}

/* ---- starting in a role ---- */

static raft_membership cluster(void) {
    raft_membership mb = {.voters_count = 3, .learners_count = 1, .voters = {1, 2, 3}};
    mb.learners[0] = 4;
    return mb;
}

/* Restart state: entry 1 the membership, then terms 1 1 2 2 3 3 5 up to
 * index 8; hs term 5, commit 4. */
static int hn_new(hn *h, raft_config *cfg, uint8_t *conf, raft_entry *ents) {
    raft_membership mb = cluster();
    size_t len = raft_conf_encode(RAFT_CONF_BOOTSTRAP, 0, &mb, conf);
    static const uint64_t terms[HN_LOG_ENTRIES] = {1, 1, 1, 2, 2, 3, 3, HN_TERM};
    for (uint32_t i = 0; i < HN_LOG_ENTRIES; i++) {
        ents[i] = (raft_entry){.index = i + 1, .term = terms[i], .data = "e", .len = 1};
    }
    ents[0] =
        (raft_entry){.index = 1, .term = 1, .type = RAFT_ENTRY_CONF, .data = conf, .len = len};
    cfg->hs = (raft_hard_state){.term = HN_TERM, .commit = 4};
    cfg->entries = ents;
    cfg->entries_count = HN_LOG_ENTRIES;
    cfg->applied = 4;
    cfg->snapshot_read = snap_read;
    cfg->snapshot_ctx = h;
    return raft_new(cfg, &h->r);
}

static void become_leader(hn *h, bool compacted) {
    HN_CHECK(h, raft_campaign(h->r) == 0);
    hn_ready(h);
    raft_msg m = {.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = raft_term(h->r)};
    HN_CHECK(h, hn_step(h, &m) == 0);
    HN_CHECK(h, raft_state_role(h->r) == RAFT_LEADER);
    m = (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = raft_term(h->r)};
    m.index = raft_last_index(h->r); /* node 2 replicates, 3 and 4 probe */
    HN_CHECK(h, hn_step(h, &m) == 0);
    if (compacted) {
        h->snap_index = raft_applied_index(h->r);
        HN_CHECK(h, raft_log_term(h->r, h->snap_index, &h->snap_term) == 0);
        HN_CHECK(h, raft_snapshot_done(h->r, h->snap_index, h->snap_term) == 0);
        HN_CHECK(h, raft_compact(h->r, h->snap_index) == 0);
    }
}

void hn_start(hn *h, hn_role role, uint64_t seed) {
    memset(h, 0, sizeof *h);
    h->seed = seed;
    for (size_t i = 0; i < sizeof h->snap; i++) {
        h->snap[i] = (uint8_t)(i * 7 + seed);
    }
    raft_config cfg;
    raft_config_init(&cfg, 1);
    cfg.seed = seed;
    cfg.pre_vote = role == HN_PRE_CANDIDATE;
    cfg.check_quorum = seed % 3 != 0;
    cfg.lease_read = cfg.check_quorum && seed % 2 == 0;
    cfg.max_inflight_msgs = 4;
    uint8_t conf[RAFT_CONF_BYTES_MAX];
    raft_entry ents[HN_LOG_ENTRIES];
    HN_CHECK(h, hn_new(h, &cfg, conf, ents) == 0);
    h->hs = cfg.hs;
    h->written_index = HN_LOG_ENTRIES;
    h->written_term = HN_TERM;
    h->applied = 4;
    hn_ready(h);
    if (role == HN_FOLLOWER) {
        raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = HN_TERM, .commit = 4};
        HN_CHECK(h, hn_step(h, &m) == 0);
    } else if (role == HN_PRE_CANDIDATE || role == HN_CANDIDATE) {
        HN_CHECK(h, raft_campaign(h->r) == 0);
        hn_ready(h);
    } else {
        become_leader(h, role == HN_LEADER_COMPACTED);
    }
    h->steps = 0;
}

void hn_free(hn *h) {
    raft_free(h->r);
    h->r = NULL;
}

static void trace(const hn *h, const raft_msg *m, int rc) {
    static int on = -1;
    if (on < 0) {
        on = getenv("KV_HOSTILE_TRACE") != NULL;
    }
    if (!on) {
        return;
    }
    fprintf(stderr,
            "step %" PRIu64 ": type %u from %" PRIu64 " to %" PRIu64 " term %" PRIu64
            " index %" PRIu64 " log_term %" PRIu64 " commit %" PRIu64 " entries %zu reject %d"
            " hint %" PRIu64 "/%" PRIu64 " snap %" PRIu64 "/%" PRIu64 " off %" PRIu64
            " len %zu total %" PRIu64 " -> %d; role %d term %" PRIu64 " commit %" PRIu64
            " last %" PRIu64 "\n",
            h->steps, m->type, m->from, m->to, m->term, m->index, m->log_term, m->commit,
            m->entries_count, m->reject, m->reject_hint, m->hint_term, m->snap.index, m->snap.term,
            m->snap_offset, m->snap_len, m->snap_total, rc, raft_state_role(h->r), raft_term(h->r),
            raft_commit_index(h->r), raft_last_index(h->r));
}

int hn_step(hn *h, const raft_msg *m) {
    h->steps++;
    int rc = raft_step(h->r, m);
    trace(h, m, rc);
    HN_CHECK(h, rc == 0 || rc == KV_EPROTO || rc == KV_EINVAL || rc == KV_ENOMEM);
    h->refused += rc != 0;
    hn_ready(h);
    return rc;
}

void hn_tick(hn *h) {
    h->steps++;
    raft_tick(h->r);
    hn_ready(h);
}

void hn_local(hn *h, uint64_t *rng) {
    raft *r = h->r;
    h->steps++;
    switch (hn_rand(rng) % 8) {
    case 0:
        if (raft_state_role(r) == RAFT_LEADER) {
            (void)raft_propose(r, "p", 1, NULL);
        }
        break;
    case 1:
        (void)raft_read_index(r, hn_rand(rng));
        break;
    case 2:
        if (raft_applied_index(r) > raft_snapshot_index(r)) {
            h->snap_index = raft_applied_index(r);
            HN_CHECK(h, raft_log_term(r, h->snap_index, &h->snap_term) == 0);
            HN_CHECK(h, raft_snapshot_done(r, h->snap_index, h->snap_term) == 0);
            (void)raft_compact(r, raft_compact_floor(r));
        }
        break;
    case 3:
        (void)raft_transfer_leader(r, 2 + hn_rand(rng) % 2);
        break;
    default:
        raft_tick(r);
        break;
    }
    hn_ready(h);
}

/* ---- random messages ---- */

/* A value near what the node knows, or at an edge. */
static uint64_t near(const hn *h, uint64_t *rng) {
    const raft *r = h->r;
    uint64_t term = raft_term(r), last = raft_last_index(r), commit = raft_commit_index(r);
    switch (hn_rand(rng) % 16) {
    case 0:
        return 0;
    case 1:
        return UINT64_MAX;
    case 2:
        return UINT64_MAX - 1;
    case 3:
        return hn_rand(rng);
    case 4:
        return term - 1;
    case 5:
        return term + 1;
    case 6:
        return last + 1;
    case 7:
        return last - 1;
    case 8:
        return commit;
    case 9:
        return commit + 1;
    case 10:
        return raft_first_index(r) - 1;
    case 11:
        return hn_rand(rng) % 4;
    case 12:
        return term;
    default:
        return last;
    }
}

/* Mostly a decodable CONF payload (1..3 voters among 1..5), else noise. */
static size_t random_conf(uint64_t *rng, uint8_t *buf, size_t cap) {
    if (hn_rand(rng) % 4 == 0) {
        size_t len = hn_rand(rng) % cap;
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)hn_rand(rng);
        }
        return len;
    }
    raft_membership mb = {0};
    uint64_t ids[5] = {1, 2, 3, 4, 5};
    uint32_t n = (uint32_t)(hn_rand(rng) % 5);
    for (uint32_t i = 0; i < n; i++) {
        if (hn_rand(rng) % 3 == 0) {
            mb.learners[mb.learners_count++] = ids[i];
        } else {
            mb.voters[mb.voters_count++] = ids[i];
        }
    }
    uint8_t tmp[RAFT_CONF_BYTES_MAX];
    size_t len = raft_conf_encode((raft_conf_op)(hn_rand(rng) % 4), ids[n % 5], &mb, tmp);
    len = len < cap ? len : cap;
    memcpy(buf, tmp, len);
    return len;
}

/* APPEND entries: mostly contiguous after (index, log_term) with terms up
 * to the message's, sometimes anything. */
static void random_entries(const hn *h, uint64_t *rng, hn_msg *out) {
    raft_msg *m = &out->m;
    m->entries_count = (size_t)(hn_rand(rng) % (HN_ENTRIES_MAX + 1));
    m->entries = m->entries_count > 0 ? out->ents : NULL;
    uint64_t term = m->log_term;
    bool wild = hn_rand(rng) % 8 == 0;
    for (size_t i = 0; i < m->entries_count; i++) {
        raft_entry *e = &out->ents[i];
        memset(e, 0, sizeof *e);
        if (term < m->term && hn_rand(rng) % 3 == 0) {
            term++;
        }
        e->index = wild ? near(h, rng) : m->index + 1 + i;
        e->term = wild ? near(h, rng) : term;
        e->type = (uint32_t)(hn_rand(rng) % (wild ? 5 : 3));
        e->data = out->data[i];
        if (e->type == RAFT_ENTRY_CONF) {
            e->len = random_conf(rng, out->data[i], HN_DATA_BYTES);
        } else {
            e->len = (size_t)(hn_rand(rng) % 4);
        }
    }
}

static void random_snapshot(const hn *h, uint64_t *rng, hn_msg *out) {
    raft_msg *m = &out->m;
    m->snap.index = near(h, rng) + hn_rand(rng) % 3;
    m->snap.term = hn_rand(rng) % 2 ? m->term : near(h, rng);
    m->snap.membership = cluster();
    if (hn_rand(rng) % 4 == 0) {
        m->snap.membership.voters_count = (uint32_t)(hn_rand(rng) % 4);
        m->snap.membership.voters[0] = hn_rand(rng) % 3;
    }
    m->snap_total = hn_rand(rng) % 4 == 0 ? near(h, rng) : hn_rand(rng) % (2 * HN_DATA_BYTES);
    m->snap_offset = hn_rand(rng) % 2        ? 0
                     : hn_rand(rng) % 4 == 0 ? near(h, rng)
                                             : m->snap_total / 2;
    m->snap_len = (size_t)(hn_rand(rng) % (HN_DATA_BYTES + 1));
    if (hn_rand(rng) % 2 && m->snap_total >= m->snap_offset &&
        m->snap_total - m->snap_offset < m->snap_len) {
        m->snap_len = (size_t)(m->snap_total - m->snap_offset);
    }
    m->snap_data = m->snap_len > 0 ? out->chunk : NULL;
    m->snap_last = hn_rand(rng) % 2;
}

void hn_random_msg(const hn *h, uint64_t *rng, hn_msg *out) {
    memset(out, 0, sizeof *out);
    raft_msg *m = &out->m;
    static const uint64_t froms[] = {2, 2, 3, 3, 4, 5, 1, 0};
    m->type = (uint32_t)(hn_rand(rng) % 24 == 0 ? hn_rand(rng) % 16 : 1 + hn_rand(rng) % 11);
    m->from = hn_rand(rng) % 32 == 0 ? near(h, rng) : froms[hn_rand(rng) % 8];
    m->to = hn_rand(rng) % 32 == 0 ? near(h, rng) : 1;
    uint64_t t = raft_term(h->r);
    uint64_t k = hn_rand(rng) % 8;
    m->term = k < 4 ? t : k < 6 ? t + 1 : k < 7 ? t - 1 : near(h, rng);
    m->index = near(h, rng);
    m->log_term = hn_rand(rng) % 2 ? near(h, rng) : m->term;
    m->commit = near(h, rng);
    m->reject = hn_rand(rng) % 3 == 0;
    m->transfer = hn_rand(rng) % 8 == 0;
    m->reject_hint = near(h, rng);
    m->hint_term = hn_rand(rng) % 2 ? 0 : near(h, rng);
    m->context = hn_rand(rng) % 2 ? hn_rand(rng) % 4 : near(h, rng);
    for (size_t i = 0; i < sizeof out->chunk; i++) {
        out->chunk[i] = (uint8_t)hn_rand(rng);
    }
    if (m->type == RAFT_MSG_APPEND || hn_rand(rng) % 16 == 0) {
        random_entries(h, rng, out);
    }
    if (m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_SNAPSHOT_RESP ||
        hn_rand(rng) % 16 == 0) {
        random_snapshot(h, rng, out);
    }
}

/* One field of m, chosen by rng, set to a value near what h knows. */
static void mutate(const hn *h, uint64_t *rng, raft_msg *m) {
    uint64_t v = near(h, rng);
    switch (hn_rand(rng) % 10) {
    case 0:
        m->term = v;
        break;
    case 1:
        m->index = v;
        break;
    case 2:
        m->log_term = v;
        break;
    case 3:
        m->commit = v;
        break;
    case 4:
        m->reject = !m->reject;
        break;
    case 5:
        m->reject_hint = v;
        break;
    case 6:
        m->hint_term = v;
        break;
    case 7:
        m->context = v;
        break;
    case 8:
        m->snap_offset = v;
        break;
    default:
        m->snap.index = v;
        break;
    }
}

bool hn_reply_msg(const hn *h, uint64_t *rng, hn_msg *out) {
    if (h->sent_count == 0) {
        return false;
    }
    size_t kept = h->sent_count < HN_SENT_KEPT ? h->sent_count : HN_SENT_KEPT;
    const raft_msg *s = &h->sent[hn_rand(rng) % kept];
    memset(out, 0, sizeof *out);
    raft_msg *m = &out->m;
    m->from = s->to;
    m->to = 1;
    m->term = s->term;
    switch (s->type) {
    case RAFT_MSG_APPEND:
        m->type = RAFT_MSG_APPEND_RESP;
        m->index = s->index + s->entries_count;
        break;
    case RAFT_MSG_HEARTBEAT:
        m->type = RAFT_MSG_HEARTBEAT_RESP;
        m->context = s->context;
        break;
    case RAFT_MSG_SNAPSHOT:
        m->type = RAFT_MSG_SNAPSHOT_RESP;
        m->snap.index = s->snap.index;
        m->snap.term = s->snap.term;
        m->snap_offset = s->snap_offset + s->snap_len;
        m->snap_last = s->snap_last && hn_rand(rng) % 2;
        break;
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        m->type = s->type == RAFT_MSG_VOTE ? RAFT_MSG_VOTE_RESP : RAFT_MSG_PREVOTE_RESP;
        m->reject = hn_rand(rng) % 3 == 0;
        break;
    default:
        m->type = RAFT_MSG_HEARTBEAT_RESP;
        break;
    }
    if (hn_rand(rng) % 2) {
        mutate(h, rng, m);
    }
    return true;
}
