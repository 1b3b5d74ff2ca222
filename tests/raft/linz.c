/*
 * linz: WGL linearizability checking of register histories. See linz.h.
 *
 * Per key, the operations become a doubly linked list of events sorted by
 * time: a "call" event at invoke and a "return" event at complete (ops of
 * unknown outcome have no return event). The search walks the list from the
 * front. At a call event it tries to linearize that op next: if the op is
 * legal in the current register state and the resulting (set of linearized
 * ops, state) pair was never seen, the op is "lifted" out of the list
 * (both events), pushed on a stack, and the walk restarts at the front. At a
 * return event, the op it belongs to had to be linearized before this point
 * but was not: backtrack (pop, unlift, continue after the popped call). The
 * history is linearizable once every completed op is linearized; it is not
 * when a return event is reached with an empty stack. (Lowe 2017, section 3;
 * porcupine's checkSingle.)
 */
#include "linz.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

/* ---- history ------------------------------------------------------------ */

void linz_history_init(linz_history *h) {
    assert(h != NULL);
    memset(h, 0, sizeof(*h));
}

void linz_history_free(linz_history *h) {
    assert(h != NULL);
    free(h->ops);
    memset(h, 0, sizeof(*h));
}

static bool linz__key_valid(const char *key) {
    return key != NULL && key[0] != '\0' && strlen(key) <= LINZ_KEY_BYTES_MAX;
}

int linz_history_add(linz_history *h, const linz_op *op, size_t *idx_out) {
    assert(h != NULL && op != NULL);
    assert(h->ops_count <= h->ops_cap);
    if (!linz__key_valid(op->key) || op->complete < op->invoke || op->kind > LINZ_CAS) {
        return KV_EINVAL;
    }
    if (h->ops_count == h->ops_cap) {
        size_t cap = h->ops_cap == 0 ? 64 : h->ops_cap * 2;
        linz_op *ops = realloc(h->ops, cap * sizeof(*ops));
        if (ops == NULL) {
            return KV_ENOMEM;
        }
        h->ops = ops;
        h->ops_cap = cap;
    }
    h->ops[h->ops_count] = *op;
    if (idx_out != NULL) {
        *idx_out = h->ops_count;
    }
    h->ops_count++;
    return 0;
}

static int linz__invoke(linz_history *h, linz_op *op, uint32_t client, const char *key, uint64_t t,
                        size_t *idx_out) {
    assert(idx_out != NULL);
    if (!linz__key_valid(key)) {
        return KV_EINVAL;
    }
    op->client = client;
    memcpy(op->key, key, strlen(key) + 1);
    op->invoke = t;
    op->complete = LINZ_TIME_INF;
    return linz_history_add(h, op, idx_out);
}

int linz_invoke_read(linz_history *h, uint32_t client, const char *key, uint64_t t,
                     size_t *idx_out) {
    linz_op op = {.kind = LINZ_READ};
    return linz__invoke(h, &op, client, key, t, idx_out);
}

int linz_invoke_write(linz_history *h, uint32_t client, const char *key, int64_t value, uint64_t t,
                      size_t *idx_out) {
    linz_op op = {.kind = LINZ_WRITE, .value = value};
    return linz__invoke(h, &op, client, key, t, idx_out);
}

int linz_invoke_cas(linz_history *h, uint32_t client, const char *key, linz_value expect,
                    int64_t value, uint64_t t, size_t *idx_out) {
    linz_op op = {.kind = LINZ_CAS, .expect = expect, .value = value};
    return linz__invoke(h, &op, client, key, t, idx_out);
}

static linz_op *linz__pending(linz_history *h, size_t idx, linz_kind kind, uint64_t t) {
    assert(h != NULL && idx < h->ops_count);
    linz_op *op = &h->ops[idx];
    assert(op->kind == kind);
    assert(op->complete == LINZ_TIME_INF); /* completed at most once */
    assert(t >= op->invoke && t != LINZ_TIME_INF);
    op->complete = t;
    return op;
}

void linz_complete_read(linz_history *h, size_t idx, uint64_t t, linz_value observed) {
    linz_op *op = linz__pending(h, idx, LINZ_READ, t);
    op->observed = observed.present ? observed : linz_absent();
    op->ok = true;
}

void linz_complete_write(linz_history *h, size_t idx, uint64_t t) {
    linz_op *op = linz__pending(h, idx, LINZ_WRITE, t);
    op->ok = true;
}

