/*
 * Unit tests of src/record.c: the record header, mf_record_parse at every length, padding,
 * the END_REQUEST body and the name-value pair codec [FastCGI 1.0, sections 3.3, 3.4, 5.5],
 * with the length overflows of CVE-2025-23016 and golang/go#81293.
 */
#include "record.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

static void header_round_trip(void)
{
    uint8_t p[8];
    mf_record_header_t h;

    mf_record_header_encode(p, MF_STDOUT, 0xbeef, 65535, 255);
    CHECK_EQ(p[0], 1);
    CHECK_EQ(p[1], MF_STDOUT);
    CHECK_EQ(p[2], 0xbe);
    CHECK_EQ(p[3], 0xef);
    CHECK_EQ(p[4], 0xff);
    CHECK_EQ(p[5], 0xff);
    CHECK_EQ(p[6], 255);
    CHECK_EQ(p[7], 0);
    mf_record_header_decode(p, &h);
    CHECK_EQ(h.version, 1);
    CHECK_EQ(h.type, MF_STDOUT);
    CHECK_EQ(h.id, 0xbeef);
    CHECK_EQ(h.content_len, 65535);
    CHECK_EQ(h.padding_len, 255);
    CHECK_EQ(mf_record_size(&h), (size_t)8 + 65535 + 255);
}

static void header_fields_are_big_endian(void)
{
    static const uint8_t p[8] = {1, 4, 0x01, 0x02, 0x03, 0x04, 0x05, 0xee};
    mf_record_header_t h;

    mf_record_header_decode(p, &h);
    CHECK_EQ(h.version, 1);
    CHECK_EQ(h.type, MF_PARAMS);
    CHECK_EQ(h.id, 0x0102);
    CHECK_EQ(h.content_len, 0x0304);
    CHECK_EQ(h.padding_len, 5);
    CHECK_EQ(mf_record_size(&h), (size_t)8 + 0x0304 + 5);
}

/* The reserved byte is ignored whatever it holds; an encoded header always has it zero. */
static void reserved_byte_is_ignored(void)
{
    uint8_t a[8], b[8];
    mf_record_header_t ha, hb;

    mf_record_header_encode(a, MF_STDIN, 1, 10, 6);
    memcpy(b, a, 8);
    b[7] = 0xff;
    mf_record_header_decode(a, &ha);
    mf_record_header_decode(b, &hb);
    CHECK_EQ(ha.version, hb.version);
    CHECK_EQ(ha.type, hb.type);
    CHECK_EQ(ha.id, hb.id);
    CHECK_EQ(ha.content_len, hb.content_len);
    CHECK_EQ(ha.padding_len, hb.padding_len);
    CHECK_EQ(mf_record_parse(b, 24, &hb), MF_RECORD_OK);
}

/*
 * mf_record_parse at every length from 0 to the whole record, for content 0, 1, 7, 8, 65528
 * and 65535 and every padding 0..255: NEED_MORE below the whole size, OK from it on, and the
 * header decoded whenever it is complete. 65535 + 255 is the largest record there is.
 */
static void parse_at_every_length(void)
{
    static const size_t contents[] = {0, 1, 7, 8, 65528, 65535};
    size_t cap = MF_MAX_RECORD + 16;
    uint8_t *buf = malloc(cap);
    unsigned long wrong = 0, records = 0;

    CHECK(buf != NULL);
    if (!buf)
        return;
    memset(buf, 0xa5, cap);
    for (size_t ci = 0; ci < sizeof contents / sizeof contents[0]; ci++) {
        for (unsigned pad = 0; pad <= 255; pad++) {
            size_t clen = contents[ci], size = 8 + clen + pad;
            mf_record_header_t h;

            mf_record_header_encode(buf, MF_PARAMS, 0x0101, (uint16_t)clen, (uint8_t)pad);
            records++;
            for (size_t len = 0; len <= size; len++) {
                int rc;
                memset(&h, 0, sizeof h);
                rc = mf_record_parse(buf, len, &h);
                if (len < size) {
                    wrong += rc != MF_RECORD_NEED_MORE;
                } else {
                    wrong += rc != MF_RECORD_OK;
                    wrong += mf_record_size(&h) != size;
                    wrong += h.type != MF_PARAMS || h.id != 0x0101;
                    wrong += h.content_len != clen || h.padding_len != pad;
                }
                if (len >= 8)
                    wrong += h.content_len != clen || h.padding_len != pad;
            }
            /* Bytes past the record do not change the answer. */
            wrong += mf_record_parse(buf, cap, &h) != MF_RECORD_OK || mf_record_size(&h) != size;
        }
    }
    CHECK_EQ(records, 6ul * 256);
    CHECK_EQ(wrong, 0ul);
    free(buf);
}

