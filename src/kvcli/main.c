/*
 * kvcli: the kv command-line client.
 *
 *   kvcli [--cluster HOST:PORT,...] [--json] [--timeout SECONDS]
 *         [--token-file FILE] [COMMAND ARGS...]
 *
 * The global flags may stand anywhere on the line (before a "--"). *
 * With a command: runs it and exits with its code. Without, on a terminal:
 * the interactive shell (shell.c). Without, and no terminal: reads commands
 * from stdin, one per line (shell-like quoting), runs each and exits with
 * the code of the last one that failed (0 if none did).
 */
#include "kvcli/kvcli.h"

#include "kv/limits.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KVCLI_DEFAULT_CLUSTER "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

/* A command line from stdin holds at most a key and two values, escaped
 * (a quoted byte can take two characters), plus room for the words. */
#define KVCLI_LINE_BYTES_MAX (2u * (KV_KEY_BYTES_MAX + 2u * KV_VALUE_BYTES_MAX) + 4096u)

/* --timeout is for a person waiting: a day is beyond any sane wait. */
#define KVCLI_TIMEOUT_S_MAX 86400.0

void kvcli_usage(FILE *f) {
    fprintf(f, "usage: kvcli [--cluster HOST:PORT,...] [--json] [--timeout SECONDS]\n"
               "             [--token-file FILE] [COMMAND ARGS...]\n\ncommands:\n");
    for (const kvcli_cmd *k = kvcli_commands; k->name != NULL; k++)
        fprintf(f, "  %s%s%s\n      %s\n", k->name, k->args[0] ? " " : "", k->args, k->help);
    fprintf(f, "\nWithout a command, on a terminal: an interactive shell (history in\n"
               "$KV_HISTORY or ~/.kvcli_history, TAB completes, quit leaves). Without a\n"
               "terminal, commands are read from stdin, one per line ('..', \"..\" and\n"
               "backslash quote as in a shell; # starts a comment line).\n"
               "The cluster: --cluster, else $KV_CLUSTER, else " KVCLI_DEFAULT_CLUSTER ".\n"
               "The token: --token-file, else $KV_TOKEN_FILE.\n"
               "Output: `kvcli get KEY` with stdout not a terminal writes the value's bytes\n"
               "and nothing else. Elsewhere keys and values are printed with printable\n"
               "ASCII and UTF-8 as is, a backslash as \\\\ and any other byte as \\xNN; the\n"
               "shell and line mode read \\xNN and \\\\ back in (so does printf '%%b').\n"
               "--json: keys and values that are not UTF-8 are base64 with\n"
               "\"key_encoding\":\"base64\" (\"value_encoding\") beside them.\n"
               "Exit codes: 0 done, 1 no (not found, compare failed), 2 usage error,\n"
               "3 cluster unavailable or timed out (a write's outcome is then unknown unless\n"
               "said otherwise), 4 refused by the server (code word on stderr: TOOBIG, BUSY,\n"
               "NOSPACE, ...).\n"
               "The global flags may also follow the command (kvcli get k --json);\n"
               "'kvcli help COMMAND' (or COMMAND --help) shows one command.\n");
}

static int main__timeout(kvcli_ctx *ctx, const char *s) {
    char *end;
    errno = 0;
    double secs = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(secs) || secs <= 0 ||
        secs > KVCLI_TIMEOUT_S_MAX)
        return kvcli_usage_error(ctx, NULL, "--timeout wants seconds (0 < s <= %.0f), not '%s'",
                                 KVCLI_TIMEOUT_S_MAX, s);
    uint32_t ms = (uint32_t)ceil(secs * 1000.0);
    assert(ms >= 1 && ms <= (uint32_t)(KVCLI_TIMEOUT_S_MAX * 1000.0));
    ctx->opts.timeout_ms = ms;
    if (ctx->opts.connect_timeout_ms > ms)
        ctx->opts.connect_timeout_ms = ms;
    return 0;
}

/* The value of flag argv[*i] given as "--flag VALUE" or "--flag=VALUE",
 * or NULL when argv[*i] is not that flag. *missing is set when it is the
 * flag but its value is missing. */
