/*
 * linz: a linearizability checker for histories of register operations.
 *
 * A history is a list of operations (READ, WRITE, CAS) on a set of
 * independent registers named by short string keys. Every register starts
 * "absent" (a state distinct from every 64-bit value). Each operation has an
 * invocation time and a completion time; an operation whose outcome is
 * unknown (the client timed out, the node crashed) has completion
 * LINZ_TIME_INF: it may have taken effect at any moment after its
 * invocation, or never.
 *
 * linz_check() decides whether some total order of the operations (1) is
 * consistent with real time (if A completed before B was invoked, A comes
 * first) and (2) is a legal sequential execution of a register that yields
 * exactly the observed results. Registers are checked one key at a time
 * (linearizability is compositional: Herlihy & Wing 1990, "P-compositionality"
 * in Horn & Kroening 2015), each with the Wing & Gong search as improved by
 * Lowe ("WGL": Lowe 2017, "Testing for linearizability"), memoizing
 * (set of linearized operations, register state) pairs, as porcupine
 * (github.com/anishathalye/porcupine) and Knossos do.
 *
 * The search is exponential in the worst case, so it has a budget: when a
 * key has more than LINZ_KEY_OPS_MAX operations, or the search takes more
 * than the budgeted steps or memory, the verdict is LINZ_UNKNOWN, never
 * LINZ_OK.
 *
 * Times are any monotonic unit (ticks of a simulator, nanoseconds). Two
 * intervals that touch (A.complete == B.invoke) count as concurrent: the
 * checker never assumes an order the clock could not establish.
 *
 * Recording rules for callers:
 *  - an operation that definitely failed without effect (NOTLEADER before it
 *    was proposed, BUSY) is not recorded at all;
 *  - an operation with an unknown outcome (TIMEOUT, crash) is recorded with
 *    complete = LINZ_TIME_INF (or never completed after linz_invoke_*);
 *    a READ of unknown outcome constrains nothing and is ignored;
 *  - a CAS that was refused because the current value differed (COMPARE) is
 *    recorded as completed with ok = false.
 *
 * Ownership: a linz_history owns its array of operations; linz_history_free()
 * releases it. linz_result holds no pointers; its op indices refer to the
 * history passed to linz_check().
 *
 * Not thread-safe: one history per thread.
 */
#ifndef KV_TESTS_RAFT_LINZ_H
#define KV_TESTS_RAFT_LINZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Completion time of an operation whose outcome is unknown. */
#define LINZ_TIME_INF UINT64_MAX

/* A key is a short name: "k1", "7". Longer keys are refused with KV_EINVAL. */
#define LINZ_KEY_BYTES_MAX 31u

/* Operations on one key the checker will search. The memo entries are
 * bitsets of this many bits, so 4096 ops cost 512 bytes per entry; past it
 * the search would be hopeless anyway. Past it: LINZ_UNKNOWN. */
#define LINZ_KEY_OPS_MAX 4096u

/* Operations named in a failure report: enough to show the stuck operation,
 * what was linearized just before it and what overlapped it. */
#define LINZ_WINDOW_MAX 12u

/* Default search budget: steps (operations tried) and memo bytes, summed over
 * all keys. A few million steps is seconds; 256 MiB fits a test machine. */
#define LINZ_STEPS_MAX_DEFAULT 4000000u
#define LINZ_MEMO_BYTES_MAX_DEFAULT (256u * 1024u * 1024u)

typedef enum linz_kind {
    LINZ_READ = 0,
    LINZ_WRITE = 1,
    LINZ_CAS = 2,
} linz_kind;

/* A register state or an observed value: absent, or a 64-bit value. */
typedef struct linz_value {
    bool present;
    int64_t value; /* 0 when !present */
} linz_value;

static inline linz_value linz_val(int64_t v) {
    linz_value x = {true, v};
    return x;
}

static inline linz_value linz_absent(void) {
    linz_value x = {false, 0};
    return x;
}