static void largest_record_is_accepted(void)
{
    /* nginx: a params record of 65535 bytes padded with 255 (content + padding > 65535). */
    size_t size = MF_MAX_RECORD;
    uint8_t *buf = calloc(1, size);
    mf_record_header_t h;

    CHECK_EQ(MF_MAX_RECORD, 8 + 65535 + 255);
    CHECK(buf != NULL);
    if (!buf)
        return;
    mf_record_header_encode(buf, MF_PARAMS, 1, 65535, 255);
    CHECK_EQ(mf_record_parse(buf, size - 1, &h), MF_RECORD_NEED_MORE);
    CHECK_EQ(mf_record_parse(buf, size, &h), MF_RECORD_OK);
    CHECK_EQ(mf_record_size(&h), size);
    free(buf);
}

static void bad_version(void)
{
    static const uint8_t versions[] = {0, 2, 3, 0x7f, 0x80, 0xff};
    uint8_t buf[64];
    mf_record_header_t h;

    for (size_t i = 0; i < sizeof versions; i++) {
        memset(buf, 0, sizeof buf);
        mf_record_header_encode(buf, MF_BEGIN_REQUEST, 1, 8, 0);
        buf[0] = versions[i];
        /* An incomplete header is never judged. */
        for (size_t len = 0; len < 8; len++)
            CHECK_EQ(mf_record_parse(buf, len, &h), MF_RECORD_NEED_MORE);
        /* A bad version is reported as soon as the header is complete, before its content. */
        for (size_t len = 8; len <= 16; len++)
            CHECK_EQ(mf_record_parse(buf, len, &h), MF_RECORD_BAD_VERSION);
        CHECK_EQ(h.version, versions[i]);
    }
    /* Version 1 with the same bytes is fine. */
    buf[0] = 1;
    CHECK_EQ(mf_record_parse(buf, 16, &h), MF_RECORD_OK);
}

static void padding_aligns_to_8(void)
{
    CHECK_EQ(mf_record_padding(0), 0);
    CHECK_EQ(mf_record_padding(1), 7);
    CHECK_EQ(mf_record_padding(7), 1);
    CHECK_EQ(mf_record_padding(8), 0);
    CHECK_EQ(mf_record_padding(9), 7);
    CHECK_EQ(mf_record_padding(65528), 0);
    CHECK_EQ(mf_record_padding(65535), 1);
    for (size_t n = 0; n <= 65535; n++) {
        size_t p = mf_record_padding(n);
        if (p > 7 || (n + p) % 8 != 0) {
            CHECK(!"padding does not align");
            break;
        }
    }
    /* What we emit: content up to MF_OUT_CONTENT_MAX plus padding never exceeds 65535. */
    CHECK_EQ(MF_OUT_CONTENT_MAX % 8, 0);
    for (size_t n = 0; n <= MF_OUT_CONTENT_MAX; n++)
        if (n + mf_record_padding(n) > 65535) {
            CHECK(!"emitted record over 65535");
            break;
        }
}

static void end_body(void)
{
    uint8_t p[8];

    memset(p, 0xee, sizeof p);
    mf_record_end_body(p, 0x01020304u, MF_OVERLOADED);
    CHECK_EQ(p[0], 1);
    CHECK_EQ(p[1], 2);
    CHECK_EQ(p[2], 3);
    CHECK_EQ(p[3], 4);
    CHECK_EQ(p[4], MF_OVERLOADED);
    CHECK_EQ(p[5], 0);
    CHECK_EQ(p[6], 0);
    CHECK_EQ(p[7], 0);
    mf_record_end_body(p, 0xffffffffu, MF_UNKNOWN_ROLE);
    CHECK_EQ(p[0], 0xff);
    CHECK_EQ(p[3], 0xff);
    CHECK_EQ(p[4], 3);
    mf_record_end_body(p, 0, MF_REQUEST_COMPLETE);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(p[i], 0);
}

