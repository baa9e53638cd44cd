/*
 * Shared dictionaries (shdict.h): the layout inside one mapping, the undo log that makes a
 * dead owner's half-done operation harmless, and the operations of OpenResty's
 * ngx.shared.DICT (lua-nginx-module's ngx_http_lua_shdict.c is the reference for which
 * operation evicts, touches or refuses what).
 *
 * Layout, in units of 16 bytes from the start of the mapping (offset 0 is the header, so 0
 * also means "none"):
 *   header | hash buckets (uint32 offsets of entries) | heap of blocks up to the end
 * Every block starts with two uint32: its size in units with the USED and NODE bits, and the
 * size of the block before it (0 for the first), so neighbours merge when freed. A free block
 * holds the links of its free list next; free lists are by exact size up to NSMALL units,
 * one list for larger blocks. An entry block holds its bucket-chain and LRU links, expiry,
 * flags, the key and the value; a list value is a chain of node blocks.
 */
#include "shdict.h"
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define UNIT    16
#define MAGIC   0x31746364686d666dULL
#define NSMALL  64
#define LOG_MAX 1024
/* An operation commits at its next consistent point once its log is this long. */
#define LOG_CHECKPOINT (LOG_MAX / 2)
#define USED           0x80000000u
#define NODE           0x40000000u
#define SIZE_MASK      0x3fffffffu
/* As OpenResty: a store that finds no room evicts the least recently used item and retries,
 * at most this many times. */
#define EVICT_ROUNDS 30
#define MAX_SIZE     ((uint64_t)SIZE_MASK * UNIT)

/* Entry block fields, in bytes from the block's start. */
#define E_HNEXT   8
#define E_LPREV   12 /* toward the most recently used */
#define E_LNEXT   16 /* toward the least recently used */
#define E_FLAGS   20
#define E_EXPIRES 24 /* ms of CLOCK_MONOTONIC; 0: never */
#define E_VLEN    32 /* value bytes; a list's node count */
#define E_META    36 /* key length | type << 16 */
#define E_DATA    40 /* key, then value (a list: head and tail node offsets) */
/* List node block fields. */
#define N_NEXT 8
#define N_PREV 12
#define N_LEN  16
#define N_TYPE 20
#define N_DATA 24
/* Free block fields. */
#define F_NEXT 8
#define F_PREV 12

typedef struct undo {
    uint64_t where; /* byte offset << 1 | 1 for 8 bytes */
    uint64_t old;
} undo_t;

struct mf_shdict {
    uint64_t magic;
    uint64_t size;
    char name[MF_SHDICT_NAME_MAX + 8];
    pthread_mutex_t lock;
    uint64_t seed;
    uint64_t free_units;
    uint64_t nkeys;
    uint64_t nnodes;
    uint64_t recoveries; /* dead owners' operations undone */
    uint64_t free_map;   /* bit c: free_head[c] is not empty */
    uint32_t nbuckets;   /* a power of two */
    uint32_t buckets;
    uint32_t heap_start, heap_end;
    uint32_t lru_head, lru_tail;
    uint32_t free_head[NSMALL];
    volatile uint32_t log_n;
    undo_t log[LOG_MAX];
};

/* For spec/unit/test_shdict.c: the process dies at this logged write (0: never). */
uint32_t mf__shdict_crash_after;

static mf_shdict_t *zones[MF_SHDICT_MAX];
static int nzones;
/* Whether this process freed a block in the operation's steps not committed yet. */
static int freed_since_commit;

#define barrier() __atomic_signal_fence(__ATOMIC_SEQ_CST)

static inline char *at(mf_shdict_t *d, uint32_t u)
{
    return (char *)d + (size_t)u * UNIT;
}

static inline uint32_t r32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t r64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Records the bytes at p before they change. The log entry is complete before the count
 * says so, and the count before the store: a process killed anywhere in between leaves a
 * log that undoes exactly what it wrote. */
static void remember(mf_shdict_t *d, void *p, int wide)
{
    uint32_t n = d->log_n;
    undo_t *u;

    if (n >= LOG_MAX)
        abort(); /* a step larger than the log is a bug; the next owner undoes it */
    if (mf__shdict_crash_after && --mf__shdict_crash_after == 0)
        _exit(99);
    u = &d->log[n];
    u->where = ((uint64_t)((char *)p - (char *)d) << 1) | (uint64_t)wide;
    u->old = 0;
    memcpy(&u->old, p, wide ? 8 : 4);
    barrier();
    d->log_n = n + 1;
    barrier();
}

static void w32(mf_shdict_t *d, void *p, uint32_t v)
{
    remember(d, p, 0);
    memcpy(p, &v, 4);
}

static void w64(mf_shdict_t *d, void *p, uint64_t v)
{
    remember(d, p, 1);
    memcpy(p, &v, 8);
}

/* Restores what the log recorded, newest first; safe to run again if interrupted. */
static void undo(mf_shdict_t *d)
{
    for (uint32_t i = d->log_n; i > 0; i--) {
        undo_t *u = &d->log[i - 1];
        memcpy((char *)d + (u->where >> 1), &u->old, (u->where & 1) ? 8 : 4);
    }
    barrier();
    d->log_n = 0;
    barrier();
    freed_since_commit = 0;
}

