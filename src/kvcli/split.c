/*
 * kvcli: splitting a command line into words, shell-like quoting.
 */
#include "kvcli/kvcli.h"

#include <assert.h>
#include <ctype.h>

/* The value of hex digit c (checked by the caller). */
static unsigned split__hex(char c) {
    assert(isxdigit((unsigned char)c));
    return (unsigned)(isdigit((unsigned char)c) ? c - '0' : (c | 0x20) - 'a' + 10);
}

/* A backslash escape at s (s[0] == '\\'): writes its byte to *d, returns
 * the characters it took (2 or 4). */
static int split__escape(const char *s, char *d) {
    assert(s[0] == '\\' && s[1] != '\0');
    if (s[1] == 'x' && isxdigit((unsigned char)s[2]) && isxdigit((unsigned char)s[3])) {
        *d = (char)(split__hex(s[2]) << 4 | split__hex(s[3]));
        return 4;
    }
    *d = s[1];
    return 2;
}

/* Copies one word starting at *src into *dst (dst never passes src, so the
 * split happens in place); stops at unquoted whitespace or the end. */
static int split__word(char **src, char **dst, const char **why) {
    char *s = *src, *d = *dst;
    char quote = 0;
    for (; *s != '\0'; s++) {
        if (quote == '\'') {
            if (*s == '\'')
                quote = 0;
            else
                *d++ = *s;
        } else if (*s == '\\') {
            if (s[1] == '\0') {
                *why = "a backslash ends the line";
                return -1;
            }
            s += split__escape(s, d++) - 1;
        } else if (quote == '"') {
            if (*s == '"')
                quote = 0;
            else
                *d++ = *s;
        } else if (*s == '\'' || *s == '"') {
            quote = *s;
        } else if (*s == ' ' || *s == '\t') {
            break;
        } else {
            *d++ = *s;
        }
    }
    if (quote != 0) {
        *why = quote == '\'' ? "unterminated ' quote" : "unterminated \" quote";
        return -1;
    }
    *src = s;
    *dst = d;
    return 0;
}

int kvcli_split(char *line, char **argv, size_t *lens, int max, const char **why) {
    assert(line != NULL && argv != NULL && lens != NULL && why != NULL);
    assert(max > 0);
    char *s = line, *d = line;
    int n = 0;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0')
            break;
        if (n == max) {
            *why = "too many words";
            return -1;
        }
        argv[n++] = d;
        if (split__word(&s, &d, why) != 0)
            return -1;
        /* d < s unless the word ran to the end of the line, where the
         * terminator goes on the NUL; either way the word ends here. */
        if (*s != '\0')
            s++;
        lens[n - 1] = (size_t)(d - argv[n - 1]);
        *d++ = '\0';
    }
    assert(n <= max);
    return n;
}
