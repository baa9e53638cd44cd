/*
 * Unit tests of src/shdict.c: a process that dies at any write of an operation, while it
 * holds the dictionary's mutex, leaves the dictionary exactly as it was before that
 * operation (the next owner undoes the logged writes), and consistent.
 */
#include "shdict.h"
#include "unit.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern uint32_t mf__shdict_crash_after;

static char err[256];

/* The keys (oldest first), each with its value or list length, as one string. Reading
 * oldest first leaves the LRU order as it was. */
static void snapshot(mf_shdict_t *d, char *out, size_t cap)
{
    char *keys, vbuf[256];
    size_t len, used;
    int n;
    uint32_t *lens;
    const char *p;

    mf_shdict_stats_t st;

    /* The list nodes, then each live entry (get_stale: no expiry sweep). Expired entries
     * are left out: an operation may drop them for good before its own steps. */
    mf_ffi_shdict_check(d, &st, err, sizeof err);
    used = (size_t)snprintf(out, cap, "nodes %llu|", (unsigned long long)st.list_nodes);
    if (mf_ffi_shdict_get_keys(d, 0, &keys, &len, &n) != MF_SHD_OK)
        return;
    lens = (uint32_t *)(void *)keys;
    p = keys + 4 * (size_t)n;
    for (int i = 0; i < n; i++) {
        mf_shdict_value_t v;
        int rc;
        v.len = sizeof vbuf;
        rc = mf_ffi_shdict_get(d, p, lens[i], 1, vbuf, &v);
        if (rc == MF_SHD_IS_LIST) {
            used += (size_t)snprintf(out + used, cap - used, "%.*s=list;", (int)lens[i], p);
        } else if (v.type == MF_SHD_TSTRING) {
            used += (size_t)snprintf(out + used, cap - used, "%.*s=s%zu:%.*s;", (int)lens[i], p,
                                     v.len, (int)(v.len > 20 ? 20 : v.len), v.str);
            if (v.str != vbuf)
                free(v.str);
        } else {
            used += (size_t)snprintf(out + used, cap - used, "%.*s=%d:%g;", (int)lens[i], p, v.type,
                                     v.num);
        }
        p += lens[i];
        if (used >= cap)
            break;
    }
    free(keys);
}

static void put(mf_shdict_t *d, const char *k, const char *v, int64_t ms)
{
    int forcible;
    mf_ffi_shdict_store(d, MF_SHD_SET, k, strlen(k), MF_SHD_TSTRING, v, strlen(v), 0, ms, 0,
                        &forcible);
}

static mf_shdict_t *populated(size_t size)
{
    mf_shdict_t *d = mf_ffi_shdict_new("t", size);
    char k[32], v[300];
    double one = 1;
    int forcible;
    uint32_t n;

    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "k%d", i);
        memset(v, 'a' + i % 26, (size_t)(i * 7 % 250));
        v[i * 7 % 250] = '\0';
        put(d, k, v, i % 5 == 0 ? 1 : 0); /* some expire at once */
    }
    mf_ffi_shdict_incr(d, "n", 1, &one, 1, 0, 0, &forcible);
    for (int i = 0; i < 5; i++)
        mf_ffi_shdict_push(d, "list", 4, 0, MF_SHD_TSTRING, "item", 4, 0, &n);
    /* Past the 1 ms expiry of some, so every snapshot sees the same ones expired. */
    nanosleep(&(struct timespec){0, 3000000}, NULL);
    return d;
}

typedef void (*op_fn)(mf_shdict_t *d);

static void op_set_new(mf_shdict_t *d)
{
    put(d, "new", "a new value", 0);
}
static void op_set_resize(mf_shdict_t *d)
{
    put(d, "k3", "a value of another size", 0);
}
static void op_delete(mf_shdict_t *d)
{
    int f;
    mf_ffi_shdict_store(d, MF_SHD_SET, "k7", 2, MF_SHD_TNIL, NULL, 0, 0, 0, 0, &f);
}
static void op_incr(mf_shdict_t *d)
{
    double v = 5;
    int f;
    mf_ffi_shdict_incr(d, "n", 1, &v, 0, 0, 0, &f);
}
static void op_incr_init(mf_shdict_t *d)
{
    double v = 5;
    int f;
    mf_ffi_shdict_incr(d, "m", 1, &v, 1, 3, 1000, &f);
}
static void op_push_new(mf_shdict_t *d)
{
    uint32_t n;
    mf_ffi_shdict_push(d, "l2", 2, 1, MF_SHD_TSTRING, "x", 1, 0, &n);
}
static void op_pop(mf_shdict_t *d)
{
    char b[16];
    mf_shdict_value_t v;
    v.len = sizeof b;
    mf_ffi_shdict_pop(d, "list", 4, 1, b, &v);
}
static void op_delete_list(mf_shdict_t *d)
{
    int f;
    mf_ffi_shdict_store(d, MF_SHD_SET, "list", 4, MF_SHD_TNIL, NULL, 0, 0, 0, 0, &f);
}
static void op_flush_all(mf_shdict_t *d)
{
    mf_ffi_shdict_flush_all(d);
}
static void op_flush_expired(mf_shdict_t *d)
{
    mf_ffi_shdict_flush_expired(d, 0);
}
static void op_evict(mf_shdict_t *d)
{
    char big[4000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    put(d, "big", big, 0);
}

/* Runs op in a child that dies at its 1st, 2nd, ... logged write, until one finishes. */
static void crash_everywhere(const char *name, size_t size, op_fn op, int atomic)
{
    static char before[65536], after[65536];
    int crashes = 0, finished = 0;

    for (uint32_t at = 1; at < 5000 && !finished; at++) {
        mf_shdict_t *d = populated(size);
        mf_shdict_stats_t st;
        int status;
        pid_t pid;

        snapshot(d, before, sizeof before);
        pid = fork();
        if (pid == 0) {
            mf__shdict_crash_after = at;
            op(d);
            mf__shdict_crash_after = 0;
            _exit(0);
        }
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            finished = 1;
        } else {
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 99);
            crashes++;
        }
        if (mf_ffi_shdict_check(d, &st, err, sizeof err) != 0) {
            fprintf(stderr, "%s, death at write %u: %s\n", name, at, err);
            CHECK(0);
        }
        if (!finished && !atomic) {
            /* Evictions commit as they go: what is left must be as it was. */
            snapshot(d, after, sizeof after);
            for (char *tok = strtok(strchr(after, '|') + 1, ";"); tok; tok = strtok(NULL, ";"))
                if (!strstr(before, tok)) {
                    fprintf(stderr, "%s, death at write %u: %s changed\n", name, at, tok);
                    CHECK(0);
                }
        }
        if (!finished && atomic) {
            snapshot(d, after, sizeof after);
            if (strcmp(before, after) != 0) {
                fprintf(stderr, "%s, death at write %u:\n before %s\n after  %s\n", name, at,
                        before, after);
                CHECK(0);
            }
        }
        if (!finished)
            CHECK_EQ(st.recoveries, 1);
        mf_ffi_shdict_free(d);
    }
    CHECK(finished);
    CHECK(crashes > 3);
}

