/*
 * The client history: each register operation with its invoke and return
 * times in virtual time. An operation whose client gave up stays open
 * (outcome unknown): it may have taken effect at any time after its invoke.
 */
#ifndef KV_SIM_HIST_H
#define KV_SIM_HIST_H

#include "sim_sm.h"

#include <stddef.h>
#include <stdint.h>

enum sim_outcome {
    SIM_OUT_PENDING = 0, /* still in flight */
    SIM_OUT_OK,          /* write done, CAS swapped, or read returned value */
    SIM_OUT_FAIL,        /* CAS compare failed: it did not take effect */
    SIM_OUT_UNKNOWN,     /* the client gave up: may or may not have happened */
};

typedef struct sim_hop {
    uint32_t client;
    enum sim_op op;
    uint32_t key;
    uint64_t arg1, arg2; /* as in sim_cmd */
    uint64_t value;      /* READ: the value read */
    uint64_t invoke_time;
    uint64_t return_time; /* UINT64_MAX while open */
    enum sim_outcome outcome;
} sim_hop;

typedef struct sim_hist {
    sim_hop *ops;
    size_t count;
    size_t cap;
} sim_hist;

/* Bound on recorded operations per run. */
#define SIM_HIST_OPS_MAX 100000u

void sim_hist_init(sim_hist *h);
void sim_hist_free(sim_hist *h);
/* Records an invocation; returns its index. */
size_t sim_hist_invoke(sim_hist *h, uint32_t client, const sim_cmd *c, uint64_t now);
/* Completes op i with outcome (OK or FAIL) and, for a read, its value. */
void sim_hist_complete(sim_hist *h, size_t i, enum sim_outcome outcome, uint64_t value,
                       uint64_t now);
/* Marks op i unknown: it stays open-ended. */
void sim_hist_give_up(sim_hist *h, size_t i);

/* Checks the history for linearizability (one register per key).
 * Returns 1 when linearizable, 0 when not (writes a one-line reason into
 * why), -1 when the checker gave up (too large a search). */
int sim_hist_check(const sim_hist *h, char *why, size_t why_len);

#endif
