-- The request object (docs/api.md, "The request object"): a thin wrapper over the FFI functions of
-- src/ffi.c. C reports MF_WAIT where a call must wait; this side yields (request.wait_io is
-- set by runtime.lua) and asks again once the scheduler resumes it.
local ffi = require "ffi"
local core = require "moonfcgi.core"

local C = core.C
local ffi_string = ffi.string
local type, tostring, tonumber, select, error, rawget, rawset, setmetatable =
    type, tostring, tonumber, select, error, rawget, rawset, setmetatable
local concat = table.concat
local math_floor = math.floor

local OK, EOF, WAIT = C.MF_OK, C.MF_EOF, C.MF_WAIT
local BAD_STATE, BAD_VALUE = C.MF_BAD_STATE, C.MF_BAD_VALUE
local ERRORS = {
    [tonumber(C.MF_ABORTED)] = "aborted",
    [tonumber(C.MF_TIMEOUT)] = "timeout",
    [tonumber(C.MF_TOO_LARGE)] = "too large",
    [tonumber(C.MF_NO_MEMORY)] = "out of memory",
}

-- The nil, message answer of a call C refused with rc.
local function failed(rc)
    return nil, ERRORS[rc] or "error " .. rc
end

local _M = {}

-- Out-parameters, reused by every call (the worker runs one coroutine at a time).
local pp, pl = ffi.new("const char *[1]"), ffi.new("size_t[1]")
local pn, pnl = ffi.new("const char *[1]"), ffi.new("size_t[1]")

local methods = {}
local lazy = {}

local function R(self, level)
    local r = self._r
    if r == nil then
        error("the request has ended", (level or 2) + 1)
    end
    return r
end

local function wait()
    _M.wait_io()
end

-- Params