void linz_complete_cas(linz_history *h, size_t idx, uint64_t t, bool ok) {
    linz_op *op = linz__pending(h, idx, LINZ_CAS, t);
    op->ok = ok;
}

/* ---- the register model ------------------------------------------------- */

static bool linz__val_eq(linz_value a, linz_value b) {
    return a.present == b.present && (!a.present || a.value == b.value);
}

/* Applies op to state st. Returns whether the op's observed result is legal
 * there; *next gets the state after it. An op of unknown outcome is always
 * legal: a CAS of unknown outcome swaps iff the expected value matches. */
static bool linz__step(const linz_op *op, linz_value st, linz_value *next) {
    bool unknown = op->complete == LINZ_TIME_INF;
    bool match;
    switch (op->kind) {
    case LINZ_READ:
        assert(!unknown); /* dropped before the search */
        *next = st;
        return linz__val_eq(st, op->observed);
    case LINZ_WRITE:
        *next = linz_val(op->value);
        return true;
    case LINZ_CAS:
        match = linz__val_eq(st, op->expect);
        *next = match && (unknown || op->ok) ? linz_val(op->value) : st;
        return unknown || op->ok == match;
    }
    assert(0 && "bad op kind");
    return false;
}

/* ---- memo: set of (linearized bitset, state) ----------------------------- */

/* Each memo record is [hash, present, value, bitset words...] in one arena;
 * an open-addressing table holds record numbers + 1 (0 = empty). */
typedef struct linz__memo {
    uint64_t *arena;
    size_t arena_words;
    size_t arena_cap;
    uint32_t *slots;
    size_t slots_cap; /* power of two */
    size_t records_count;
    size_t words;     /* bitset words per record */
    size_t bytes_max; /* arena + slots */
} linz__memo;

