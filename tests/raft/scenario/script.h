/*
 * The scenario script interpreter. A script is a text file, one command per
 * line; '#' starts a comment line; blank lines are ignored. A command that
 * calls raft may end with "=> WORD" (a kv_errword code word, or OK, the
 * default): the call must return that code. Every "expect-..." command
 * checks state and fails with the file:line, the command, what was expected
 * and what was found. The command list is in script.c (sc_commands) and in
 * tests/raft/scenario/README.md.
 */
#ifndef KV_TESTS_RAFT_SCENARIO_SCRIPT_H
#define KV_TESTS_RAFT_SCENARIO_SCRIPT_H

#include <stdbool.h>
#include <stdio.h>

#include "harness.h"

/* Longest script line. */
#define SC_LINE_BYTES_MAX 1024u

/* Words in one command. */
#define SC_ARGS_MAX 32u

typedef struct sc_run {
    sc_cluster c;
    bool has_cluster;
    const char *file;
    unsigned line;
    char cmd[SC_LINE_BYTES_MAX]; /* the current command, as written */
    char err[512];               /* why it failed */
} sc_run;

/* Runs the script in f (named file for messages). Returns 0 when every
 * command succeeded, -1 after printing "file:line: command: error" to
 * stderr. trace prints every message and Ready to stdout. */
int sc_run_script(FILE *f, const char *file, bool trace);

#endif /* KV_TESTS_RAFT_SCENARIO_SCRIPT_H */
