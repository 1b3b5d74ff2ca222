/*
 * kvcli: the operator commands (member, transfer-leader, snapshot, check).
 *
 * Exit codes as for every command (kvcli.h). What they mean here:
 *   member add/remove, transfer-leader: 0 done; 1 member remove of a name
 *     that is not a member; 3 no leader, or the change's outcome is unknown;
 *     4 refused (EXIST: the name is a member, BUSY: another change runs).
 *   snapshot save: 0 the file is complete; 3 no leader; 4 the server or the
 *     local file system refused (IO, NOSPACE, ...).
 *   snapshot verify (offline): 0 the file checks; 2 it cannot be opened;
 *     4 it is damaged: "CORRUPT FILE offset N: what" on stderr.
 *   check: 0 every member has the same hash at the check's index;
 *     3 a member did not answer; 4 CORRUPT: a member differs (named).
 */
#include "kvcli/kvcli.h"

#include "snapfile/snapfile.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

/* The one line snap_file_verify writes: the path (up to a path's limit)
 * and what is wrong. */
#define OPS_DETAIL_BYTES_MAX (PATH_MAX + 256u)

/* Commands here take no flags: anything that looks like one is a usage
 * error (a name starting with "--" is no node name). */
static int ops__want(kvcli_ctx *ctx, const char *cmd, int argc, char **argv, int want) {
    assert(argc >= 1 && want >= 1);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--", 2) == 0)
            return kvcli_usage_error(ctx, cmd, "unknown flag '%s'", argv[i]);
    if (argc == want)
        return 0;
    return kvcli_usage_error(ctx, cmd, "wants %d argument%s, got %d", want - 1,
                             want == 2 ? "" : "s", argc - 1);
}

static int ops__ok(kvcli_ctx *ctx) {
    fputs(ctx->json ? "{\"ok\":true}\n" : "OK\n", ctx->out);
    return KVCLI_EXIT_OK;
}

/* ---- member --------------------------------------------------------------- */

static const char *member__role(const kv_member *m, const char *leader_addr) {
    if (m->joining)
        return "joining";
    if (m->learner)
        return "learner";
    if (leader_addr != NULL && strcmp(m->address, leader_addr) == 0)
        return "leader";
    return "voter";
}

static void member__print(kvcli_ctx *ctx, const kv_member *ms, size_t n, const char *leader) {
    int wn = 4, wa = 7;
    for (size_t i = 0; i < n; i++) {
        assert(memchr(ms[i].name, '\0', sizeof ms[i].name) != NULL);
        if ((int)strlen(ms[i].name) > wn)
            wn = (int)strlen(ms[i].name);
        if ((int)strlen(ms[i].address) > wa)
            wa = (int)strlen(ms[i].address);
    }
    if (!ctx->json)
        fprintf(ctx->out, "%-*s  %-*s  %-20s  %s\n", wn, "NAME", wa, "ADDRESS", "ID", "ROLE");
    for (size_t i = 0; i < n; i++) {
        const char *role = member__role(&ms[i], leader);
        if (!ctx->json) {
            fprintf(ctx->out, "%-*s  %-*s  %-20" PRIu64 "  %s\n", wn, ms[i].name, wa, ms[i].address,
                    ms[i].id, role);
            continue;
        }
        fputs("{\"name\":", ctx->out);
        kvcli_json_str(ctx->out, ms[i].name, strlen(ms[i].name));
        fputs(",\"address\":", ctx->out);
        kvcli_json_str(ctx->out, ms[i].address, strlen(ms[i].address));
        fprintf(ctx->out, ",\"id\":\"%" PRIu64 "\",\"role\":\"%s\",\"learner\":%s,\"joining\":%s}\n",
                ms[i].id, role, ms[i].learner ? "true" : "false", ms[i].joining ? "true" : "false");
    }
}

static int member__list(kvcli_ctx *ctx, kv_client *c, const char *cmd) {
    kv_member *ms = NULL;
    size_t n = 0;
    int rc = kv_member_list(c, &ms, &n);
    if (rc != 0)
        return kvcli_fail(ctx, cmd, rc, false);
    assert(ms != NULL || n == 0);
    /* kv_member_list leaves the client at the leader: its address marks it. */
    bool at_leader = false;
    const char *ep = kv_client_endpoint(c, &at_leader);
    member__print(ctx, ms, n, at_leader ? ep : NULL);
    kv_free(ms);
    return KVCLI_EXIT_OK;
}

