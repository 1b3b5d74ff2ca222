/*
 * kvcli internals: the command table and what every command shares.
 *
 * A command is one function taking (ctx, argc, argv) with argv[0] the
 * command's name, as main(), the line-at-a-time mode and the interactive
 * shell (libedit) call it. A command prints its
 * result to ctx->out, its complaint to ctx->err (or, with --json, one JSON
 * object to ctx->out either way), and returns one of the exit codes below.
 */
#ifndef KV_KVCLI_H
#define KV_KVCLI_H

#include "kv/client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Exit codes (docs: kvcli --help). */
enum kvcli_exit {
    KVCLI_EXIT_OK = 0,
    KVCLI_EXIT_NO = 1,          /* a "no" answer: not found, compare failed */
    KVCLI_EXIT_USAGE = 2,       /* unknown command, wrong arguments, bad flag */
    KVCLI_EXIT_UNAVAILABLE = 3, /* cluster unavailable or timed out */
    KVCLI_EXIT_REFUSED = 4,     /* refused by the server (TOOBIG, BUSY, ...) */
};

/* Most arguments one command line may have (the longest command has 4). */
#define KVCLI_ARGS_MAX 64

typedef struct kvcli_ctx {
    const char *cluster;           /* "host:port,..." (borrowed) */
    struct kv_client_options opts; /* timeout, token */
    bool json;                     /* --json: one JSON object per result */
    bool stdin_is_commands;        /* a value "-" cannot read stdin then */
    bool shell;                    /* the interactive shell runs the commands */
    bool exact;                    /* get writes the value's bytes, nothing else */
    const size_t *argl;            /* the words' lengths (a word may hold \x00),
                                      NULL: strlen; as the argv of kvcli_run */
    kv_client *client;             /* opened on first use; NULL before */
    FILE *out;                     /* results */
    FILE *err;                     /* complaints (text mode) */
} kvcli_ctx;

typedef int (*kvcli_cmd_fn)(kvcli_ctx *ctx, int argc, char **argv);

typedef struct kvcli_cmd {
    const char *name;
    kvcli_cmd_fn fn;
    const char *args; /* usage synopsis after the name */
    const char *help; /* one line */
} kvcli_cmd;

/* The commands, ended by an entry with name NULL. */
extern const kvcli_cmd kvcli_commands[];

/* Runs argv[0] with its arguments; unknown command: KVCLI_EXIT_USAGE. */
int kvcli_run(kvcli_ctx *ctx, int argc, char **argv);

/* Prints the whole usage text to f. */
void kvcli_usage(FILE *f);
/* Prints one command's usage and help to f. */
void kvcli_cmd_usage(FILE *f, const kvcli_cmd *k);

/* The client, opened on first use with ctx->cluster and ctx->opts. On
 * failure reports it (as command `cmd`) and returns the exit code; on
 * success returns 0 and sets *out (owned by ctx; kvcli_ctx_close frees). */
int kvcli_client(kvcli_ctx *ctx, const char *cmd, kv_client **out);
void kvcli_ctx_close(kvcli_ctx *ctx);

/* Reports a usage error of `cmd` ("kvcli: put: ...") in one line, then
 * one line of hint (the command's synopsis, or where the help is), and
 * returns KVCLI_EXIT_USAGE. */
int kvcli_usage_error(kvcli_ctx *ctx, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports a failed call (rc < 0) of `cmd` and returns its exit code: 1 for
 * NOTFOUND, 3 for unavailable / unknown outcome, 4 for a refusal. A write's
 * unknown outcome is said as such. */
int kvcli_fail(kvcli_ctx *ctx, const char *cmd, int rc, bool is_write);

/* The exit code a failed call's rc (< 0) gets. */
int kvcli_exit_code(int rc);

/* Prints a JSON string literal for text p[0..n) ("..." with escapes; a
 * byte that is not valid UTF-8 becomes its Latin-1 character: lossy, for
 * names and messages only). */
void kvcli_json_str(FILE *f, const void *p, size_t n);

/* Prints "field":"..." for bytes that must come back exactly (keys,
 * values): as a JSON string when they are valid UTF-8, else base64 with
 * "field_encoding":"base64" after it (as etcdctl's JSON does). */
void kvcli_json_bytes(FILE *f, const char *field, const void *p, size_t n);

/* Whether p[0..n) is valid UTF-8 (no overlong forms or surrogates). */
bool kvcli_utf8_valid(const void *p, size_t n);

/* The one escaping rule of kvcli's text output (get on a terminal or in
 * line mode, scan, compare failed): printable ASCII and valid UTF-8 of a
 * printable character as is, a backslash as \\, every other byte as \xNN.
 * Keys and values stay on one line, tab-free, and come back exactly:
 * kvcli_split reads \xNN and \\ back in, and so does printf '%b'. */
void kvcli_escape(FILE *f, const void *p, size_t n);

/* Splits a command line in place into words, with shell-like quoting:
 * '...' literal, "..." where a backslash escapes, and a backslash outside
 * quotes escaping. A backslash escape is \xNN (two hex digits: that byte,
 * kvcli_escape's form) or a backslash before any other character (that
 * character). Returns the number of words (argv[0..n), pointing into line,
 * each NUL-ended, with its length in lens[i] as it may hold a \x00) or -1
 * with *why set (an unterminated quote, a trailing backslash, over max
 * words). */
int kvcli_split(char *line, char **argv, size_t *lens, int max, const char **why);

/* txn (txn.c): a transaction from stdin in etcdctl's form. */
int kvcli_cmd_txn(kvcli_ctx *ctx, int argc, char **argv);
/* Prints "create_rev":N,"mod_rev":N,"version":N,"lease":N (no braces). */
void kvcli_json_keyinfo(FILE *f, const kv_keyinfo *info);

/* The status command (status.c). */
int kvcli_cmd_status(kvcli_ctx *ctx, int argc, char **argv);

/* The operator commands (ops.c). */
int kvcli_cmd_member(kvcli_ctx *ctx, int argc, char **argv);
int kvcli_cmd_transfer_leader(kvcli_ctx *ctx, int argc, char **argv);
int kvcli_cmd_snapshot(kvcli_ctx *ctx, int argc, char **argv);
int kvcli_cmd_check(kvcli_ctx *ctx, int argc, char **argv);

/* kvcli watch (watch.c). */
int kvcli_cmd_watch(kvcli_ctx *ctx, int argc, char **argv);

/* Leases and the lock built on them (lease.c). */
int kvcli_cmd_lease(kvcli_ctx *ctx, int argc, char **argv);
int kvcli_cmd_lock(kvcli_ctx *ctx, int argc, char **argv);

/* The interactive shell (shell.c): a prompt naming the node talked to and
 * its role, line editing, history kept in $KV_HISTORY or ~/.kvcli_history,
 * tab completion. Returns the exit code for kvcli (0 at quit or end). */
int kvcli_shell(kvcli_ctx *ctx);
/* One more line typed in the shell, after prompt (a command that reads
 * lines of its own: txn); malloc'd, NULL at the end of input. */
char *kvcli_shell_line(const char *prompt);

#endif
