#include "kvd/check.h"

#include "kv/errors.h"
#include "storage/check.h"
#include "storage/datadir.h"
#include "storage/fs.h"
#include "storage/hardstate.h"
#include "storage/sm.h"
#include "storage/clusterfile.h"
#include "storage/snapshot.h"
#include "storage/wal.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct check_state {
    FILE *out;
    unsigned problems_corrupt; /* everything but TORN */
    unsigned problems_torn;
} check_state;

static void check__print(void *arg, const kv_check_problem *p) {
    check_state *st = arg;
    assert(p->word != NULL && p->file != NULL);
    fprintf(st->out, "%s %s", p->word, p->file);
    if (p->offset != KV_CHECK_NO_OFFSET)
        fprintf(st->out, " offset %" PRIu64, p->offset);
    if (p->index != 0)
        fprintf(st->out, " index %" PRIu64, p->index);
    fprintf(st->out, ": %s\n", p->detail ? p->detail : "");
    if (strcmp(p->word, "TORN") == 0)
        st->problems_torn++;
    else
        st->problems_corrupt++;
}

/* A module said "corrupt" without reporting a line: still a problem. */
static void check__unreported(check_state *st, unsigned before, int rv, const char *what,
                              const char *path) {
    if (rv == 0 || st->problems_corrupt > before)
        return;
    kv_check_problem p = {.word = rv == KV_EMISSING ? "MISSING" : "CORRUPT",
                          .file = path,
                          .offset = KV_CHECK_NO_OFFSET,
                          .detail = what};
    check__print(st, &p);
}

int kvd_check(const char *dir, FILE *out) {
    assert(dir != NULL && out != NULL);
    kv_fs *fs = kv_fs_posix();
    check_state st = {.out = out};
    char path[4096];

    unsigned before = st.problems_corrupt;
    int rv = dd_check_format(fs, dir, check__print, &st);
    snprintf(path, sizeof path, "%s/FORMAT", dir);
    check__unreported(&st, before, rv, "not a kv data directory (no valid FORMAT file)", path);
    if (rv != 0)
        return KVD_EXIT_CORRUPT; /* nothing else can be read safely */

    /* CLUSTER: absent in a data dir that is still joining (not a problem) */
    cf_info cf;
    if (cf_read(fs, dir, &cf, NULL, NULL) == KV_ECORRUPT) {
        before = st.problems_corrupt;
        rv = cf_read(fs, dir, &cf, check__print, &st);
        snprintf(path, sizeof path, "%s/" CF_FILE, dir);
        check__unreported(&st, before, rv, "CLUSTER failed its check", path);
    }

    /* the log first: its highest term tells a torn hard-state slot from a
     * synced one that rotted (hardstate.h) */
    uint64_t log_term = 0;
    before = st.problems_corrupt;
    rv = wal_check(fs, dir, check__print, &st, &log_term);
    snprintf(path, sizeof path, "%s/wal", dir);
    check__unreported(&st, before, rv, "log failed its check", path);

    before = st.problems_corrupt;
    rv = hs_check(fs, dir, log_term, check__print, &st);
    check__unreported(&st, before, rv, "hard state failed its check", dir);

    before = st.problems_corrupt;
    snprintf(path, sizeof path, "%s/snap", dir);
    rv = fs->ops->exists(fs, path) == 0 ? snap_check_all(fs, path, check__print, &st) : 0;
    check__unreported(&st, before, rv, "snapshots failed their check", path);

    before = st.problems_corrupt;
    snprintf(path, sizeof path, "%s/db", dir);
    rv = sm_check(path, check__print, &st);
    check__unreported(&st, before, rv, "state machine failed its check", path);

    if (st.problems_corrupt > 0) {
        fprintf(out, "check: %s: %u problem(s), %u torn tail(s): CORRUPT\n", dir,
                st.problems_corrupt, st.problems_torn);
        return KVD_EXIT_CORRUPT;
    }
    fprintf(out, "check: %s: clean%s\n", dir,
            st.problems_torn ? " (torn tail reported above)" : "");
    return KVD_EXIT_OK;
}
