-- The `ngx` global of cosocket.md section 5: OpenResty's API for Lua, so that libraries
-- written for OpenResty run unmodified. Requiring this module defines the global (runtime.lua
-- does so before an app loads); it is the same table in every later require.
--
-- Parts: ngx/re.lua (ngx.re over PCRE2), ngx/codec.lua (codecs and digests), ngx/time.lua,
-- ngx/req.lua (the current request through ngx). What OpenResty has and moonfcgi does not is
-- listed in NOT_PROVIDED below: calling it raises an error that names it.
local ffi = require "ffi"
local runtime = require "moonfcgi.runtime"
local moonfcgi = require "moonfcgi"
local core = require "moonfcgi.core"
local codec = require "moonfcgi.ngx.codec"
local time = require "moonfcgi.ngx.time"
local req = require "moonfcgi.ngx.req"

local type, tostring, select, error, rawget, rawset, setmetatable, getmetatable, pairs, ipairs,
    pcall = type, tostring, select, error, rawget, rawset, setmetatable, getmetatable, pairs,
    ipairs, pcall
local concat = table.concat
local getinfo = debug.getinfo

local C = core.C

local existing = rawget(_G, "ngx")
if type(existing) == "table" and rawget(existing, "_moonfcgi") then
    return existing
end

local ngx = { _moonfcgi = true }

ngx.null = require("cjson").null
req.set_null(ngx.null)

ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5

local HTTP = {
    CONTINUE = 100, SWITCHING_PROTOCOLS = 101,
    OK = 200, CREATED = 201, ACCEPTED = 202, NO_CONTENT = 204, PARTIAL_CONTENT = 206,
    SPECIAL_RESPONSE = 300, MOVED_PERMANENTLY = 301, MOVED_TEMPORARILY = 302, SEE_OTHER = 303,
    NOT_MODIFIED = 304, TEMPORARY_REDIRECT = 307, PERMANENT_REDIRECT = 308,
    BAD_REQUEST = 400, UNAUTHORIZED = 401, PAYMENT_REQUIRED = 402, FORBIDDEN = 403,
    NOT_FOUND = 404, NOT_ALLOWED = 405, NOT_ACCEPTABLE = 406, REQUEST_TIMEOUT = 408,
    CONFLICT = 409, GONE = 410, UPGRADE_REQUIRED = 426, TOO_MANY_REQUESTS = 429, CLOSE = 444,
    ILLEGAL = 451, INTERNAL_SERVER_ERROR = 500, METHOD_NOT_IMPLEMENTED = 501,
    BAD_GATEWAY = 502, SERVICE_UNAVAILABLE = 503, GATEWAY_TIMEOUT = 504,
    VERSION_NOT_SUPPORTED = 505, INSUFFICIENT_STORAGE = 507,
    -- The method constants of ngx.location.capture, kept because libraries refer to them.
    GET = 2, HEAD = 4, POST = 8, PUT = 16, DELETE = 32, MKCOL = 64, COPY = 128, MOVE = 256,
    OPTIONS = 512, PROPFIND = 1024, PROPPATCH = 2048, LOCK = 4096, UNLOCK = 8192,
    PATCH = 16384, TRACE = 32768,
}
for k, v in pairs(HTTP) do
    ngx["HTTP_" .. k] = v
end

-- ngx.log: nginx's levels onto the host log's four.
ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT, ngx.ERR = 0, 1, 2, 3, 4
ngx.WARN, ngx.NOTICE, ngx.INFO, ngx.DEBUG = 5, 6, 7, 8
local LOG_LEVEL = { [0] = "error", "error", "error", "error", "error", "warn", "info", "info",
    "debug" }
local LOG_NUM = { error = 0, warn = 1, info = 2, debug = 3 }

local function log_text(v, i, fname)
    local tv = type(v)
    if tv == "string" then
        return v
    elseif tv == "number" or tv == "boolean" or tv == "nil" then
        return tostring(v)
    elseif v == ngx.null then
        return "null"
    elseif tv == "table" then
        local mt = getmetatable(v)
        if mt and mt.__tostring then
            return tostring(v)
        end
    end
    error("bad argument #" .. i .. " to '" .. fname .. "' (expected table to have "
        .. "__tostring metamethod)", 3)
end

function ngx.log(level, ...)
    local name = LOG_LEVEL[level]
    if not name then
        error("bad argument #1 to 'log' (ngx.STDERR .. ngx.DEBUG expected, got "
            .. tostring(level) .. ")", 2)
    end
    if LOG_NUM[name] > C.mf_ffi_log_level() then
        return
    end
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do
        parts[i] = log_text((select(i, ...)), i + 1, "log")
    end
    -- Where the call is, as OpenResty prefixes it.
    local where = getinfo(2, "Sl")
    local prefix = "[lua] "
    if where then
        prefix = prefix .. (where.short_src or "?") .. ":" .. (where.currentline or 0) .. ": "
    end
    runtime.log(name, prefix .. concat(parts, "", 1, n))