static void pair_lengths_at_the_127_boundary(void)
{
    uint8_t buf[600];
    char name[200], value[300];
    size_t off = 0, n;
    mf_nv_t nv;

    memset(name, 'n', sizeof name);
    memset(value, 'v', sizeof value);
    n = mf_nv_encode(buf, name, 127, value, 128);
    CHECK_EQ(n, mf_nv_size(127, 128));
    CHECK_EQ(n, (size_t)1 + 4 + 127 + 128);
    CHECK_EQ(buf[0], 127);
    CHECK_EQ(buf[1], 0x80);
    CHECK_EQ(buf[2], 0);
    CHECK_EQ(buf[3], 0);
    CHECK_EQ(buf[4], 128);
    CHECK_EQ(mf_nv_next(buf, n, &off, &nv), MF_NV_PAIR);
    CHECK_EQ(nv.name_len, 127);
    CHECK_EQ(nv.value_len, 128);
    CHECK(nv.name == buf + 5);
    CHECK(nv.value == buf + 5 + 127);
    CHECK_EQ(off, n);
    CHECK_EQ(mf_nv_next(buf, n, &off, &nv), MF_NV_END);
}

/* Round trip of lengths 0, 1, 127, 128, 65535 and 1 MiB, as the name and as the value. */
static void pair_round_trip_lengths(void)
{
    static const size_t lens[] = {0, 1, 127, 128, 65535, 1024 * 1024};
    size_t big = 1024 * 1024;
    uint8_t *src = malloc(big + 1), *dst = malloc(2 * big + 16);

    CHECK(src && dst);
    if (!src || !dst)
        goto end;
    for (size_t i = 0; i <= big; i++)
        src[i] = (uint8_t)(i * 7 + 3);
    for (size_t a = 0; a < 6; a++) {
        for (size_t b = 0; b < 6; b++) {
            size_t nl = lens[a], vl = lens[b], off = 0, n;
            size_t hdr = (nl < 128 ? 1 : 4) + (vl < 128 ? 1 : 4);
            mf_nv_t nv;

            n = mf_nv_encode(dst, src, nl, src + 1, vl);
            CHECK_EQ(n, hdr + nl + vl);
            CHECK_EQ(n, mf_nv_size(nl, vl));
            CHECK_EQ(mf_nv_next(dst, n, &off, &nv), MF_NV_PAIR);
            CHECK_EQ(off, n);
            CHECK_EQ(nv.name_len, nl);
            CHECK_EQ(nv.value_len, vl);
            CHECK(nv.name == dst + hdr);
            CHECK(nl == 0 || memcmp(nv.name, src, nl) == 0);
            CHECK(vl == 0 || memcmp(nv.value, src + 1, vl) == 0);
            CHECK_EQ(mf_nv_next(dst, n, &off, &nv), MF_NV_END);
        }
    }
    /* The exact 4-byte encodings. */
    CHECK_EQ(mf_nv_encode(dst, NULL, 0, src, 65535), (size_t)1 + 4 + 65535);
    CHECK(dst[0] == 0 && dst[1] == 0x80 && dst[2] == 0 && dst[3] == 0xff && dst[4] == 0xff);
    CHECK_EQ(mf_nv_encode(dst, NULL, 0, src, big), (size_t)1 + 4 + big);
    CHECK(dst[0] == 0 && dst[1] == 0x80 && dst[2] == 0x10 && dst[3] == 0 && dst[4] == 0);
end:
    free(src);
    free(dst);
}

/*
 * A length of 2^31 - 1, the largest there is: its size is computed without overflow, and a
 * buffer that really is that long decodes it. The buffer is an untouched mapping, so no page
 * but the first is ever faulted in.
 */
static void pair_length_2_31_minus_1(void)
{
    size_t max = 0x7fffffff, len = 1 + 4 + max;
    uint8_t *map;
    size_t off = 0;
    mf_nv_t nv;

    CHECK_EQ(mf_nv_size(0, max), len);
    CHECK_EQ(mf_nv_size(max, max), (size_t)8 + 2 * max);
    map =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    map[0] = 0;
    map[1] = 0xff, map[2] = 0xff, map[3] = 0xff, map[4] = 0xff;
    CHECK_EQ(mf_nv_next(map, len, &off, &nv), MF_NV_PAIR);
    CHECK_EQ(nv.name_len, 0);
    CHECK_EQ(nv.value_len, max);
    CHECK(nv.value == map + 5);
    CHECK_EQ(off, len);
    /* One byte short is a truncated pair. */
    off = 0;
    CHECK_EQ(mf_nv_next(map, len - 1, &off, &nv), MF_NV_BAD);
    CHECK_EQ(off, 0);
    munmap(map, len);
}

