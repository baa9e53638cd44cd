-- The test API (docs/api.md, "Testing handlers with busted"). test.load() runs the app in this
-- very Lua state with the host's own loader and a worker of the real C core; app:request{}
-- sends real FastCGI records to that worker over a socketpair and runs its event loop until the
-- answer is complete.
local ffi = require "ffi"
local core = require "moonfcgi.core"
local runtime = require "moonfcgi.runtime"
local client = require "moonfcgi.client"
local shdict = require "moonfcgi.shdict"
local socket = require "moonfcgi.socket"

local C = core.C

local setmetatable, type, error, pairs, tonumber, tostring =
    setmetatable, type, error, pairs, tonumber, tostring
local math_floor = math.floor

local _M = {}
local App = {}
App.__index = App

local LEVELS = { none = -1, error = 0, warn = 1, info = 2, debug = 3 }

-- opts: max_conns, max_reqs, max_params, max_body, timeout, idle_timeout, read_timeout
-- (as on the command line, in bytes and seconds), log_level ("none", "error" (the
-- default), "warn", "info", "debug", or $MOONFCGI_LOG_LEVEL) and shared (name -> size,
-- "1m" or bytes: dictionaries of this app alone, as --shared declares them; app.shared
-- holds them, and app:close() unmaps them); resolver, resolver_timeout, resolver_valid and
-- resolver_ipv6 (a boolean) as --resolver and its friends; max_sockets, socket_timeout
-- (seconds), socket_buffer (bytes) and ssl_trusted_certificate (a PEM file) as
-- --max-sockets, --socket-timeout, --socket-buffer and --ssl-trusted-certificate.
function _M.load(path, opts)
    if type(path) ~= "string" then
        error("bad argument #1 to 'load' (path of an app file expected)", 2)
    end
    opts = opts or {}
    local o = ffi.new("mf_ffi_options_t")
    o.max_conns = opts.max_conns or 0
    o.max_reqs = opts.max_reqs or 0
    o.max_params = opts.max_params or 0
    o.max_body = opts.max_body or 0
    o.timeout = opts.timeout or 0
    o.idle_timeout = opts.idle_timeout or 0
    o.read_timeout = opts.read_timeout or 0
    local level = opts.log_level or os.getenv("MOONFCGI_LOG_LEVEL") or "error"
    o.log_level = LEVELS[level] or 0
    if opts.resolver ~= nil and type(opts.resolver) ~= "string" then
        error("bad option 'resolver' (a string of name servers expected)", 2)
    end
    local w = C.mf_ffi_worker_new(o)
    if w == nil then
        error("cannot create a worker", 2)
    end
    if opts.resolver or opts.resolver_timeout or opts.resolver_valid
        or opts.resolver_ipv6 ~= nil then
        if C.mf_ffi_resolver_configure(w, opts.resolver, tonumber(opts.resolver_timeout) or 0,
            tonumber(opts.resolver_valid) or 0, opts.resolver_ipv6 == false and 0 or 1) ~= 0 then
            C.mf_ffi_worker_free(w)
            error("bad option 'resolver' (IP, IP:PORT or [V6]:PORT, comma-separated): "
                .. tostring(opts.resolver), 2)
        end
    end
    if opts.max_sockets or opts.socket_timeout or opts.socket_buffer
        or opts.ssl_trusted_certificate then
        local ok, serr = socket.configure(w, opts.max_sockets, opts.socket_timeout,
            opts.socket_buffer, opts.ssl_trusted_certificate)
        if not ok then
            C.mf_ffi_worker_free(w)
            error("bad option 'ssl_trusted_certificate': " .. serr, 2)
        end
    end
    local dicts = {}
    if opts.shared ~= nil then
        if type(opts.shared) ~= "table" then
            error("bad option 'shared' (a table of name = size expected)", 2)
        end
        for name, size in pairs(opts.shared) do
            local ok, d = pcall(shdict.new, name, size)
            if not ok then
                for _, made in pairs(dicts) do
                    shdict.free(made)
                end
                C.mf_ffi_worker_free(w)
                error(d, 2)
            end
            dicts[name] = d
        end
    end
    local rt = runtime.new(w, dicts)
    local ok, err = rt:load(path)
    if not ok then
        C.mf_ffi_worker_close(w)
        rt:close()
        C.mf_ffi_worker_free(w)
        for _, d in pairs(dicts) do
            shdict.free(d)
        end
        error(err, 2)
    end
    return setmetatable({ rt = rt, w = w, path = path, shared = dicts }, App)
end

-- Runs the worker's loop once, waiting at most `seconds` (bounded to 10 ms a turn).
function App:step(seconds)
    local ms = math_floor((seconds or 0) * 1000)
    if ms > 10 then
        ms = 10
    elseif ms < 0 then
        ms = 0
    end
    self.rt:step(ms)
    C.mf_ffi_worker_flush(self.w)
end

-- A new connection to the app through the real core: the same API as moonfcgi.client's
-- connections (request, send, wait, send_raw, read_record, get_values, close, ...).
function App:connect(opts)
    if not self.w then
        error("the app was closed", 2)
    end
    local fdp = ffi.new("int[1]")
    local rc = C.mf_ffi_worker_pair(self.w, fdp)
    if rc < 0 then
        error("cannot create a connection (errno " .. -rc .. ")", 2)
    end
    return client.wrap_fd(fdp[0], {
        timeout = opts and opts.timeout or 30,
        idle = function(left)
            self:step(left)
        end,
    })
end

-- Sends one request and returns the result table of docs/api.md, "Testing handlers with
-- busted", or nil, err. opts: role, params, stdin, data (strings or lists of chunks), keep_conn
-- (default true: requests share one kept connection, as nginx does with fastcgi_keep_conn on),
-- timeout.
function App:request(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        error("bad argument #1 to 'request' (table expected)", 2)
    end
    local conn = self.conn
    if not conn or conn:closed() then
        conn = self:connect()
        self.conn = conn
    end
    local req = {}
    for k, v in pairs(opts) do
        req[k] = v
    end
    req.keep_conn = opts.keep_conn ~= false
    local res, err = conn:request(req)
    if not req.keep_conn or not res then
        conn:close()
        self.conn = nil
    end
    return res, err
end

-- Runs the loop for `seconds`, e.g. to let handlers that sleep make progress.
function App:run(seconds)
    runtime.drive(seconds)
end

-- Reloads the app file as SIGHUP does; returns true, or nil and the load error.
function App:reload()
    local ok, err = self.rt:load()
    if not ok then
        return nil, err
    end
    return true
end

-- Requests in flight and open connections in the core.
function App:stats()
    return {
        requests = C.mf_ffi_worker_requests(self.w),
        connections = C.mf_ffi_worker_connections(self.w),
    }
end

function App:close()
    if self.conn then
        self.conn:close()
        self.conn = nil
    end
    if self.w then
        -- In this order: the core ends what it holds, Lua lets go of what pointed into it,
        -- then the memory goes.
        C.mf_ffi_worker_close(self.w)
        self.rt:close()
        C.mf_ffi_worker_free(self.w)
        self.w = nil
        for _, d in pairs(self.shared) do
            shdict.free(d)
        end
    end
end

return _M
