#include "vm.h"
#include "ffi.h"
#include "log.h"
#include "snapshot.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Copies the path -> source table at the top of L's stack into one snapshot payload. */
static char *encode_files(lua_State *L, size_t *len)
{
    mf_snapshot_file_t *files = NULL, *f;
    size_t n = 0, cap = 0;
    char *out;

    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                if (!(f = realloc(files, cap * sizeof *files))) {
                    free(files);
                    return NULL;
                }
                files = f;
            }
            /* The strings stay referenced by the table, which stays on the stack. */
            files[n].path = lua_tolstring(L, -2, &files[n].path_len);
            files[n].src = lua_tolstring(L, -1, &files[n].len);
            n++;
        }
        lua_pop(L, 1);
    }
    out = mf_snapshot_encode(files, n, len);
    free(files);
    return out;
}

int mf_vm_check_here(const char *app_path, char **snapshot, size_t *len, char *err, size_t errlen)
{
    int status;
    lua_State *L = start("check", app_path, &status);
    const char *msg = NULL;

    *snapshot = NULL;
    if (status == 0) {
        msg = lua_tostring(L, -2);
        if (!msg && lua_istable(L, -1) && !(*snapshot = encode_files(L, len)))
            msg = "out of memory while keeping the app's files";
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
