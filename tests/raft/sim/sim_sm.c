#include "sim_sm.h"

#include "common/checksum.h"

#include <assert.h>
#include <string.h>

#define SM_MAGIC 0x4d53534du /* "MSSM" */

void sim_cmd_encode(const sim_cmd *c, uint8_t *buf, size_t len) {
    assert(len >= SIM_CMD_BYTES);
    assert(c->op >= SIM_OP_READ && c->op <= SIM_OP_CAS && c->key < SIM_KEYS);
    memset(buf, 0, len);
    buf[0] = SIM_CMD_MAGIC;
    buf[1] = (uint8_t)c->op;
    buf[2] = (uint8_t)c->key;
    kv_put_u32(buf + 4, c->client);
    kv_put_u64(buf + 8, c->seq);
    kv_put_u64(buf + 16, c->arg1);
    kv_put_u64(buf + 24, c->arg2);
    kv_put_u64(buf + 32, kv_xxh3(buf, 32));
}

int sim_cmd_decode(const uint8_t *buf, size_t len, sim_cmd *c) {
    if (len < SIM_CMD_BYTES || buf[0] != SIM_CMD_MAGIC)
        return -1;
    /* A payload that claims to be a command must be one: anything else is
     * corruption somewhere between propose and apply. */
    assert(kv_get_u64(buf + 32) == kv_xxh3(buf, 32));
    c->op = (enum sim_op)buf[1];
    c->key = buf[2];
    c->client = kv_get_u32(buf + 4);
    c->seq = kv_get_u64(buf + 8);
    c->arg1 = kv_get_u64(buf + 16);
    c->arg2 = kv_get_u64(buf + 24);
    assert(c->op >= SIM_OP_READ && c->op <= SIM_OP_CAS && c->key < SIM_KEYS);
    return 0;
}

void sim_sm_init(sim_sm *sm) {
    memset(sm, 0, sizeof(*sm));
}

sim_reply sim_sm_apply(sim_sm *sm, const sim_cmd *c, bool *duplicate) {
    assert(c->client < SIM_CLIENTS_MAX && c->key < SIM_KEYS);
    assert(c->op == SIM_OP_WRITE || c->op == SIM_OP_CAS);
    sim_session *s = &sm->sessions[c->client];
    *duplicate = c->seq <= s->seq;
    if (*duplicate)
        return s->reply; /* a client has one op in flight: seq == s->seq */
    sim_reply r = {true, 0};
    if (c->op == SIM_OP_WRITE) {
        sm->values[c->key] = c->arg1;
    } else if (sm->values[c->key] == c->arg1) {
        sm->values[c->key] = c->arg2;
    } else {
        r.ok = false;
    }
    r.value = sm->values[c->key];
    s->seq = c->seq;
    s->reply = r;
    return r;
}

void sim_sm_encode(const sim_sm *sm, uint8_t *buf) {
    uint8_t *p = buf;
    kv_put_u32(p, SM_MAGIC);
    kv_put_u32(p + 4, SIM_KEYS);
    p += 8;
    for (uint32_t k = 0; k < SIM_KEYS; k++, p += 8)
        kv_put_u64(p, sm->values[k]);
    for (uint32_t i = 0; i < SIM_CLIENTS_MAX; i++, p += 24) {
        kv_put_u64(p, sm->sessions[i].seq);
        kv_put_u64(p + 8, sm->sessions[i].reply.ok);
        kv_put_u64(p + 16, sm->sessions[i].reply.value);
    }
    kv_put_u64(p, kv_xxh3(buf, (size_t)(p - buf)));
    assert((size_t)(p + 8 - buf) == SIM_SM_BYTES);
}

int sim_sm_decode(const uint8_t *buf, size_t len, sim_sm *sm) {
    if (len != SIM_SM_BYTES || kv_get_u32(buf) != SM_MAGIC || kv_get_u32(buf + 4) != SIM_KEYS)
        return -1;
    if (kv_get_u64(buf + len - 8) != kv_xxh3(buf, len - 8))
        return -1;
    const uint8_t *p = buf + 8;
    for (uint32_t k = 0; k < SIM_KEYS; k++, p += 8)
        sm->values[k] = kv_get_u64(p);
    for (uint32_t i = 0; i < SIM_CLIENTS_MAX; i++, p += 24) {
        sm->sessions[i].seq = kv_get_u64(p);
        sm->sessions[i].reply.ok = kv_get_u64(p + 8) != 0;
        sm->sessions[i].reply.value = kv_get_u64(p + 16);
    }
    return 0;
}

uint64_t sim_sm_digest(const uint8_t *buf) {
    uint64_t h = kv_get_u64(buf + SIM_SM_BYTES - 8);
    return h ? h : 1; /* 0 means "unknown" to the checker */
}
