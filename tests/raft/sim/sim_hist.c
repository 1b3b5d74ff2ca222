#include "sim_hist.h"

#include <assert.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void sim_hist_init(sim_hist *h) {
    memset(h, 0, sizeof(*h));
}

void sim_hist_free(sim_hist *h) {
    free(h->ops);
    memset(h, 0, sizeof(*h));
}

size_t sim_hist_invoke(sim_hist *h, uint32_t client, const sim_cmd *c, uint64_t now) {
    assert(h->count < SIM_HIST_OPS_MAX);
    if (h->count == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 256;
        sim_hop *ops = realloc(h->ops, cap * sizeof(*ops));
        assert(ops != NULL);
        h->ops = ops;
        h->cap = cap;
    }
    sim_hop *o = &h->ops[h->count];
    *o = (sim_hop){.client = client,
                   .op = c->op,
                   .key = c->key,
                   .arg1 = c->arg1,
                   .arg2 = c->arg2,
                   .invoke_time = now,
                   .return_time = UINT64_MAX,
                   .outcome = SIM_OUT_PENDING};
    return h->count++;
}

void sim_hist_complete(sim_hist *h, size_t i, enum sim_outcome outcome, uint64_t value,
                       uint64_t now) {
    assert(i < h->count);
    sim_hop *o = &h->ops[i];
    assert(o->outcome == SIM_OUT_PENDING);
    assert(outcome == SIM_OUT_OK || outcome == SIM_OUT_FAIL);
    assert(now >= o->invoke_time);
    o->outcome = outcome;
    o->value = value;
    o->return_time = now;
}

void sim_hist_give_up(sim_hist *h, size_t i) {
    assert(i < h->count);
    assert(h->ops[i].outcome == SIM_OUT_PENDING);
    h->ops[i].outcome = SIM_OUT_UNKNOWN;
}

#ifdef SIM_HAVE_LINZ
#include "linz.h"

/* Register value 0 is the initial "never written" state: linz's absent. */
static linz_value to_linz(uint64_t v) {
    return v == 0 ? linz_absent() : linz_val((int64_t)v);
}

static void hop_to_linz(const sim_hop *o, linz_op *l) {
    memset(l, 0, sizeof(*l));
    l->client = o->client;
    snprintf(l->key, sizeof(l->key), "k%u", o->key);
    l->invoke = o->invoke_time;
    bool done = o->outcome == SIM_OUT_OK || o->outcome == SIM_OUT_FAIL;
    l->complete = done ? o->return_time : LINZ_TIME_INF;
    l->ok = o->outcome == SIM_OUT_OK;
    switch (o->op) {
    case SIM_OP_READ:
        l->kind = LINZ_READ;
        l->observed = to_linz(o->value);
        break;
    case SIM_OP_WRITE:
        l->kind = LINZ_WRITE;
        l->value = (int64_t)o->arg1;
        break;
    case SIM_OP_CAS:
        l->kind = LINZ_CAS;
        l->expect = to_linz(o->arg1);
        l->value = (int64_t)o->arg2;
        break;
    }
}

int sim_hist_check(const sim_hist *h, char *why, size_t why_len) {
    linz_history lh;
    linz_history_init(&lh);
    for (size_t i = 0; i < h->count; i++) {
        const sim_hop *o = &h->ops[i];
        /* A read with no answer constrains nothing. */
        if (o->op == SIM_OP_READ && o->outcome != SIM_OUT_OK)
            continue;
        linz_op l;
        hop_to_linz(o, &l);
        int rc = linz_history_add(&lh, &l, NULL);
        assert(rc == 0);
    }
    linz_result res;
    linz_verdict v = linz_check(&lh, &res);
    int out = 1;
    if (v == LINZ_FAIL) {
        char op[160];
        linz_op_format(&lh.ops[res.stuck_op], op, sizeof(op));
        snprintf(why, why_len, "key %s: cannot linearize %s", res.key, op);
        out = 0;
    } else if (v == LINZ_UNKNOWN) {
        snprintf(why, why_len, "checker gave up: %s", res.reason);
        out = -1;
    }
    linz_history_free(&lh);
    return out;
}
#else
int sim_hist_check(const sim_hist *h, char *why, size_t why_len) {
    (void)h;
    snprintf(why, why_len, "no linearizability checker built (target kvlinz missing)");
    return -1;
}
#endif
