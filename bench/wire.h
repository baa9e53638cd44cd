/*
 * The few FastCGI 1.0 wire facts the bench tools need, kept apart from src/record.c on
 * purpose: a load generator that shared the server's codec could not catch that codec's bugs.
 */
#ifndef MF_WIRE_H
#define MF_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MF_WIRE_VERSION    1
#define MF_WIRE_HEADER_LEN 8
/* The largest content we emit: a multiple of 8, so content + padding never exceeds 65535. */
#define MF_WIRE_CONTENT_MAX 65528

/* Record types [FastCGI 1.0, section 8]. */
enum mf_wire_type {
    MF_WIRE_BEGIN_REQUEST = 1,
    MF_WIRE_ABORT_REQUEST = 2,
    MF_WIRE_END_REQUEST = 3,
    MF_WIRE_PARAMS = 4,
    MF_WIRE_STDIN = 5,
    MF_WIRE_STDOUT = 6,
    MF_WIRE_STDERR = 7,
    MF_WIRE_DATA = 8,
    MF_WIRE_GET_VALUES = 9,
    MF_WIRE_GET_VALUES_RESULT = 10,
    MF_WIRE_UNKNOWN_TYPE = 11,
};

enum mf_wire_role { MF_WIRE_RESPONDER = 1, MF_WIRE_AUTHORIZER = 2, MF_WIRE_FILTER = 3 };

#define MF_WIRE_KEEP_CONN 1

/* Protocol status in FCGI_EndRequestBody [section 5.5]. */
enum mf_wire_protocol_status {
    MF_WIRE_REQUEST_COMPLETE = 0,
    MF_WIRE_CANT_MPX_CONN = 1,
    MF_WIRE_OVERLOADED = 2,
    MF_WIRE_UNKNOWN_ROLE = 3,
};

/* The padding that aligns a content length to 8 bytes, as nginx and libfcgi do. */
static inline uint8_t mf_wire_padding(size_t content_len)
{
    return (uint8_t)((8 - (content_len & 7)) & 7);
}

/* Writes the 8-byte record header at p [section 3.3]. */
static inline void mf_wire_header(uint8_t *p, uint8_t type, uint16_t id, uint16_t content_len,
                                  uint8_t padding_len)
{
    p[0] = MF_WIRE_VERSION;
    p[1] = type;
    p[2] = (uint8_t)(id >> 8);
    p[3] = (uint8_t)id;
    p[4] = (uint8_t)(content_len >> 8);
    p[5] = (uint8_t)content_len;
    p[6] = padding_len;
    p[7] = 0;
}

/* Rewrites only the request id of the header at p, for templates encoded once. */
static inline void mf_wire_set_id(uint8_t *p, uint16_t id)
{
    p[2] = (uint8_t)(id >> 8);
    p[3] = (uint8_t)id;
}

/* The bytes mf_wire_nv_encode needs for one name-value pair [section 3.4]. */
static inline size_t mf_wire_nv_size(size_t name_len, size_t value_len)
{
    return (name_len < 128 ? 1 : 4) + (value_len < 128 ? 1 : 4) + name_len + value_len;
}

/*
 * Encodes one pair at dst, which has room for mf_wire_nv_size() bytes; lengths must fit in
 * 31 bits. Returns the bytes written.
 */
static inline size_t mf_wire_nv_encode(uint8_t *dst, const void *name, size_t name_len,
                                       const void *value, size_t value_len)
{
    uint8_t *p = dst;
    size_t lens[2] = {name_len, value_len};

    for (int i = 0; i < 2; i++) {
        if (lens[i] < 128) {
            *p++ = (uint8_t)lens[i];
        } else {
            *p++ = (uint8_t)((lens[i] >> 24) | 0x80);
            *p++ = (uint8_t)(lens[i] >> 16);
            *p++ = (uint8_t)(lens[i] >> 8);
            *p++ = (uint8_t)lens[i];
        }
    }
    memcpy(p, name, name_len);
    memcpy(p + name_len, value, value_len);
    return (size_t)(p - dst) + name_len + value_len;
}

#endif
