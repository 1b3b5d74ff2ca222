/* kvd init, kvd restore and kvd recover: offline changes to a data dir
 * (admin.h). */
#include "kvd/admin.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "raft/raft.h"
#include "server/startup.h"
#include "server/store.h"
#include "storage/clusterfile.h"
#include "storage/datadir.h"
#include "snapfile/snapfile.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADMIN_CLUSTER_ID_BYTES (CF_ID_HEX_BYTES + 1u)

static bool dir_empty_or_absent(const char *path) {
    DIR *d = opendir(path);
    if (d == NULL)
        return true;
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = false;
    closedir(d);
    return empty;
}

static bool book_has(const server_member *book, size_t count, uint64_t id) {
    for (size_t i = 0; i < count; i++)
        if (book[i].id == id)
            return true;
    return false;
}

/* Appends one CONF entry making voters the membership, at (index, term),
 * and waits for it to be durable. */
static int append_conf(wal *w, uint64_t index, uint64_t term, const raft_membership *voters) {
    assert(index == wal_last_index(w) + 1);
    uint8_t buf[RAFT_CONF_BYTES_MAX];
    size_t len = raft_conf_encode(RAFT_CONF_BOOTSTRAP, 0, voters, buf);
    wal_entry e = {
        .index = index, .term = term, .type = RAFT_ENTRY_CONF, .len = (uint32_t)len, .data = buf};
    return wal_append_wait(w, &e, 1);
}

/* ---- kvd restore -------------------------------------------------------------- */

/* A data dir being built from a snapshot file. */
typedef struct restore {
    const char *dir;  /* DIR.restore-tmp, renamed to DIR at the end */
    const char *step; /* what is being done, for the error line */
    kv_fs *fs;
    char db_dir[SERVER_PATH_BYTES];
    char snap_dir[SERVER_PATH_BYTES];
    snapfile_info info;                  /* the file's snapshot */
    server_member book[SERVER_BOOK_MAX]; /* the new members (--cluster) */
    size_t book_count;
    int lock_fd; /* -1: not locked */
    wal *w;
    sm *sm;
    hs *h;
    char cluster_id[ADMIN_CLUSTER_ID_BYTES];
} restore;

/* The data dir, and the file's snapshot received into it and made the
 * state machine. */
static int restore_snapshot(restore *r, const char *from) {
    r->step = "data dir";
    int rc = dd_init(r->fs, r->dir);
    if (rc != 0 || (rc = startup_lock(r->dir, &r->lock_fd)) != 0)
        return rc;
    r->step = "snapshot";
    snap_meta sn;
    FILE *f = fopen(from, "rb");
    rc = f == NULL ? KV_EIO : fseeko(f, SNAPFILE_HEADER_BYTES, SEEK_SET) != 0 ? KV_EIO : 0;
    if (rc == 0)
        rc = store_receive(r->fs, r->snap_dir, f, r->info.stream_len, &sn);
    if (f)
        fclose(f);
    if (rc != 0)
        return rc;
    r->step = "state machine";
    if ((rc = sm_open(r->db_dir, NULL, &r->sm)) != 0)
        return rc;
    return snap_restore(&r->sm, r->db_dir, sn.path);
}

/* The log continues after the snapshot with entry index, which makes the
 * new members the voters; the state machine applies their names with it. */
static int restore_log(restore *r, uint64_t index, uint64_t term) {
    r->step = "log";
    wal_options wo;
    wal_options_default(&wo);
    int rc = wal_open(r->fs, r->dir, &wo, NULL, NULL, &r->w);
    if (rc != 0 || (rc = wal_reset(r->w, r->info.index, r->info.term)) != 0)
        return rc;
    raft_membership voters = {0};
    for (size_t i = 0; i < r->book_count; i++)
        voters.voters[voters.voters_count++] = r->book[i].id;
    if ((rc = append_conf(r->w, index, term, &voters)) != 0)
        return rc;
    uint8_t *book = NULL;
    size_t blen = 0;
    if ((rc = server_book_encode(r->book, r->book_count, index, &book, &blen)) == 0) {
        sm_entry e = {.index = index,
                      .term = term,
                      .type = SM_ENTRY_MEMBERSHIP,
                      .payload = book,
                      .len = blen};
        sm_reply reply;
        rc = sm_apply(r->sm, &e, 1, &reply);
        if (rc == 0)
            sm_replies_free(&reply, 1);
    }
    free(book);
    return rc;
}

