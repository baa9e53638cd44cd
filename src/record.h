/*
 * The FastCGI 1.0 record codec: headers, padding, name-value pairs.
 *
 * Pure functions over byte arrays: no I/O, no libevent, no allocation. The parser
 * returns a status and never logs; the connection decides what to do with it.
 */
#ifndef MF_RECORD_H
#define MF_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define MF_FCGI_VERSION 1
#define MF_HEADER_LEN   8
/* The largest content a record can carry (16-bit length field). */
#define MF_MAX_CONTENT 65535
/* What we emit: a multiple of 8, so content + padding never exceeds 65535. */
#define MF_OUT_CONTENT_MAX 65528
/* A whole record at its largest: header, 65535 content, 255 padding. */
#define MF_MAX_RECORD (MF_HEADER_LEN + MF_MAX_CONTENT + 255)

/* Record types [FastCGI 1.0, section 8]. */
enum mf_record_type {
    MF_BEGIN_REQUEST = 1,
    MF_ABORT_REQUEST = 2,
    MF_END_REQUEST = 3,
    MF_PARAMS = 4,
    MF_STDIN = 5,
    MF_STDOUT = 6,
    MF_STDERR = 7,
    MF_DATA = 8,
    MF_GET_VALUES = 9,
    MF_GET_VALUES_RESULT = 10,
    MF_UNKNOWN_TYPE = 11,
};

/* Roles in FCGI_BeginRequestBody. */
enum mf_role { MF_RESPONDER = 1, MF_AUTHORIZER = 2, MF_FILTER = 3 };

#define MF_KEEP_CONN 1

/* Protocol status in FCGI_EndRequestBody. */
enum mf_protocol_status {
    MF_REQUEST_COMPLETE = 0,
    MF_CANT_MPX_CONN = 1,
    MF_OVERLOADED = 2,
    MF_UNKNOWN_ROLE = 3,
};

typedef struct mf_record_header {
    uint8_t version;
    uint8_t type;
    uint16_t id;
    uint16_t content_len;
    uint8_t padding_len;
} mf_record_header_t;

/* Decodes the 8 header bytes at p. The reserved byte is ignored. */
void mf_record_header_decode(const uint8_t *p, mf_record_header_t *h);

/* Writes an 8-byte header at p. */
void mf_record_header_encode(uint8_t *p, uint8_t type, uint16_t id, uint16_t content_len,
                             uint8_t padding_len);

/* The padding that aligns a content length to 8 bytes. */
static inline uint8_t mf_record_padding(size_t content_len)
{
    return (uint8_t)((8 - (content_len & 7)) & 7);
}

/* The full size of a record (header, content, padding) described by h. */
static inline size_t mf_record_size(const mf_record_header_t *h)
{
    return MF_HEADER_LEN + (size_t)h->content_len + (size_t)h->padding_len;
}

enum mf_record_status {
    MF_RECORD_NEED_MORE = 0, /* fewer bytes than a whole record */
    MF_RECORD_OK = 1,        /* a whole record is present */
    MF_RECORD_BAD_VERSION = -1,
};

/*
 * Looks at the first len bytes of a stream. On MF_RECORD_OK the header is in *h and the
 * record occupies mf_record_size(h) bytes; the content starts at buf + 8. A record with a
 * version other than 1 is MF_RECORD_BAD_VERSION as soon as its header is complete: the stream
 * cannot be trusted past it.
 */
int mf_record_parse(const uint8_t *buf, size_t len, mf_record_header_t *h);

/* Builds FCGI_EndRequestBody (8 bytes) at p. */
void mf_record_end_body(uint8_t *p, uint32_t app_status, uint8_t protocol_status);

/*
 * Name-value pairs [section 3.4]. A length is one byte (0..127) or four bytes with the top
 * bit set (a 31-bit value).
 */
typedef struct mf_nv {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
} mf_nv_t;

enum mf_nv_status {
    MF_NV_END = 0,  /* *off == len: no more pairs */
    MF_NV_PAIR = 1, /* a pair was decoded into *nv and *off moved past it */
    MF_NV_BAD = -1, /* the bytes at *off are not a whole pair; *off is unchanged */
};

/* Reads one length at buf[*off]; returns 0 when the bytes are not there. */
static inline int mf_nv_length(const uint8_t *buf, size_t len, size_t *off, size_t *out)
{
    size_t o = *off;
    if (o >= len)
        return 0;
    if (!(buf[o] & 0x80)) {
        *out = buf[o];
        *off = o + 1;
        return 1;
    }
    if (len - o < 4)
        return 0;
    *out = ((size_t)(buf[o] & 0x7f) << 24) | ((size_t)buf[o + 1] << 16) |
           ((size_t)buf[o + 2] << 8) | (size_t)buf[o + 3];
    *off = o + 4;
    return 1;
}

/*
 * Decodes the pair at buf + *off of a buffer of len bytes. Every length is checked against
 * what is left in the buffer, in size_t, before it is used, so a 31-bit length cannot
 * overflow or read past the end. Inline: every request's params go through it.
 */
static inline int mf_nv_next(const uint8_t *buf, size_t len, size_t *off, mf_nv_t *nv)
{
    size_t o = *off, nlen, vlen;

    if (o >= len)
        return MF_NV_END;
    if (!mf_nv_length(buf, len, &o, &nlen) || !mf_nv_length(buf, len, &o, &vlen))
        return MF_NV_BAD;
    /* Compare against what is left, never add the lengths: each may be near 2^31. */
    if (nlen > len - o || vlen > len - o - nlen)
        return MF_NV_BAD;
    nv->name = buf + o;
    nv->name_len = nlen;
    nv->value = buf + o + nlen;
    nv->value_len = vlen;
    *off = o + nlen + vlen;
    return MF_NV_PAIR;
}

/* The bytes mf_nv_encode needs for a pair. */
size_t mf_nv_size(size_t name_len, size_t value_len);

/*
 * Encodes one pair at dst, which must have room for mf_nv_size() bytes. Returns the bytes
 * written, or 0 when a length does not fit in 31 bits.
 */
size_t mf_nv_encode(uint8_t *dst, const void *name, size_t name_len, const void *value,
                    size_t value_len);

#endif
