#include "kv/errors.h"

#include <string.h>

const char *kv_strerror(int err) {
    switch (err) {
    case 0:
        return "ok";
#define KV__ERR_MSG(name, value, word, msg)                                                        \
    case name:                                                                                     \
        return msg;
        KV_ERRORS(KV__ERR_MSG)
#undef KV__ERR_MSG
    }
    return "unknown error";
}

const char *kv_errword(int err) {
    switch (err) {
    case 0:
        return "OK";
#define KV__ERR_WORD(name, value, word, msg)                                                       \
    case name:                                                                                     \
        return word;
        KV_ERRORS(KV__ERR_WORD)
#undef KV__ERR_WORD
    }
    return "UNKNOWN";
}

int kv_errcode(const char *word) {
#define KV__ERR_LOOKUP(name, value, w, msg)                                                        \
    if (strcmp(word, w) == 0)                                                                      \
        return name;
    KV_ERRORS(KV__ERR_LOOKUP)
#undef KV__ERR_LOOKUP
    return 0;
}