static void commit(mf_shdict_t *d)
{
    barrier();
    d->log_n = 0;
    barrier();
    freed_since_commit = 0;
}

/* At a point where the structure is consistent: commit a long operation's steps so far. */
static void checkpoint(mf_shdict_t *d)
{
    if (d->log_n >= LOG_CHECKPOINT)
        commit(d);
}

static int lock(mf_shdict_t *d)
{
    int rc = pthread_mutex_lock(&d->lock);

    if (rc == EOWNERDEAD) {
        /* Its owner died holding it: take back what it had not finished. */
        undo(d);
        d->recoveries++;
        pthread_mutex_consistent(&d->lock);
        return 0;
    }
    return rc == 0 ? 0 : -1;
}

static void unlock(mf_shdict_t *d)
{
    commit(d);
    pthread_mutex_unlock(&d->lock);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t hash_key(uint64_t seed, const char *p, size_t n)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL), k;

    while (n >= 8) {
        memcpy(&k, p, 8);
        h = (h ^ (k * 0xbf58476d1ce4e5b9ULL)) * 0x94d049bb133111ebULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    k = 0;
    memcpy(&k, p, n);
    h = (h ^ (k * 0xbf58476d1ce4e5b9ULL)) * 0x94d049bb133111ebULL;
    h ^= h >> 32;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* ---- blocks ---- */

static inline uint32_t bsize(mf_shdict_t *d, uint32_t u)
{
    return r32(at(d, u)) & SIZE_MASK;
}

static inline int bused(mf_shdict_t *d, uint32_t u)
{
    return (r32(at(d, u)) & USED) != 0;
}

static inline int class_of(uint32_t units)
{
    return units < NSMALL ? (int)units : 0;
}

static void free_insert(mf_shdict_t *d, uint32_t u)
{
    int c = class_of(bsize(d, u));
    uint32_t head = d->free_head[c];

    w32(d, at(d, u) + F_NEXT, head);
    w32(d, at(d, u) + F_PREV, 0);
    if (head)
        w32(d, at(d, head) + F_PREV, u);
    else
        w64(d, &d->free_map, d->free_map | (1ULL << c));
    w32(d, &d->free_head[c], u);
}

static void free_remove(mf_shdict_t *d, uint32_t u)
{
    int c = class_of(bsize(d, u));
    uint32_t next = r32(at(d, u) + F_NEXT), prev = r32(at(d, u) + F_PREV);

    if (prev)
        w32(d, at(d, prev) + F_NEXT, next);
    else
        w32(d, &d->free_head[c], next);
    if (next)
        w32(d, at(d, next) + F_PREV, prev);
    if (!d->free_head[c])
        w64(d, &d->free_map, d->free_map & ~(1ULL << c));
}

/* A block of n units marked USED | kind, or 0. */
static uint32_t heap_alloc(mf_shdict_t *d, uint32_t n, uint32_t kind)
{
    uint32_t u = 0, s;

    if (n < NSMALL) {
        uint64_t m = d->free_map & (~0ULL << n);
        if (m)
            u = d->free_head[__builtin_ctzll(m)];
    }
    if (!u)
        for (uint32_t c = d->free_head[0]; c; c = r32(at(d, c) + F_NEXT))
            if (bsize(d, c) >= n) {
                u = c;
                break;
            }
    if (!u)
        return 0;
    s = bsize(d, u);
    free_remove(d, u);
    w64(d, &d->free_units, d->free_units - n);
    if (s > n) {
        uint32_t r = u + n;
        w32(d, at(d, r), s - n);
        w32(d, at(d, r) + 4, n);
        if (r + (s - n) < d->heap_end)
            w32(d, at(d, r + (s - n)) + 4, s - n);
        free_insert(d, r);
    }
    w32(d, at(d, u), n | USED | kind);
    return u;
}

static void heap_free(mf_shdict_t *d, uint32_t u)
{
    uint32_t s = bsize(d, u), next = u + s, prevsz = r32(at(d, u) + 4);

    freed_since_commit = 1;
    w64(d, &d->free_units, d->free_units + s);
    if (next < d->heap_end && !bused(d, next)) {
        s += bsize(d, next);
        free_remove(d, next);
    }
    if (prevsz && !bused(d, u - prevsz)) {
        uint32_t p = u - prevsz;
        s += bsize(d, p);
        free_remove(d, p);
        u = p;
    }
    w32(d, at(d, u), s);
    if (u + s < d->heap_end)
        w32(d, at(d, u + s) + 4, s);
    free_insert(d, u);
}

static uint64_t units_for(uint64_t bytes)
{
    return (bytes + UNIT - 1) / UNIT;
}

/* ---- entries ---- */

static inline uint32_t e_klen(mf_shdict_t *d, uint32_t e)
{
    return r32(at(d, e) + E_META) & 0xffff;
}

static inline int e_type(mf_shdict_t *d, uint32_t e)
{
    return (int)((r32(at(d, e) + E_META) >> 16) & 0xff);
}

static inline char *e_value(mf_shdict_t *d, uint32_t e)
{
    return at(d, e) + E_DATA + e_klen(d, e);
}

static inline int expired(mf_shdict_t *d, uint32_t e, uint64_t now)
{
    uint64_t exp = r64(at(d, e) + E_EXPIRES);
    return exp != 0 && exp <= now;
}

static char *bucket_of(mf_shdict_t *d, uint64_t h)
{
    return at(d, d->buckets) + 4 * (size_t)(h & (d->nbuckets - 1));
}

static uint32_t find(mf_shdict_t *d, const char *key, size_t klen, uint64_t h)
{
    for (uint32_t e = r32(bucket_of(d, h)); e; e = r32(at(d, e) + E_HNEXT))
        if (e_klen(d, e) == klen && memcmp(at(d, e) + E_DATA, key, klen) == 0)
            return e;
    return 0;
}

static void lru_unlink(mf_shdict_t *d, uint32_t e)
{
    uint32_t prev = r32(at(d, e) + E_LPREV), next = r32(at(d, e) + E_LNEXT);

    if (prev)
        w32(d, at(d, prev) + E_LNEXT, next);
    else
        w32(d, &d->lru_head, next);
    if (next)
        w32(d, at(d, next) + E_LPREV, prev);
    else
        w32(d, &d->lru_tail, prev);
}

static void lru_push(mf_shdict_t *d, uint32_t e)
{
    uint32_t head = d->lru_head;

    w32(d, at(d, e) + E_LPREV, 0);
    w32(d, at(d, e) + E_LNEXT, head);
    if (head)
        w32(d, at(d, head) + E_LPREV, e);
    else
        w32(d, &d->lru_tail, e);
    w32(d, &d->lru_head, e);
}

static void touch(mf_shdict_t *d, uint32_t e)
{
    if (d->lru_head != e) {
        lru_unlink(d, e);
        lru_push(d, e);
    }
}

/* Fills a fresh entry block (its first words were a free block's links: logged too). */
static void e_init(mf_shdict_t *d, uint32_t e, const char *key, size_t klen, int type,
                   uint32_t vlen, uint32_t flags, uint64_t expires)
{
    w32(d, at(d, e) + E_FLAGS, flags);
    w64(d, at(d, e) + E_EXPIRES, expires);
    w32(d, at(d, e) + E_VLEN, vlen);
    w32(d, at(d, e) + E_META, (uint32_t)klen | (uint32_t)type << 16);
    memcpy(at(d, e) + E_DATA, key, klen);
}

static void link_entry(mf_shdict_t *d, uint32_t e, uint64_t h)
{
    char *b = bucket_of(d, h);

    w32(d, at(d, e) + E_HNEXT, r32(b));
    w32(d, b, e);
    lru_push(d, e);
    w64(d, &d->nkeys, d->nkeys + 1);
}

/* Takes the first node off a list entry and frees it. */
static void list_drop_head(mf_shdict_t *d, uint32_t e)
{
    char *v = e_value(d, e);
    uint32_t nd = r32(v), next = r32(at(d, nd) + N_NEXT);

    w32(d, v, next);
    if (next)
        w32(d, at(d, next) + N_PREV, 0);
    else
        w32(d, v + 4, 0);
    w32(d, at(d, e) + E_VLEN, r32(at(d, e) + E_VLEN) - 1);
    w64(d, &d->nnodes, d->nnodes - 1);
    heap_free(d, nd);
}

static void remove_entry(mf_shdict_t *d, uint32_t e)
{
    uint32_t next = r32(at(d, e) + E_HNEXT);
    char *link;

    if (e_type(d, e) == MF_SHD_TLIST) {
        /* One node at a time, each a consistent state: a list may be longer than the log. */
        while (r32(e_value(d, e))) {
            list_drop_head(d, e);
            checkpoint(d);
        }
    }
    link = bucket_of(d, hash_key(d->seed, at(d, e) + E_DATA, e_klen(d, e)));
    while (r32(link) != e)
        link = at(d, r32(link)) + E_HNEXT;
    w32(d, link, next);
    lru_unlink(d, e);
    w64(d, &d->nkeys, d->nkeys - 1);
    heap_free(d, e);
}

/* What OpenResty does before most operations: drop up to two expired items at the LRU tail.
 * Committed at once: nothing an undo should bring back, and the room is then fresh. */
static void expire_some(mf_shdict_t *d, uint64_t now)
{
    for (int i = 0; i < 2; i++) {
        uint32_t t = d->lru_tail;
        if (!t || !expired(d, t, now))
            break;
        remove_entry(d, t);
    }
    if (freed_since_commit)
        commit(d);
}

/*
 * A block for new data. Keys and values are copied into it without the log (they can be
 * large): that is only safe in a block that an undo leaves free, so not in one this
 * operation freed since its last commit. Such frees (expired items, evicted items, an old
 * value) are committed first; the structure is consistent at every caller.
 */
static uint32_t alloc_fresh(mf_shdict_t *d, uint32_t n, uint32_t kind)
{
    if (freed_since_commit)
        commit(d);
    return heap_alloc(d, n, kind);
}

/* alloc_fresh, evicting the least recently used items for room. */
static uint32_t alloc_evicting(mf_shdict_t *d, uint32_t n, uint64_t now, int *forcible)
{
    uint32_t u = alloc_fresh(d, n, 0);

    for (int i = 0; !u && i < EVICT_ROUNDS && d->lru_tail; i++) {
        remove_entry(d, d->lru_tail);
        expire_some(d, now);
        *forcible = 1;
        u = alloc_fresh(d, n, 0);
    }
    return u;
}

/* Copies a stored value out; strings that do not fit the caller's buffer go to malloc. */
static int copy_out(int type, const char *p, size_t len, char *buf, mf_shdict_value_t *v)
{
    v->type = type;
    if (type == MF_SHD_TSTRING) {
        if (len > v->len) {
            if (!(buf = malloc(len ? len : 1)))
                return MF_SHD_NO_MEMORY;
        }
        memcpy(buf, p, len);
        v->str = buf;
        v->len = len;
    } else if (type == MF_SHD_TNUMBER) {
        memcpy(&v->num, p, sizeof v->num);
    } else if (type == MF_SHD_TBOOLEAN) {
        v->num = *p ? 1 : 0;
    }
    return MF_SHD_OK;
}

/* ---- the operations ---- */

int mf_ffi_shdict_get(mf_shdict_t *d, const char *key, size_t klen, int stale, char *buf,
                      mf_shdict_value_t *v)
{
    uint64_t h = hash_key(d->seed, key, klen), now;
    uint32_t e;
    int rc = MF_SHD_OK, old = 0;

    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    if (!stale)
        expire_some(d, now);
    v->type = MF_SHD_TNIL;
    v->flags = 0;
    v->stale = 0;
    e = find(d, key, klen, h);
    if (e && (!(old = expired(d, e, now)) || stale)) {
        touch(d, e);
        if (e_type(d, e) == MF_SHD_TLIST) {
            rc = MF_SHD_IS_LIST;
        } else {
            rc = copy_out(e_type(d, e), e_value(d, e), r32(at(d, e) + E_VLEN), buf, v);
            v->flags = r32(at(d, e) + E_FLAGS);
            v->stale = old;
        }
    }
    unlock(d);
    return rc;
}

int mf_ffi_shdict_store(mf_shdict_t *d, int op, const char *key, size_t klen, int type,
                        const char *str, size_t len, double num, int64_t exptime_ms, uint32_t flags,
                        int *forcible)
{
    uint64_t h = hash_key(d->seed, key, klen), now, units;
    unsigned char b;
    uint32_t e, u;
    int live;

    *forcible = 0;
    if (type == MF_SHD_TNIL && (op & (MF_SHD_ADD | MF_SHD_REPLACE)))
        return MF_SHD_BAD_VALUE;
    if (type == MF_SHD_TNUMBER) {
        str = (const char *)&num;
        len = sizeof num;
    } else if (type == MF_SHD_TBOOLEAN) {
        b = num != 0;
        str = (const char *)&b;
        len = 1;
    } else if (type != MF_SHD_TSTRING) {
        len = 0;
    }
    units = units_for(E_DATA + (uint64_t)klen + len);
    if (units > SIZE_MASK || len > UINT32_MAX)
        return MF_SHD_NO_MEMORY;
    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    expire_some(d, now);
    e = find(d, key, klen, h);
    live = e && !expired(d, e, now);
    if (e)
        touch(d, e);
    if ((op & MF_SHD_REPLACE) && !live) {
        unlock(d);
        return MF_SHD_NOT_FOUND;
    }
    if ((op & MF_SHD_ADD) && live) {
        unlock(d);
        return MF_SHD_EXISTS;
    }
    if (type == MF_SHD_TNIL) {
        if (e)
            remove_entry(d, e);
        unlock(d);
        return MF_SHD_OK;
    }
    /* The new value is written before the old one goes, so a death in between leaves the
     * old one. A list (its removal may commit halfway) or a lack of room frees it first, as
     * OpenResty does. */
    if (e && e_type(d, e) == MF_SHD_TLIST) {
        remove_entry(d, e);
        e = 0;
    }
    u = alloc_fresh(d, (uint32_t)units, 0);
    if (!u && e) {
        remove_entry(d, e);
        e = 0;
        u = alloc_fresh(d, (uint32_t)units, 0);
    }
    if (!u && !(op & MF_SHD_SAFE))
        u = alloc_evicting(d, (uint32_t)units, now, forcible);
    if (!u) {
        unlock(d);
        return MF_SHD_NO_MEMORY;
    }
    e_init(d, u, key, klen, type, (uint32_t)len, flags,
           exptime_ms > 0 ? now + (uint64_t)exptime_ms : 0);
    memcpy(at(d, u) + E_DATA + klen, str, len);
    if (e)
        remove_entry(d, e);
    link_entry(d, u, h);
    unlock(d);
    return MF_SHD_OK;
}

int mf_ffi_shdict_incr(mf_shdict_t *d, const char *key, size_t klen, double *value, int has_init,
                       double init, int64_t init_ttl_ms, int *forcible)
{
    uint64_t h = hash_key(d->seed, key, klen), now, bits;
    uint32_t e, u;
    double num;

    *forcible = 0;
    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    expire_some(d, now);
    e = find(d, key, klen, h);
    if (e && !expired(d, e, now)) {
        touch(d, e);
        if (e_type(d, e) != MF_SHD_TNUMBER) {
            unlock(d);
            return MF_SHD_NOT_NUMBER;
        }
        memcpy(&num, e_value(d, e), sizeof num);
        num += *value;
        memcpy(&bits, &num, sizeof bits);
        w64(d, e_value(d, e), bits);
        unlock(d);
        *value = num;
        return MF_SHD_OK;
    }
    if (!has_init) {
        unlock(d);
        return MF_SHD_NOT_FOUND;
    }
    num = *value + init;
    if (e)
        remove_entry(d, e);
    u = alloc_evicting(d, (uint32_t)units_for(E_DATA + klen + sizeof num), now, forcible);
    if (!u) {
        unlock(d);
        return MF_SHD_NO_MEMORY;
    }
    e_init(d, u, key, klen, MF_SHD_TNUMBER, sizeof num, 0,
           init_ttl_ms > 0 ? now + (uint64_t)init_ttl_ms : 0);
    memcpy(at(d, u) + E_DATA + klen, &num, sizeof num);
    link_entry(d, u, h);
    unlock(d);
    *value = num;
    return MF_SHD_OK;
}

int mf_ffi_shdict_push(mf_shdict_t *d, const char *key, size_t klen, int left, int type,
                       const char *str, size_t len, double num, uint32_t *count)
{
    uint64_t h = hash_key(d->seed, key, klen), now, units;
    uint32_t e, nd, head, tail, n;
    char *v;

    if (type == MF_SHD_TNUMBER) {
        str = (const char *)&num;
        len = sizeof num;
    }
    units = units_for(N_DATA + (uint64_t)len);
    if (units > SIZE_MASK)
        return MF_SHD_NO_MEMORY;
    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    expire_some(d, now);
    e = find(d, key, klen, h);
    if (e && expired(d, e, now)) {
        remove_entry(d, e);
        e = 0;
    }
    if (e) {
        if (e_type(d, e) != MF_SHD_TLIST) {
            unlock(d);
            return MF_SHD_NOT_LIST;
        }
        touch(d, e);
    } else {
        /* As OpenResty, list operations never evict. */
        if (!(e = alloc_fresh(d, (uint32_t)units_for(E_DATA + klen + 8), 0))) {
            undo(d);
            unlock(d);
            return MF_SHD_NO_MEMORY;
        }
        e_init(d, e, key, klen, MF_SHD_TLIST, 0, 0, 0);
        w64(d, at(d, e) + E_DATA + klen, 0);
        link_entry(d, e, h);
    }
    if (!(nd = alloc_fresh(d, (uint32_t)units, NODE))) {
        undo(d); /* also drops the list this push created */
        unlock(d);
        return MF_SHD_NO_MEMORY;
    }
    w32(d, at(d, nd) + N_LEN, (uint32_t)len);
    w32(d, at(d, nd) + N_TYPE, (uint32_t)type);
    memcpy(at(d, nd) + N_DATA, str, len);
    v = e_value(d, e);
    head = r32(v);
    tail = r32(v + 4);
    if (left) {
        w32(d, at(d, nd) + N_PREV, 0);
        w32(d, at(d, nd) + N_NEXT, head);
        if (head)
            w32(d, at(d, head) + N_PREV, nd);
        else
            w32(d, v + 4, nd);
        w32(d, v, nd);
    } else {
        w32(d, at(d, nd) + N_NEXT, 0);
        w32(d, at(d, nd) + N_PREV, tail);
        if (tail)
            w32(d, at(d, tail) + N_NEXT, nd);
        else
            w32(d, v, nd);
        w32(d, v + 4, nd);
    }
    n = r32(at(d, e) + E_VLEN) + 1;
    w32(d, at(d, e) + E_VLEN, n);
    w64(d, &d->nnodes, d->nnodes + 1);
    unlock(d);
    *count = n;
    return MF_SHD_OK;
}

int mf_ffi_shdict_pop(mf_shdict_t *d, const char *key, size_t klen, int left, char *buf,
                      mf_shdict_value_t *v)
{
    uint64_t h = hash_key(d->seed, key, klen), now;
    uint32_t e, nd, next, prev, n;
    char *lv;
    int rc;

    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    expire_some(d, now);
    v->type = MF_SHD_TNIL;
    e = find(d, key, klen, h);
    if (!e || expired(d, e, now)) {
        unlock(d);
        return MF_SHD_NOT_FOUND;
    }
    if (e_type(d, e) != MF_SHD_TLIST) {
        unlock(d);
        return MF_SHD_NOT_LIST;
    }
    lv = e_value(d, e);
    nd = r32(left ? lv : lv + 4);
    rc = copy_out((int)r32(at(d, nd) + N_TYPE), at(d, nd) + N_DATA, r32(at(d, nd) + N_LEN), buf, v);
    if (rc != MF_SHD_OK) {
        unlock(d);
        return rc;
    }
    next = r32(at(d, nd) + N_NEXT);
    prev = r32(at(d, nd) + N_PREV);
    if (prev)
        w32(d, at(d, prev) + N_NEXT, next);
    else
        w32(d, lv, next);
    if (next)
        w32(d, at(d, next) + N_PREV, prev);
    else
        w32(d, lv + 4, prev);
    n = r32(at(d, e) + E_VLEN) - 1;
    w32(d, at(d, e) + E_VLEN, n);
    w64(d, &d->nnodes, d->nnodes - 1);
    heap_free(d, nd);
    if (n == 0)
        remove_entry(d, e);
    else
        touch(d, e);
    unlock(d);
    return MF_SHD_OK;
}

int mf_ffi_shdict_llen(mf_shdict_t *d, const char *key, size_t klen, uint32_t *count)
{
    uint64_t h = hash_key(d->seed, key, klen), now;
    uint32_t e;
    int rc = MF_SHD_OK;

    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    expire_some(d, now);
    *count = 0;
    e = find(d, key, klen, h);
    if (e && !expired(d, e, now)) {
        if (e_type(d, e) != MF_SHD_TLIST) {
            rc = MF_SHD_NOT_LIST;
        } else {
            touch(d, e);
            *count = r32(at(d, e) + E_VLEN);
        }
    }
    unlock(d);
    return rc;
}

int mf_ffi_shdict_ttl(mf_shdict_t *d, const char *key, size_t klen, int64_t *ms)
{
    uint64_t h = hash_key(d->seed, key, klen), now, exp;
    uint32_t e;
    int rc = MF_SHD_NOT_FOUND;

    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    e = find(d, key, klen, h);
    if (e && !expired(d, e, now)) {
        touch(d, e);
        exp = r64(at(d, e) + E_EXPIRES);
        *ms = exp ? (int64_t)(exp - now) : 0;
        rc = MF_SHD_OK;
    }
    unlock(d);
    return rc;
}

int mf_ffi_shdict_expire(mf_shdict_t *d, const char *key, size_t klen, int64_t exptime_ms)
{
    uint64_t h = hash_key(d->seed, key, klen), now;
    uint32_t e;
    int rc = MF_SHD_NOT_FOUND;

    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    e = find(d, key, klen, h);
    if (e && !expired(d, e, now)) {
        touch(d, e);
        w64(d, at(d, e) + E_EXPIRES, exptime_ms > 0 ? now + (uint64_t)exptime_ms : 0);
        rc = MF_SHD_OK;
    }
    unlock(d);
    return rc;
}

int mf_ffi_shdict_flush_all(mf_shdict_t *d)
{
    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    /* As OpenResty: every item is marked expired (get_stale still sees them) and their room
     * is taken back as later operations come by. */
    for (uint32_t e = d->lru_head; e; e = r32(at(d, e) + E_LNEXT)) {
        w64(d, at(d, e) + E_EXPIRES, 1);
        checkpoint(d);
    }
    expire_some(d, now_ms());
    unlock(d);
    return MF_SHD_OK;
}

int mf_ffi_shdict_flush_expired(mf_shdict_t *d, int max)
{
    uint64_t now;
    uint32_t e, prev;
    int freed = 0;

    if (lock(d) < 0)
        return -1;
    now = now_ms();
    for (e = d->lru_tail; e; e = prev) {
        prev = r32(at(d, e) + E_LPREV);
        if (expired(d, e, now)) {
            remove_entry(d, e);
            checkpoint(d);
            if (++freed == max)
                break;
        }
    }
    unlock(d);
    return freed;
}

int mf_ffi_shdict_get_keys(mf_shdict_t *d, int max, char **buf, size_t *len, int *n)
{
    uint64_t now, bytes = 0;
    uint32_t e, *lens;
    int total = 0;
    char *p;

    *buf = NULL;
    *len = 0;
    *n = 0;
    if (lock(d) < 0)
        return MF_SHD_BROKEN;
    now = now_ms();
    /* Oldest first, as OpenResty lists them. */
    for (e = d->lru_tail; e && (max <= 0 || total < max); e = r32(at(d, e) + E_LPREV))
        if (!expired(d, e, now)) {
            total++;
            bytes += sizeof(uint32_t) + e_klen(d, e);
        }
    if (total == 0) {
        unlock(d);
        return MF_SHD_OK;
    }
    if (!(*buf = malloc(bytes))) {
        unlock(d);
        return MF_SHD_NO_MEMORY;
    }
    lens = (uint32_t *)(void *)*buf;
    p = *buf + (size_t)total * sizeof(uint32_t);
    total = 0;
    for (e = d->lru_tail; e && (max <= 0 || total < max); e = r32(at(d, e) + E_LPREV))
        if (!expired(d, e, now)) {
            lens[total++] = e_klen(d, e);
            memcpy(p, at(d, e) + E_DATA, e_klen(d, e));
            p += e_klen(d, e);
        }
    unlock(d);
    *len = bytes;
    *n = total;
    return MF_SHD_OK;
}

uint64_t mf_ffi_shdict_capacity(mf_shdict_t *d)
{
    return d->size;
}

uint64_t mf_ffi_shdict_free_space(mf_shdict_t *d)
{
    return __atomic_load_n(&d->free_units, __ATOMIC_RELAXED) * UNIT;
}

void mf_shdict_figures(mf_shdict_t *d, uint64_t *capacity, uint64_t *free_bytes, uint64_t *keys)
{
    *capacity = d->size;
    *free_bytes = __atomic_load_n(&d->free_units, __ATOMIC_RELAXED) * UNIT;
    *keys = __atomic_load_n(&d->nkeys, __ATOMIC_RELAXED);
}

/* ---- the consistency check ---- */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        goto done;                                                                                 \
    } while (0)

