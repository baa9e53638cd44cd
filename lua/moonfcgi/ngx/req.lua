-- The current request through ngx (cosocket.md section 5): ngx.var, ngx.ctx, ngx.req.*,
-- ngx.status, ngx.header, ngx.print, ngx.say, ngx.flush, ngx.exit, ngx.redirect. Each one
-- calls the methods of moonfcgi's own request object (request.lua) of the handler that runs
-- now: there is one implementation of reading params, the body and writing output.
local runtime = require "moonfcgi.runtime"
local core = require "moonfcgi.core"
local codec = require "moonfcgi.ngx.codec"

local type, tostring, tonumber, pairs, error, select, setmetatable, rawget, rawset, next =
    type, tostring, tonumber, pairs, error, select, setmetatable, rawget, rawset, next
local concat = table.concat
local lower, upper, gsub, sub, find, match = string.lower, string.upper, string.gsub, string.sub,
    string.find, string.match
local floor = math.floor

local C = core.C

local _M = {}

-- Set by init.lua: the light userdata that stands for a null (cjson.null).
local null
function _M.set_null(v)
    null = v
end

local function log(level, msg)
    runtime.log(level, msg)
end

-- The request of the running handler, or an error naming the call (OpenResty's words).
local function current(fname, level)
    local req = runtime.current_request()
    if not req or req._r == nil then
        error("no request found (ngx." .. fname .. " is only available in a handler)",
            (level or 2) + 1)
    end
    return req
end

-- ngx.ctx: one table per request, made on first use.
local outside_ctx = {}

function _M.get_ctx()
    local req = runtime.current_request()
    if not req then
        return outside_ctx
    end
    local ctx = rawget(req, "_ngx_ctx")
    if not ctx then
        ctx = {}
        rawset(req, "_ngx_ctx", ctx)
    end
    return ctx
end

function _M.set_ctx(t)
    if type(t) ~= "table" then
        error("ctx should be a table while getting a " .. type(t), 3)
    end
    local req = runtime.current_request()
    if not req then
        outside_ctx = t
        return
    end
    rawset(req, "_ngx_ctx", t)
end

-- ngx.status: what set_status chose, else the role's default.
function _M.get_status()
    local req = current("status", 2)
    local s = C.mf_ffi_req_status(req._r)
    if s == 0 then
        return req.role == "authorizer" and 401 or 200
    end
    return s
end

function _M.set_status(v)
    local req = current("status", 2)
    local s = tonumber(v)
    if not s or s ~= floor(s) or s < 100 or s > 999 then
        error("bad value for ngx.status (an HTTP status code from 100 to 999 expected, got "
            .. tostring(v) .. ")", 3)
    end
    if req:headers_sent() then
        log("error", "attempt to set ngx.status after sending out response headers")
        return
    end
    req:set_status(s)
end

function _M.headers_sent()
    return current("headers_sent", 2):headers_sent()
end

-- Output values as OpenResty's ngx.print takes them: strings, numbers, booleans, nil,
-- ngx.null, and (nested) array tables of those.
local function flatten(v, parts, n, fname, argi)
    local tv = type(v)
    if tv == "string" then
        n = n + 1
        parts[n] = v
    elseif tv == "number" or tv == "boolean" or tv == "nil" then
        n = n + 1
        parts[n] = tostring(v)
    elseif v == null then
        n = n + 1
        parts[n] = "null"
    elseif tv == "table" then
        local len = #v
        for k in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > len or k ~= floor(k) then
                error("bad argument #" .. argi .. " to '" .. fname .. "' (non-array table found)",
                    4)
            end
        end
        for i = 1, len do
            n = flatten(v[i], parts, n, fname, argi)
        end
    else
        error("bad argument #" .. argi .. " to '" .. fname .. "' (string, number, boolean, nil, "
            .. "ngx.null or array table expected, got " .. tv .. ")", 4)
    end
    return n
end

local function output(fname, newline, ...)
    local req = current(fname, 3)
    local parts, n = {}, 0
    for i = 1, select("#", ...) do
        n = flatten((select(i, ...)), parts, n, fname, i)
    end
    if newline then
        n = n + 1
        parts[n] = "\n"
    end
    local ok, err = req:write(concat(parts, "", 1, n))
    if not ok then
        return nil, err
    end
    return 1
end

function _M.print(...)
    return output("print", false, ...)
end

function _M.say(...)
    return output("say", true, ...)
end

-- ngx.flush([wait]): the request object's flush always waits until the bytes are written;
-- without wait there is nothing to gain from returning earlier in a FastCGI host.
function _M.flush()
    local ok, err = current("flush"):flush()
    if not ok then
        return nil, err
    end
    return 1
end

local REASONS = {
    [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found",
    [303] = "See Other", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
    [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
    [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
    [406] = "Not Acceptable", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
    [413] = "Content Too Large", [426] = "Upgrade Required", [429] = "Too Many Requests",
    [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
    [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- The short page nginx would send for a special status when the handler sent nothing.
local function status_page(req, status)
    local title = status .. (REASONS[status] and " " .. REASONS[status] or "")
    req:set_header("Content-Type", "text/html; charset=utf-8")
    req:write("<html>\n<head><title>", title, "</title></head>\n<body>\n<h1>", title,
        "</h1>\n</body>\n</html>\n")
end

-- ngx.exit(status): ends the handler. With status >= 200 and nothing sent yet, the response
-- gets that status (and a short page from 300 on, but not for 304); ngx.OK (0) just ends;
-- ngx.ERROR and other negative codes answer 500 if nothing was sent.
function _M.exit(status)
    local req = current("exit")
    local s = tonumber(status)
    if not s or s ~= floor(s) then
        error("bad argument #1 to 'exit' (an integer status expected, got " .. tostring(status)
            .. ")", 2)
    end
    if s < 0 then
        s = 500
    end
    if s >= 200 and s <= 999 and not req:headers_sent() then
        req:set_status(s)
        if s >= 300 and s ~= 304 then
            status_page(req, s)
        end
    end
    runtime.exit(0)
end

local REDIRECTS = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

function _M.redirect(uri, status)
    local req = current("redirect")
    if type(uri) ~= "string" then
        error("bad argument #1 to 'redirect' (string expected, got " .. type(uri) .. ")", 2)
    end
    status = status or 302
    if not REDIRECTS[status] then
        error("only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, "
            .. "ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and "
            .. "ngx.HTTP_TEMPORARY_REDIRECT are allowed", 2)
    end
    if find(uri, "[\r\n%z]") then
        error("bad argument #1 to 'redirect' (no CR, LF or NUL allowed in the URI)", 2)
    end
    if req:headers_sent() then
        error("attempt to call ngx.redirect after sending out the headers", 2)
    end
    req:set_header("Location", uri)
    return _M.exit(status)
end

-- ngx.header: writing sets a response header (underscores become hyphens, as OpenResty
-- does by default; nil or {} removes it); reading returns what was set through ngx.header.
local function header_key(name)
    return lower((gsub(name, "_", "-")))
end

_M.header = setmetatable({}, {
    __index = function(_, name)
        if type(name) ~= "string" then
            return nil
        end
        local req = current("header", 2)
        local set = rawget(req, "_ngx_headers")
        return set and set[header_key(name)]
    end,
    __newindex = function(_, name, value)
        if type(name) ~= "string" then
            error("bad ngx.header name (string expected, got " .. type(name) .. ")", 2)
        end
        local req = current("header", 2)
        local hname = gsub(name, "_", "-")
        if req:headers_sent() then
            log("error", "attempt to set ngx.header." .. name .. " after sending out response "
                .. "headers")
            return
        end
        if type(value) == "table" and next(value) == nil then
            value = nil
        end
        req:set_header(hname, value)
        local set = rawget(req, "_ngx_headers")
        if not set then
            set = {}
            rawset(req, "_ngx_headers", set)
        end
        set[lower(hname)] = value
    end,
})

-- ngx.var: the request's params by upper-cased name (read-only), with the nginx variables
-- that FastCGI does not pass under their own name.
local function param(req, name)
    return req:param(name)
end

local function query_arg(qs, name)
    if not qs then
        return nil
    end
    for pair in (qs .. "&"):gmatch("([^&]*)&") do
        local k, v = match(pair, "^([^=]*)=?(.*)$")
        if lower(k) == name then
            return v
        end
    end
    return nil
end

local VARS = {
    scheme = function(req)
        local s = param(req, "REQUEST_SCHEME")
        if s then
            return s
        end
        local https = param(req, "HTTPS")
        return (https and lower(https) == "on") and "https" or "http"
    end,
    uri = function(req)
        return param(req, "DOCUMENT_URI") or match(param(req, "REQUEST_URI") or "", "^[^?]*")
    end,
    args = function(req)
        return param(req, "QUERY_STRING")
    end,
    is_args = function(req)
        local qs = param(req, "QUERY_STRING")
        return (qs and qs ~= "") and "?" or ""
    end,
    host = function(req)
        local h = param(req, "HTTP_HOST")
        if h then
            return lower((match(h, "^(%[.-%])") or match(h, "^[^:]*")))
        end
        return param(req, "SERVER_NAME")
    end,
    request_body = function(req)
        return rawget(req, "_ngx_body")
    end,
}
VARS.query_string = VARS.args
VARS.document_uri = VARS.uri

_M.var = setmetatable({}, {
    __index = function(_, name)
        if type(name) ~= "string" then
            return nil
        end
        local req = current("var", 2)
        local key = lower(name)
        local f = VARS[key]
        if f then
            return f(req)
        end
        if sub(key, 1, 4) == "arg_" then
            return query_arg(param(req, "QUERY_STRING"), sub(key, 5))
        end
        if sub(key, 1, 7) == "cookie_" then
            local cookies = param(req, "HTTP_COOKIE")
            if cookies then
                local want = sub(name, 8)
                for k, v in (cookies .. ";"):gmatch("%s*([^=;]+)=?([^;]*);") do
                    if k == want then
                        return v
                    end
                end
            end
            return nil
        end
        return param(req, upper(name))
    end,
    __newindex = function(_, name)
        error("ngx.var." .. tostring(name) .. " cannot be set: moonfcgi's ngx.var is read-only "
            .. "(the request's FastCGI params)", 2)
    end,
})

-- ngx.req.*

local req_api = {}
_M.req = req_api

function req_api.get_method()
    return current("req.get_method").method
end

function req_api.http_version()
    local p = current("req.http_version"):param("SERVER_PROTOCOL")
    return p and tonumber(match(p, "^HTTP/(%d+%.?%d*)$"))
end

function req_api.is_internal()
    current("req.is_internal")
    return false
end

local headers_mt = {
    __index = function(t, k)
        if type(k) ~= "string" then
            return nil
        end
        local norm = header_key(k)
        if norm ~= k then
            return rawget(t, norm)
        end
        return nil
    end,
}

-- Request headers from the HTTP_* params (and CONTENT_TYPE, CONTENT_LENGTH): lower-case
-- names with hyphens; a header sent twice (as two params) is a list. At most max (default
-- 100, 0: no limit); past it the second value is "truncated".
function req_api.get_headers(max)
    local req = current("req.get_headers")
    max = tonumber(max) or 100
    local t, count = {}, 0
    for name, value in req:each_param() do
        local h
        if sub(name, 1, 5) == "HTTP_" then
            h = header_key(sub(name, 6))
        elseif name == "CONTENT_TYPE" or name == "CONTENT_LENGTH" then
            h = header_key(name)
        end
        if h then
            if max > 0 and count >= max then
                return setmetatable(t, headers_mt), "truncated"
            end
            count = count + 1
            local old = t[h]
            if old == nil then
                t[h] = value
            elseif type(old) == "table" then
                old[#old + 1] = value
            else
                t[h] = { old, value }
            end
        end
    end
    return setmetatable(t, headers_mt)
end

function req_api.get_uri_args(max)
    return codec.decode_args(current("req.get_uri_args"):param("QUERY_STRING") or "", max)
end

-- Reads the whole body (req:body()); a body past --max-body ends the request with 413, a
-- request whose input timed out with 408, an aborted one just ends.
function req_api.read_body()
    local req = current("req.read_body")
    if rawget(req, "_ngx_body") then
        return
    end
    local body, err = req:body()
    if body then
        rawset(req, "_ngx_body", body)
        return
    end
    log("info", "ngx.req.read_body: " .. tostring(err))
    if err == "too large" then
        return _M.exit(413)
    elseif err == "timeout" then
        return _M.exit(408)
    end
    return _M.exit(0)
end

function req_api.discard_body()
    current("req.discard_body")
end

function req_api.get_body_data()
    local body = rawget(current("req.get_body_data"), "_ngx_body")
    if body == "" then
        return nil
    end
    return body
end

function req_api.get_body_file()
    current("req.get_body_file")
    return nil
end

function req_api.get_post_args(max)
    local body = rawget(current("req.get_post_args"), "_ngx_body")
    if not body then
        return nil, "request body not read yet (call ngx.req.read_body() first)"
    end
    return codec.decode_args(body, max)
end

return _M
