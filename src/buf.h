/*
 * A growable byte buffer for data that is built once and read as one piece (params, the
 * header block, output not yet framed). Streams that are consumed piecemeal use evbuffers.
 */
#ifndef MF_BUF_H
#define MF_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct mf_buf {
    char *p;
    size_t len;
    size_t cap;
} mf_buf_t;

/* Makes room for n more bytes; returns 0, or -1 when out of memory (the buffer is unchanged). */
static inline int mf_buf_reserve(mf_buf_t *b, size_t n)
{
    size_t cap;
    char *p;

    if (n <= b->cap - b->len)
        return 0;
    if (n > SIZE_MAX / 2 - b->len)
        return -1;
    cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int mf_buf_append(mf_buf_t *b, const void *data, size_t n)
{
    if (mf_buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

/* Empties the buffer; keeps its memory unless it grew past keep bytes. */
static inline void mf_buf_reset(mf_buf_t *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static inline void mf_buf_free(mf_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#endif
