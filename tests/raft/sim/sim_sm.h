/*
 * The simulated application: a few registers (uint64 values, 0 at start)
 * plus client sessions for exactly-once writes. Log entries carry encoded
 * commands (sim_cmd); a snapshot is the serialized sim_sm.
 *
 * Exactly once: a command whose (client, seq) is not newer than the
 * client's session is a duplicate; it changes nothing and gets the stored
 * reply (docs/rules.md "a retried write applied twice").
 */
#ifndef KV_SIM_SM_H
#define KV_SIM_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_KEYS 3u
#define SIM_CLIENTS_MAX 8u

enum sim_op { SIM_OP_READ = 1, SIM_OP_WRITE, SIM_OP_CAS };

/* One encoded command. */
typedef struct sim_cmd {
    enum sim_op op;
    uint32_t key;
    uint32_t client;
    uint64_t seq;
    uint64_t arg1; /* WRITE: value; CAS: expected */
    uint64_t arg2; /* CAS: new value */
} sim_cmd;

#define SIM_CMD_BYTES 40u
#define SIM_CMD_MAGIC 0x4bu

/* Result of applying a write or CAS. */
typedef struct sim_reply {
    bool ok;        /* false: CAS compare failed */
    uint64_t value; /* the register's value after the command */
} sim_reply;

typedef struct sim_session {
    uint64_t seq; /* last applied seq, 0 = none */
    sim_reply reply;
} sim_session;

typedef struct sim_sm {
    uint64_t values[SIM_KEYS];
    sim_session sessions[SIM_CLIENTS_MAX];
} sim_sm;

/* Bytes of a serialized sim_sm. */
#define SIM_SM_BYTES (8u + 8u * SIM_KEYS + 24u * SIM_CLIENTS_MAX + 8u)

/* Encodes c into buf[0..len), len >= SIM_CMD_BYTES; bytes past the command
 * are padding (the bench sends 256-byte entries). */
void sim_cmd_encode(const sim_cmd *c, uint8_t *buf, size_t len);
/* Decodes; returns 0, or -1 when buf is not a command (an empty entry). */
int sim_cmd_decode(const uint8_t *buf, size_t len, sim_cmd *c);

void sim_sm_init(sim_sm *sm);
/* Applies a WRITE or CAS; a duplicate gets its stored reply. */
sim_reply sim_sm_apply(sim_sm *sm, const sim_cmd *c, bool *duplicate);

/* Serializes into buf[SIM_SM_BYTES]. */
void sim_sm_encode(const sim_sm *sm, uint8_t *buf);
/* The digest of a serialized sim_sm (its trailing checksum). */
uint64_t sim_sm_digest(const uint8_t *buf);
/* Parses and checks; returns 0, or -1 on a bad length or checksum. */
int sim_sm_decode(const uint8_t *buf, size_t len, sim_sm *sm);

#endif
