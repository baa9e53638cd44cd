/*
 * Outbound sockets for handlers (cosocket.md section 2): TCP over IPv4/IPv6, unix stream
 * sockets and UDP, on the worker's event base.
 *
 * C never waits and never calls Lua. Every operation that may wait is a function that Lua
 * calls again and again: it returns MF_SOCK_OK (done), MF_SOCK_WAIT (the socket armed its
 * event and its deadline; a MF_EV_WAKE_TOKEN event with the socket's token follows, and Lua
 * calls the same function again) or an error. The first call of an operation starts its
 * deadline; the calls after a wake-up continue it. Lua (lua/moonfcgi/socket.lua) owns the
 * memory of a socket (ffi.gc calls mf_ffi_sock_free); the worker closes the fds of its
 * sockets when it closes, and a closed socket only waits to be freed.
 *
 * A socket speaks through a transport (plain read/write here): TLS replaces it on the
 * connected fd later, and the buffering above it does not change.
 *
 * The part between the CDEF markers is copied verbatim into lua/moonfcgi/socket.lua
 * (spec/lua/cdef_spec.lua checks it).
 */
#ifndef MF_SOCKET_H
#define MF_SOCKET_H

#include <stddef.h>
#include <stdint.h>

#include "ffi.h"

#pragma GCC visibility push(default)
/* CDEF BEGIN */
typedef struct mf_sock mf_sock_t;
typedef struct mf_sock_session mf_sock_session_t;

enum {
    MF_SOCK_OK = 0,
    MF_SOCK_WAIT = 1,
    MF_SOCK_ERROR = -1,
    MF_SOCK_TIMEOUT = -2,
    MF_SOCK_CLOSED = -3,
    MF_SOCK_TOO_LARGE = -4
};

enum { MF_SOCK_TCP = 1, MF_SOCK_UDP = 2 };

enum { MF_SOCK_READ_LINE = 1, MF_SOCK_READ_ALL = 2, MF_SOCK_READ_SIZE = 3, MF_SOCK_READ_ANY = 4 };

mf_sock_t *mf_ffi_sock_new(mf_worker_t *w, int kind, uint64_t token);
void mf_ffi_sock_free(mf_sock_t *s);
int mf_ffi_sock_close(mf_sock_t *s);
int mf_ffi_sock_is_open(mf_sock_t *s);
const char *mf_ffi_sock_errmsg(mf_sock_t *s);
void mf_ffi_sock_wake(mf_sock_t *s);
int mf_ffi_sock_configure(mf_worker_t *w, int max_sockets, double timeout, size_t buffer);
double mf_ffi_sock_default_timeout(mf_worker_t *w);
unsigned mf_ffi_sock_count(mf_worker_t *w);

int mf_ffi_sock_connect(mf_sock_t *s, const char *host, int port, double timeout);
int mf_ffi_sock_connecting(mf_sock_t *s);

int mf_ffi_sock_send_add(mf_sock_t *s, const char *p, size_t len);
int mf_ffi_sock_send(mf_sock_t *s, double timeout);

int mf_ffi_sock_receive(mf_sock_t *s, int mode, size_t size, double timeout, const char **p,
                        size_t *len);
int mf_ffi_sock_receive_until(mf_sock_t *s, const char *pat, size_t patlen, size_t size,
                              int inclusive, double timeout, const char **p, size_t *len,
                              int *found);
int mf_ffi_sock_pause(mf_sock_t *s, double timeout);

int mf_ffi_sock_setoption(mf_sock_t *s, const char *name, int value);
int mf_ffi_sock_keepalive_check(mf_sock_t *s);
int mf_ffi_sock_park(mf_sock_t *s, double idle);
int mf_ffi_sock_unpark(mf_sock_t *s);

int mf_ffi_sock_sslhandshake(mf_sock_t *s, mf_sock_session_t *reuse, const char *server_name,
                             int verify, int want_session, double timeout,
                             mf_sock_session_t **session);
int mf_ffi_sock_ssl_reused(mf_sock_t *s);
void mf_ffi_sock_session_free(mf_sock_session_t *sess);
int mf_ffi_sock_set_trusted(mf_worker_t *w, const char *path);
/* CDEF END */
#pragma GCC visibility pop

/* Closes the fds of every socket of w (they stay allocated until Lua frees them) and frees
 * the worker's TLS context. */
void mf_socket_close_all(mf_worker_t *w);

#endif
