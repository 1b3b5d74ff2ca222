/*
 * kvcli: how results and failures are printed, and the one client a run
 * shares between its commands.
 */
#include "kvcli/kvcli.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

int kvcli_client(kvcli_ctx *ctx, const char *cmd, kv_client **out) {
    assert(ctx != NULL && ctx->cluster != NULL && out != NULL);
    if (ctx->client == NULL) {
        kv_client *c = NULL;
        int rc = kv_client_open(&c, ctx->cluster, &ctx->opts);
        if (rc == KV_EINVAL)
            return kvcli_usage_error(ctx, cmd, "bad cluster address list '%s': %s", ctx->cluster,
                                     kv_errstr());
        if (rc != 0)
            return kvcli_fail(ctx, cmd, rc, false);
        assert(c != NULL);
        ctx->client = c;
    }
    *out = ctx->client;
    return 0;
}

void kvcli_ctx_close(kvcli_ctx *ctx) {
    assert(ctx != NULL);
    if (ctx->client != NULL)
        kv_client_close(ctx->client);
    ctx->client = NULL;
}

int kvcli_usage_error(kvcli_ctx *ctx, const char *cmd, const char *fmt, ...) {
    assert(ctx != NULL && fmt != NULL);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx->json) {
        fprintf(ctx->out, "{\"error\":\"USAGE\",\"message\":");
        kvcli_json_str(ctx->out, msg, strlen(msg));
        fprintf(ctx->out, "}\n");
    }
    fflush(ctx->out); /* the complaint comes after what was printed before it */
    fprintf(ctx->err, "kvcli: %s%s%s\n", cmd ? cmd : "", cmd ? ": " : "", msg);
    const kvcli_cmd *known = NULL;
    size_t word = cmd != NULL ? strcspn(cmd, " ") : 0; /* "member add": member */
    for (const kvcli_cmd *k = kvcli_commands; cmd != NULL && k->name != NULL; k++)
        if (strlen(k->name) == word && strncmp(k->name, cmd, word) == 0)
            known = k;
    if (known != NULL)
        fprintf(ctx->err, "usage: kvcli %s%s%s (more: kvcli help %s)\n", known->name,
                known->args[0] ? " " : "", known->args, known->name);
    else
        fprintf(ctx->err, "%s\n", ctx->shell ? "'help' lists the commands"
                                             : "'kvcli help' lists the commands and flags");
    return KVCLI_EXIT_USAGE;
}

int kvcli_exit_code(int rc) {
    switch (rc) {
    case KV_ENOTFOUND:
    case KV_ECOMPARE:
        return KVCLI_EXIT_NO;
    case KV_EUNAVAILABLE:
    case KV_ETIMEOUT:
    case KV_ENOTLEADER:
    case KV_ECLOSED:
    case KV_ESHUTDOWN:
    case KV_ESTALE:
        return KVCLI_EXIT_UNAVAILABLE;
    case KV_EINVAL: /* the client found the arguments bad (an empty key) */
        return KVCLI_EXIT_USAGE;
    default:
        return KVCLI_EXIT_REFUSED;
    }
}

/* What a user should make of an exit-3 failure. UNAVAILABLE is certain:
 * no leader accepted the request (client.h). Everything else may have
 * been applied. */
static const char *out__outcome(int rc, bool is_write) {
    if (!is_write)
        return NULL;
    if (rc == KV_EUNAVAILABLE)
        return "not applied";
    return "unknown";
}

