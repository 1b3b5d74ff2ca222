/*
 * libkvclient: the parts of the API around the calls themselves: the
 * version, the thread's error detail (kv_errstr) and the growable options
 * object (kv_options).
 */
#include "client/client_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- version ------------------------------------------------------------- */

const char *kv_version(void) {
    return KV_VERSION_STRING;
}

int kv_version_number(void) {
    return KV_VERSION_NUMBER;
}

/* ---- the error detail ---------------------------------------------------- */

/* One line for a person: a path (up to PATH_MAX) and a sentence. */
#define KVC_ERRSTR_BYTES_MAX 4352u

static _Thread_local char kvc__errstr[KVC_ERRSTR_BYTES_MAX];

const char *kv_errstr(void) {
    return kvc__errstr;
}

void kvc_errstr_clear(void) {
    kvc__errstr[0] = '\0';
}

int kvc_errstr_set(int rc, const char *fmt, ...) {
    assert(rc < 0 && fmt != NULL);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kvc__errstr, sizeof kvc__errstr, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- kv_options -------------------------------------------------------- */

/* A day: far past any sane wait, and the product with NS_PER_MS fits. */
#define KVC_OPTION_TIMEOUT_MS_MAX 86400000u

struct kv_options {
    struct kv_client_options o; /* token and token_file point at the copies */
    char *token;
    char *token_file;
};

kv_options *kv_options_new(void) {
    kv_options *o = calloc(1, sizeof *o);
    if (o != NULL)
        kv_client_options_init(&o->o);
    return o;
}

void kv_options_free(kv_options *o) {
    if (o == NULL)
        return;
    free(o->token);
    free(o->token_file);
    free(o);
}

static int options__ms(uint32_t *field, uint32_t ms) {
    if (ms < 1 || ms > KVC_OPTION_TIMEOUT_MS_MAX)
        return kvc_errstr_set(KV_EINVAL, "timeout of %u ms: want 1 to %u ms", ms,
                              KVC_OPTION_TIMEOUT_MS_MAX);
    *field = ms;
    return 0;
}

int kv_options_set_timeout_ms(kv_options *o, uint32_t ms) {
    kvc_errstr_clear();
    return o == NULL ? KV_EINVAL : options__ms(&o->o.timeout_ms, ms);
}

int kv_options_set_connect_timeout_ms(kv_options *o, uint32_t ms) {
    kvc_errstr_clear();
    return o == NULL ? KV_EINVAL : options__ms(&o->o.connect_timeout_ms, ms);
}

/* Replaces *slot with a copy of s (NULL: none). */
static int options__str(char **slot, const char *s) {
    char *copy = NULL;
    if (s != NULL && (copy = strdup(s)) == NULL)
        return KV_ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

int kv_options_set_token(kv_options *o, const char *token) {
    kvc_errstr_clear();
    if (o == NULL)
        return KV_EINVAL;
    int rc = options__str(&o->token, token);
    o->o.token = o->token;
    return rc;
}

int kv_options_set_token_file(kv_options *o, const char *path) {
    kvc_errstr_clear();
    if (o == NULL)
        return KV_EINVAL;
    int rc = options__str(&o->token_file, path);
    o->o.token_file = o->token_file;
    return rc;
}

int kv_client_open_ex(kv_client **out, const char *endpoints, const kv_options *o) {
    assert(o == NULL || (o->o.token == o->token && o->o.token_file == o->token_file));
    return kv_client_open(out, endpoints, o != NULL ? &o->o : NULL);
}