/* A new cluster id, the same on every node restored from this file for
 * these members, and not the old cluster's: an old node left running is
 * refused at the handshake. */
static void restore_cluster_id(restore *r) {
    const snapfile_info *in = &r->info;
    uint64_t h = in->index * 0x9E3779B97F4A7C15ull ^ in->term ^ in->stream_len << 17;
    for (size_t i = 0; i < r->book_count; i++)
        h += kv_xxh3(r->book[i].name, strlen(r->book[i].name)) ^
             kv_xxh3(r->book[i].addr, strlen(r->book[i].addr));
    snprintf(r->cluster_id, sizeof r->cluster_id, "%016" PRIx64, h ^ 0x5245535452u);
}

/* The hard state at (term, commit index), a snapshot with the new
 * membership (so a node that joins later gets the new names; the imported
 * one is dropped), and DIR/CLUSTER. */
static int restore_seal(restore *r, uint64_t index, uint64_t term) {
    r->step = "hard state";
    hs_state st = {0};
    int rc = startup_hs_load(r->fs, r->dir, r->w, &r->h, &st);
    if (rc != 0)
        return rc;
    st.term = term;
    st.vote = 0;
    st.commit = index;
    if ((rc = hs_save(r->h, &st)) != 0)
        return rc;
    r->step = "new snapshot";
    snap_meta fresh;
    if ((rc = snap_create(r->sm, r->fs, r->snap_dir, &fresh)) != 0 ||
        (rc = snap_gc(r->fs, r->snap_dir, 1, &fresh)) != 0)
        return rc;
    restore_cluster_id(r);
    return startup_cluster_save(r->fs, r->dir, r->cluster_id, NULL);
}

static void restore_close(restore *r) {
    if (r->w)
        wal_close(r->w);
    sm_close(r->sm);
    if (r->h)
        hs_close(r->h);
    if (r->lock_fd >= 0)
        close(r->lock_fd);
    r->w = NULL;
    r->sm = NULL;
    r->h = NULL;
    r->lock_fd = -1;
}

/* The file checks, the target is empty, the members are valid. Returns
 * KVD_EXIT_OK or the code to exit with (the reason printed). */
static int restore_check(restore *r, const server_config *cfg, const char *from, char *tmp) {
    char detail[1024];
    int rc = snap_file_verify(from, &r->info, detail, sizeof detail);
    if (rc != 0) {
        fprintf(stderr, "kvd restore: %s\n", detail);
        return server_exit_code(rc);
    }
    if (!dir_empty_or_absent(cfg->data_dir)) {
        fprintf(stderr, "kvd restore: %s is not empty; restore into a new directory\n",
                cfg->data_dir);
        return KVD_EXIT_USAGE;
    }
    if (snprintf(tmp, SERVER_PATH_BYTES, "%s.restore-tmp", cfg->data_dir) >= (int)SERVER_PATH_BYTES)
        return KVD_EXIT_USAGE;
    kv_fs_rmtree(r->fs, tmp); /* left by an interrupted restore */
    if (server_book_parse(cfg->cluster, r->book, &r->book_count) != 0 ||
        !book_has(r->book, r->book_count, server_node_id(cfg->name))) {
        fprintf(stderr, "kvd restore: --cluster must list the new members, --name among them\n");
        kv_fs_rmtree(r->fs, tmp);
        return KVD_EXIT_USAGE;
    }
    return KVD_EXIT_OK;
}