static uint64_t linz__mix(uint64_t h, uint64_t x) {
    h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

static uint64_t linz__hash(const uint64_t *bits, size_t words, linz_value st) {
    uint64_t h = linz__mix(st.present ? 1 : 2, (uint64_t)st.value);
    for (size_t i = 0; i < words; i++) {
        h = linz__mix(h, bits[i]);
    }
    return h;
}

static size_t linz__memo_bytes(const linz__memo *m, size_t arena_cap, size_t slots_cap) {
    (void)m;
    return arena_cap * sizeof(uint64_t) + slots_cap * sizeof(uint32_t);
}

static int linz__memo_grow_slots(linz__memo *m) {
    size_t cap = m->slots_cap * 2;
    if (linz__memo_bytes(m, m->arena_cap, cap) > m->bytes_max || cap > UINT32_MAX) {
        return KV_ETOOBIG;
    }
    uint32_t *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL) {
        return KV_ENOMEM;
    }
    size_t rec = 3 + m->words;
    for (size_t r = 0; r < m->records_count; r++) {
        size_t i = m->arena[r * rec] & (cap - 1);
        while (slots[i] != 0) {
            i = (i + 1) & (cap - 1);
        }
        slots[i] = (uint32_t)(r + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->slots_cap = cap;
    return 0;
}

static int linz__memo_append(linz__memo *m, uint64_t hash, const uint64_t *bits, linz_value st) {
    size_t rec = 3 + m->words;
    if (m->arena_words + rec > m->arena_cap) {
        size_t cap = m->arena_cap * 2 > rec ? m->arena_cap * 2 : rec * 64;
        if (linz__memo_bytes(m, cap, m->slots_cap) > m->bytes_max) {
            return KV_ETOOBIG;
        }
        uint64_t *arena = realloc(m->arena, cap * sizeof(*arena));
        if (arena == NULL) {
            return KV_ENOMEM;
        }
        m->arena = arena;
        m->arena_cap = cap;
    }
    uint64_t *r = &m->arena[m->arena_words];
    r[0] = hash;
    r[1] = st.present;
    r[2] = (uint64_t)st.value;
    memcpy(&r[3], bits, m->words * sizeof(uint64_t));
    m->arena_words += rec;
    m->records_count++;
    return 0;
}

/* Returns 1 when (bits, st) was new and is now recorded, 0 when it was
 * already there, KV_ETOOBIG past the memory budget, KV_ENOMEM. */
static int linz__memo_insert(linz__memo *m, const uint64_t *bits, linz_value st) {
    if ((m->records_count + 1) * 2 > m->slots_cap) {
        int rc = linz__memo_grow_slots(m);
        if (rc < 0) {
            return rc;
        }
    }
    uint64_t hash = linz__hash(bits, m->words, st);
    size_t rec = 3 + m->words;
    size_t i = hash & (m->slots_cap - 1);
    for (; m->slots[i] != 0; i = (i + 1) & (m->slots_cap - 1)) {
        const uint64_t *r = &m->arena[(m->slots[i] - 1) * rec];
        if (r[0] == hash && r[1] == (uint64_t)st.present && r[2] == (uint64_t)st.value &&
            memcmp(&r[3], bits, m->words * sizeof(uint64_t)) == 0) {
            return 0;
        }
    }
    int rc = linz__memo_append(m, hash, bits, st);
    if (rc < 0) {
        return rc;
    }
    m->slots[i] = (uint32_t)m->records_count;
    assert(m->records_count * 2 <= m->slots_cap);
    return 1;
}

/* ---- one key: the event list and the search ------------------------------ */

typedef struct linz__event {
    struct linz__event *prev, *next, *match; /* match: call <-> return */
    uint64_t time;
    uint32_t op; /* local op number */
    bool is_call;
} linz__event;

typedef struct linz__frame {
    linz__event *call;
    linz_value state;
    bool forced; /* the op left the state unchanged: see linz__try */
} linz__frame;

typedef struct linz__key {
    const linz_history *h;
    const size_t *idx; /* local op number -> history index */
    size_t n;
    linz__event head; /* sentinel */
    linz__event *events;
    linz__frame *stack;
    uint64_t *lin; /* bitset of linearized local ops */
    linz__memo memo;
    size_t remaining; /* completed ops not yet linearized */
    size_t best_depth;
    bool best_set;
    uint32_t best_stuck;
    uint32_t *best_lin; /* linearization prefix on the deepest path */
} linz__key;

static const linz_op *linz__kop(const linz__key *k, uint32_t op) {
    assert(op < k->n);
    return &k->h->ops[k->idx[op]];
}

static int linz__event_cmp(const void *a, const void *b) {
    const linz__event *x = *(linz__event *const *)a;
    const linz__event *y = *(linz__event *const *)b;
    if (x->time != y->time) {
        return x->time < y->time ? -1 : 1;
    }
    if (x->is_call != y->is_call) {
        return x->is_call ? -1 : 1; /* touching intervals overlap */
    }
    return x->op < y->op ? -1 : (x->op > y->op ? 1 : 0);
}

/* Builds the sorted event list for k->n ops. Returns 0 or KV_ENOMEM. */
static int linz__build_events(linz__key *k) {
    size_t words = (k->n + 63) / 64;
    k->events = calloc(2 * k->n, sizeof(*k->events));
    k->stack = calloc(k->n, sizeof(*k->stack));
    k->lin = calloc(words, sizeof(*k->lin));
    k->best_lin = calloc(k->n, sizeof(*k->best_lin));
    linz__event **order = calloc(2 * k->n, sizeof(*order));
    if (k->events == NULL || k->stack == NULL || k->lin == NULL || k->best_lin == NULL ||
        order == NULL) {
        free(order);
        return KV_ENOMEM;
    }
    size_t count = 0;
    for (uint32_t i = 0; i < k->n; i++) {
        const linz_op *op = linz__kop(k, i);
        linz__event *call = &k->events[2 * i];
        *call = (linz__event){.time = op->invoke, .op = i, .is_call = true};
        order[count++] = call;
        if (op->complete != LINZ_TIME_INF) {
            linz__event *ret = &k->events[2 * i + 1];
            *ret = (linz__event){.time = op->complete, .op = i, .match = call};
            call->match = ret;
            order[count++] = ret;
            k->remaining++;
        }
    }
    qsort(order, count, sizeof(*order), linz__event_cmp);
    linz__event *prev = &k->head;
    for (size_t i = 0; i < count; i++) {
        prev->next = order[i];
        order[i]->prev = prev;
        prev = order[i];
    }
    prev->next = NULL;
    free(order);
    return 0;
}

static void linz__unlink(linz__event *e) {
    e->prev->next = e->next;
    if (e->next != NULL) {
        e->next->prev = e->prev;
    }
}

static void linz__relink(linz__event *e) {
    e->prev->next = e;
    if (e->next != NULL) {
        e->next->prev = e;
    }
}

/* Takes a call event and its return event (if any) out of the list. */
static void linz__lift(linz__event *call) {
    assert(call->is_call);
    linz__unlink(call);
    if (call->match != NULL) {
        linz__unlink(call->match);
    }
}

/* Undoes linz__lift, in reverse order. */
static void linz__unlift(linz__event *call) {
    assert(call->is_call);
    if (call->match != NULL) {
        linz__relink(call->match);
    }
    linz__relink(call);
}

static void linz__bit(uint64_t *bits, uint32_t i, bool on) {
    if (on) {
        bits[i / 64] |= 1ull << (i % 64);
    } else {
        bits[i / 64] &= ~(1ull << (i % 64));
    }
}

/* The search reached a return event of op `stuck` at this depth: remember the
 * deepest such point for the failure report. */
static void linz__note_stuck(linz__key *k, uint32_t stuck, size_t depth) {
    if (k->best_set && depth <= k->best_depth) {
        return;
    }
    k->best_set = true;
    k->best_depth = depth;
    k->best_stuck = stuck;
    for (size_t i = 0; i < depth; i++) {
        k->best_lin[i] = k->stack[i].call->op;
    }
}

/* Tries to linearize the op of call event e in *state. Returns 1 when it was
 * linearized (pushed and lifted), 0 when not, 2 when the configuration must
 * be abandoned (see below), or a negative code.
 *
 * A read of the current value or a failed CAS (known outcome, legal now) is
 * "forced": linearizing it now loses nothing, because every op that had to
 * precede it is already linearized (the walk reached its call event), it
 * changes no state and it constrains no later op: any order that places it
 * later stays legal with it moved here.
 * Only those two kinds: a write (or a CAS that swaps) of the value the
 * register already holds also leaves the state unchanged here, but it may be
 * needed later, to bring the value back after another write (values repeat);
 * using it up now can turn a linearizable history into FAIL
 * (test_write_of_current_value_may_come_later). So if the configuration after it fails, the one
 * before it fails too: backtracking pops a forced frame without trying
 * alternatives, and a forced op whose successor configuration was already
 * explored (memo hit) abandons the current configuration at once. This is
 * what keeps many concurrent reads from multiplying the search. */
static int linz__try(linz__key *k, linz__event *e, linz_value *state, size_t *depth) {
    linz_value next;
    if (!linz__step(linz__kop(k, e->op), *state, &next)) {
        return 0;
    }
    const linz_op *op = linz__kop(k, e->op);
    bool unchanged = linz__val_eq(next, *state);
    bool unknown = op->complete == LINZ_TIME_INF;
    if (unchanged && unknown) {
        /* An op of unknown outcome without effect here equals never taking
         * effect; keep it pending: later it may match and take effect. */
        return 0;
    }
    bool forced = !unknown && (op->kind == LINZ_READ || (op->kind == LINZ_CAS && !op->ok));
    assert(!forced || unchanged);
    linz__bit(k->lin, e->op, true);
    int rc = linz__memo_insert(&k->memo, k->lin, next);
    if (rc <= 0) {
        linz__bit(k->lin, e->op, false);
        return rc == 0 && forced ? 2 : rc;
    }
    assert(*depth < k->n);
    k->stack[(*depth)++] = (linz__frame){.call = e, .state = *state, .forced = forced};
    *state = next;
    linz__lift(e);
    if (e->match != NULL) {
        k->remaining--;
    }
    return 1;
}

static linz_verdict linz__unknown(linz_result *out, const char *key, const char *why) {
    out->verdict = LINZ_UNKNOWN;
    snprintf(out->reason, sizeof(out->reason), "key %s: %s", key, why);
    return LINZ_UNKNOWN;
}

/* Pops one frame: back to the configuration before it. */
static linz__frame linz__pop(linz__key *k, linz_value *state, size_t *depth) {
    assert(*depth > 0);
    linz__frame f = k->stack[--(*depth)];
    *state = f.state;
    linz__bit(k->lin, f.call->op, false);
    linz__unlift(f.call);
    if (f.call->match != NULL) {
        k->remaining++;
    }
    return f;
}

/* The WGL search over one key's event list. */
static linz_verdict linz__search(linz__key *k, uint64_t steps_max, linz_result *out) {
    const char *key = linz__kop(k, 0)->key;
    linz_value state = linz_absent();
    size_t depth = 0;
    linz__event *e = k->head.next;
    while (k->remaining > 0) {
        assert(e != NULL); /* a pending return event always lies ahead */
        if (e->is_call) {
            if (++out->steps > steps_max) {
                return linz__unknown(out, key, "search step budget exceeded");
            }
            int rc = linz__try(k, e, &state, &depth);
            if (rc < 0) {
                return linz__unknown(out, key,
                                     rc == KV_ENOMEM ? "out of memory" : "memo budget exceeded");
            }
            if (rc != 2) {
                e = rc == 1 ? k->head.next : e->next;
                continue;
            }
        } else {
            linz__note_stuck(k, e->op, depth);
        }
        linz__frame f;
        do { /* backtrack past forced frames: see linz__try */
            if (depth == 0) {
                return LINZ_FAIL;
            }
            f = linz__pop(k, &state, &depth);
        } while (f.forced);
        e = f.call->next;
    }
    return LINZ_OK;
}

static int linz__local_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

/* Failure window: the last few ops linearized before the stuck op on the
 * deepest path, the stuck op, and the unlinearized ops overlapping it. */
static void linz__window(const linz__key *k, linz_result *out) {
    uint32_t w[LINZ_WINDOW_MAX];
    size_t count = 0;
    assert(k->best_set); /* every failure comes from some return event */
    const linz_op *s = linz__kop(k, k->best_stuck);
    w[count++] = k->best_stuck;
    size_t tail = k->best_depth < 4 ? k->best_depth : 4;
    for (size_t i = k->best_depth - tail; i < k->best_depth; i++) {
        w[count++] = k->best_lin[i];
    }
    bool *done = calloc(k->n, sizeof(*done));
    for (size_t i = 0; done != NULL && i < k->best_depth; i++) {
        done[k->best_lin[i]] = true;
    }
    for (uint32_t i = 0; done != NULL && i < k->n && count < LINZ_WINDOW_MAX; i++) {
        const linz_op *op = linz__kop(k, i);
        bool overlaps = op->invoke <= s->complete && op->complete >= s->invoke;
        if (!done[i] && i != k->best_stuck && overlaps) {
            w[count++] = i;
        }
    }
    free(done);
    qsort(w, count, sizeof(w[0]), linz__local_cmp);
    out->stuck_op = k->idx[k->best_stuck];
    out->window_count = count;
    for (size_t i = 0; i < count; i++) {
        out->window[i] = k->idx[w[i]];
    }
}

static void linz__key_free(linz__key *k) {
    free(k->events);
    free(k->stack);
    free(k->lin);
    free(k->best_lin);
    free(k->memo.arena);
    free(k->memo.slots);
}

/* Checks the n ops idx[0..n) of one key (sorted by invoke time). */
static linz_verdict linz__check_key(const linz_history *h, const size_t *idx, size_t n,
                                    const linz_options *opt, linz_result *out) {
    assert(n > 0);
    char why[64];
    if (n > LINZ_KEY_OPS_MAX) {
        snprintf(why, sizeof(why), "%zu ops > %u", n, LINZ_KEY_OPS_MAX);
        return linz__unknown(out, h->ops[idx[0]].key, why);
    }
    linz__key k = {.h = h, .idx = idx, .n = n};
    k.memo.words = (n + 63) / 64;
    k.memo.bytes_max = opt->memo_bytes_max;
    k.memo.slots_cap = 1024;
    k.memo.slots = calloc(k.memo.slots_cap, sizeof(*k.memo.slots));
    linz_verdict v;
    if (k.memo.slots == NULL || linz__build_events(&k) < 0) {
        v = linz__unknown(out, h->ops[idx[0]].key, "out of memory");
    } else {
        v = linz__search(&k, opt->steps_max, out);
    }
    if (v == LINZ_FAIL) {
        out->verdict = LINZ_FAIL;
        linz__window(&k, out);
    }
    linz__key_free(&k);
    return v;
}

static int linz__hist_cmp(const void *a, const void *b, void *arg) {
    const linz_history *h = arg;
    const linz_op *x = &h->ops[*(const size_t *)a];
    const linz_op *y = &h->ops[*(const size_t *)b];
    int c = strcmp(x->key, y->key);
    if (c != 0) {
        return c;
    }
    if (x->invoke != y->invoke) {
        return x->invoke < y->invoke ? -1 : 1;
    }
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

linz_options linz_options_default(void) {
    linz_options o = {.steps_max = LINZ_STEPS_MAX_DEFAULT,
                      .memo_bytes_max = LINZ_MEMO_BYTES_MAX_DEFAULT};
    return o;
}

linz_verdict linz_check(const linz_history *h, linz_result *out) {
    linz_options o = linz_options_default();
    return linz_check_opts(h, &o, out);
}

linz_verdict linz_check_opts(const linz_history *h, const linz_options *opt, linz_result *out) {
    assert(h != NULL && opt != NULL && out != NULL);
    assert(opt->steps_max > 0 && opt->memo_bytes_max > 0);
    memset(out, 0, sizeof(*out));
    size_t *idx = malloc((h->ops_count + 1) * sizeof(*idx));
    if (idx == NULL) {
        return linz__unknown(out, "*", "out of memory");
    }
    size_t count = 0;
    for (size_t i = 0; i < h->ops_count; i++) {
        const linz_op *op = &h->ops[i];
        if (!(op->kind == LINZ_READ && op->complete == LINZ_TIME_INF)) {
            idx[count++] = i; /* a read of unknown outcome constrains nothing */
        }
    }
    qsort_r(idx, count, sizeof(*idx), linz__hist_cmp, (void *)h);
    linz_verdict v = LINZ_OK;
    for (size_t start = 0, end; start < count && v == LINZ_OK; start = end) {
        const char *key = h->ops[idx[start]].key;
        for (end = start + 1; end < count && strcmp(h->ops[idx[end]].key, key) == 0; end++) {
        }
        out->keys_count++;
        v = linz__check_key(h, &idx[start], end - start, opt, out);
        if (v != LINZ_OK) {
            memcpy(out->key, key, strlen(key) + 1);
        }
    }
    free(idx);
    out->verdict = v;
    return v;
}

/* ---- reporting ------------------------------------------------------------ */

const char *linz_verdict_name(linz_verdict v) {
    switch (v) {
    case LINZ_OK:
        return "OK";
    case LINZ_FAIL:
        return "FAIL";
    case LINZ_UNKNOWN:
        return "UNKNOWN";
    }
    return "?";
}

static const char *linz__val_str(linz_value v, char *buf, size_t n) {
    if (v.present) {
        snprintf(buf, n, "%" PRId64, v.value);
    } else {
        snprintf(buf, n, "absent");
    }
    return buf;
}

const char *linz_op_format(const linz_op *op, char *buf, size_t buf_bytes) {
    assert(op != NULL && buf != NULL && buf_bytes > 0);
    char a[24], b[24], when[48];
    bool unknown = op->complete == LINZ_TIME_INF;
    if (unknown) {
        snprintf(when, sizeof(when), "[%" PRIu64 ",inf)", op->invoke);
    } else {
        snprintf(when, sizeof(when), "[%" PRIu64 ",%" PRIu64 "]", op->invoke, op->complete);
    }
    switch (op->kind) {
    case LINZ_READ:
        snprintf(buf, buf_bytes, "c%" PRIu32 " READ %s -> %s %s", op->client, op->key,
                 unknown ? "?" : linz__val_str(op->observed, a, sizeof(a)), when);
        break;
    case LINZ_WRITE:
        snprintf(buf, buf_bytes, "c%" PRIu32 " WRITE %s %" PRId64 " %s %s", op->client, op->key,
                 op->value, unknown ? "?" : "ok", when);
        break;
    case LINZ_CAS:
        snprintf(buf, buf_bytes, "c%" PRIu32 " CAS %s %s->%s %s %s", op->client, op->key,
                 linz__val_str(op->expect, a, sizeof(a)),
                 linz__val_str(linz_val(op->value), b, sizeof(b)),
                 unknown ? "?" : (op->ok ? "ok" : "failed"), when);
        break;
    }
    return buf;
}

void linz_result_print(const linz_history *h, const linz_result *r, FILE *f) {
    assert(h != NULL && r != NULL && f != NULL);
    fprintf(f, "linz: %s (%" PRIu32 " keys, %" PRIu64 " steps)", linz_verdict_name(r->verdict),
            r->keys_count, r->steps);
    if (r->verdict == LINZ_UNKNOWN) {
        fprintf(f, ": %s", r->reason);
    }
    fprintf(f, "\n");
    if (r->verdict != LINZ_FAIL) {
        return;
    }
    fprintf(f, "linz: key %s: no linearization; stuck at op #%zu. Window:\n", r->key, r->stuck_op);
    for (size_t i = 0; i < r->window_count; i++) {
        char buf[160];
        size_t j = r->window[i];
        fprintf(f, "  %s #%zu %s\n", j == r->stuck_op ? "*" : " ", j,
                linz_op_format(&h->ops[j], buf, sizeof(buf)));
    }
}
