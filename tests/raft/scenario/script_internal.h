/*
 * Shared between the interpreter's action commands (script.c) and its
 * expectations (expect.c). Not a public interface.
 */
#ifndef KV_TESTS_RAFT_SCENARIO_SCRIPT_INTERNAL_H
#define KV_TESTS_RAFT_SCENARIO_SCRIPT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "script.h"

/* A command: argv[0] is its name; rc_want is the code after "=>" (0 when
 * absent). Returns 0, or -1 with run->err set (sc_fail). */
typedef int (*sc_cmd_fn)(sc_run *run, int argc, char **argv, int rc_want);

typedef struct sc_cmd {
    const char *name;
    int args_min; /* not counting the name */
    int args_max;
    bool takes_rc; /* accepts "=> WORD" */
    sc_cmd_fn fn;
    const char *usage;
} sc_cmd;

/* Sets run->err (printf-style) and returns -1. */
int sc_fail(sc_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parsers: return 0, or -1 with run->err set. */
int sc_parse_u64(sc_run *run, const char *s, uint64_t *out);
int sc_parse_node(sc_run *run, const char *s, uint64_t *id);    /* an existing node */
int sc_parse_up_node(sc_run *run, const char *s, uint64_t *id); /* an existing, running node */
int sc_parse_link(sc_run *run, const char *s, uint64_t *from, uint64_t *to); /* "1->2" */

/* The expectations, terminated by a NULL name. */
extern const sc_cmd sc_expect_cmds[];

#endif /* KV_TESTS_RAFT_SCENARIO_SCRIPT_INTERNAL_H */