int kvcli_cmd_member(kvcli_ctx *ctx, int argc, char **argv) {
    assert(argc >= 1);
    static const char *subs[] = {"list", "add", "remove"};
    static const int wants[] = {2, 4, 3};
    int k = -1;
    for (int i = 0; argc >= 2 && i < 3; i++)
        if (strcmp(argv[1], subs[i]) == 0)
            k = i;
    if (k < 0)
        return kvcli_usage_error(ctx, argv[0], "wants list, add or remove%s%s%s",
                                 argc >= 2 ? ", not '" : "", argc >= 2 ? argv[1] : "",
                                 argc >= 2 ? "'" : "");
    kv_client *c;
    int rc = ops__want(ctx, argv[0], argc, argv, wants[k]);
    if (rc == 0)
        rc = kvcli_client(ctx, argv[0], &c);
    if (rc != 0)
        return rc;
    if (k == 0)
        return member__list(ctx, c, "member list");
    rc = k == 1 ? kv_member_add(c, argv[2], argv[3]) : kv_member_remove(c, argv[2]);
    if (rc == KV_EINVAL) /* the library says which and why */
        return kvcli_usage_error(ctx, k == 1 ? "member add" : "member remove", "%s", kv_errstr());
    if (rc == KV_ENOTFOUND && !ctx->json) {
        fprintf(ctx->err, "kvcli: member remove: %s is not a member\n", argv[2]);
        return KVCLI_EXIT_NO;
    }
    if (rc != 0)
        return kvcli_fail(ctx, k == 1 ? "member add" : "member remove", rc, true);
    return ops__ok(ctx);
}

/* ---- transfer-leader ------------------------------------------------------ */

int kvcli_cmd_transfer_leader(kvcli_ctx *ctx, int argc, char **argv) {
    kv_client *c;
    int rc = ops__want(ctx, argv[0], argc, argv, 2);
    if (rc == 0)
        rc = kvcli_client(ctx, argv[0], &c);
    if (rc != 0)
        return rc;
    rc = kv_transfer_leader(c, argv[1]);
    if (rc == KV_EINVAL)
        return kvcli_usage_error(ctx, argv[0], "%s", kv_errstr());
    if (rc == KV_ENOTFOUND && !ctx->json) {
        fprintf(ctx->err, "kvcli: transfer-leader: %s is not a voting member\n", argv[1]);
        return KVCLI_EXIT_NO;
    }
    return rc == 0 ? ops__ok(ctx) : kvcli_fail(ctx, argv[0], rc, false);
}

/* ---- snapshot ------------------------------------------------------------- */

static int snapshot__save(kvcli_ctx *ctx, const char *path) {
    kv_client *c;
    int rc = kvcli_client(ctx, "snapshot save", &c);
    if (rc != 0)
        return rc;
    uint64_t index = 0;
    rc = kv_snapshot_save(c, path, &index);
    if (rc != 0)
        return kvcli_fail(ctx, "snapshot save", rc, false);
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    if (ctx->json) {
        fputs("{\"ok\":true,\"file\":", ctx->out);
        kvcli_json_str(ctx->out, path, strlen(path));
        fprintf(ctx->out, ",\"index\":%" PRIu64 ",\"bytes\":%lld}\n", index, bytes);
    } else {
        fprintf(ctx->out, "saved %s: index %" PRIu64 ", %lld bytes\n", path, index, bytes);
    }
    return KVCLI_EXIT_OK;
}

