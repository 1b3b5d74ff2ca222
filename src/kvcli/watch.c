/*
 * kvcli watch PREFIX [--rev R]: one line per event on keys starting with
 * PREFIX (`PUT key value`, `DELETE key`, escaped as kvcli's other text
 * output; with --json one object per line with the revisions), until
 * SIGINT or SIGTERM (exit 0) or an error (COMPACTED: --rev is older than
 * the oldest revision kept, named in the message).
 */
#include "kvcli/kvcli.h"

#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Set by SIGINT and SIGTERM; the callback stops kv_watch at its next call
 * (an event, or within about a second without one). */
static volatile sig_atomic_t watch__stop;

static void watch__on_signal(int sig) {
    (void)sig;
    watch__stop = 1;
}

typedef struct watch__out {
    kvcli_ctx *ctx;
    int write_errno; /* stdout failed (e.g. a closed pipe): stop */
} watch__out;

static void watch__print(kvcli_ctx *ctx, const kv_event *ev) {
    bool put = ev->type == KV_EVENT_PUT;
    if (ctx->json) {
        fprintf(ctx->out, "{\"type\":\"%s\",\"revision\":%" PRIu64 ",", put ? "PUT" : "DELETE",
                ev->revision);
        kvcli_json_bytes(ctx->out, "key", ev->key, ev->key_len);
        if (put) {
            fputc(',', ctx->out);
            kvcli_json_bytes(ctx->out, "value", ev->value, ev->value_len);
            fprintf(ctx->out,
                    ",\"create_rev\":%" PRIu64 ",\"mod_rev\":%" PRIu64 ",\"version\":%" PRIu64
                    ",\"lease\":%" PRIu64,
                    ev->create_rev, ev->revision, ev->version, ev->lease);
        }
        fputs("}\n", ctx->out);
        return;
    }
    fputs(put ? "PUT " : "DELETE ", ctx->out);
    kvcli_escape(ctx->out, ev->key, ev->key_len);
    if (put) {
        fputc(' ', ctx->out);
        kvcli_escape(ctx->out, ev->value, ev->value_len);
    }
    fputc('\n', ctx->out);
}

/* kv_watch_fn: 1 stops (a signal or a failed write). */
static int watch__event(void *arg, const kv_event *ev) {
    watch__out *o = arg;
    if (ev != NULL) {
        watch__print(o->ctx, ev);
        if (fflush(o->ctx->out) != 0) { /* a line per event, at once, for pipes */
            o->write_errno = errno;
            return 1;
        }
    }
    return watch__stop ? 1 : 0;
}

/* PREFIX and --rev R (R >= 1) out of argv. */
static int watch__args(kvcli_ctx *ctx, int argc, char **argv, const char **prefix, size_t *plen,
                       uint64_t *rev) {
    int n = 0;
    bool flags = true;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *val = NULL;
        if (flags && strcmp(s, "--") == 0) {
            flags = false;
            continue;
        }
        if (flags && strcmp(s, "--rev") == 0) {
            if (i + 1 == argc)
                return kvcli_usage_error(ctx, argv[0], "--rev wants a revision");
            val = argv[++i];
        } else if (flags && strncmp(s, "--rev=", 6) == 0) {
            val = s + 6;
        } else if (flags && strncmp(s, "--", 2) == 0) {
            return kvcli_usage_error(ctx, argv[0], "unknown flag '%s'", s);
        } else {
            if (n++ == 0) {
                *prefix = s;
                *plen = ctx->argl != NULL ? ctx->argl[i] : strlen(s);
            }
            continue;
        }
        char *end;
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        if (errno != 0 || end == val || *end != '\0' || val[0] == '-' || v == 0)
            return kvcli_usage_error(ctx, argv[0], "--rev wants a revision from 1 up, not '%s'",
                                     val);
        *rev = v;
    }
    if (n != 1)
        return kvcli_usage_error(ctx, argv[0], "wants 1 argument (the prefix), got %d", n);
    if (*plen > KV_KEY_BYTES_MAX)
        return kvcli_usage_error(ctx, argv[0], "the prefix is over %u bytes", KV_KEY_BYTES_MAX);
    return 0;
}

int kvcli_cmd_watch(kvcli_ctx *ctx, int argc, char **argv) {
    const char *prefix = "";
    size_t plen = 0;
    uint64_t rev = 0;
    int rc = watch__args(ctx, argc, argv, &prefix, &plen, &rev);
    if (rc != 0)
        return rc;
    kv_client *c;
    if ((rc = kvcli_client(ctx, argv[0], &c)) != 0)
        return rc;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watch__on_signal; /* no SA_RESTART: a wait ends at once */
    sigemptyset(&sa.sa_mask);
    watch__stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    watch__out o = {.ctx = ctx};
    rc = kv_watch(c, prefix, plen, rev, watch__event, &o);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc == 1 && o.write_errno != 0) {
        fprintf(ctx->err, "kvcli: watch: writing the output: %s\n", strerror(o.write_errno));
        return KVCLI_EXIT_REFUSED;
    }
    if (rc == 1)
        return KVCLI_EXIT_OK; /* interrupted */
    assert(rc < 0);
    return kvcli_fail(ctx, argv[0], rc, false);
}