static void small_length_in_4_bytes_is_legal(void)
{
    /* Name length 3 and value length 1, both in the 4-byte form [section 3.4]. */
    static const uint8_t buf[] = {0x80, 0, 0, 3, 0x80, 0, 0, 1, 'a', 'b', 'c', 'd'};
    static const uint8_t zero[] = {0x80, 0, 0, 0, 0x80, 0, 0, 0};
    size_t off = 0;
    mf_nv_t nv;

    CHECK_EQ(mf_nv_next(buf, sizeof buf, &off, &nv), MF_NV_PAIR);
    CHECK_EQ(nv.name_len, 3);
    CHECK_EQ(nv.value_len, 1);
    CHECK(memcmp(nv.name, "abc", 3) == 0);
    CHECK(nv.value[0] == 'd');
    CHECK_EQ(off, sizeof buf);
    off = 0;
    CHECK_EQ(mf_nv_next(zero, sizeof zero, &off, &nv), MF_NV_PAIR);
    CHECK_EQ(nv.name_len, 0);
    CHECK_EQ(nv.value_len, 0);
    CHECK_EQ(off, sizeof zero);
}

/* Every proper prefix of a pair is MF_NV_BAD and leaves *off alone; the whole pair decodes. */
static void truncated_pairs_at_every_byte(void)
{
    uint8_t buf[1024];
    char name[200], value[150];
    size_t n1, n2;

    memset(name, 'N', sizeof name);
    memset(value, 'V', sizeof value);
    n1 = mf_nv_encode(buf, name, 130, value, 5);      /* 4-byte name length */
    n2 = mf_nv_encode(buf + n1, name, 3, value, 150); /* 4-byte value length */
    CHECK_EQ(n1, (size_t)4 + 1 + 130 + 5);
    CHECK_EQ(n2, (size_t)1 + 4 + 3 + 150);
    for (size_t cut = 1; cut < n1 + n2; cut++) {
        size_t off = 0;
        mf_nv_t nv;
        int rc = mf_nv_next(buf, cut, &off, &nv);
        if (cut < n1) {
            CHECK_EQ(rc, MF_NV_BAD);
            CHECK_EQ(off, 0);
            continue;
        }
        CHECK_EQ(rc, MF_NV_PAIR);
        CHECK_EQ(off, n1);
        CHECK_EQ(nv.name_len, 130);
        rc = mf_nv_next(buf, cut, &off, &nv);
        if (cut == n1) {
            CHECK_EQ(rc, MF_NV_END);
        } else {
            CHECK_EQ(rc, MF_NV_BAD);
            CHECK_EQ(off, n1);
        }
    }
    {
        size_t off = 0;
        mf_nv_t nv;
        CHECK_EQ(mf_nv_next(buf, n1 + n2, &off, &nv), MF_NV_PAIR);
        CHECK_EQ(mf_nv_next(buf, n1 + n2, &off, &nv), MF_NV_PAIR);
        CHECK_EQ(nv.value_len, 150);
        CHECK_EQ(off, n1 + n2);
        CHECK_EQ(mf_nv_next(buf, n1 + n2, &off, &nv), MF_NV_END);
    }
}

static void huge_lengths_are_rejected(void)
{
    /* Name length 2^31 - 1 with 5 bytes of data: must not overflow or read past the end. */
    uint8_t buf[] = {0xff, 0xff, 0xff, 0xff, 0x01, 'a', 'b', 'c', 'd', 'e'};
    size_t off = 0;
    mf_nv_t nv;

    CHECK_EQ(mf_nv_next(buf, sizeof buf, &off, &nv), MF_NV_BAD);
    CHECK_EQ(off, 0);
}

/*
 * CVE-2025-23016: lengths whose 32-bit sum wraps to something small. A decoder that adds them
 * in 32 bits sees a pair that fits in a 16-byte buffer; ours compares each with what is left.
 */
