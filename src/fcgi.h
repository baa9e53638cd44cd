/*
 * FastCGI over a connection [FastCGI 1.0]: records in (parsed by record.c, the codec the
 * fuzzers drive), STDOUT, STDERR and END_REQUEST records out.
 */
#ifndef MF_FCGI_H
#define MF_FCGI_H

#include "conn.h"

extern const mf_proto_t mf_fcgi_proto;

/* A FastCGI connection on fd (connected, non-blocking); NULL on failure (fd is closed). */
mf_conn_t *mf_fcgi_conn_new(mf_worker_t *w, int fd);

#endif
