/* Unit tests of src/record.c: the record header and the name-value pair codec. */
#include "record.h"
#include "unit.h"

static void header_round_trip(void)
{
    uint8_t p[8];
    mf_record_header_t h;

    mf_record_header_encode(p, MF_STDOUT, 0xbeef, 65535, 255);
    mf_record_header_decode(p, &h);
    CHECK_EQ(h.version, 1);
    CHECK_EQ(h.type, MF_STDOUT);
    CHECK_EQ(h.id, 0xbeef);
    CHECK_EQ(h.content_len, 65535);
    CHECK_EQ(h.padding_len, 255);
    CHECK_EQ(mf_record_size(&h), (size_t)8 + 65535 + 255);
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
    CHECK_EQ(mf_nv_next(buf, n, &off, &nv), MF_NV_PAIR);
    CHECK_EQ(nv.name_len, 127);
    CHECK_EQ(nv.value_len, 128);
    CHECK_EQ(off, n);
    CHECK_EQ(mf_nv_next(buf, n, &off, &nv), MF_NV_END);
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

int main(void)
{
    static const struct unit_test tests[] = {
        {"header_round_trip", header_round_trip},
        {"pair_lengths_at_the_127_boundary", pair_lengths_at_the_127_boundary},
        {"huge_lengths_are_rejected", huge_lengths_are_rejected},
        {NULL, NULL},
    };
    return unit_run(tests);
}