static void lengths_that_wrap_a_32_bit_sum(void)
{
    static const uint8_t cases[][8] = {
        /* 0x7fffffff + 0x7fffffff + 8 = 2^32 + 6 */
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
        /* 0x7ffffffc + 0x7ffffffc + 8 = 2^32 */
        {0xff, 0xff, 0xff, 0xfc, 0xff, 0xff, 0xff, 0xfc},
        /* 0x80000000 - 1 + 1 + 8: the name alone is just below 2^31 */
        {0xff, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x01},
        /* small name, value 2^31 - 8 */
        {0x80, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xf8},
    };
    uint8_t buf[64];

    memset(buf, 'x', sizeof buf);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf, cases[i], 8);
        for (size_t len = 0; len <= sizeof buf; len++) {
            size_t off = 0;
            mf_nv_t nv;
            memset(&nv, 0, sizeof nv);
            CHECK_EQ(mf_nv_next(buf, len, &off, &nv), len == 0 ? MF_NV_END : MF_NV_BAD);
            CHECK_EQ(off, 0);
            CHECK(nv.name == NULL);
        }
    }
    /* A pair after a good one: *off stays at the good one's end. */
    {
        uint8_t b2[32] = {1, 1, 'a', 'b', 0xff, 0xff, 0xff, 0xff, 0x7f};
        size_t off = 0;
        mf_nv_t nv;
        CHECK_EQ(mf_nv_next(b2, sizeof b2, &off, &nv), MF_NV_PAIR);
        CHECK_EQ(off, 4);
        CHECK_EQ(mf_nv_next(b2, sizeof b2, &off, &nv), MF_NV_BAD);
        CHECK_EQ(off, 4);
    }
}

static void decoding_starts_at_off(void)
{
    uint8_t buf[64];
    size_t n, off;
    mf_nv_t nv;

    n = mf_nv_encode(buf, "A", 1, "1", 1);
    n += mf_nv_encode(buf + n, "BB", 2, "22", 2);
    off = 4;
    CHECK_EQ(mf_nv_next(buf, n, &off, &nv), MF_NV_PAIR);
    CHECK(nv.name_len == 2 && memcmp(nv.name, "BB", 2) == 0);
    CHECK(nv.value_len == 2 && memcmp(nv.value, "22", 2) == 0);
    CHECK_EQ(off, n);
    /* *off past the end is the end, never a read. */
    off = n + 100;
    CHECK_EQ(mf_nv_next(buf, n, &off, &nv), MF_NV_END);
    off = 0;
    CHECK_EQ(mf_nv_next(NULL, 0, &off, &nv), MF_NV_END);
}

static void encode_rejects_over_31_bits(void)
{
    uint8_t buf[16];

    memset(buf, 0x5a, sizeof buf);
    /* The lengths are checked before anything is copied: the pointers are never read. */
    CHECK_EQ(mf_nv_encode(buf, NULL, 0x80000000u, NULL, 0), 0);
    CHECK_EQ(mf_nv_encode(buf, NULL, 0, NULL, 0x80000000u), 0);
    CHECK_EQ(mf_nv_encode(buf, NULL, SIZE_MAX, NULL, SIZE_MAX), 0);
    CHECK_EQ(mf_nv_encode(buf, NULL, (size_t)1 << 32, NULL, 0), 0);
    CHECK_EQ(buf[0], 0x5a);
    /* The empty pair is two bytes. */
    CHECK_EQ(mf_nv_encode(buf, NULL, 0, NULL, 0), 2);
    CHECK(buf[0] == 0 && buf[1] == 0);
    CHECK_EQ(mf_nv_size(0, 0), 2);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"header_round_trip", header_round_trip},
        {"header_fields_are_big_endian", header_fields_are_big_endian},
        {"reserved_byte_is_ignored", reserved_byte_is_ignored},
        {"parse_at_every_length", parse_at_every_length},
        {"largest_record_is_accepted", largest_record_is_accepted},
        {"bad_version", bad_version},
        {"padding_aligns_to_8", padding_aligns_to_8},
        {"end_body", end_body},
        {"pair_lengths_at_the_127_boundary", pair_lengths_at_the_127_boundary},
        {"pair_round_trip_lengths", pair_round_trip_lengths},
        {"pair_length_2_31_minus_1", pair_length_2_31_minus_1},
        {"small_length_in_4_bytes_is_legal", small_length_in_4_bytes_is_legal},
        {"truncated_pairs_at_every_byte", truncated_pairs_at_every_byte},
        {"huge_lengths_are_rejected", huge_lengths_are_rejected},
        {"lengths_that_wrap_a_32_bit_sum", lengths_that_wrap_a_32_bit_sum},
        {"decoding_starts_at_off", decoding_starts_at_off},
        {"encode_rejects_over_31_bits", encode_rejects_over_31_bits},
        {NULL, NULL},
    };
    return unit_run(tests);
}
