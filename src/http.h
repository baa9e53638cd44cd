/*
 * HTTP/1.1 over a connection, for development without a web server (`--http ADDR`): the
 * request head becomes the CGI params a web server would send (as nginx's fastcgi_params
 * builds them), the body becomes STDIN, and the handler's CGI answer (a header block, then
 * the body) becomes an HTTP response, sized or chunked. One request is answered at a time;
 * pipelined requests wait, parsed, in the input buffer. The parser is libhttp-parser
 * (docs/http.md says why).
 */
#ifndef MF_HTTP_H
#define MF_HTTP_H

#include "conn.h"

extern const mf_proto_t mf_http_proto;

/* An HTTP connection on fd (connected, non-blocking); NULL on failure (fd is closed). */
mf_conn_t *mf_http_conn_new(mf_worker_t *w, int fd);

#endif
