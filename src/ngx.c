/*
 * Byte codecs of the ngx layer (ngx.h). The behaviours are OpenResty's, as its README
 * documents them for ngx.encode_base64, ngx.escape_uri and friends; the tables are built here
 * from the character classes those functions name.
 */
#include "ngx.h"

#include <stdint.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char hex_lower[] = "0123456789abcdef";
static const char hex_upper[] = "0123456789ABCDEF";

size_t mf_ffi_ngx_base64_encode(unsigned char *dst, const unsigned char *src, size_t len,
                                int no_padding)
{
    unsigned char *d = dst;

    /* dst holds at least 4 * ((len + 2) / 3) bytes. */
    while (len >= 3) {
        *d++ = b64[src[0] >> 2];
        *d++ = b64[((src[0] & 0x03) << 4) | (src[1] >> 4)];
        *d++ = b64[((src[1] & 0x0f) << 2) | (src[2] >> 6)];
        *d++ = b64[src[2] & 0x3f];
        src += 3;
        len -= 3;
    }
    if (len > 0) {
        *d++ = b64[src[0] >> 2];
        if (len == 1) {
            *d++ = b64[(src[0] & 0x03) << 4];
            if (!no_padding)
                *d++ = '=';
        } else {
            *d++ = b64[((src[0] & 0x03) << 4) | (src[1] >> 4)];
            *d++ = b64[(src[1] & 0x0f) << 2];
        }
        if (!no_padding)
            *d++ = '=';
    }
    return (size_t)(d - dst);
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * As nginx's decoder: the input ends at its first '=' (padding is optional), any other byte
 * outside the alphabet is an error, and so is a last group of a single character. dst holds
 * at least 3 * (len / 4) + 2 bytes. Returns the decoded length or -1.
 */
int64_t mf_ffi_ngx_base64_decode(unsigned char *dst, const unsigned char *src, size_t len)
{
    unsigned char *d = dst;
    size_t n = 0;
    uint32_t acc = 0;

    while (n < len && src[n] != '=') {
        if (b64_value(src[n]) < 0)
            return -1;
        n++;
    }
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 6) | (uint32_t)b64_value(src[i]);
        if (i % 4 == 3) {
            *d++ = (unsigned char)(acc >> 16);
            *d++ = (unsigned char)(acc >> 8);
            *d++ = (unsigned char)acc;
            acc = 0;
        }
    }
    if (n % 4 == 2) {
        *d++ = (unsigned char)(acc >> 4);
    } else if (n % 4 == 3) {
        *d++ = (unsigned char)(acc >> 10);
        *d++ = (unsigned char)(acc >> 2);
    }
    return (int64_t)(d - dst);
}

/*
 * Whether ngx.escape_uri escapes byte c. Type 0 (a whole URI) escapes only what cannot
 * stand in one: space, '#', '%', '?', controls and bytes from 0x7f. Type 2 (a component,
 * the default) keeps only the unreserved characters of RFC 3986: letters, digits, "-._~".
 */
static int must_escape(unsigned char c, int type)
{
    if (c <= 0x20 || c >= 0x7f)
        return 1;
    if (type == 0)
        return c == '#' || c == '%' || c == '?';
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return 0;
    return !(c == '-' || c == '.' || c == '_' || c == '~');
}

size_t mf_ffi_ngx_escape_uri_len(const unsigned char *src, size_t len, int type)
{
    size_t n = len;

    for (size_t i = 0; i < len; i++)
        if (must_escape(src[i], type))
            n += 2;
    return n;
}

size_t mf_ffi_ngx_escape_uri(unsigned char *dst, const unsigned char *src, size_t len, int type)
{
    unsigned char *d = dst;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = src[i];
        if (must_escape(c, type)) {
            *d++ = '%';
            *d++ = (unsigned char)hex_upper[c >> 4];
            *d++ = (unsigned char)hex_upper[c & 0x0f];
        } else {
            *d++ = c;
        }
    }
    return (size_t)(d - dst);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "%XX" becomes its byte, '+' a space; a '%' without two hex digits stays as it is. dst holds
 * len bytes (the output is never longer). */
size_t mf_ffi_ngx_unescape_uri(unsigned char *dst, const unsigned char *src, size_t len)
{
    unsigned char *d = dst;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = src[i];
        if (c == '%' && len - i > 2 && hex_value(src[i + 1]) >= 0 && hex_value(src[i + 2]) >= 0) {
            *d++ = (unsigned char)(hex_value(src[i + 1]) * 16 + hex_value(src[i + 2]));
            i += 2;
        } else if (c == '+') {
            *d++ = ' ';
        } else {
            *d++ = c;
        }
    }
    return (size_t)(d - dst);
}

/* The escape letter of a byte that MySQL's quoting writes as a backslash pair, or 0. */
static unsigned char sql_escape(unsigned char c)
{
    switch (c) {
    case '\0': return '0';
    case '\b': return 'b';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    case 26: return 'Z';
    case '\\': return '\\';
    case '\'': return '\'';
    case '"': return '"';
    default: return 0;
    }
}

size_t mf_ffi_ngx_quote_sql_len(const unsigned char *src, size_t len)
{
    size_t n = len + 2;

    for (size_t i = 0; i < len; i++)
        if (sql_escape(src[i]))
            n++;
    return n;
}

size_t mf_ffi_ngx_quote_sql(unsigned char *dst, const unsigned char *src, size_t len)
{
    unsigned char *d = dst;

    *d++ = '\'';
    for (size_t i = 0; i < len; i++) {
        unsigned char e = sql_escape(src[i]);
        if (e) {
            *d++ = '\\';
            *d++ = e;
        } else {
            *d++ = src[i];
        }
    }
    *d++ = '\'';
    return (size_t)(d - dst);
}

/* CRC-32 of IEEE 802.3 (zlib's, and nginx's ngx_crc32_short/long: the two differ only in
 * the table size they use, not in the result). */
uint32_t mf_ffi_ngx_crc32(const unsigned char *src, size_t len)
{
    static uint32_t table[256];
    uint32_t crc = 0xffffffffu;

    if (table[1] == 0) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    }
    for (size_t i = 0; i < len; i++)
        crc = table[(crc ^ src[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        *dst++ = (unsigned char)hex_lower[src[i] >> 4];
        *dst++ = (unsigned char)hex_lower[src[i] & 0x0f];
    }
    return dst;
}

intptr_t ngx_atoi(const unsigned char *line, size_t n)
{
    intptr_t value = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d = line[i] - '0';
        if (d < 0 || d > 9)
            return -1;
        if (value > (INTPTR_MAX - d) / 10)
            return -1;
        value = value * 10 + d;
    }
    return value;
}