int mf_ffi_shdict_check(mf_shdict_t *d, mf_shdict_stats_t *st, char *err, size_t errlen)
{
    uint64_t used = 0, nfree = 0, free_units = 0, entries = 0, nodes = 0, listed = 0;
    uint64_t listed_units = 0, keys = 0, lnodes = 0, lru = 0;
    uint32_t u, prevsz = 0, last = 0;
    int prev_free = 0, rc = -1;

    if (lock(d) < 0) {
        snprintf(err, errlen, "the lock cannot be taken");
        return -1;
    }
    err[0] = '\0';
    if (d->log_n != 0)
        FAIL("the undo log holds %u entries outside an operation", (unsigned)d->log_n);
    /* The blocks tile the heap, each knowing its neighbour's size. */
    for (u = d->heap_start; u < d->heap_end; u += bsize(d, u)) {
        uint32_t s = bsize(d, u), hdr = r32(at(d, u));
        if (s == 0 || (uint64_t)u + s > d->heap_end)
            FAIL("block %u: size %u runs past the heap", u, s);
        if (r32(at(d, u) + 4) != prevsz)
            FAIL("block %u: says the block before has %u units, not %u", u, r32(at(d, u) + 4),
                 prevsz);
        if (hdr & USED) {
            used++;
            if (hdr & NODE)
                nodes++;
            else
                entries++;
            prev_free = 0;
        } else {
            if (prev_free)
                FAIL("block %u: free next to a free block", u);
            nfree++;
            free_units += s;
            prev_free = 1;
        }
        prevsz = s;
    }
    if (u != d->heap_end)
        FAIL("the blocks end at %u, the heap at %u", u, d->heap_end);
    if (free_units != d->free_units)
        FAIL("free blocks hold %llu units, the header says %llu", (unsigned long long)free_units,
             (unsigned long long)d->free_units);
    /* The free lists hold exactly the free blocks, each in its class. */
    for (int c = 0; c < NSMALL; c++) {
        uint32_t back = 0;
        if (!!d->free_head[c] != !!(d->free_map & (1ULL << c)))
            FAIL("free class %d: its bit does not match its list", c);
        for (u = d->free_head[c]; u; back = u, u = r32(at(d, u) + F_NEXT)) {
            if (++listed > nfree)
                FAIL("free class %d: more blocks listed than free (a loop?)", c);
            if (u < d->heap_start || u >= d->heap_end || bused(d, u) || class_of(bsize(d, u)) != c)
                FAIL("free class %d: block %u does not belong", c, u);
            if (r32(at(d, u) + F_PREV) != back)
                FAIL("free class %d: block %u has a wrong back link", c, u);
            listed_units += bsize(d, u);
        }
    }
    if (listed != nfree || listed_units != free_units)
        FAIL("the free lists hold %llu blocks, the heap %llu", (unsigned long long)listed,
             (unsigned long long)nfree);
    /* Every entry is in its bucket, once; lists hold as many nodes as they say. */
    for (uint32_t b = 0; b < d->nbuckets; b++) {
        for (u = r32(at(d, d->buckets) + 4 * (size_t)b); u; u = r32(at(d, u) + E_HNEXT)) {
            uint32_t klen, vlen, hdr;
            if (++keys > entries)
                FAIL("the buckets hold more entries than the heap (a loop?)");
            if (u < d->heap_start || u >= d->heap_end)
                FAIL("bucket %u: entry %u is outside the heap", b, u);
            hdr = r32(at(d, u));
            if (!(hdr & USED) || (hdr & NODE))
                FAIL("bucket %u: block %u is not an entry", b, u);
            klen = e_klen(d, u);
            vlen = r32(at(d, u) + E_VLEN);
            if ((hash_key(d->seed, at(d, u) + E_DATA, klen) & (d->nbuckets - 1)) != b)
                FAIL("entry %u is in the wrong bucket", u);
            if (e_type(d, u) == MF_SHD_TLIST) {
                char *v = e_value(d, u);
                uint32_t n = 0, back = 0, nd;
                if (units_for(E_DATA + klen + 8) > bsize(d, u))
                    FAIL("entry %u: a list head past its block", u);
                for (nd = r32(v); nd; back = nd, nd = r32(at(d, nd) + N_NEXT)) {
                    if (++n > vlen || nd < d->heap_start || nd >= d->heap_end)
                        FAIL("entry %u: more nodes than its count %u", u, vlen);
                    if ((r32(at(d, nd)) & (USED | NODE)) != (USED | NODE))
                        FAIL("entry %u: node %u is not a node block", u, nd);
                    if (r32(at(d, nd) + N_PREV) != back)
                        FAIL("entry %u: node %u has a wrong back link", u, nd);
                    if (units_for(N_DATA + (uint64_t)r32(at(d, nd) + N_LEN)) > bsize(d, nd))
                        FAIL("entry %u: node %u holds more than its block", u, nd);
                }
                if (n != vlen || r32(v + 4) != back || n == 0)
                    FAIL("entry %u: %u nodes, count %u", u, n, vlen);
                lnodes += n;
            } else if (units_for(E_DATA + (uint64_t)klen + vlen) > bsize(d, u)) {
                FAIL("entry %u: its value runs past its block", u);
            }
        }
    }
    if (keys != entries || keys != d->nkeys)
        FAIL("%llu entries in buckets, %llu entry blocks, %llu counted", (unsigned long long)keys,
             (unsigned long long)entries, (unsigned long long)d->nkeys);
    if (lnodes != nodes || nodes != d->nnodes)
        FAIL("%llu list nodes linked, %llu node blocks, %llu counted", (unsigned long long)lnodes,
             (unsigned long long)nodes, (unsigned long long)d->nnodes);
    /* The LRU list holds every entry once, in both directions. */
    for (u = d->lru_head; u; last = u, u = r32(at(d, u) + E_LNEXT)) {
        if (++lru > keys)
            FAIL("the LRU list is longer than the entries (a loop?)");
        if (r32(at(d, u) + E_LPREV) != last)
            FAIL("LRU: entry %u has a wrong back link", u);
    }
    if (lru != keys || d->lru_tail != last)
        FAIL("the LRU list holds %llu of %llu entries", (unsigned long long)lru,
             (unsigned long long)keys);
    rc = 0;
done:
    if (st) {
        st->capacity = d->size;
        st->free_bytes = d->free_units * UNIT;
        st->keys = d->nkeys;
        st->list_nodes = d->nnodes;
        st->used_blocks = used;
        st->free_blocks = nfree;
        st->recoveries = d->recoveries;
    }
    unlock(d);
    return rc;
}

