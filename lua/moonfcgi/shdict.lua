-- Shared dictionaries (src/shdict.c): the methods of OpenResty's ngx.shared.DICT with its
-- return values and error strings, over the C functions below. The C side never calls Lua;
-- this side checks arguments, turns status codes into OpenResty's `nil/false, err` and
-- copies values out of the mapping.
local ffi = require "ffi"
local core = require "moonfcgi.core"

local C = core.C
local ffi_string, ffi_cast = ffi.string, ffi.cast
local type, tostring, tonumber, error, setmetatable = type, tostring, tonumber, error, setmetatable
local math_floor = math.floor

local _M = {}

-- Kept verbatim in step with the CDEF part of src/shdict.h (spec/lua/cdef_spec.lua checks it).
_M.cdef = [[
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
enum { MF_SHD_TNIL = 0, MF_SHD_TBOOLEAN = 1, MF_SHD_TNUMBER = 3, MF_SHD_TSTRING = 4, MF_SHD_TLIST = 5 };

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
                        const char *str, size_t len, double num, int64_t exptime_ms,
                        uint32_t flags, int *forcible);
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
]]

ffi.cdef(_M.cdef)

local OK, NOT_FOUND, NO_MEMORY = C.MF_SHD_OK, C.MF_SHD_NOT_FOUND, C.MF_SHD_NO_MEMORY
local TNIL, TBOOLEAN, TNUMBER, TSTRING = C.MF_SHD_TNIL, C.MF_SHD_TBOOLEAN, C.MF_SHD_TNUMBER,
    C.MF_SHD_TSTRING
local SET, ADD, REPLACE, SAFE = C.MF_SHD_SET, C.MF_SHD_ADD, C.MF_SHD_REPLACE, C.MF_SHD_SAFE

-- OpenResty's words for each status.
local ERRORS = {
    [C.MF_SHD_NOT_FOUND] = "not found",
    [C.MF_SHD_EXISTS] = "exists",
    [C.MF_SHD_NO_MEMORY] = "no memory",
    [C.MF_SHD_NOT_NUMBER] = "not a number",
    [C.MF_SHD_NOT_LIST] = "value not a list",
    [C.MF_SHD_IS_LIST] = "value is a list",
    [C.MF_SHD_BAD_VALUE] = "attempt to add or replace nil values",
    [C.MF_SHD_BROKEN] = "the dictionary's lock cannot be recovered",
}

local BUF_SIZE = 4096
local buf = ffi.new("char[?]", BUF_SIZE)
local val = ffi.new("mf_shdict_value_t")
local forcible = ffi.new("int[1]")
local num = ffi.new("double[1]")
local count = ffi.new("uint32_t[1]")
local ms = ffi.new("int64_t[1]")
local keys_buf = ffi.new("char *[1]")
local keys_len = ffi.new("size_t[1]")
local keys_n = ffi.new("int[1]")

local Dict = {}
Dict.__index = Dict

local function zone(self)
    local z = type(self) == "table" and self._z
    if not z or z == nil then
        error('bad "zone" argument', 3)
    end
    return z
end

-- OpenResty's checks on a key, in its order: nil key, then anything else as tostring().
local function check_key(key)
    if key == nil then
        return nil, "nil key"
    end
    if type(key) ~= "string" then
        key = tostring(key)
    end
    local n = #key
    if n == 0 then
        return nil, "empty key"
    end
    if n > 65535 then
        return nil, "key too long"
    end
    return key
end

-- Seconds (ms resolution) to ms, as OpenResty: 0 or less than 1 ms never expires.
local function to_ms(seconds, what)
    if seconds == nil then
        return 0
    end
    if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
        error('bad "' .. what .. '" argument', 3)
    end
    if seconds > 1e15 then
        seconds = 1e15
    end
    return math_floor(seconds * 1000)
end

local function take_value()
    local t = val.type
    if t == TSTRING then
        local p = val.str
        local s = ffi_string(p, val.len)
        if p ~= buf then
            C.mf_ffi_shdict_release(p)
        end
        return s
    elseif t == TNUMBER then
        return tonumber(val.num)
    elseif t == TBOOLEAN then
        return val.num ~= 0
    end
    return nil
end