static const char *main__flag(int argc, char **argv, int *i, const char *flag, bool *missing) {
    size_t n = strlen(flag);
    if (strncmp(argv[*i], flag, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 == argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

/* One global flag at argv[*i] (moving *i past its value): 1 when it was
 * one, 0 when it is not a global flag, or the usage exit code. */
static int main__global(kvcli_ctx *ctx, int argc, char **argv, int *i) {
    bool missing = false;
    const char *v;
    if (strcmp(argv[*i], "--json") == 0) {
        ctx->json = true;
    } else if ((v = main__flag(argc, argv, i, "--cluster", &missing)) != NULL) {
        ctx->cluster = v;
    } else if ((v = main__flag(argc, argv, i, "--timeout", &missing)) != NULL) {
        if (main__timeout(ctx, v) != 0)
            return KVCLI_EXIT_USAGE;
    } else if ((v = main__flag(argc, argv, i, "--token-file", &missing)) != NULL) {
        ctx->opts.token_file = v;
    } else if (missing) {
        return kvcli_usage_error(ctx, NULL, "%s wants a value", argv[*i]);
    } else {
        return 0;
    }
    return 1;
}

/* Takes the global flags out of argv wherever they stand (kvcli get k
 * --json), up to a "--", which ends them (and is dropped when no command
 * came before it, so `kvcli -- get k` still works). The rest, the command
 * and its own words and flags, is left in argv[0..*left). Before the
 * command, --help and -h print the usage and an unknown flag is a usage
 * error; after it they are the command's. */
static int main__flags(kvcli_ctx *ctx, int argc, char **argv, int *left) {
    int n = 0;
    bool cmd = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            if (cmd)
                argv[n++] = argv[i];
            for (i++; i < argc; i++)
                argv[n++] = argv[i];
            break;
        }
        int rc = main__global(ctx, argc, argv, &i);
        if (rc == 1)
            continue;
        if (rc != 0)
            return rc;
        if (!cmd && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)) {
            kvcli_usage(stdout);
            exit(KVCLI_EXIT_OK);
        }
        if (!cmd && argv[i][0] == '-' && argv[i][1] != '\0')
            return kvcli_usage_error(ctx, NULL, "unknown flag '%s'", argv[i]);
        cmd = true;
        argv[n++] = argv[i];
    }
    if (ctx->cluster[0] == '\0')
        return kvcli_usage_error(ctx, NULL, "empty cluster address list");
    assert(n < argc);
    *left = n;
    return 0;
}

/* Reads one line (without its newline) into *buf, growing it up to
 * KVCLI_LINE_BYTES_MAX. Returns 1 for a line, 0 at the end, -1 for a line
 * too long or holding a NUL (skipped whole). */
static int main__read_line(FILE *in, char **buf, size_t *cap) {
    assert(in != NULL && buf != NULL && cap != NULL);
    size_t n = 0;
    bool bad = false;
    int ch;
    while ((ch = getc(in)) != EOF && ch != '\n') {
        if (ch == '\0' || n + 1 >= KVCLI_LINE_BYTES_MAX) {
            bad = true;
            continue;
        }
        if (n + 1 >= *cap) {
            size_t ncap = *cap ? *cap * 2 : 4096;
            char *nb = realloc(*buf, ncap);
            if (nb == NULL)
                return -1;
            *buf = nb, *cap = ncap;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0 && !bad)
        return 0;
    if (n > 0 && (*buf)[n - 1] == '\r')
        n--;
    if (*buf != NULL)
        (*buf)[n] = '\0';
    return bad ? -1 : 1;
}

/* Runs one line; blank and comment lines are 0. */
static int main__line(kvcli_ctx *ctx, char *line, unsigned long lineno) {
    assert(ctx->stdin_is_commands && line != NULL);
    char *argv[KVCLI_ARGS_MAX];
    size_t lens[KVCLI_ARGS_MAX];
    const char *why = NULL;
    int argc = kvcli_split(line, argv, lens, KVCLI_ARGS_MAX, &why);
    if (argc < 0)
        return kvcli_usage_error(ctx, NULL, "line %lu: %s", lineno, why);
    if (argc == 0 || argv[0][0] == '#')
        return KVCLI_EXIT_OK;
    ctx->argl = lens;
    int rc = kvcli_run(ctx, argc, argv);
    ctx->argl = NULL;
    return rc;
}

/* Commands from stdin: every line runs; the last failure is the result. */
static int main__stdin(kvcli_ctx *ctx) {
    char *buf = NULL;
    size_t cap = 0;
    int last = KVCLI_EXIT_OK;
    ctx->stdin_is_commands = true;
    for (unsigned long lineno = 1;; lineno++) {
        int r = main__read_line(stdin, &buf, &cap);
        if (r == 0)
            break;
        int rc;
        if (r < 0)
            rc = kvcli_usage_error(ctx, NULL, "line %lu: over %u bytes, a NUL byte, or no memory",
                                   lineno, KVCLI_LINE_BYTES_MAX);
        else
            rc = main__line(ctx, buf ? buf : (char[]){""}, lineno);
        if (rc != KVCLI_EXIT_OK)
            last = rc;
        fflush(ctx->out);
        fflush(ctx->err);
    }
    free(buf);
    return last;
}

int main(int argc, char **argv) {
    kvcli_ctx ctx = {.out = stdout, .err = stderr};
    kv_client_options_init(&ctx.opts);
    const char *env = getenv("KV_CLUSTER");
    ctx.cluster = env != NULL && env[0] != '\0' ? env : KVCLI_DEFAULT_CLUSTER;
    const char *tok = getenv("KV_TOKEN_FILE");
    if (tok != NULL && tok[0] != '\0')
        ctx.opts.token_file = tok;
    int words = 0;
    int rc = main__flags(&ctx, argc, argv, &words);
    if (rc != 0)
        return rc;
    assert(words < argc);
    /* One command with its output going to a file or a pipe: get writes the
     * value's bytes and nothing else (on a terminal, and for commands read
     * from stdin, a value is escaped and ends its line). */
    ctx.exact = words > 0 && !isatty(STDOUT_FILENO);
    if (words > 0)
        rc = kvcli_run(&ctx, words, argv);
    else if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO))
        rc = kvcli_shell(&ctx);
    else
        rc = main__stdin(&ctx);
    kvcli_ctx_close(&ctx);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kvcli: writing the output: %s\n", strerror(errno));
        return rc != 0 ? rc : KVCLI_EXIT_REFUSED;
    }
    return rc;
}
