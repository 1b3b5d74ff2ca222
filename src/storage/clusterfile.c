/* DIR/CLUSTER: see clusterfile.h. */
#include "storage/clusterfile.h"

#include "common/checksum.h"
#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#define CF_MAGIC_LINE "kv-cluster 1\n"
#define CF_FILE_BYTES_MAX (CF_FOUNDERS_BYTES_MAX + 256u)

static bool cf__hex(const char *s, size_t len) {
    if (len == 0 || len > CF_ID_HEX_BYTES)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

int cf_write(kv_fs *fs, const char *dir, const cf_info *c) {
    assert(fs != NULL && dir != NULL && c != NULL);
    if (!cf__hex(c->id, strlen(c->id)) || strchr(c->founders, '\n') != NULL)
        return KV_EINVAL;
    char buf[CF_FILE_BYTES_MAX], path[4096];
    int n = snprintf(buf, sizeof buf, CF_MAGIC_LINE "id %s\n", c->id);
    if (c->founders[0] != '\0')
        n += snprintf(buf + n, sizeof buf - (size_t)n, "founders %s\n", c->founders);
    assert(n > 0 && (size_t)n < sizeof buf - 32);
    n += snprintf(buf + n, sizeof buf - (size_t)n, "xxh3 %016" PRIx64 "\n",
                  kv_xxh3(buf, (size_t)n));
    if (kv_fs_join(path, sizeof path, dir, CF_FILE) != 0)
        return KV_EINVAL;
    return kv_fs_write_atomic(fs, path, buf, (size_t)n);
}

static int cf__bad(kv_check_fn fn, void *arg, const char *path, size_t off, const char *why) {
    if (fn != NULL) {
        kv_check_problem p = {
            .word = "CORRUPT", .file = path, .offset = off, .index = 0, .detail = why};
        fn(arg, &p);
    }
    return KV_ECORRUPT;
}

/* Parses the checked text (NUL-terminated, checksum line removed). */
static int cf__parse(char *text, const char *path, cf_info *out, kv_check_fn fn, void *arg) {
    size_t magic = strlen(CF_MAGIC_LINE);
    if (strncmp(text, CF_MAGIC_LINE, magic) != 0)
        return cf__bad(fn, arg, path, 0, "not a kv CLUSTER file (first line)");
    char *line = text + magic;
    if (strncmp(line, "id ", 3) != 0)
        return cf__bad(fn, arg, path, magic, "no id line");
    size_t len = strcspn(line + 3, "\n");
    if (!cf__hex(line + 3, len) || line[3 + len] != '\n')
        return cf__bad(fn, arg, path, magic + 3, "the cluster id is not 1 to 32 hex digits");
    memcpy(out->id, line + 3, len);
    out->id[len] = '\0';
    line += 3 + len + 1;
    out->founders[0] = '\0';
    if (strncmp(line, "founders ", 9) == 0) {
        len = strcspn(line + 9, "\n");
        if (len == 0 || len > CF_FOUNDERS_BYTES_MAX || line[9 + len] != '\n')
            return cf__bad(fn, arg, path, (size_t)(line - text), "bad founders line");
        memcpy(out->founders, line + 9, len);
        out->founders[len] = '\0';
        line += 9 + len + 1;
    }
    if (*line != '\0')
        return cf__bad(fn, arg, path, (size_t)(line - text), "unknown line");
    return 0;
}

int cf_read(kv_fs *fs, const char *dir, cf_info *out, kv_check_fn fn, void *arg) {
    assert(fs != NULL && dir != NULL && out != NULL);
    char path[4096];
    if (kv_fs_join(path, sizeof path, dir, CF_FILE) != 0)
        return KV_EINVAL;
    void *raw = NULL;
    size_t len = 0;
    int rv = kv_fs_read_all(fs, path, CF_FILE_BYTES_MAX, &raw, &len);
    if (rv == KV_EMISSING && fn != NULL) {
        kv_check_problem p = {.word = "MISSING",
                              .file = path,
                              .offset = KV_CHECK_NO_OFFSET,
                              .detail = "no CLUSTER file: the data dir belongs to no cluster"};
        fn(arg, &p);
    }
    if (rv == KV_ETOOBIG)
        return cf__bad(fn, arg, path, CF_FILE_BYTES_MAX, "file too long");
    if (rv != 0)
        return rv;
    char *text = raw;
    /* the last line: "xxh3 " + 16 hex + "\n" */
    const size_t tail = 5 + 16 + 1;
    char want[32];
    rv = 0;
    if (len < tail || memchr(text, '\0', len) != NULL || text[len - 1] != '\n') {
        rv = cf__bad(fn, arg, path, len, "file cut short or not text");
    } else {
        snprintf(want, sizeof want, "xxh3 %016" PRIx64 "\n", kv_xxh3(text, len - tail));
        if (memcmp(text + len - tail, want, tail) != 0)
            rv = cf__bad(fn, arg, path, len - tail, "checksum mismatch");
    }
    if (rv == 0) {
        text[len - tail] = '\0'; /* the checksum line off */
        rv = cf__parse(text, path, out, fn, arg);
    }
    free(raw);
    return rv;
}

static int cf__cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cf_make_id(const char *token, const char *founders, char *id) {
    assert(id != NULL);
    uint8_t r[16];
    if (token == NULL) {
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
            return KV_EIO;
    } else {
        /* the founders sorted, so every founder derives the same id */
        char copy[CF_FOUNDERS_BYTES_MAX + 1], *parts[64];
        size_t n = 0;
        snprintf(copy, sizeof copy, "%s", founders ? founders : "");
        for (char *save = NULL, *p = strtok_r(copy, ",", &save); p && n < 64;
             p = strtok_r(NULL, ",", &save))
            parts[n++] = p;
        qsort(parts, n, sizeof parts[0], cf__cmp);
        XXH3_state_t *st = XXH3_createState();
        if (st == NULL)
            return KV_ENOMEM;
        XXH3_128bits_reset(st);
        XXH3_128bits_update(st, "kv-cluster-token\n", 17);
        XXH3_128bits_update(st, token, strlen(token) + 1);
        for (size_t i = 0; i < n; i++)
            XXH3_128bits_update(st, parts[i], strlen(parts[i]) + 1);
        XXH128_hash_t h = XXH3_128bits_digest(st);
        XXH3_freeState(st);
        kv_put_u64(r, h.high64);
        kv_put_u64(r + 8, h.low64);
    }
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(id + 2 * i, 3, "%02x", r[i]);
    assert(strlen(id) == CF_ID_HEX_BYTES);
    return 0;
}