/* ---- making dictionaries ---- */

static mf_shdict_t *create(const char *name, size_t namelen, size_t size)
{
    pthread_mutexattr_t attr;
    uint32_t hdr_units, bucket_units, nb = 16;
    mf_shdict_t *d;
    void *p;

    if (size < MF_SHDICT_MIN_SIZE || size > MAX_SIZE || namelen > MF_SHDICT_NAME_MAX)
        return NULL;
    size -= size % UNIT;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    d = p; /* a fresh anonymous mapping is all zeros */
    d->magic = MAGIC;
    d->size = size;
    memcpy(d->name, name, namelen);
    if (getrandom(&d->seed, sizeof d->seed, GRND_NONBLOCK) != sizeof d->seed)
        d->seed = now_ms() ^ ((uint64_t)getpid() << 32);
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&d->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    /* About one bucket per 128 bytes: chains stay short for small entries. */
    while (nb < size / 128 && nb < (1u << 30))
        nb <<= 1;
    hdr_units = (uint32_t)units_for(sizeof *d);
    bucket_units = (uint32_t)units_for((uint64_t)nb * 4);
    d->nbuckets = nb;
    d->buckets = hdr_units;
    d->heap_start = hdr_units + bucket_units;
    d->heap_end = (uint32_t)(size / UNIT);
    if (d->heap_end <= d->heap_start + 16) {
        munmap(p, size);
        return NULL;
    }
    w32(d, at(d, d->heap_start), d->heap_end - d->heap_start);
    d->free_units = d->heap_end - d->heap_start;
    free_insert(d, d->heap_start);
    commit(d);
    return d;
}

