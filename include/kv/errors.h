/*
 * kv error codes: one list, one place.
 *
 * Every function in kv returns 0 on success or one of the negative KV_E*
 * codes below (the libuv convention). Each code has a stable code word: the
 * same word appears in log lines, in metrics labels ("faults by code word")
 * and in replies on the wire, so a program can switch on it (Redis style:
 * -MOVED, -OOM). Code words and numbers never change meaning once released;
 * new codes are appended.
 *
 * TIMEOUT means "outcome unknown": the request may or may not have taken
 * effect. It is never used for "failed".
 */
#ifndef KV_ERRORS_H
#define KV_ERRORS_H

/* X(name, value, code word, human message) */
#define KV_ERRORS(X)                                                                               \
    X(KV_EIO, -1, "IO", "input/output error (fsync or write failed)")                              \
    X(KV_ECORRUPT, -2, "CORRUPT", "data failed its checksum or format check")                      \
    X(KV_ENOTFOUND, -3, "NOTFOUND", "not found")                                                   \
    X(KV_ECOMPARE, -4, "COMPARE", "compare failed: the current value differs")                     \
    X(KV_ETOOBIG, -5, "TOOBIG", "too big: over a configured limit")                                \
    X(KV_EBUSY, -6, "BUSY", "busy: a queue is full, retry later")                                  \
    X(KV_ENOSPACE, -7, "NOSPACE", "no space: the disk quota is reached")                           \
    X(KV_EUNAVAILABLE, -8, "UNAVAILABLE", "cluster unavailable: no leader reached")                \
    X(KV_ETIMEOUT, -9, "TIMEOUT", "timed out: the outcome is unknown")                             \
    X(KV_ENOTLEADER, -10, "NOTLEADER", "this node is not the leader")                              \
    X(KV_EINVAL, -11, "INVALID", "invalid argument")                                               \
    X(KV_ENOMEM, -12, "NOMEM", "out of memory")                                                    \
    X(KV_EVERSION, -13, "VERSION", "unsupported format or protocol version")                       \
    X(KV_EMISSING, -14, "MISSING", "a file that must exist is missing")                            \
    X(KV_ELOCKED, -15, "LOCKED", "the data directory is in use by another process")                \
    X(KV_EPERM, -16, "PERM", "permission denied")                                                  \
    X(KV_ESHUTDOWN, -17, "SHUTDOWN", "shutting down")                                              \
    X(KV_EEXIST, -18, "EXIST", "already exists")                                                   \
    X(KV_EPROTO, -19, "PROTOCOL", "protocol error: malformed message")                             \
    X(KV_EAUTH, -20, "AUTH", "authentication failed: wrong cluster id or token")                   \
    X(KV_ECONFIG, -21, "CONFIG", "configuration error")                                            \
    X(KV_ECLOSED, -22, "CLOSED", "connection closed")                                              \
    X(KV_ECOMPACTED, -23, "COMPACTED", "compacted: the log entries or revisions wanted are gone")  \
    X(KV_ESTALE, -24, "STALE", "superseded: a newer term or snapshot exists")                      \
    X(KV_ECANCELED, -25, "CANCELED", "cancelled: a watcher fell behind its buffer limit")

#ifdef __cplusplus
extern "C" {
#endif

enum kv_error {
#define KV__ERR_ENUM(name, value, word, msg) name = value,
    KV_ERRORS(KV__ERR_ENUM)
#undef KV__ERR_ENUM
};

/* Human message for a code; 0 gives "ok". Static storage, never NULL. */
const char *kv_strerror(int err);

/* The stable code word for a code ("TOOBIG"); 0 gives "OK". Static, never NULL. */
const char *kv_errword(int err);

/* The code for a code word, or 0 when the word is unknown. */
int kv_errcode(const char *word);

#ifdef __cplusplus
}
#endif

#endif /* KV_ERRORS_H */
