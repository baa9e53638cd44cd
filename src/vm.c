#include "vm.h"
#include "ffi.h"
#include "log.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static int is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * The folder of the moonfcgi Lua modules: $MOONFCGI_LUA_DIR, then the installed layout next
 * to the binary (../share/moonfcgi/lua), then the source tree it was built from.
 */
static const char *lua_dir(char *buf, size_t len)
{
    const char *env = getenv("MOONFCGI_LUA_DIR");
    char exe[PATH_MAX];
    ssize_t n;

    if (env && *env)
        return env;
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        snprintf(buf, len, "%s/../share/moonfcgi/lua", dirname(exe));
        if (is_dir(buf))
            return buf;
    }
    return MF_LUA_SOURCE_DIR;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);

    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Calls require("moonfcgi.runtime")[fn](app_path); leaves the result or error on the stack. */
static lua_State *start(const char *fn, const char *app_path, int *status)
{
    char buf[PATH_MAX + 32], path[3 * PATH_MAX];
    const char *dir = lua_dir(buf, sizeof buf);
    lua_State *L = luaL_newstate();

    if (!L) {
        mf_log_error("cannot create a Lua state (out of memory)");
        *status = 1;
        return NULL;
    }
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    snprintf(path, sizeof path, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);

    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, "moonfcgi.runtime");
    if (lua_pcall(L, 1, 1, 1) != 0) {
        mf_log_error("cannot load the moonfcgi runtime from %s: %s", dir, lua_tostring(L, -1));
        *status = 1;
        return L;
    }
    lua_getfield(L, -1, fn);
    lua_pushstring(L, app_path);
    /* Two results: serve returns a status; check an error, or nil and the files read. */
    *status = lua_pcall(L, 1, 2, 1) != 0 ? 2 : 0;
    return L;
}

int mf_vm_run(mf_worker_t *w, const char *app_path)
{
    int status;
    lua_State *L;

    mf_worker_current = w;
    L = start("serve", app_path, &status);
    if (status == 2) {
        mf_log_error("%s", lua_tostring(L, -1));
        status = 1;
    } else if (status == 0) {
        status = (int)lua_tointeger(L, -2);
    }
    if (L)
        lua_close(L);
    return status;
}

int mf_vm_check(const char *app_path)
{
    int status;
    lua_State *L = start("check", app_path, &status);

    if (status == 0) {
        const char *err = lua_tostring(L, -2);
        if (err) {
            fprintf(stderr, "%s\n", err);
            status = 1;
        } else {
            printf("%s: ok\n", app_path);
        }
    } else if (status == 2) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        status = 1;
    }
    if (L)
        lua_close(L);
    return status;
}

typedef struct snapshot_file {
    char *path;
    char *src;
    size_t len;
} snapshot_file_t;

static snapshot_file_t *snapshot;
static size_t snapshot_n;

static void snapshot_free(snapshot_file_t *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(files[i].path);
        free(files[i].src);
    }
    free(files);
}

/* Copies the table of path -> source at the top of L's stack into the snapshot. */
static void snapshot_take(lua_State *L)
{
    snapshot_file_t *files = NULL;
    size_t n = 0, cap = 0;

    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        size_t plen, len;
        const char *path = lua_tolstring(L, -2, &plen);
        const char *src = lua_tolstring(L, -1, &len);
        if (path && src) {
            if (n == cap) {
                snapshot_file_t *f;
                cap = cap ? cap * 2 : 16;
                if (!(f = realloc(files, cap * sizeof *files)))
                    goto fail;
                files = f;
            }
            files[n].path = strdup(path);
            files[n].src = malloc(len ? len : 1);
            files[n].len = len;
            if (!files[n].path || !files[n].src) {
                n++;
                goto fail;
            }
            memcpy(files[n].src, src, len);
            n++;
        }
        lua_pop(L, 1);
    }
    snapshot_free(snapshot, snapshot_n);
    snapshot = files;
    snapshot_n = n;
    return;
fail:
    /* Without memory for a snapshot, workers read the files from disk as before. */
    lua_pop(L, 2);
    snapshot_free(files, n);
}