static void test_set_new(void)
{
    crash_everywhere("set", 64 * 1024, op_set_new, 1);
}
static void test_set_resize(void)
{
    crash_everywhere("set resize", 64 * 1024, op_set_resize, 1);
}
static void test_delete(void)
{
    crash_everywhere("delete", 64 * 1024, op_delete, 1);
}
static void test_incr(void)
{
    crash_everywhere("incr", 64 * 1024, op_incr, 1);
}
static void test_incr_init(void)
{
    crash_everywhere("incr init", 64 * 1024, op_incr_init, 1);
}
static void test_push(void)
{
    crash_everywhere("push", 64 * 1024, op_push_new, 1);
}
static void test_pop(void)
{
    crash_everywhere("pop", 64 * 1024, op_pop, 1);
}
static void test_delete_list(void)
{
    crash_everywhere("delete list", 64 * 1024, op_delete_list, 1);
}
static void test_flush_all(void)
{
    crash_everywhere("flush_all", 64 * 1024, op_flush_all, 1);
}
static void test_flush_expired(void)
{
    crash_everywhere("flush_expired", 64 * 1024, op_flush_expired, 1);
}
static void test_evict(void)
{
    crash_everywhere("evicting set", 32 * 1024, op_evict, 0);
}

/* A dictionary whose owner dies holding the mutex (not at a write) is usable at once. */
static void test_dead_owner_idle(void)
{
    mf_shdict_t *d = populated(64 * 1024);
    mf_shdict_stats_t st;
    char b[64];
    mf_shdict_value_t v;
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        mf__shdict_crash_after = 1; /* dies at the first write of the next get (a touch) */
        v.len = sizeof b;
        mf_ffi_shdict_get(d, "k1", 2, 0, b, &v);
        _exit(0);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 99);
    v.len = sizeof b;
    CHECK_EQ(mf_ffi_shdict_get(d, "k1", 2, 0, b, &v), MF_SHD_OK);
    CHECK_EQ(v.type, MF_SHD_TSTRING);
    CHECK_EQ(mf_ffi_shdict_check(d, &st, err, sizeof err), 0);
    CHECK_EQ(st.recoveries, 1);
    mf_ffi_shdict_free(d);
}

static void test_parse(void)
{
    char name[MF_SHDICT_NAME_MAX + 1];
    size_t size;

    CHECK_EQ(mf_shdict_parse("cache:64m", name, &size, err, sizeof err), 0);
    CHECK(strcmp(name, "cache") == 0 && size == 64 * 1024 * 1024);
    CHECK_EQ(mf_shdict_parse("a_1:32k", name, &size, err, sizeof err), 0);
    CHECK_EQ(mf_shdict_parse("cache", name, &size, err, sizeof err), -1);
    CHECK_EQ(mf_shdict_parse(":1m", name, &size, err, sizeof err), -1);
    CHECK_EQ(mf_shdict_parse("bad-name:1m", name, &size, err, sizeof err), -1);
    CHECK_EQ(mf_shdict_parse("c:1k", name, &size, err, sizeof err), -1);
    CHECK_EQ(mf_shdict_parse("c:17g", name, &size, err, sizeof err), -1);
    CHECK_EQ(mf_shdict_parse("c:lots", name, &size, err, sizeof err), -1);
}

int main(void)
{
    static const struct unit_test tests[] = {
        {"set", test_set_new},
        {"set resize", test_set_resize},
        {"delete", test_delete},
        {"incr", test_incr},
        {"incr init", test_incr_init},
        {"push", test_push},
        {"pop", test_pop},
        {"delete list", test_delete_list},
        {"flush_all", test_flush_all},
        {"flush_expired", test_flush_expired},
        {"evicting set", test_evict},
        {"dead owner", test_dead_owner_idle},
        {"parse", test_parse},
        {NULL, NULL},
    };
    return unit_run(tests);
}