static int snapshot__verify(kvcli_ctx *ctx, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return kvcli_usage_error(ctx, "snapshot", "cannot read '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return kvcli_usage_error(ctx, "snapshot", "'%s' is not a regular file", path);
    char detail[OPS_DETAIL_BYTES_MAX] = "";
    snapfile_info info = {0};
    int rc = snap_file_verify(path, &info, detail, sizeof detail);
    if (rc != 0) {
        if (detail[0] == '\0')
            snprintf(detail, sizeof detail, "%s %s: %s", kv_errword(rc), path, kv_strerror(rc));
        if (ctx->json) {
            fprintf(ctx->out, "{\"error\":\"%s\",\"message\":", kv_errword(rc));
            kvcli_json_str(ctx->out, detail, strlen(detail));
            fputs("}\n", ctx->out);
        }
        fprintf(ctx->err, "%s\n", detail);
        return KVCLI_EXIT_REFUSED;
    }
    if (ctx->json) {
        fputs("{\"ok\":true,\"file\":", ctx->out);
        kvcli_json_str(ctx->out, path, strlen(path));
        fprintf(ctx->out, ",\"index\":%" PRIu64 ",\"term\":%" PRIu64 "}\n", info.index, info.term);
    } else {
        fprintf(ctx->out, "%s: index %" PRIu64 " term %" PRIu64 ": OK\n", path, info.index,
                info.term);
    }
    return KVCLI_EXIT_OK;
}

int kvcli_cmd_snapshot(kvcli_ctx *ctx, int argc, char **argv) {
    assert(argc >= 1);
    bool save = argc >= 2 && strcmp(argv[1], "save") == 0;
    bool verify = argc >= 2 && strcmp(argv[1], "verify") == 0;
    if (!save && !verify)
        return kvcli_usage_error(ctx, argv[0], "wants save FILE or verify FILE");
    int rc = ops__want(ctx, argv[0], argc, argv, 3);
    if (rc != 0)
        return rc;
    if (argv[2][0] == '\0')
        return kvcli_usage_error(ctx, argv[0], "an empty file name");
    return save ? snapshot__save(ctx, argv[2]) : snapshot__verify(ctx, argv[2]);
}

/* ---- check ---------------------------------------------------------------- */

static void check__print(kvcli_ctx *ctx, const kv_check_node *ns, size_t n, uint64_t index) {
    int wn = 4, wa = 7;
    for (size_t i = 0; i < n; i++) {
        if ((int)strlen(ns[i].name) > wn)
            wn = (int)strlen(ns[i].name);
        if ((int)strlen(ns[i].address) > wa)
            wa = (int)strlen(ns[i].address);
    }
    if (!ctx->json)
        fprintf(ctx->out, "%-*s  %-*s  %-16s  %s\n", wn, "NAME", wa, "ADDRESS", "HASH", "RESULT");
    for (size_t i = 0; i < n; i++) {
        const char *result = ns[i].status == 0 ? "ok" : kv_errword(ns[i].status);
        char hash[24] = "-";
        if (ns[i].status == 0 || ns[i].status == KV_ECORRUPT)
            snprintf(hash, sizeof hash, "%016" PRIx64, ns[i].hash);
        if (!ctx->json) {
            fprintf(ctx->out, "%-*s  %-*s  %-16s  %s\n", wn, ns[i].name, wa, ns[i].address, hash,
                    result);
            continue;
        }
        fputs("{\"name\":", ctx->out);
        kvcli_json_str(ctx->out, ns[i].name, strlen(ns[i].name));
        fputs(",\"address\":", ctx->out);
        kvcli_json_str(ctx->out, ns[i].address, strlen(ns[i].address));
        fprintf(ctx->out, ",\"index\":%" PRIu64 ",\"hash\":", index);
        if (strcmp(hash, "-") == 0)
            fputs("null", ctx->out);
        else
            fprintf(ctx->out, "\"%s\"", hash);
        fprintf(ctx->out, ",\"result\":\"%s\"}\n", result);
    }
}

int kvcli_cmd_check(kvcli_ctx *ctx, int argc, char **argv) {
    kv_client *c;
    int rc = argc == 1 ? 0 : kvcli_usage_error(ctx, argv[0], "wants no arguments");
    if (rc == 0)
        rc = kvcli_client(ctx, argv[0], &c);
    if (rc != 0)
        return rc;
    uint64_t index = 0;
    kv_check_node *ns = NULL;
    size_t n = 0;
    rc = kv_check(c, &index, &ns, &n);
    if (ns == NULL || n == 0) {
        kv_free(ns);
        return kvcli_fail(ctx, argv[0], rc != 0 ? rc : KV_EPROTO, false);
    }
    check__print(ctx, ns, n, index);
    /* One line per member that differs or did not answer: on stderr, as
     * every failure, so a script sees it apart from the table; after the
     * table (flushed first) when both go to one place. */
    fflush(ctx->out);
    for (size_t i = 0; i < n && rc != 0; i++)
        if (ns[i].status != 0 && !ctx->json)
            fprintf(ctx->err, "%s %s %s index %" PRIu64 "%s\n", kv_errword(ns[i].status),
                    ns[i].name, ns[i].address, index,
                    ns[i].status == KV_ECORRUPT ? ": its state machine differs from the others'"
                                                : ": no hash from it");
    kv_free(ns);
    if (rc == 0) {
        if (!ctx->json)
            fprintf(ctx->out, "OK: %zu members agree at index %" PRIu64 "\n", n, index);
        return KVCLI_EXIT_OK;
    }
    if (ctx->json)
        fprintf(ctx->out, "{\"error\":\"%s\",\"index\":%" PRIu64 "}\n", kv_errword(rc), index);
    return rc == KV_ECORRUPT ? KVCLI_EXIT_REFUSED : kvcli_exit_code(rc);
}
