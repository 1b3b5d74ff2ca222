/*
 * kvcli's interactive shell (libedit, through its readline interface).
 *
 *   kv n1(leader)> put greeting "hello world"
 *   OK
 *
 * The prompt names the node the client talks to and that node's role, from
 * a STATUS of it after every command (one round trip; a node that does not
 * answer shows as its address and "?"). Lines are split as in the line
 * mode (kvcli_split: '..', ".." and backslash quote). History is kept
 * between sessions in $KV_HISTORY, else ~/.kvcli_history (mode 0600: values
 * typed may be secret). TAB completes command names, the words after
 * member and snapshot, and file names after snapshot save/verify.
 * A command's failure is printed on stderr and the shell goes on; quit,
 * exit or end of input (Ctrl-D) leaves it.
 */
#include "kvcli/kvcli.h"

#include <editline/readline.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* History lines kept: plenty to scroll back through, a small file. */
#define SHELL_HISTORY_LINES_MAX 1000
/* The prompt: "kv " + a node name (<= 63 bytes) or an address + role. */
#define SHELL_PROMPT_BYTES_MAX 256u
/* Words looked at for completion: the longest command has three. */
#define SHELL_COMPLETE_WORDS_MAX 4

typedef struct shell {
    kvcli_ctx *ctx;
    char history[4096]; /* the history file, "" for none */
    char prompt[SHELL_PROMPT_BYTES_MAX];
} shell;

/* ---- the prompt ------------------------------------------------------------ */

/* Copies the value of key in a STATUS line ("k=v k=v ...") into buf;
 * values of the fields used here have no spaces. */
static bool shell__field(const char *line, const char *key, char *buf, size_t cap) {
    assert(line != NULL && key != NULL && cap > 0);
    size_t klen = strlen(key);
    for (const char *p = line; (p = strstr(p, key)) != NULL; p += klen) {
        if ((p != line && p[-1] != ' ') || p[klen] != '=')
            continue;
        const char *v = p + klen + 1;
        size_t n = strcspn(v, " ");
        if (n >= cap)
            n = cap - 1;
        memcpy(buf, v, n);
        buf[n] = '\0';
        return n > 0;
    }
    return false;
}

/* "kv NAME(ROLE)> " for the node the client talks to now. */
static void shell__prompt(shell *sh) {
    kvcli_ctx *ctx = sh->ctx;
    bool leader = false;
    const char *ep = ctx->client ? kv_client_endpoint(ctx->client, &leader) : NULL;
    if (ep == NULL) {
        snprintf(sh->prompt, sizeof sh->prompt, "kv (not connected)> ");
        return;
    }
    char name[128], role[32], *line = NULL;
    snprintf(name, sizeof name, "%s", ep);
    snprintf(role, sizeof role, "?");
    if (kv_node_status(ctx->client, ep, &line) == 0) {
        (void)shell__field(line, "name", name, sizeof name);
        (void)shell__field(line, "role", role, sizeof role);
        kv_free(line);
    }
    snprintf(sh->prompt, sizeof sh->prompt, "kv %s(%s)> ", name, role);
}

/* ---- history --------------------------------------------------------------- */

static void shell__history_open(shell *sh) {
    const char *env = getenv("KV_HISTORY");
    const char *home = getenv("HOME");
    sh->history[0] = '\0';
    if (env != NULL && env[0] != '\0')
        snprintf(sh->history, sizeof sh->history, "%s", env);
    else if (home != NULL && home[0] != '\0')
        snprintf(sh->history, sizeof sh->history, "%s/.kvcli_history", home);
    using_history();
    stifle_history(SHELL_HISTORY_LINES_MAX);
    if (sh->history[0] == '\0')
        return;
    /* Created private before the first write (write_history would make
     * it with the umask's mode). */
    int fd = open(sh->history, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    (void)read_history(sh->history); /* a new, empty file is no error */
}

static void shell__history_add(shell *sh, const char *line) {
    add_history(line);
    if (sh->history[0] != '\0' && write_history(sh->history) != 0) {
        fprintf(sh->ctx->err, "kvcli: cannot write the history to %s: %s (history off)\n",
                sh->history, strerror(errno));
        sh->history[0] = '\0';
    }
}

/* ---- completion ------------------------------------------------------------ */

/* What the generator offers: a NULL-ended list, set before each completion. */
static const char *const *shell__candidates;

static const char *const shell__member_subs[] = {"list", "add", "remove", NULL};
static const char *const shell__snapshot_subs[] = {"save", "verify", NULL};
static const char *shell__command_names[64];

static char *shell__generate(const char *text, int state) {
    static size_t next;
    if (state == 0)
        next = 0;
    size_t len = strlen(text);
    for (const char *w; shell__candidates != NULL && (w = shell__candidates[next]) != NULL;) {
        next++;
        if (strncmp(w, text, len) == 0)
            return strdup(w); /* libedit frees it */
    }
    return NULL;
}

/* The words before the one being completed (at most a few, in place). */
static int shell__words_before(int start, char words[][32]) {
    int n = 0;
    const char *p = rl_line_buffer, *end = rl_line_buffer + start;
    while (p < end && n < SHELL_COMPLETE_WORDS_MAX) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        size_t len = 0;
        while (p + len < end && p[len] != ' ' && p[len] != '\t')
            len++;
        if (len == 0)
            break;
        snprintf(words[n++], 32, "%.*s", (int)len, p);
        p += len;
    }
    return n;
}