mf_shdict_t *mf_ffi_shdict_new(const char *name, size_t size)
{
    return create(name, strlen(name), size);
}

void mf_ffi_shdict_free(mf_shdict_t *d)
{
    if (!d)
        return;
    pthread_mutex_destroy(&d->lock);
    munmap(d, d->size);
}

void mf_ffi_shdict_release(void *p)
{
    free(p);
}

int mf_ffi_shdict_count(void)
{
    return nzones;
}

mf_shdict_t *mf_ffi_shdict_at(int i)
{
    return i >= 0 && i < nzones ? zones[i] : NULL;
}

const char *mf_ffi_shdict_name(mf_shdict_t *d)
{
    return d->name;
}

int mf_shdict_parse(const char *spec, char *name, size_t *size, char *err, size_t errlen)
{
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : 0;

    if (!colon || n == 0 || n > MF_SHDICT_NAME_MAX) {
        snprintf(err, errlen,
                 "--shared wants NAME:SIZE (a name of 1 to %d letters, digits or _), "
                 "not '%s'",
                 MF_SHDICT_NAME_MAX, spec);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = spec[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9'))) {
            snprintf(err, errlen, "--shared %s: a name is letters, digits and _", spec);
            return -1;
        }
    }
    if (mf_config_parse_size(colon + 1, size) < 0 || *size < MF_SHDICT_MIN_SIZE ||
        *size > MAX_SIZE) {
        snprintf(err, errlen, "--shared %s: SIZE must be from 32k to 16g (k, m, g suffixes)", spec);
        return -1;
    }
    memcpy(name, spec, n);
    name[n] = '\0';
    return 0;
}

int mf_shdict_declare(const char *spec, char *err, size_t errlen)
{
    char name[MF_SHDICT_NAME_MAX + 1];
    size_t size;
    mf_shdict_t *d;

    if (mf_shdict_parse(spec, name, &size, err, errlen) < 0)
        return -1;
    for (int i = 0; i < nzones; i++)
        if (strcmp(zones[i]->name, name) == 0) {
            snprintf(err, errlen, "--shared %s: a dictionary '%s' is declared twice", spec, name);
            return -1;
        }
    if (nzones == MF_SHDICT_MAX) {
        snprintf(err, errlen, "--shared: at most %d dictionaries", MF_SHDICT_MAX);
        return -1;
    }
    if (!(d = create(name, strlen(name), size))) {
        snprintf(err, errlen, "--shared %s: cannot map %zu bytes: %s", spec, size, strerror(errno));
        return -1;
    }
    zones[nzones++] = d;
    return 0;
}