end

ngx.print = req.print
ngx.say = req.say
ngx.flush = req.flush
ngx.exit = req.exit
ngx.redirect = req.redirect
ngx.header = req.header
ngx.var = req.var
ngx.req = req.req

ngx.re = require "moonfcgi.ngx.re"

for _, name in ipairs({ "encode_base64", "decode_base64", "escape_uri", "unescape_uri",
    "encode_args", "decode_args", "md5", "md5_bin", "sha1_bin", "hmac_sha1", "crc32_short",
    "crc32_long", "quote_sql_str" }) do
    ngx[name] = codec[name]
end

for _, name in ipairs({ "now", "time", "update_time", "today", "localtime", "utctime",
    "http_time", "cookie_time", "parse_http_time" }) do
    ngx[name] = time[name]
end

function ngx.sleep(seconds)
    return moonfcgi.sleep(seconds)
end

function ngx.get_phase()
    if runtime.loading() then
        return "init"
    end
    if runtime.current_request() then
        return "content"
    end
    return "init"
end

if not pcall(ffi.typeof, "struct mf_ngx_loaded") then
    ffi.cdef [[
struct mf_ngx_loaded { int unused; };
int mf_ngx_getpid(void) __asm__("getpid");
]]
end

ngx.worker = {
    id = function()
        return runtime.worker_number() - 1
    end,
    count = function()
        local w = runtime.worker()
        return w and C.mf_ffi_worker_count(w) or 1
    end,
    pid = function()
        return ffi.C.mf_ngx_getpid()
    end,
    exiting = function()
        local w = runtime.worker()
        return w ~= nil and C.mf_ffi_worker_exiting(w) ~= 0
    end,
}

-- ngx.config: the version numbers are those of the OpenResty API level this layer follows
-- (libraries compare ngx_lua_version to pick code paths).
ngx.config = {
    subsystem = "http",
    ngx_lua_version = 10026,
    nginx_version = 1022001,
    debug = false,
    -- The app's folder, where OpenResty gives nginx's prefix: where an app's files are.
    prefix = function()
        local path = runtime.app_path()
        return (path and path:match("^(.*)/[^/]*$") or ".") .. "/"
    end,
}

ngx.is_subrequest = false

-- Features of OpenResty that need nginx itself. Each name is a function that raises an
-- error naming the feature, so that a library can still be required and fails only where
-- it uses one.
local function not_provided(what, why)
    return function()
        error(what .. " is not provided by moonfcgi (" .. why .. ")", 2)
    end
end

local function feature_table(prefix, why, names)
    local t = {}
    for _, name in ipairs(names) do
        t[name] = not_provided(prefix .. "." .. name, why)
    end
    return setmetatable(t, {
        __index = function(_, name)
            return not_provided(prefix .. "." .. tostring(name), why)
        end,
    })
end

ngx.location = feature_table("ngx.location", "there are no nginx locations behind a "
    .. "FastCGI host", { "capture", "capture_multi" })
ngx.thread = feature_table("ngx.thread", "light threads are not built; use coroutines",
    { "spawn", "wait", "kill" })
for _, name in ipairs({ "socket", "raw_header", "set_header", "clear_header", "set_uri",
    "set_uri_args", "set_method", "set_body_data", "set_body_file", "init_body", "append_body",
    "finish_body", "start_time" }) do
    ngx.req[name] = not_provided("ngx.req." .. name, "the request comes from the web server "
        .. "as it is")
end
for _, name in ipairs({ "exec", "eof", "on_abort", "send_headers" }) do
    ngx[name] = not_provided("ngx." .. name, "not implemented in moonfcgi's ngx layer")
end

-- ngx.socket: moonfcgi.socket once the socket layer is present.
if package.searchpath("moonfcgi.socket", package.path) then
    ngx.socket = require "moonfcgi.socket"
else
    ngx.socket = feature_table("ngx.socket", "this build has no socket layer",
        { "tcp", "udp", "stream", "connect" })
end

-- ngx.shared.NAME: the dictionaries of --shared (docs/shared.md), the same objects as
-- moonfcgi.shared.NAME. Until the timer layer exists, timers say they are not there
-- (lua-resty-kafka's producer copies ngx.timer.at when it is required).
ngx.shared = moonfcgi.shared
ngx.timer = feature_table("ngx.timer", "this build has no timers",
    { "at", "every", "running_count", "pending_count" })

-- ngx.ctx and ngx.status read and write the current request; ngx.headers_sent reads it.
local getters = { ctx = req.get_ctx, status = req.get_status, headers_sent = req.headers_sent }
local setters = { ctx = req.set_ctx, status = req.set_status }

setmetatable(ngx, {
    __index = function(_, k)
        local g = getters[k]
        if g then
            return g()
        end
        return nil
    end,
    __newindex = function(t, k, v)
        local s = setters[k]
        if s then
            return s(v)
        end
        rawset(t, k, v)
    end,
})

_G.ngx = ngx
return ngx
