/*
 * The FastCGI record codec. See record.h for the contract of each function.
 */
#include "record.h"

#include <string.h>

void mf_record_header_decode(const uint8_t *p, mf_record_header_t *h)
{
    h->version = p[0];
    h->type = p[1];
    h->id = (uint16_t)((p[2] << 8) | p[3]);
    h->content_len = (uint16_t)((p[4] << 8) | p[5]);
    h->padding_len = p[6];
}

void mf_record_header_encode(uint8_t *p, uint8_t type, uint16_t id, uint16_t content_len,
                             uint8_t padding_len)
{
    p[0] = MF_FCGI_VERSION;
    p[1] = type;
    p[2] = (uint8_t)(id >> 8);
    p[3] = (uint8_t)id;
    p[4] = (uint8_t)(content_len >> 8);
    p[5] = (uint8_t)content_len;
    p[6] = padding_len;
    p[7] = 0;
}

int mf_record_parse(const uint8_t *buf, size_t len, mf_record_header_t *h)
{
    if (len < MF_HEADER_LEN)
        return MF_RECORD_NEED_MORE;
    mf_record_header_decode(buf, h);
    if (h->version != MF_FCGI_VERSION)
        return MF_RECORD_BAD_VERSION;
    if (len < mf_record_size(h))
        return MF_RECORD_NEED_MORE;
    return MF_RECORD_OK;
}

void mf_record_end_body(uint8_t *p, uint32_t app_status, uint8_t protocol_status)
{
    p[0] = (uint8_t)(app_status >> 24);
    p[1] = (uint8_t)(app_status >> 16);
    p[2] = (uint8_t)(app_status >> 8);
    p[3] = (uint8_t)app_status;
    p[4] = protocol_status;
    p[5] = p[6] = p[7] = 0;
}

static size_t length_size(size_t n)
{
    return n < 128 ? 1 : 4;
}

size_t mf_nv_size(size_t name_len, size_t value_len)
{
    return length_size(name_len) + length_size(value_len) + name_len + value_len;
}

static uint8_t *write_length(uint8_t *p, size_t n)
{
    if (n < 128) {
        *p++ = (uint8_t)n;
        return p;
    }
    *p++ = (uint8_t)((n >> 24) | 0x80);
    *p++ = (uint8_t)(n >> 16);
    *p++ = (uint8_t)(n >> 8);
    *p++ = (uint8_t)n;
    return p;
}

size_t mf_nv_encode(uint8_t *dst, const void *name, size_t name_len, const void *value,
                    size_t value_len)
{
    uint8_t *p = dst;

    if (name_len > 0x7fffffffu || value_len > 0x7fffffffu)
        return 0;
    p = write_length(p, name_len);
    p = write_length(p, value_len);
    if (name_len)
        memcpy(p, name, name_len);
    p += name_len;
    if (value_len)
        memcpy(p, value, value_len);
    p += value_len;
    return (size_t)(p - dst);
}
