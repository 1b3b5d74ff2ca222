/*
 * The service manager's readiness protocol (sd_notify(3)): a datagram such
 * as "READY=1" to the unix socket named by $NOTIFY_SOCKET ("@name" for the
 * abstract namespace). systemd documents the protocol as stable; speaking it
 * directly spares kvd a link to libsystemd. deploy/kvd@.service runs kvd
 * with Type=notify: systemd counts the node started once it listens.
 */
#ifndef KV_SERVER_NOTIFY_H
#define KV_SERVER_NOTIFY_H

/* Sends state ("READY=1", "STOPPING=1", "STATUS=...", newline-separated)
 * when $NOTIFY_SOCKET is set: 1 sent, 0 not under a service manager, or a
 * negative KV_E* code (nothing else happens: a lost notification only
 * delays systemd's view). */
int server_notify(const char *state);

#endif
