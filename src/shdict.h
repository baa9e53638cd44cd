/*
 * Shared dictionaries (--shared NAME:SIZE): OpenResty's lua_shared_dict for moonfcgi.
 *
 * Each dictionary is one anonymous shared mapping made by the master before it forks the
 * workers, so every worker (and every worker that replaces one) sees the same bytes, and the
 * contents outlive reloads. Inside the mapping everything is addressed by offsets from its
 * start: a header, a hash table, and a heap of blocks (entries and list nodes) with free
 * lists by size. One process-shared robust mutex guards it all.
 *
 * A worker may be SIGKILLed at any instruction, also while it holds the mutex (the master
 * kills stuck workers). Every write to the structure first records the old bytes in an undo
 * log inside the mapping; the process that next takes the mutex and is told EOWNERDEAD
 * restores them, newest first, which puts the dictionary back as it was before the dead
 * process's unfinished operation. Operations that touch an unbounded number of items
 * (flush_all, evicting or deleting long lists) commit at consistent points in between.
 *
 * Expiry times are milliseconds of CLOCK_MONOTONIC, which every process on the machine
 * shares and which does not jump when the wall clock is set.
 */
#ifndef MF_SHDICT_H
#define MF_SHDICT_H

#include <stddef.h>
#include <stdint.h>

/* The dictionaries of --shared, made by the master before the first fork. */
#define MF_SHDICT_MAX      64
#define MF_SHDICT_NAME_MAX 64
/* Smaller mappings leave too little room after the header, the hash table and the log. */
#define MF_SHDICT_MIN_SIZE (32 * 1024)

#pragma GCC visibility push(default)
/* CDEF BEGIN */
typedef struct mf_shdict mf_shdict_t;

enum {
    MF_SHD_OK = 0,
    MF_SHD_NOT_FOUND = 1,  /* missing or expired */
    MF_SHD_EXISTS = 2,     /* add: a live value is there */
    MF_SHD_NO_MEMORY = 3,  /* no room, even after evicting (or safe_*: without evicting) */
    MF_SHD_NOT_NUMBER = 4, /* incr on a value that is not a number */
    MF_SHD_NOT_LIST = 5,   /* a list operation on a value that is not a list */
    MF_SHD_IS_LIST = 6,    /* get on a list */
    MF_SHD_BAD_VALUE = 7,  /* add/replace with nil, or a value too large for the dictionary */
    MF_SHD_BROKEN = 8      /* the mutex cannot be taken (not recoverable) */
};

/* Value types: Lua's type numbers, as OpenResty stores them. */
enum {
    MF_SHD_TNIL = 0,
    MF_SHD_TBOOLEAN = 1,
    MF_SHD_TNUMBER = 3,
    MF_SHD_TSTRING = 4,
    MF_SHD_TLIST = 5
};

/* store() operations. */
enum { MF_SHD_SET = 0, MF_SHD_ADD = 1, MF_SHD_REPLACE = 2, MF_SHD_SAFE = 4 };

/* A value read out: strings land in buf when they fit in *len bytes, otherwise in a block
 * from malloc that the caller frees with mf_ffi_shdict_release(). */
typedef struct mf_shdict_value {
    int type;
    uint32_t flags;
    int stale;
    double num;
    char *str;
    size_t len;
} mf_shdict_value_t;

/* What mf_ffi_shdict_check() counted. */
typedef struct mf_shdict_stats {
    uint64_t capacity;
    uint64_t free_bytes;
    uint64_t keys;
    uint64_t list_nodes;
    uint64_t used_blocks;
    uint64_t free_blocks;
    uint64_t recoveries;
} mf_shdict_stats_t;

int mf_ffi_shdict_count(void);
mf_shdict_t *mf_ffi_shdict_at(int i);
const char *mf_ffi_shdict_name(mf_shdict_t *d);
mf_shdict_t *mf_ffi_shdict_new(const char *name, size_t size);
void mf_ffi_shdict_free(mf_shdict_t *d);
void mf_ffi_shdict_release(void *p);

int mf_ffi_shdict_get(mf_shdict_t *d, const char *key, size_t klen, int stale, char *buf,
                      mf_shdict_value_t *v);
int mf_ffi_shdict_store(mf_shdict_t *d, int op, const char *key, size_t klen, int type,
                        const char *str, size_t len, double num, int64_t exptime_ms, uint32_t flags,
                        int *forcible);
int mf_ffi_shdict_incr(mf_shdict_t *d, const char *key, size_t klen, double *value, int has_init,
                       double init, int64_t init_ttl_ms, int *forcible);
int mf_ffi_shdict_push(mf_shdict_t *d, const char *key, size_t klen, int left, int type,
                       const char *str, size_t len, double num, uint32_t *count);
int mf_ffi_shdict_pop(mf_shdict_t *d, const char *key, size_t klen, int left, char *buf,
                      mf_shdict_value_t *v);
int mf_ffi_shdict_llen(mf_shdict_t *d, const char *key, size_t klen, uint32_t *count);
int mf_ffi_shdict_ttl(mf_shdict_t *d, const char *key, size_t klen, int64_t *ms);
int mf_ffi_shdict_expire(mf_shdict_t *d, const char *key, size_t klen, int64_t exptime_ms);
int mf_ffi_shdict_flush_all(mf_shdict_t *d);
int mf_ffi_shdict_flush_expired(mf_shdict_t *d, int max);
int mf_ffi_shdict_get_keys(mf_shdict_t *d, int max, char **buf, size_t *len, int *n);
uint64_t mf_ffi_shdict_capacity(mf_shdict_t *d);
uint64_t mf_ffi_shdict_free_space(mf_shdict_t *d);
int mf_ffi_shdict_check(mf_shdict_t *d, mf_shdict_stats_t *st, char *err, size_t errlen);
/* CDEF END */
#pragma GCC visibility pop

/* Parses "NAME:SIZE" (name is letters, digits, _; SIZE as mf_config_parse_size); returns 0,
 * or -1 with a one-line message in err. */
int mf_shdict_parse(const char *spec, char *name, size_t *size, char *err, size_t errlen);

/*
 * Parses "NAME:SIZE" and maps a new dictionary for the process and the workers it forks
 * later; returns 0, or -1 with a one-line message in err.
 */
int mf_shdict_declare(const char *spec, char *err, size_t errlen);

/* Capacity, free bytes and keys of the i-th declared dictionary, read without the mutex
 * (for the status report: the figures may be one operation old). */
void mf_shdict_figures(mf_shdict_t *d, uint64_t *capacity, uint64_t *free_bytes, uint64_t *keys);

#endif
