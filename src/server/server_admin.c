/* kvd restore and kvd recover: offline changes to a data dir (server.h). */
#include "server/server_int.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "storage/clusterfile.h"
#include "storage/datadir.h"
#include "storage/snapfile.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static server *admin_new(const server_config *cfg) {
    server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cfg = *cfg;
    s->id = server_node_id(cfg->name);
    s->lock_fd = -1;
    s->rfs = s->fs = kv_fs_posix();
    kv_fs_join(s->db_dir, sizeof s->db_dir, cfg->data_dir, "db");
    kv_fs_join(s->snap_dir, sizeof s->snap_dir, cfg->data_dir, "snap");
    return s;
}

static void admin_free(server *s) {
    if (s->w)
        wal_close(s->w);
    sm_close(s->sm);
    if (s->h)
        hs_close(s->h);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
}

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

/* Appends one CONF entry making voters the membership, at (index, term). */
static int append_conf(server *s, uint64_t index, uint64_t term, const raft_membership *voters) {
    uint8_t buf[RAFT_CONF_BYTES_MAX];
    size_t len = raft_conf_encode(RAFT_CONF_BOOTSTRAP, 0, voters, buf);
    wal_entry e = {
        .index = index, .term = term, .type = RAFT_ENTRY_CONF, .len = (uint32_t)len, .data = buf};
    return wal_append_wait(s->w, &e, 1);
}

int server_restore(const server_config *cfg, const char *from) {
    char detail[1024];
    snapfile_info info;
    int rc = snap_file_verify(from, &info, detail, sizeof detail);
    if (rc != 0) {
        fprintf(stderr, "kvd restore: %s\n", detail);
        return server_exit_code(rc);
    }
    if (!dir_empty_or_absent(cfg->data_dir)) {
        fprintf(stderr, "kvd restore: %s is not empty; restore into a new directory\n",
                cfg->data_dir);
        return KVD_EXIT_USAGE;
    }
    /* built beside the target and renamed into place at the end: a crash
     * midway leaves no half-made data dir under the target's name */
    char tmp[SERVER_PATH_BYTES];
    if (snprintf(tmp, sizeof tmp, "%s.restore-tmp", cfg->data_dir) >= (int)sizeof tmp)
        return KVD_EXIT_USAGE;
    kv_fs_rmtree(kv_fs_posix(), tmp); /* left by an interrupted restore */
    server_config tcfg = *cfg;
    tcfg.data_dir = tmp;
    server *s = admin_new(&tcfg);
    if (s == NULL)
        return KVD_EXIT_IO;
    if (server_members_parse(s, cfg->cluster) != 0 || server_member_by_id(s, s->id) == NULL) {
        fprintf(stderr, "kvd restore: --cluster must list the new members, --name among them\n");
        admin_free(s);
        kv_fs_rmtree(kv_fs_posix(), tmp);
        return KVD_EXIT_USAGE;
    }
    const char *step = "data dir";
    snap_meta sn;
    FILE *f = NULL;
    if ((rc = dd_init(s->rfs, tmp)) == 0 && (rc = server_lock_data_dir(s)) == 0) {
        step = "snapshot";
        f = fopen(from, "rb");
        rc = f == NULL ? KV_EIO : fseeko(f, SNAPFILE_HEADER_BYTES, SEEK_SET) != 0 ? KV_EIO : 0;
        if (rc == 0)
            rc = server_stream_install(s, f, info.stream_len, &sn);
    }
    if (f)
        fclose(f);
    hs_state st = {0};
    if (rc == 0 && (step = "state machine", rc = sm_open(s->db_dir, NULL, &s->sm)) == 0)
        rc = snap_restore(&s->sm, s->db_dir, sn.path);
    wal_options wo;
    wal_options_default(&wo);
    if (rc == 0 && (step = "log", rc = wal_open(s->fs, tmp, &wo, NULL, NULL, &s->w)) == 0)
        rc = wal_reset(s->w, info.index, info.term);
    /* entry index+1: the new cluster's membership, in the log and applied */
    uint64_t index = info.index + 1, term = info.term + 1;
    raft_membership voters = {0};
    for (size_t i = 0; i < s->members_count; i++)
        voters.voters[voters.voters_count++] = s->members[i].id;
    if (rc == 0)
        rc = append_conf(s, index, term, &voters);
    uint8_t *book = NULL;
    size_t blen = 0;
    if (rc == 0 && (rc = server_members_encode(s, index, &book, &blen)) == 0) {
        sm_entry e = {.index = index,
                      .term = term,
                      .type = SM_ENTRY_MEMBERSHIP,
                      .payload = book,
                      .len = blen};
        sm_reply r;
        rc = sm_apply(s->sm, &e, 1, &r);
        if (rc == 0)
            sm_replies_free(&r, 1);
    }
    free(book);
    if (rc == 0 && (step = "hard state", rc = server_hs_load(s, &st)) == 0) {
        st.term = term;
        st.vote = 0;
        st.commit = index;
        rc = hs_save(s->h, &st);
    }
    /* a snapshot with the new membership, so a node that joins later gets
     * the new names, and the imported one is dropped */
    snap_meta fresh;
    if (rc == 0 &&
        (step = "new snapshot", rc = snap_create(s->sm, s->rfs, s->snap_dir, &fresh)) == 0)
        rc = snap_gc(s->rfs, s->snap_dir, 1);
    if (rc == 0) {
        /* a new cluster id, the same on every node restored from this file
         * for these members, and not the old cluster's: an old node left
         * running is refused at the handshake */
        uint64_t h = info.index * 0x9E3779B97F4A7C15ull ^ info.term ^ info.stream_len << 17;
        for (size_t i = 0; i < s->members_count; i++)
            h += kv_xxh3(s->members[i].name, strlen(s->members[i].name)) ^
                 kv_xxh3(s->members[i].addr, strlen(s->members[i].addr));
        snprintf(s->cluster_id, sizeof s->cluster_id, "%016" PRIx64, h ^ 0x5245535452u);
        rc = server_cluster_save(s, NULL);
    }
    char cluster[sizeof s->cluster_id];
    snprintf(cluster, sizeof cluster, "%s", s->cluster_id);
    admin_free(s);
    if (rc == 0) {
        step = "renaming into place";
        rmdir(cfg->data_dir); /* empty or absent (checked above) */
        rc = rename(tmp, cfg->data_dir) == 0 ? kv_fs_sync_parent(kv_fs_posix(), cfg->data_dir)
                                             : KV_EIO;
    }
    if (rc != 0) {
        fprintf(stderr, "kvd restore: %s: %s failed: %s\n", cfg->data_dir, step, kv_strerror(rc));
        kv_fs_rmtree(kv_fs_posix(), tmp);
        return server_exit_code(rc);
    }
    printf("restored snapshot %" PRIu64 " (term %" PRIu64 ") into %s as %s of cluster %s\n",
           info.index, info.term, cfg->data_dir, cfg->name, cluster);
    return KVD_EXIT_OK;
}