static char **shell__complete(const char *text, int start, int end) {
    (void)end;
    char words[SHELL_COMPLETE_WORDS_MAX][32];
    int n = shell__words_before(start, words);
    rl_attempted_completion_over = 1; /* no file names unless said below */
    shell__candidates = NULL;
    if (n == 0 || (n == 1 && strcmp(words[0], "help") == 0))
        shell__candidates = shell__command_names;
    else if (n == 1 && strcmp(words[0], "member") == 0)
        shell__candidates = shell__member_subs;
    else if (n == 1 && strcmp(words[0], "snapshot") == 0)
        shell__candidates = shell__snapshot_subs;
    else if (n == 2 && strcmp(words[0], "snapshot") == 0) {
        rl_attempted_completion_over = 0; /* a file name */
        return NULL;
    }
    if (shell__candidates == NULL)
        return NULL;
    return rl_completion_matches(text, shell__generate);
}

static void shell__complete_init(void) {
    size_t n = 0;
    for (const kvcli_cmd *k = kvcli_commands; k->name != NULL; k++) {
        assert(n + 3 < sizeof shell__command_names / sizeof shell__command_names[0]);
        shell__command_names[n++] = k->name;
    }
    shell__command_names[n++] = "quit";
    shell__command_names[n++] = "exit";
    shell__command_names[n] = NULL;
    rl_readline_name = "kvcli";
    rl_attempted_completion_function = shell__complete;
    rl_completion_append_character = ' ';
}

/* ---- the loop -------------------------------------------------------------- */

/* Runs one line; false when it asks to leave. */
static bool shell__line(shell *sh, char *line) {
    char *argv[KVCLI_ARGS_MAX];
    size_t lens[KVCLI_ARGS_MAX];
    const char *why = NULL;
    int argc = kvcli_split(line, argv, lens, KVCLI_ARGS_MAX, &why);
    if (argc < 0) {
        (void)kvcli_usage_error(sh->ctx, NULL, "%s", why);
        return true;
    }
    if (argc == 0 || argv[0][0] == '#')
        return true;
    if (strcmp(argv[0], "quit") == 0 || strcmp(argv[0], "exit") == 0)
        return false;
    sh->ctx->argl = lens;
    (void)kvcli_run(sh->ctx, argc, argv);
    sh->ctx->argl = NULL;
    return true;
}

char *kvcli_shell_line(const char *prompt) {
    return readline(prompt);
}

int kvcli_shell(kvcli_ctx *ctx) {
    assert(ctx != NULL && ctx->client == NULL);
    shell sh = {.ctx = ctx};
    ctx->stdin_is_commands = true; /* a value "-" cannot read the terminal */
    ctx->shell = true;
    shell__history_open(&sh);
    shell__complete_init();
    fprintf(ctx->out,
            "kvcli: cluster %s; 'help' lists the commands, TAB completes, "
            "quit or Ctrl-D leaves\n",
            ctx->cluster);
    /* Connect now, for the prompt; a cluster that does not answer is said
     * by the first command, which tries again. */
    kv_client *c = NULL;
    if (kv_client_open(&c, ctx->cluster, &ctx->opts) == 0)
        ctx->client = c;
    for (;;) {
        shell__prompt(&sh);
        fflush(ctx->out);
        char *line = readline(sh.prompt);
        if (line == NULL) {
            fputc('\n', ctx->out);
            break;
        }
        if (line[strspn(line, " \t")] != '\0')
            shell__history_add(&sh, line);
        bool go_on = shell__line(&sh, line);
        free(line);
        fflush(ctx->out);
        fflush(ctx->err);
        if (!go_on)
            break;
    }
    return KVCLI_EXIT_OK;
}
