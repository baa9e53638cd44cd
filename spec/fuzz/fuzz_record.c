/*
 * libFuzzer target for the record layer itself (src/record.c), kcgi's lesson: the input is
 * read as a stream of records with mf_record_parse, and both the whole input and each
 * record's content are walked as name-value pairs with mf_nv_next. Every answer is checked
 * against what the contract in record.h promises; a broken promise aborts.
 */
#include "record.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_record: %s:%d: %s\n", __FILE__, __LINE__, #c);                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Walks buf as name-value pairs; checks bounds, progress and the round trip of each pair. */
static void walk_pairs(const uint8_t *buf, size_t len)
{
    static uint8_t enc[MF_MAX_RECORD + 16];
    size_t off = 0;
    mf_nv_t nv;
    int rc;

    for (size_t n = 0; n <= len; n++) {
        size_t before = off;
        rc = mf_nv_next(buf, len, &off, &nv);
        if (rc == MF_NV_END) {
            ASSERT(off == len);
            return;
        }
        if (rc == MF_NV_BAD) {
            ASSERT(off == before);
            return;
        }
        ASSERT(rc == MF_NV_PAIR);
        /* The pair lies inside [before, off): lengths, then the name, then the value. */
        ASSERT(off > before && off <= len);
        ASSERT(nv.name >= buf + before + 2 && nv.name <= buf + len);
        ASSERT(nv.name_len <= len && nv.value_len <= len);
        ASSERT(nv.value == nv.name + nv.name_len);
        ASSERT(nv.value + nv.value_len == buf + off);
        ASSERT(nv.name_len <= 0x7fffffff && nv.value_len <= 0x7fffffff);
        /* The header took 2 to 8 bytes. */
        ASSERT((size_t)(nv.name - (buf + before)) >= 2 && (size_t)(nv.name - (buf + before)) <= 8);
        /* Re-encoding gives the shortest form, which decodes to the same pair. */
        if (mf_nv_size(nv.name_len, nv.value_len) <= sizeof enc) {
            size_t m = mf_nv_encode(enc, nv.name, nv.name_len, nv.value, nv.value_len), o2 = 0;
            mf_nv_t again;
            ASSERT(m == mf_nv_size(nv.name_len, nv.value_len));
            ASSERT(m <= off - before);
            ASSERT(mf_nv_next(enc, m, &o2, &again) == MF_NV_PAIR && o2 == m);
            ASSERT(again.name_len == nv.name_len && again.value_len == nv.value_len);
            ASSERT(memcmp(again.name, nv.name, nv.name_len) == 0);
            ASSERT(memcmp(again.value, nv.value, nv.value_len) == 0);
        }
    }
    ASSERT(!"mf_nv_next made no progress");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    walk_pairs(data, size);
    while (off < size) {
        mf_record_header_t h;
        size_t left = size - off;
        int rc = mf_record_parse(data + off, left, &h);

        /* Every shorter prefix of the same bytes is NEED_MORE or the same verdict. */
        if (left >= 8) {
            mf_record_header_t h2;
            int rc8 = mf_record_parse(data + off, 8, &h2);
            ASSERT(rc8 == (data[off] == 1
                               ? (h2.content_len + h2.padding_len == 0 ? MF_RECORD_OK
                                                                       : MF_RECORD_NEED_MORE)
                               : MF_RECORD_BAD_VERSION));
        }
        ASSERT(mf_record_parse(data + off, left < 8 ? left : 7, &h) == MF_RECORD_NEED_MORE);
        rc = mf_record_parse(data + off, left, &h);
        if (rc == MF_RECORD_NEED_MORE) {
            ASSERT(left < 8 || left < mf_record_size(&h));
            break;
        }
        if (rc == MF_RECORD_BAD_VERSION) {
            ASSERT(left >= 8 && data[off] != 1 && h.version == data[off]);
            break;
        }
        ASSERT(rc == MF_RECORD_OK);
        ASSERT(h.version == 1 && h.type == data[off + 1]);
        ASSERT(h.id == (data[off + 2] << 8 | data[off + 3]));
        ASSERT(h.content_len == (data[off + 4] << 8 | data[off + 5]));
        ASSERT(h.padding_len == data[off + 6]);
        ASSERT(mf_record_size(&h) == 8u + h.content_len + h.padding_len);
        ASSERT(mf_record_size(&h) <= left && mf_record_size(&h) <= MF_MAX_RECORD);
        /* One byte less is not a whole record. */
        {
            mf_record_header_t h4;
            ASSERT(mf_record_parse(data + off, mf_record_size(&h) - 1, &h4) == MF_RECORD_NEED_MORE);
        }
        walk_pairs(data + off + 8, h.content_len);
        {
            uint8_t re[8];
            mf_record_header_t h3;
            mf_record_header_encode(re, h.type, h.id, h.content_len, h.padding_len);
            ASSERT(memcmp(re, data + off, 7) == 0 && re[7] == 0);
            mf_record_header_decode(re, &h3);
            ASSERT(h3.type == h.type && h3.id == h.id && h3.content_len == h.content_len &&
                   h3.padding_len == h.padding_len);
        }
        ASSERT((h.content_len + mf_record_padding(h.content_len)) % 8 == 0);
        off += mf_record_size(&h);
    }
    return 0;
}