int kvcli_fail(kvcli_ctx *ctx, const char *cmd, int rc, bool is_write) {
    assert(ctx != NULL && cmd != NULL);
    assert(rc < 0);
    int code = kvcli_exit_code(rc);
    const char *outcome = code == KVCLI_EXIT_UNAVAILABLE ? out__outcome(rc, is_write) : NULL;
    if (ctx->json) {
        fprintf(ctx->out, "{\"error\":\"%s\"", kv_errword(rc));
        if (kv_errstr()[0] != '\0' && rc != KV_ENOTFOUND) {
            fputs(",\"message\":", ctx->out);
            kvcli_json_str(ctx->out, kv_errstr(), strlen(kv_errstr()));
        }
        if (outcome != NULL)
            fprintf(ctx->out, ",\"outcome\":\"%s\"", outcome);
        fprintf(ctx->out, "}\n");
        return code;
    }
    /* The library's detail names the thing (the limit, the file, the
     * argument); the code's words where it has none. */
    const char *why = kv_errstr()[0] != '\0' ? kv_errstr() : kv_strerror(rc);
    fflush(ctx->out);
    if (rc == KV_ENOTFOUND) {
        fprintf(ctx->err, "not found\n");
    } else if (outcome != NULL && strcmp(outcome, "unknown") == 0) {
        fprintf(ctx->err, "kvcli: %s: %s: outcome unknown (the write may or may not be applied)\n",
                cmd, kv_errword(rc));
    } else {
        fprintf(ctx->err, "kvcli: %s: %s: %s%s\n", cmd, kv_errword(rc), why,
                outcome != NULL ? " (the write was not applied)" : "");
    }
    return code;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t out__utf8_len(const unsigned char *p, size_t n) {
    size_t len;
    uint32_t cp;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

bool kvcli_utf8_valid(const void *p, size_t n) {
    assert(p != NULL || n == 0);
    const unsigned char *b = p;
    for (size_t i = 0; i < n;) {
        size_t len = b[i] < 0x80 ? 1 : out__utf8_len(b + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

/* JSON strings are Unicode: valid UTF-8 passes through; a byte that is not
 * part of valid UTF-8 is written as \u00NN (the Latin-1 character of that
 * byte), so any text still gives valid JSON. For keys and values, which
 * must come back exactly, kvcli_json_bytes says base64 instead. */
void kvcli_json_str(FILE *f, const void *p, size_t n) {
    assert(f != NULL && (p != NULL || n == 0));
    const unsigned char *b = p;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char ch = b[i];
        if (ch == '"' || ch == '\\') {
            fputc('\\', f), fputc(ch, f), i++;
        } else if (ch == '\n') {
            fputs("\\n", f), i++;
        } else if (ch == '\t') {
            fputs("\\t", f), i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            fprintf(f, "\\u%04x", ch), i++;
        } else if (ch < 0x80) {
            fputc(ch, f), i++;
        } else {
            size_t len = out__utf8_len(b + i, n - i);
            if (len == 0)
                fprintf(f, "\\u%04x", ch), i++;
            else
                fwrite(b + i, 1, len, f), i += len;
        }
    }
    fputc('"', f);
}

/* Standard base64 (RFC 4648 section 4, with padding) of p[0..n). */
static void out__base64(FILE *f, const unsigned char *p, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert(sizeof abc == 65);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        fputc(abc[(v >> 18) & 63], f);
        fputc(abc[(v >> 12) & 63], f);
        fputc(i + 1 < n ? abc[(v >> 6) & 63] : '=', f);
        fputc(i + 2 < n ? abc[v & 63] : '=', f);
    }
}

void kvcli_json_bytes(FILE *f, const char *field, const void *p, size_t n) {
    assert(f != NULL && field != NULL && (p != NULL || n == 0));
    fprintf(f, "\"%s\":", field);
    if (kvcli_utf8_valid(p, n)) {
        kvcli_json_str(f, p, n);
        return;
    }
    fputc('"', f);
    out__base64(f, p, n);
    fprintf(f, "\",\"%s_encoding\":\"base64\"", field);
}

/* Printed as itself: printable ASCII but the backslash, and valid UTF-8 of
 * a printable character (not the C1 controls U+0080..U+009F, which a
 * terminal may act on). Returns the sequence's length, or 0. */
static size_t out__plain_len(const unsigned char *p, size_t n) {
    if (p[0] < 0x80)
        return p[0] >= 0x20 && p[0] < 0x7f && p[0] != '\\' ? 1 : 0;
    size_t len = out__utf8_len(p, n);
    if (len == 2 && p[0] == 0xc2 && p[1] < 0xa0)
        return 0;
    return len;
}

void kvcli_escape(FILE *f, const void *p, size_t n) {
    assert(f != NULL && (p != NULL || n == 0));
    const unsigned char *b = p;
    for (size_t i = 0; i < n;) {
        size_t len = out__plain_len(b + i, n - i);
        if (len > 0) {
            fwrite(b + i, 1, len, f);
            i += len;
        } else if (b[i] == '\\') {
            fputs("\\\\", f), i++;
        } else {
            fprintf(f, "\\x%02x", b[i]), i++;
        }
    }
}