int kvd_restore(const server_config *cfg, const char *from) {
    restore r;
    memset(&r, 0, sizeof r);
    r.fs = kv_fs_posix();
    r.lock_fd = -1;
    /* built beside the target and renamed into place at the end: a crash
     * midway leaves no half-made data dir under the target's name */
    char tmp[SERVER_PATH_BYTES];
    int code = restore_check(&r, cfg, from, tmp);
    if (code != KVD_EXIT_OK)
        return code;
    r.dir = tmp;
    kv_fs_join(r.db_dir, sizeof r.db_dir, tmp, "db");
    kv_fs_join(r.snap_dir, sizeof r.snap_dir, tmp, "snap");
    /* entry index+1: the new cluster's membership, in the log and applied */
    uint64_t index = r.info.index + 1, term = r.info.term + 1;
    int rc = restore_snapshot(&r, from);
    if (rc == 0)
        rc = restore_log(&r, index, term);
    if (rc == 0)
        rc = restore_seal(&r, index, term);
    restore_close(&r);
    if (rc == 0) {
        r.step = "renaming into place";
        rmdir(cfg->data_dir); /* empty or absent (checked above) */
        rc = rename(tmp, cfg->data_dir) == 0 ? kv_fs_sync_parent(r.fs, cfg->data_dir) : KV_EIO;
    }
    if (rc != 0) {
        fprintf(stderr, "kvd restore: %s: %s failed: %s\n", cfg->data_dir, r.step, kv_strerror(rc));
        kv_fs_rmtree(r.fs, tmp);
        return server_exit_code(rc);
    }
    printf("restored snapshot %" PRIu64 " (term %" PRIu64 ") into %s as %s of cluster %s\n",
           r.info.index, r.info.term, cfg->data_dir, cfg->name, r.cluster_id);
    return KVD_EXIT_OK;
}

/* ---- kvd recover -------------------------------------------------------------- */

int kvd_recover(const server_config *cfg) {
    kv_fs *fs = kv_fs_posix();
    uint64_t id = server_node_id(cfg->name);
    int lock_fd = -1;
    wal *w = NULL;
    hs *h = NULL;
    hs_state st;
    wal_options wo;
    wal_options_default(&wo);
    const char *step = "data dir";
    int rc = dd_check_format(fs, cfg->data_dir, NULL, NULL);
    if (rc == 0 && (rc = startup_lock(cfg->data_dir, &lock_fd)) == 0 &&
        (step = "log", rc = wal_open(fs, cfg->data_dir, &wo, NULL, NULL, &w)) == 0)
        step = "hard state", rc = startup_hs_load(fs, cfg->data_dir, w, &h, &st);
    uint64_t last = 0, term = 0;
    if (rc != 0) {
        fprintf(stderr, "kvd recover: %s: %s: %s\n", cfg->data_dir, step, kv_strerror(rc));
    } else {
        uint64_t last_term = 0;
        last = wal_last_index(w);
        wal_term_at(w, last, &last_term);
        term = (st.term > last_term ? st.term : last_term) + 1;
        raft_membership self = {.voters_count = 1, .voters = {id}};
        /* the term first: an entry of a term above the hard state's would not
         * restart (a crash between the two leaves only a higher term) */
        st.term = term;
        st.vote = 0;
        rc = hs_save(h, &st);
        if (rc == 0)
            rc = append_conf(w, last + 1, term, &self);
        if (rc != 0)
            fprintf(stderr, "kvd recover: %s: writing the new membership: %s\n", cfg->data_dir,
                    kv_strerror(rc));
    }
    if (w != NULL)
        wal_close(w);
    if (h != NULL)
        hs_close(h);
    if (lock_fd >= 0)
        close(lock_fd);
    if (rc != 0)
        return server_exit_code(rc);
    printf("%s is now a one-node cluster of %s (entry %" PRIu64 ", term %" PRIu64 ").\n"
           "Start it as before (kvd --name %s --data-dir %s ...), then add nodes with\n"
           "  kvcli member add NAME HOST:PORT   and   kvd --name NAME ... --join ADDR\n",
           cfg->data_dir, cfg->name, last + 1, term, cfg->name, cfg->data_dir);
    return KVD_EXIT_OK;
}