typedef struct linz_op {
    uint32_t client;
    linz_kind kind;
    char key[LINZ_KEY_BYTES_MAX + 1]; /* NUL-terminated */
    uint64_t invoke;
    uint64_t complete; /* >= invoke, or LINZ_TIME_INF: outcome unknown */
    /* Inputs. WRITE: value = the value written. CAS: expect (may be absent)
     * and value = the new value. READ: unused. */
    linz_value expect;
    int64_t value;
    /* Observed result, meaningful only when complete != LINZ_TIME_INF.
     * READ: observed (a value or absent). CAS: ok (swapped or not).
     * WRITE: ok is always true. */
    linz_value observed;
    bool ok;
} linz_op;

typedef struct linz_history {
    linz_op *ops; /* owned; ops_count valid entries */
    size_t ops_count;
    size_t ops_cap;
} linz_history;

typedef enum linz_verdict {
    LINZ_OK = 0,      /* linearizable */
    LINZ_FAIL = 1,    /* not linearizable: see key and window */
    LINZ_UNKNOWN = 2, /* budget exceeded or out of memory: see reason */
} linz_verdict;

typedef struct linz_options {
    uint64_t steps_max;    /* operations tried, summed over keys; > 0 */
    size_t memo_bytes_max; /* memo memory for one key at a time; > 0 */
} linz_options;

typedef struct linz_result {
    linz_verdict verdict;
    /* FAIL or UNKNOWN: the key. FAIL: the operation that could not be
     * linearized (index into the history's ops) and a window of related ops
     * (the last ones linearized before it on the deepest path the search
     * reached, and the ops concurrent with it), sorted by invoke time. */
    char key[LINZ_KEY_BYTES_MAX + 1];
    size_t stuck_op;
    size_t window[LINZ_WINDOW_MAX];
    size_t window_count;
    uint64_t steps; /* search steps used, all keys */
    uint32_t keys_count;
    char reason[128]; /* UNKNOWN: why ("key k3: 5000 ops > 4096") */
} linz_result;

/* ---- building a history ------------------------------------------------ */

void linz_history_init(linz_history *h);

/* Frees the op array; h is left empty and may be reused. */
void linz_history_free(linz_history *h);

/* Appends a copy of *op. Returns 0, KV_EINVAL (bad key, complete < invoke,
 * kind out of range) or KV_ENOMEM. *idx_out (may be NULL) receives its index. */
int linz_history_add(linz_history *h, const linz_op *op, size_t *idx_out);

/* Record an invocation at time t (complete = LINZ_TIME_INF until a
 * linz_complete_* call). Return 0, KV_EINVAL or KV_ENOMEM; *idx_out (not
 * NULL) names the op for the completion call. */
int linz_invoke_read(linz_history *h, uint32_t client, const char *key, uint64_t t,
                     size_t *idx_out);
int linz_invoke_write(linz_history *h, uint32_t client, const char *key, int64_t value, uint64_t t,
                      size_t *idx_out);
int linz_invoke_cas(linz_history *h, uint32_t client, const char *key, linz_value expect,
                    int64_t value, uint64_t t, size_t *idx_out);

/* Record a completion at time t >= the invoke time (asserted). Each op is
 * completed at most once (asserted); an op never completed is unknown. */
void linz_complete_read(linz_history *h, size_t idx, uint64_t t, linz_value observed);
void linz_complete_write(linz_history *h, size_t idx, uint64_t t);
void linz_complete_cas(linz_history *h, size_t idx, uint64_t t, bool ok);

/* ---- checking ---------------------------------------------------------- */

/* The default budget (LINZ_*_DEFAULT). */
linz_options linz_options_default(void);

/* Checks h with the default budget. Fills *out and returns out->verdict.
 * Does not modify h. */
linz_verdict linz_check(const linz_history *h, linz_result *out);
linz_verdict linz_check_opts(const linz_history *h, const linz_options *opt, linz_result *out);

/* "OK", "FAIL", "UNKNOWN". Static storage. */
const char *linz_verdict_name(linz_verdict v);

/* Formats one op as "c3 CAS k1 absent->7 ok [10,14]". Returns buf. */
const char *linz_op_format(const linz_op *op, char *buf, size_t buf_bytes);

/* Prints the verdict, key, reason and window (one op per line) to f. */
void linz_result_print(const linz_history *h, const linz_result *r, FILE *f);

#endif /* KV_TESTS_RAFT_LINZ_H */