int server_recover(const server_config *cfg) {
    server *s = admin_new(cfg);
    if (s == NULL)
        return KVD_EXIT_IO;
    hs_state st;
    wal_options wo;
    wal_options_default(&wo);
    const char *step = "data dir";
    int rc = dd_check_format(s->rfs, cfg->data_dir, NULL, NULL);
    if (rc == 0 && (rc = server_lock_data_dir(s)) == 0 &&
        (step = "log", rc = wal_open(s->fs, cfg->data_dir, &wo, NULL, NULL, &s->w)) == 0)
        step = "hard state", rc = server_hs_load(s, &st);
    if (rc != 0) {
        fprintf(stderr, "kvd recover: %s: %s: %s\n", cfg->data_dir, step, kv_strerror(rc));
        admin_free(s);
        return server_exit_code(rc);
    }
    uint64_t last = wal_last_index(s->w), last_term = 0;
    wal_term_at(s->w, last, &last_term);
    uint64_t term = (st.term > last_term ? st.term : last_term) + 1;
    raft_membership self = {.voters_count = 1, .voters = {s->id}};
    /* the term first: an entry of a term above the hard state's would not
     * restart (a crash between the two leaves only a higher term) */
    st.term = term;
    st.vote = 0;
    rc = hs_save(s->h, &st);
    if (rc == 0)
        rc = append_conf(s, last + 1, term, &self);
    if (rc != 0) {
        fprintf(stderr, "kvd recover: %s: writing the new membership: %s\n", cfg->data_dir,
                kv_strerror(rc));
        admin_free(s);
        return server_exit_code(rc);
    }
    printf("%s is now a one-node cluster of %s (entry %" PRIu64 ", term %" PRIu64 ").\n"
           "Start it as before (kvd --name %s --data-dir %s ...), then add nodes with\n"
           "  kvcli member add NAME HOST:PORT   and   kvd --name NAME ... --join ADDR\n",
           cfg->data_dir, cfg->name, last + 1, term, cfg->name, cfg->data_dir);
    admin_free(s);
    return KVD_EXIT_OK;
}

/* The cluster id kvd init gives: --cluster-id adopted, or derived from
 * --cluster-token and the founders, or random. */
static int init_cluster_id(server *s, const server_config *cfg) {
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
            s->cluster_id[i] = (char)tolower((unsigned char)cfg->cluster_id[i]);
        return 0;
    }
    return cf_make_id(cfg->cluster_token, cfg->cluster, s->cluster_id);
}

int server_init(const server_config *cfg) {
    if (cfg->cluster == NULL) {
        fprintf(stderr, "kvd init: --cluster NAME=HOST:PORT,... (the founders) is required\n");
        return KVD_EXIT_USAGE;
    }
    if (!dir_empty_or_absent(cfg->data_dir)) {
        fprintf(stderr, "kvd init: %s is not empty; kvd init makes a new data dir\n",
                cfg->data_dir);
        return KVD_EXIT_USAGE;
    }
    server *s = admin_new(cfg);
    if (s == NULL)
        return KVD_EXIT_IO;
    int rc = server_members_parse(s, cfg->cluster);
    if (rc == 0 && server_member_by_id(s, s->id) == NULL) {
        fprintf(stderr, "kvd init: --name %s is not one of the --cluster members\n", cfg->name);
        rc = KV_EINVAL;
    }
    if (rc == 0 && strlen(cfg->cluster) > CF_FOUNDERS_BYTES_MAX) {
        fprintf(stderr, "kvd init: --cluster is over %u bytes\n", CF_FOUNDERS_BYTES_MAX);
        rc = KV_EINVAL;
    }
    if (rc == 0)
        rc = init_cluster_id(s, cfg);
    if (rc == KV_EINVAL) {
        admin_free(s);
        return KVD_EXIT_USAGE;
    }
    if (rc == 0)
        rc = dd_init(s->rfs, cfg->data_dir);
    if (rc == 0)
        rc = server_cluster_save(s, cfg->cluster);
    if (rc == 0) {
        printf("initialized %s: %s, a founder of cluster %s\n", cfg->data_dir, cfg->name,
               s->cluster_id);
        if (cfg->cluster_token == NULL && cfg->cluster_id == NULL)
            printf("the other founders: kvd init ... --cluster-id %s (the same --cluster)\n",
                   s->cluster_id);
    } else {
        fprintf(stderr, "kvd init: %s: %s\n", cfg->data_dir, kv_strerror(rc));
    }
    admin_free(s);
    return server_exit_code(rc);
}
