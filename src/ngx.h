/*
 * The C half of the ngx compatibility layer (lua/moonfcgi/ngx/codec.lua declares the part
 * between the CDEF markers; spec/lua/cdef_spec.lua keeps them in step).
 *
 * Two kinds of symbols live here. The mf_ffi_ngx_* functions are byte codecs that are too
 * slow byte by byte in Lua: each writes into a buffer the caller sized with the matching
 * *_len call (or a bound stated next to it) and never allocates. ngx_hex_dump and ngx_atoi
 * carry nginx's own names and signatures because pure-Lua OpenResty libraries
 * (lua-resty-string) declare and call them through ffi.C; they are not in the CDEF part, so
 * that those libraries' declarations do not clash with ours.
 */
#ifndef MF_NGX_H
#define MF_NGX_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(default)
/* CDEF BEGIN */
size_t mf_ffi_ngx_base64_encode(unsigned char *dst, const unsigned char *src, size_t len,
                                int no_padding);
int64_t mf_ffi_ngx_base64_decode(unsigned char *dst, const unsigned char *src, size_t len);
size_t mf_ffi_ngx_escape_uri_len(const unsigned char *src, size_t len, int type);
size_t mf_ffi_ngx_escape_uri(unsigned char *dst, const unsigned char *src, size_t len, int type);
size_t mf_ffi_ngx_unescape_uri(unsigned char *dst, const unsigned char *src, size_t len);
size_t mf_ffi_ngx_quote_sql_len(const unsigned char *src, size_t len);
size_t mf_ffi_ngx_quote_sql(unsigned char *dst, const unsigned char *src, size_t len);
uint32_t mf_ffi_ngx_crc32(const unsigned char *src, size_t len);
/* CDEF END */

/* nginx's ngx_hex_dump: writes 2 * len lower-case hex digits; returns dst + 2 * len. */
unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len);

/* nginx's ngx_atoi: the decimal value of n digits, or -1 (NGX_ERROR) for an empty string,
 * a non-digit or a value past INTPTR_MAX. */
intptr_t ngx_atoi(const unsigned char *line, size_t n);
#pragma GCC visibility pop

#endif