/* ---- kvd init ----------------------------------------------------------------- */

/* The cluster id kvd init gives: --cluster-id adopted, or derived from
 * --cluster-token and the founders, or random. */
static int init_cluster_id(const server_config *cfg, char id[ADMIN_CLUSTER_ID_BYTES]) {
    if (cfg->cluster_id != NULL) {
        size_t len = strlen(cfg->cluster_id);
        bool hex = len == CF_ID_HEX_BYTES;
        for (size_t i = 0; hex && i < len; i++)
            hex = strchr("0123456789abcdefABCDEF", cfg->cluster_id[i]) != NULL;
        if (!hex) {
            fprintf(stderr, "kvd init: --cluster-id '%s': want %u hex digits\n", cfg->cluster_id,
                    CF_ID_HEX_BYTES);
            return KV_EINVAL;
        }
        for (size_t i = 0; i <= len; i++)
            id[i] = (char)tolower((unsigned char)cfg->cluster_id[i]);
        return 0;
    }
    return cf_make_id(cfg->cluster_token, cfg->cluster, id);
}

/* The founders, --name among them, and the cluster id. KV_EINVAL (the
 * reason printed) for a bad --cluster or --cluster-id. */
static int init_check(const server_config *cfg, char id[ADMIN_CLUSTER_ID_BYTES]) {
    server_member book[SERVER_BOOK_MAX];
    size_t count = 0;
    int rc = server_book_parse(cfg->cluster, book, &count);
    if (rc == 0 && !book_has(book, count, server_node_id(cfg->name))) {
        fprintf(stderr, "kvd init: --name %s is not one of the --cluster members\n", cfg->name);
        rc = KV_EINVAL;
    }
    if (rc == 0 && strlen(cfg->cluster) > CF_FOUNDERS_BYTES_MAX) {
        fprintf(stderr, "kvd init: --cluster is over %u bytes\n", CF_FOUNDERS_BYTES_MAX);
        rc = KV_EINVAL;
    }
    if (rc == 0)
        rc = init_cluster_id(cfg, id);
    return rc;
}

int kvd_init(const server_config *cfg) {
    if (cfg->cluster == NULL) {
        fprintf(stderr, "kvd init: --cluster NAME=HOST:PORT,... (the founders) is required\n");
        return KVD_EXIT_USAGE;
    }
    if (!dir_empty_or_absent(cfg->data_dir)) {
        fprintf(stderr, "kvd init: %s is not empty; kvd init makes a new data dir\n",
                cfg->data_dir);
        return KVD_EXIT_USAGE;
    }
    kv_fs *fs = kv_fs_posix();
    char id[ADMIN_CLUSTER_ID_BYTES] = "";
    int rc = init_check(cfg, id);
    if (rc == KV_EINVAL)
        return KVD_EXIT_USAGE;
    if (rc == 0)
        rc = dd_init(fs, cfg->data_dir);
    if (rc == 0)
        rc = startup_cluster_save(fs, cfg->data_dir, id, cfg->cluster);
    if (rc == 0) {
        printf("initialized %s: %s, a founder of cluster %s\n", cfg->data_dir, cfg->name, id);
        if (cfg->cluster_token == NULL && cfg->cluster_id == NULL)
            printf("the other founders: kvd init ... --cluster-id %s (the same --cluster)\n", id);
    } else {
        fprintf(stderr, "kvd init: %s: %s\n", cfg->data_dir, kv_strerror(rc));
    }
    return server_exit_code(rc);
}
