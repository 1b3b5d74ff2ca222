/*
 * A minimal HTTP/1.0-style responder for /metrics and /health on the node's
 * loop: one GET per connection, the answer, then close. Requests are capped
 * at 8 KiB and 2 s; at most 64 connections at once (more are closed at once).
 */
#ifndef KV_SERVER_HTTP_H
#define KV_SERVER_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct http_server http_server;

/* Fills *body (malloc'd; the responder frees it) and *content_type for a GET
 * of path; returns the HTTP status code. */
typedef int (*http_handler)(void *ctx, const char *path, char **body, size_t *len,
                            const char **content_type);

/* Listens on "host:port". KV_EINVAL (bad address), KV_EEXIST (in use),
 * KV_EIO. */
int http_open(uv_loop_t *loop, const char *addr, http_handler fn, void *ctx, http_server **out);
/* Closes the listener and every connection (their close callbacks run on
 * the loop later; h is freed when the last one has). */
void http_close(http_server *h);

/* host:port into a sockaddr (IPv4, or [IPv6]:port). 0 or KV_EINVAL. */
int http_parse_addr(const char *addr, struct sockaddr_storage *out);

#endif /* KV_SERVER_HTTP_H */