local function param(r, name)
    if C.mf_ffi_req_param(r, name, #name, pp, pl) == OK then
        return ffi_string(pp[0], pl[0])
    end
    return nil
end

function methods.param(self, name)
    if type(name) ~= "string" then
        error("bad argument #1 to 'param' (string expected, got " .. type(name) .. ")", 2)
    end
    return param(R(self), name)
end

function methods.each_param(self)
    local r = R(self)
    local i, n = 0, C.mf_ffi_req_param_count(r)
    return function()
        if i >= n or self._r == nil then
            return nil
        end
        C.mf_ffi_req_param_at(r, i, pn, pnl, pp, pl)
        i = i + 1
        return ffi_string(pn[0], pnl[0]), ffi_string(pp[0], pl[0])
    end
end

local readonly = {
    __newindex = function()
        error("req.params is read-only", 2)
    end,
}

function lazy.params(self)
    local r = R(self, 2)
    local t = {}
    for i = 0, C.mf_ffi_req_param_count(r) - 1 do
        C.mf_ffi_req_param_at(r, i, pn, pnl, pp, pl)
        t[ffi_string(pn[0], pnl[0])] = ffi_string(pp[0], pl[0])
    end
    return setmetatable(t, readonly)
end

function lazy.method(self)
    return param(R(self, 2), "REQUEST_METHOD")
end

function lazy.uri(self)
    return param(R(self, 2), "REQUEST_URI")
end

local header_keys, nheader_keys = {}, 0

function methods.header(self, name)
    if type(name) ~= "string" then
        error("bad argument #1 to 'header' (string expected, got " .. type(name) .. ")", 2)
    end
    local key = header_keys[name]
    if not key then
        key = name:upper():gsub("-", "_")
        if key ~= "CONTENT_TYPE" and key ~= "CONTENT_LENGTH" then
            key = "HTTP_" .. key
        end
        if nheader_keys > 1000 then
            header_keys, nheader_keys = {}, 0
        end
        header_keys[name], nheader_keys = key, nheader_keys + 1
    end
    return param(R(self), key)
end

-- Input

local function check_stream(self, stream, fname)
    if stream == 1 and self.role ~= "filter" then
        error(fname .. " is only available in the filter role", 3)
    end
end

local function read(self, stream, n, fname)
    local r = R(self, 2)
    check_stream(self, stream, fname)
    if n ~= nil then
        n = tonumber(n)
        if not n or n < 0 then
            error("bad argument #1 to '" .. fname .. "' (non-negative number expected)", 2)
        end
        if n == 0 then
            return ""
        end
        n = math_floor(n)
    end
    while true do
        local rc = C.mf_ffi_req_read(r, stream, n or 0, pp, pl)
        if rc == OK then
            local len = pl[0]
            local s = ffi_string(pp[0], len)
            C.mf_ffi_req_consume(r, stream, len)
            return s
        elseif rc == EOF then
            return nil
        elseif rc == WAIT then
            wait()
        else
            return failed(rc)
        end
    end
end

local function whole(self, stream, fname, key)
    local cached = rawget(self, key)
    if cached then
        return cached
    end
    local r = R(self, 2)
    check_stream(self, stream, fname)
    while true do
        local rc = C.mf_ffi_req_body(r, stream, pp, pl)
        if rc == OK then
            local len = pl[0]
            local s = ffi_string(pp[0], len)
            C.mf_ffi_req_consume(r, stream, len)
            rawset(self, key, s)
            return s
        elseif rc == WAIT then
            wait()
        else
            return failed(rc)
        end
    end
end

function methods.read(self, n)
    return read(self, 0, n, "read")
end

function methods.body(self)
    return whole(self, 0, "body", "_body")
end

function methods.read_data(self, n)
    return read(self, 1, n, "read_data")
end

function methods.data(self)
    return whole(self, 1, "data", "_data")
end

-- Output

local function state_error(rc, what)
    if rc == BAD_STATE then
        error(what, 3)
    elseif rc == BAD_VALUE then
        error("invalid value", 3)
    end
end

function methods.set_status(self, code, reason)
    local r = R(self)
    if type(code) ~= "number" or code ~= math_floor(code) or code < 100 or code > 999 then
        error("bad argument #1 to 'set_status' (an HTTP status code from 100 to 999 expected)", 2)
    end
    if reason ~= nil and type(reason) ~= "string" then
        error("bad argument #2 to 'set_status' (string expected, got " .. type(reason) .. ")", 2)
    end
    local rc = C.mf_ffi_req_set_status(r, code, reason, reason and #reason or 0)
    if rc == BAD_VALUE then
        error("bad argument #2 to 'set_status' (no CR, LF or NUL allowed)", 2)
    end
    state_error(rc, "set_status: the headers were already sent (or raw_write was used)")
    return true
end

local function set_header(self, name, value, fname)
    local r = R(self, 2)
    if type(name) ~= "string" then
        error("bad argument #1 to '" .. fname .. "' (string expected, got " .. type(name) .. ")", 2)
    end
    local tv = type(value)
    local rc
    if value == nil then
        rc = C.mf_ffi_req_set_header(r, name, #name, nil, 0, 0)
    elseif tv == "string" or tv == "number" then
        value = tostring(value)
        rc = C.mf_ffi_req_set_header(r, name, #name, value, #value, 0)
    elseif tv == "table" then
        rc = C.mf_ffi_req_set_header(r, name, #name, nil, 0, 0)
        for i = 1, #value do
            if rc ~= OK then
                break
            end
            local v = value[i]
            if type(v) ~= "string" and type(v) ~= "number" then
                error("bad argument #2 to '" .. fname .. "' (a list of strings expected)", 2)
            end
            v = tostring(v)
            rc = C.mf_ffi_req_set_header(r, name, #name, v, #v, 1)
        end
    else
        error("bad argument #2 to '" .. fname .. "' (string, number or list expected, got "
            .. tv .. ")", 2)
    end
    if rc == BAD_VALUE then
        error(fname .. ": invalid header name or value (" .. name .. ")", 2)
    end
    state_error(rc, fname .. ": the headers were already sent (or raw_write was used)")
    return true
end

function methods.set_header(self, name, value)
    return set_header(self, name, value, "set_header")
end

function methods.set_variable(self, name, value)
    if self.role ~= "authorizer" then
        error("set_variable is only available in the authorizer role", 2)
    end
    if type(name) ~= "string" then
        error("bad argument #1 to 'set_variable' (string expected, got " .. type(name) .. ")", 2)
    end
    return set_header(self, "Variable-" .. name, value, "set_variable")
end

-- Strings at least this long are sent by reference: the connection's output points into
-- the Lua string, which stays pinned until libevent is done with it (runtime.lua unpins).
local REF_MIN = 32 * 1024
local nrefs = ffi.new("int[1]")
local write_fn = C.mf_ffi_req_write

-- A write C refused: misuse is an error, a lost connection or a limit a nil, err result.
local function written(rc)
    if rc == BAD_STATE then
        error("raw_write cannot be mixed with set_status, set_header or write", 3)
    end
    return failed(rc)
end

-- Queues one value; returns what C answered. Error levels: 1 is this function, 2 write(),
-- 3 the handler (methods.write tail-calls write, so it has no frame of its own).
local function write_value(r, fn, fname, i, v)
    local tv = type(v)
    if tv == "number" then
        v = tostring(v)
    elseif tv ~= "string" then
        error("bad argument #" .. i .. " to '" .. fname .. "' (string or number expected, got "
            .. tv .. ")", 3)
    end
    if fn == write_fn and #v >= REF_MIN then
        local token = _M.pin(v)
        local rc = C.mf_ffi_req_write_ref(r, v, #v, token, nrefs)
        _M.pinned(token, nrefs[0])
        return rc
    end
    return fn(r, v, #v)
end

-- n is the number of values, v1 the first; the others follow. The first is a parameter,
-- not taken from the varargs: LuaJIT 2.1 (Debian 12's) could compile (...) to the second
-- value here.
local function write(self, fn, fname, n, v1, ...)
    local r = R(self, 2)
    if n == 0 then
        return true
    end
    -- The first value outside the loop: most writes have one, and LuaJIT does not compile a
    -- loop that runs once and leaves the function (such a write ran interpreted every time).
    local rc = write_value(r, fn, fname, 1, v1)
    local waiting = rc == WAIT
    if rc ~= OK and rc ~= WAIT then
        local ok, err = written(rc) -- not a tail call: the error level counts this frame
        return ok, err
    end
    for i = 2, n do
        rc = write_value(r, fn, fname, i, (select(i - 1, ...)))
        if rc == WAIT then
            waiting = true
        elseif rc ~= OK then
            local ok, err = written(rc)
            return ok, err
        end
    end
    while waiting do
        wait()
        rc = C.mf_ffi_req_writable(r)
        if rc == OK then
            break
        elseif rc ~= WAIT then
            return failed(rc)
        end
    end
    return true
end

function methods.write(self, ...)
    return write(self, C.mf_ffi_req_write, "write", select("#", ...), ...)
end

function methods.raw_write(self, ...)
    return write(self, C.mf_ffi_req_raw_write, "raw_write", select("#", ...), ...)
end

function methods.flush(self)
    local r = R(self)
    while true do
        local rc = C.mf_ffi_req_flush(r)
        if rc == OK then
            return true
        elseif rc == WAIT then
            wait()
        else
            return failed(rc)
        end
    end
end

function methods.log(self, ...)
    local r = R(self)
    local n = select("#", ...)
    local parts = { ... }
    for i = 1, n do
        parts[i] = tostring(parts[i])
    end
    local line = concat(parts, " ", 1, n) .. "\n"
    local rc = C.mf_ffi_req_stderr(r, line, #line)
    if rc ~= OK then
        return failed(rc)
    end
    return true
end

function methods.aborted(self)
    local r = self._r
    return r == nil or C.mf_ffi_req_aborted(r) ~= 0
end

function methods.headers_sent(self)
    return C.mf_ffi_req_headers_sent(R(self)) ~= 0
end

local mt = {
    __index = function(self, k)
        local m = methods[k]
        if m ~= nil then
            return m
        end
        local f = lazy[k]
        if f then
            local v = f(self)
            rawset(self, k, v)
            return v
        end
        return nil
    end,
    __tostring = function(self)
        return "moonfcgi request " .. tostring(self.id) .. " (" .. tostring(self.role) .. ")"
    end,
}

_M.methods = methods

function _M.new(r, id, role, keep_conn)
    return setmetatable({ _r = r, id = id, role = role, keep_conn = keep_conn }, mt)
end

return _M