int mf_vm_snapshot_fd = -1;

/*
 * The memfd holds: "MFS1", then for each file a 4-byte path length, the path, a 4-byte
 * source length and the source (lengths little-endian). The master rewrites it before
 * every reload it accepts; workers read it on SIGHUP.
 */
void mf_vm_snapshot_write(int fd)
{
    size_t total = 4;
    char *buf, *p;

    if (fd < 0)
        return;
    for (size_t i = 0; i < snapshot_n; i++)
        total += 8 + strlen(snapshot[i].path) + snapshot[i].len;
    if (!(buf = malloc(total)))
        return;
    memcpy(buf, "MFS1", 4);
    p = buf + 4;
    for (size_t i = 0; i < snapshot_n; i++) {
        uint32_t plen = (uint32_t)strlen(snapshot[i].path), slen = (uint32_t)snapshot[i].len;
        memcpy(p, &plen, 4);
        memcpy(p + 4, snapshot[i].path, plen);
        p += 4 + plen;
        memcpy(p, &slen, 4);
        memcpy(p + 4, snapshot[i].src, slen);
        p += 4 + slen;
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, total, 0) != (ssize_t)total)
        mf_log_warn("cannot share the checked app with the workers; they reload from disk");
    free(buf);
}

int mf_ffi_snapshot_refresh(void)
{
    struct stat st;
    snapshot_file_t *files = NULL;
    size_t n = 0, off = 4;
    char *buf;

    if (mf_vm_snapshot_fd < 0 || fstat(mf_vm_snapshot_fd, &st) < 0 || st.st_size < 4)
        return -1;
    if (!(buf = malloc((size_t)st.st_size)))
        return -1;
    if (pread(mf_vm_snapshot_fd, buf, (size_t)st.st_size, 0) != st.st_size ||
        memcmp(buf, "MFS1", 4) != 0)
        goto fail;
    while (off < (size_t)st.st_size) {
        uint32_t plen, slen;
        snapshot_file_t *f;
        if ((size_t)st.st_size - off < 4)
            goto fail;
        memcpy(&plen, buf + off, 4);
        if (plen > (size_t)st.st_size - off - 4 || (size_t)st.st_size - off - 4 - plen < 4)
            goto fail;
        memcpy(&slen, buf + off + 4 + plen, 4);
        if (slen > (size_t)st.st_size - off - 8 - plen)
            goto fail;
        if (!(f = realloc(files, (n + 1) * sizeof *files)))
            goto fail;
        files = f;
        files[n].path = strndup(buf + off + 4, plen);
        files[n].src = malloc(slen ? slen : 1);
        files[n].len = slen;
        n++;
        if (!files[n - 1].path || !files[n - 1].src)
            goto fail;
        memcpy(files[n - 1].src, buf + off + 8 + plen, slen);
        off += 8 + plen + slen;
    }
    free(buf);
    snapshot_free(snapshot, snapshot_n);
    snapshot = files;
    snapshot_n = n;
    return 0;
fail:
    free(buf);
    snapshot_free(files, n);
    return -1;
}

const char *mf_ffi_snapshot_file(const char *path, size_t *len)
{
    for (size_t i = 0; i < snapshot_n; i++) {
        if (strcmp(snapshot[i].path, path) == 0) {
            *len = snapshot[i].len;
            return snapshot[i].src;
        }
    }
    return NULL;
}

int mf_vm_check_error(const char *app_path, char *err, size_t errlen)
{
    int status;
    lua_State *L = start("check", app_path, &status);
    const char *msg = NULL;

    if (status == 0) {
        msg = lua_tostring(L, -2);
        if (!msg && lua_istable(L, -1))
            snapshot_take(L);
    } else if (L && lua_gettop(L) > 0) {
        msg = lua_tostring(L, -1);
    }
    if (status != 0 && !msg)
        msg = "cannot start the Lua runtime";
    if (msg)
        snprintf(err, errlen, "%s", msg);
    if (L)
        lua_close(L);
    return msg ? 1 : 0;
}