local function store(self, op, key, value, exptime, flags)
    local z = zone(self)
    local err
    key, err = check_key(key)
    local ms_ = to_ms(exptime, "exptime")
    if flags ~= nil and type(flags) ~= "number" then
        error('bad "flags" argument', 3)
    end
    flags = flags and math_floor(flags) % 4294967296 or 0
    if not key then
        return nil, err
    end
    local t, s, n, len = type(value), nil, 0, 0
    if t == "string" then
        t, s, len = TSTRING, value, #value
    elseif t == "number" then
        t, n = TNUMBER, value
    elseif t == "boolean" then
        t, n = TBOOLEAN, value and 1 or 0
    elseif value == nil then
        t = TNIL
    else
        return nil, "bad value type"
    end
    local rc = C.mf_ffi_shdict_store(z, op, key, #key, t, s, len, n, ms_, flags, forcible)
    if rc == OK then
        return true, nil, forcible[0] == 1
    end
    return false, ERRORS[rc], forcible[0] == 1
end

function Dict:set(key, value, exptime, flags)
    return store(self, SET, key, value, exptime, flags)
end

function Dict:safe_set(key, value, exptime, flags)
    return store(self, SET + SAFE, key, value, exptime, flags)
end

function Dict:add(key, value, exptime, flags)
    return store(self, ADD, key, value, exptime, flags)
end

function Dict:safe_add(key, value, exptime, flags)
    return store(self, ADD + SAFE, key, value, exptime, flags)
end

function Dict:replace(key, value, exptime, flags)
    return store(self, REPLACE, key, value, exptime, flags)
end

function Dict:delete(key)
    return store(self, SET, key, nil)
end

local function get(self, key, stale)
    local z = zone(self)
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    val.len = BUF_SIZE
    local rc = C.mf_ffi_shdict_get(z, key, #key, stale, buf, val)
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    if val.type == TNIL then
        return nil
    end
    local flags = val.flags
    local is_stale = val.stale ~= 0
    local v = take_value()
    if stale == 1 then
        return v, flags ~= 0 and tonumber(flags) or nil, is_stale
    end
    if flags ~= 0 then
        return v, tonumber(flags)
    end
    return v
end

function Dict:get(key)
    return get(self, key, 0)
end

function Dict:get_stale(key)
    return get(self, key, 1)
end

function Dict:incr(key, value, init, init_ttl)
    local z = zone(self)
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    if type(value) ~= "number" then
        local n = tonumber(value)
        if not n then
            error("bad value arg: number expected, got " .. type(value), 2)
        end
        value = n
    end
    if init ~= nil and type(init) ~= "number" then
        local n = tonumber(init)
        if not n then
            error("bad init arg: number expected, got " .. type(init), 2)
        end
        init = n
    end
    local ttl_ms = 0
    if init_ttl ~= nil then
        if type(init_ttl) ~= "number" then
            local n = tonumber(init_ttl)
            if not n then
                error("bad init_ttl arg: number expected, got " .. type(init_ttl), 2)
            end
            init_ttl = n
        end
        if init_ttl < 0 then
            error('bad "init_ttl" argument', 2)
        end
        if init == nil then
            error('must provide "init" when providing "init_ttl"', 2)
        end
        ttl_ms = to_ms(init_ttl, "init_ttl")
    end
    num[0] = value
    local rc = C.mf_ffi_shdict_incr(z, key, #key, num, init ~= nil and 1 or 0, init or 0,
        ttl_ms, forcible)
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    if init == nil then
        return tonumber(num[0])
    end
    return tonumber(num[0]), nil, forcible[0] == 1
end

local function push(self, key, value, left)
    local z = zone(self)
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    local t, s, n, len = type(value), nil, 0, 0
    if t == "string" then
        t, s, len = TSTRING, value, #value
    elseif t == "number" then
        t, n = TNUMBER, value
    else
        return nil, "bad value type"
    end
    local rc = C.mf_ffi_shdict_push(z, key, #key, left, t, s, len, n, count)
    if rc == OK then
        return tonumber(count[0])
    end
    if rc == NO_MEMORY then
        return false, "no memory"
    end
    return nil, ERRORS[rc]
end

function Dict:lpush(key, value)
    return push(self, key, value, 1)
end

function Dict:rpush(key, value)
    return push(self, key, value, 0)
end

local function pop(self, key, left)
    local z = zone(self)
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    val.len = BUF_SIZE
    local rc = C.mf_ffi_shdict_pop(z, key, #key, left, buf, val)
    if rc == NOT_FOUND then
        return nil
    end
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    return take_value()
end

function Dict:lpop(key)
    return pop(self, key, 1)
end

function Dict:rpop(key)
    return pop(self, key, 0)
end

function Dict:llen(key)
    local z = zone(self)
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    local rc = C.mf_ffi_shdict_llen(z, key, #key, count)
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    return tonumber(count[0])
end

function Dict:ttl(key)
    local z = zone(self)
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    local rc = C.mf_ffi_shdict_ttl(z, key, #key, ms)
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    return tonumber(ms[0]) / 1000
end

function Dict:expire(key, exptime)
    local z = zone(self)
    if exptime == nil then
        error('bad "exptime" argument', 2)
    end
    local ms_ = to_ms(exptime, "exptime")
    local err
    key, err = check_key(key)
    if not key then
        return nil, err
    end
    local rc = C.mf_ffi_shdict_expire(z, key, #key, ms_)
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    return true
end

function Dict:flush_all()
    C.mf_ffi_shdict_flush_all(zone(self))
end

local function max_count(n, default)
    if n == nil then
        return default
    end
    if type(n) ~= "number" then
        error("bad argument #1 (number expected, got " .. type(n) .. ")", 3)
    end
    return math_floor(n)
end

function Dict:flush_expired(max)
    local z = zone(self)
    return C.mf_ffi_shdict_flush_expired(z, max_count(max, 0))
end

function Dict:get_keys(max)
    local z = zone(self)
    local rc = C.mf_ffi_shdict_get_keys(z, max_count(max, 1024), keys_buf, keys_len, keys_n)
    if rc ~= OK then
        return nil, ERRORS[rc]
    end
    local n, out = keys_n[0], {}
    if n == 0 then
        return out
    end
    local p = keys_buf[0]
    local lens = ffi_cast("uint32_t *", p)
    local at = p + n * 4
    for i = 0, n - 1 do
        local len = lens[i]
        out[i + 1] = ffi_string(at, len)
        at = at + len
    end
    C.mf_ffi_shdict_release(p)
    return out
end

function Dict:capacity()
    return tonumber(C.mf_ffi_shdict_capacity(zone(self)))
end

function Dict:free_space()
    return tonumber(C.mf_ffi_shdict_free_space(zone(self)))
end

_M.Dict = Dict

-- A dictionary object over the C one (not owned).
function _M.wrap(z, name)
    return setmetatable({ _z = z, name = name }, Dict)
end

-- A private dictionary for moonfcgi.test; _M.free() unmaps it.
function _M.new(name, size)
    if type(name) ~= "string" or not name:match("^[%w_]+$") or #name > 64 then
        error("bad dictionary name '" .. tostring(name) .. "' (letters, digits and _)", 2)
    end
    local bytes = size
    if type(size) == "string" then
        local n, unit = size:match("^(%d+)([kKmMgG]?)$")
        local mul = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }
        bytes = n and tonumber(n) * mul[unit:lower()]
    end
    if type(bytes) ~= "number" or bytes < 32 * 1024 then
        error("bad size for dictionary '" .. name .. "': " .. tostring(size)
            .. " (at least 32k)", 2)
    end
    local z = C.mf_ffi_shdict_new(name, bytes)
    if z == nil then
        error("cannot map a dictionary of " .. tostring(size), 2)
    end
    return _M.wrap(z, name)
end

function _M.free(dict)
    local z = dict._z
    if z then
        dict._z = nil
        C.mf_ffi_shdict_free(z)
    end
end

-- The dictionaries of --shared in this process, name -> object (made once).
local declared
function _M.declared()
    if not declared then
        declared = {}
        for i = 0, C.mf_ffi_shdict_count() - 1 do
            local z = C.mf_ffi_shdict_at(i)
            local name = ffi_string(C.mf_ffi_shdict_name(z))
            declared[name] = _M.wrap(z, name)
        end
    end
    return declared
end

-- For specs: walks the whole structure and checks that it holds together and that its size
-- accounting adds up. Returns the figures, or nil and what is wrong.
function _M.check(dict)
    local z = zone(dict)
    local st = ffi.new("mf_shdict_stats_t")
    local err = ffi.new("char[256]")
    local rc = C.mf_ffi_shdict_check(z, st, err, 256)
    local figures = {
        capacity = tonumber(st.capacity), free_bytes = tonumber(st.free_bytes),
        keys = tonumber(st.keys), list_nodes = tonumber(st.list_nodes),
        used_blocks = tonumber(st.used_blocks), free_blocks = tonumber(st.free_blocks),
        recoveries = tonumber(st.recoveries),
    }
    if rc ~= 0 then
        return nil, ffi_string(err), figures
    end
    return figures
end

return _M
