/* The data dir steps shared by start-up and kvd's offline commands. See
 * startup.h. */
#include "server/startup.h"

#include "common/logging.h"
#include "kv/errors.h"
#include "storage/clusterfile.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int startup_lock(const char *data_dir, int *fd) {
    assert(data_dir != NULL && fd != NULL);
    char path[SERVER_PATH_BYTES];
    kv_fs_join(path, sizeof path, data_dir, "LOCK");
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) {
        KV_LOGE("IO", "cannot open %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(*fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        if (n > 0)
            pid[strcspn(pid, "\n")] = 0;
        KV_LOGE("LOCKED", "data dir %s is in use by another kvd (pid %s); exiting", data_dir,
                n > 0 ? pid : "?");
        close(*fd);
        *fd = -1;
        return KV_ELOCKED;
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(*fd, 0) != 0 || pwrite(*fd, buf, (size_t)len, 0) != len)
        KV_LOGW("IO", "cannot write the pid into %s", path);
    assert(*fd >= 0);
    return 0;
}

static void report_problem(void *arg, const kv_check_problem *p) {
    (void)arg;
    if (p->offset == KV_CHECK_NO_OFFSET)
        KV_LOGE(p->word, "%s: %s", p->file, p->detail);
    else
        KV_LOGE(p->word, "%s offset %llu: %s", p->file, (unsigned long long)p->offset, p->detail);
}

int startup_hs_load(kv_fs *fs, const char *data_dir, wal *w, hs **h, hs_state *st) {
    assert(w != NULL && h != NULL && *h == NULL);
    uint64_t term = 0;
    int rc = wal_term_at(w, wal_last_index(w), &term);
    if (rc == 0)
        rc = hs_load(fs, data_dir, term, report_problem, NULL, h, st);
    assert(rc != 0 || *h != NULL);
    return rc;
}

int startup_cluster_save(kv_fs *fs, const char *data_dir, const char *id, const char *founders) {
    assert(data_dir != NULL && id != NULL);
    cf_info c = {0};
    size_t len = strlen(id);
    if (len >= sizeof c.id)
        return KV_EINVAL;
    memcpy(c.id, id, len + 1);
    snprintf(c.founders, sizeof c.founders, "%s", founders ? founders : "");
    int rc = cf_write(fs, data_dir, &c);
    if (rc != 0)
        KV_LOGE(kv_errword(rc), "cannot write %s/" CF_FILE ": %s", data_dir, kv_strerror(rc));
    return rc;
}
