-- Outbound sockets for handlers: moonfcgi.socket, also ngx.socket (cosocket.md section 2).
-- The C side (src/socket.c) never waits: a call that cannot finish returns MF_SOCK_WAIT, this
-- side waits for the socket's token (runtime.wait) and calls again. Here live what C does not
-- need to know: which thread owns a socket, the busy checks, the argument rules and the
-- connection pools of each worker.
local ffi = require "ffi"
local core = require "moonfcgi.core"
local runtime = require "moonfcgi.runtime"

local _M = {}

-- Kept verbatim in step with the CDEF part of src/socket.h (spec/lua/cdef_spec.lua checks it).
_M.cdef = [[
typedef struct mf_sock mf_sock_t;
typedef struct mf_sock_session mf_sock_session_t;

enum {
    MF_SOCK_OK = 0,
    MF_SOCK_WAIT = 1,
    MF_SOCK_ERROR = -1,
    MF_SOCK_TIMEOUT = -2,
    MF_SOCK_CLOSED = -3,
    MF_SOCK_TOO_LARGE = -4
};

enum { MF_SOCK_TCP = 1, MF_SOCK_UDP = 2 };

enum { MF_SOCK_READ_LINE = 1, MF_SOCK_READ_ALL = 2, MF_SOCK_READ_SIZE = 3, MF_SOCK_READ_ANY = 4 };

mf_sock_t *mf_ffi_sock_new(mf_worker_t *w, int kind, uint64_t token);
void mf_ffi_sock_free(mf_sock_t *s);
int mf_ffi_sock_close(mf_sock_t *s);
int mf_ffi_sock_is_open(mf_sock_t *s);
const char *mf_ffi_sock_errmsg(mf_sock_t *s);
void mf_ffi_sock_wake(mf_sock_t *s);
int mf_ffi_sock_configure(mf_worker_t *w, int max_sockets, double timeout, size_t buffer);
double mf_ffi_sock_default_timeout(mf_worker_t *w);
unsigned mf_ffi_sock_count(mf_worker_t *w);

int mf_ffi_sock_connect(mf_sock_t *s, const char *host, int port, double timeout);
int mf_ffi_sock_connecting(mf_sock_t *s);

int mf_ffi_sock_send_add(mf_sock_t *s, const char *p, size_t len);
int mf_ffi_sock_send(mf_sock_t *s, double timeout);

int mf_ffi_sock_receive(mf_sock_t *s, int mode, size_t size, double timeout, const char **p,
                        size_t *len);
int mf_ffi_sock_receive_until(mf_sock_t *s, const char *pat, size_t patlen, size_t size,
                              int inclusive, double timeout, const char **p, size_t *len,
                              int *found);
int mf_ffi_sock_pause(mf_sock_t *s, double timeout);

int mf_ffi_sock_setoption(mf_sock_t *s, const char *name, int value);
int mf_ffi_sock_keepalive_check(mf_sock_t *s);
int mf_ffi_sock_park(mf_sock_t *s, double idle);
int mf_ffi_sock_unpark(mf_sock_t *s);

int mf_ffi_sock_sslhandshake(mf_sock_t *s, mf_sock_session_t *reuse, const char *server_name,
                             int verify, int want_session, double timeout,
                             mf_sock_session_t **session);
int mf_ffi_sock_ssl_reused(mf_sock_t *s);
void mf_ffi_sock_session_free(mf_sock_session_t *sess);
int mf_ffi_sock_set_trusted(mf_worker_t *w, const char *path);
]]

ffi.cdef(_M.cdef)

local C = core.C
local ffi_string, ffi_gc, ffi_cast = ffi.string, ffi.gc, ffi.cast
local type, tostring, tonumber, error, setmetatable, getmetatable, pairs, pcall =
    type, tostring, tonumber, error, setmetatable, getmetatable, pairs, pcall
local math_floor = math.floor
local newproxy = newproxy

local OK, WAIT, TIMEOUT = C.MF_SOCK_OK, C.MF_SOCK_WAIT, C.MF_SOCK_TIMEOUT
local TCP, UDP = C.MF_SOCK_TCP, C.MF_SOCK_UDP
local READ_LINE, READ_ALL, READ_SIZE, READ_ANY =
    C.MF_SOCK_READ_LINE, C.MF_SOCK_READ_ALL, C.MF_SOCK_READ_SIZE, C.MF_SOCK_READ_ANY

local LOAD_TIME = "cosockets are not available while the app loads"
local NO_THREAD = "cosockets are not available outside a handler"
local DEFAULT_POOL_SIZE = 30
local DEFAULT_IDLE = 60
local UDP_MAX = 65536

-- Out-parameters, reused by every call (one coroutine of the worker runs at a time).
local pp, pl, pfound = ffi.new("const char *[1]"), ffi.new("size_t[1]"), ffi.new("int[1]")
local psession = ffi.new("mf_sock_session_t *[1]")
local session_t = ffi.typeof("mf_sock_session_t *")

local function log_debug(msg)
    if C.mf_ffi_log_level() >= 3 then
        runtime.log("debug", msg)
    end
end

-- Pools ----------------------------------------------------------------------------------
-- Per worker, per key: { key, size (nil until a connect's pool_size or a setkeepalive sets
-- it), total (this pool's connections: in use, connecting or idle), idle (oldest first:
-- { s, token, reused }), queue (connects waiting for room, oldest first: their st) }.
local pools_of = {}

local function worker_key(w)
    return tonumber(ffi_cast("uintptr_t", w))
end

local function get_pool(w, key)
    local wk = worker_key(w)
    local pools = pools_of[wk]
    if not pools then
        pools = {}
        pools_of[wk] = pools
    end
    local pool = pools[key]
    if not pool then
        pool = { key = key, total = 0, idle = {}, queue = {} }
        pools[key] = pool
    end
    return pool
end

-- Lets the first queued connect look again (the pool got room or an idle connection).
local function wake_queue(pool)
    local st = pool.queue[1]
    if st and st.s then
        C.mf_ffi_sock_wake(st.s)
    end
end

local function dequeue(pool, st)
    local q = pool.queue
    for i = 1, #q do
        if q[i] == st then
            table.remove(q, i)
            return
        end
    end
end

-- Drops idle connections that died in the pool (data, EOF or idle time: socket.c closed them).
local function prune(pool)
    local idle, j = pool.idle, 0
    for i = 1, #idle do
        local e = idle[i]
        if C.mf_ffi_sock_is_open(e.s) ~= 0 then
            j = j + 1
            idle[j] = e
        else
            pool.total = pool.total - 1
        end
    end
    for i = #idle, j + 1, -1 do
        idle[i] = nil
    end
end

-- The most recently pooled live connection, taken out of the pool; or nil.
local function checkout(pool)
    local idle = pool.idle
    while #idle > 0 do
        local e = idle[#idle]
        idle[#idle] = nil
        if C.mf_ffi_sock_unpark(e.s) == OK then
            e.s = ffi_gc(e.s, nil) -- owned by the socket object (its proxy) from now on
            return e
        end
        pool.total = pool.total - 1
    end
end

-- Socket state ---------------------------------------------------------------------------
-- st (one per socket object; the object itself may be collected while its thread runs):
-- s (the C socket or nil), token, kind, owner (the thread), pool (the pool whose total
-- counts this connection), key, reused, invalid (a timeout or error happened), the busy flags
-- reading / writing / connecting, timeouts ct / wt / rt (seconds, 0: the default), and
-- cleanup (the thread the cleanup is registered with).

local function unregister(st)
    local th = st.cleanup
    if th then
        st.cleanup = nil
        runtime.remove_cleanup(th, st)
    end
end

-- The connection is gone (closed here or by socket.c): the pool gets its room back.
local function released(st)
    local pool = st.pool
    if pool then
        st.pool = nil
        pool.total = pool.total - 1
        wake_queue(pool)
    end
    st.reading, st.writing, st.connecting = nil, nil, nil
end

local function close_conn(st)
    local s = st.s
    if s ~= nil then
        C.mf_ffi_sock_close(s)
    end
    if st.queued then
        dequeue(st.queued, st)
        st.queued = nil
    end
    released(st)
    unregister(st)
end

-- After a C call that failed: the error text; releases the connection if C closed it.
local function failed(st)
    local s = st.s
    local err = ffi_string(C.mf_ffi_sock_errmsg(s))
    if C.mf_ffi_sock_is_open(s) == 0 then
        released(st)
        unregister(st)
    else
        st.invalid = true
    end
    return err
end

local function is_open(st)
    return st.s ~= nil and C.mf_ffi_sock_is_open(st.s) ~= 0
end

-- When the thread ends with the socket open: close it (and say so at debug level).
local function register(st, th)
    if st.cleanup then
        return
    end
    st.cleanup = th
    if C.mf_ffi_log_level() >= 3 then
        local req = th.req
        local ok, uri = pcall(function()
            return req and req.uri
        end)
        st.uri = ok and uri or nil
    end
    runtime.add_cleanup(th, st, function()
        st.cleanup = nil
        if is_open(st) then
            log_debug("request " .. tostring(st.uri or "?") .. " ended with a socket to "
                .. tostring(st.key) .. " open: closed")
        end
        close_conn(st)
    end)
end

-- The thread the call runs in, after the ownership check; or nil and the error.
local function thread_of(st, level)
    local th = runtime.current_thread()
    if not th then
        return nil, runtime.loading() and LOAD_TIME or NO_THREAD
    end
    local owner = st.owner
    if owner == nil then
        st.owner = th
    elseif owner ~= th then
        error("bad request", level + 1)
    end
    return th
end

-- A C socket for st: the one it has, or a new one.
local function ensure(st)
    if st.s == nil then
        local w = runtime.worker()
        local token = runtime.new_token()
        local s = w and C.mf_ffi_sock_new(w, st.kind, token)
        if s == nil then
            return nil, "out of memory"
        end
        st.s = s
        st.token = token
    end
    return st.s
end

-- obj (the socket object) is held while its operation waits: nothing else may reference it
-- then (sock:receive() on a temporary), and its collection would free the C socket under the
-- operation.
local function wait(st, obj)
    st.hold = obj
    runtime.wait(st.token)
    st.hold = nil
end

local function busy(st)
    if st.connecting then
        return "socket busy connecting"
    elseif st.reading then
        return "socket busy reading"
    elseif st.writing then
        return "socket busy writing"
    end
end

-- A socket object: { _st = st, _gc = proxy }. Who frees a C socket: the proxy of the object
-- whose st holds it, when the object is collected (st may outlive it in its thread's cleanup,
-- which then finds st.s gone); or, while it is pooled, ffi.gc on the pool entry's cdata. One
-- owner at a time, handed over by setkeepalive and checkout, so nothing is freed twice.
local function new_object(kind, mt)
    local st = { kind = kind, ct = 0, wt = 0, rt = 0, reused = 0 }
    local th = runtime.current_thread()
    st.owner = th
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function()
        local s = st.s
        if s ~= nil then
            st.s = nil
            C.mf_ffi_sock_free(s)
            released(st)
        end
    end
    return setmetatable({ _st = st, _gc = proxy }, mt)
end

-- Arguments ------------------------------------------------------------------------------

-- host, port -> the address C connects to, the port and the default pool key; or nil, err.
local function parse_peer(host, port, what)
    if type(host) ~= "string" then
        error("bad argument #1 to '" .. what .. "' (string expected, got " .. type(host) .. ")", 3)
    end
    if host:sub(1, 5) == "unix:" then
        return host, 0, host
    end
    if port == nil or type(port) == "table" then
        return nil, "missing the port number"
    end
    local n = tonumber(port)
    if not n or n ~= math_floor(n) or n < 0 or n > 65535 then
        return nil, "bad port number: " .. tostring(port)
    end
    return host, n, host .. ":" .. tostring(port)
end

local function timeout_arg(ms, what)
    if ms == nil then
        return 0
    end
    local n = tonumber(ms)
    if not n or n < 0 then
        error("bad timeout value for '" .. what .. "': " .. tostring(ms), 3)
    end
    return n / 1000
end

-- The pieces of data (docs: strings, numbers, nested arrays), checked before a byte goes.
local function check_data(v, depth)
    local t = type(v)
    if t == "string" then
        return #v
    elseif t == "number" then
        return #tostring(v)
    elseif t == "table" then
        if depth > 100 then
            error("bad argument #1 to 'send' (tables nested too deep)", depth + 3)
        end
        local n, total = #v, 0
        for k in pairs(v) do
            if type(k) ~= "number" or k < 1 or k > n or k ~= math_floor(k) then
                error("bad argument #1 to 'send' (non-array table found)", depth + 3)
            end
        end
        for i = 1, n do
            local x = v[i]
            local tx = type(x)
            if tx ~= "string" and tx ~= "number" and tx ~= "table" then
                error("bad argument #1 to 'send' (bad data type " .. tx .. " found)", depth + 3)
            end
            total = total + check_data(x, depth + 1)
        end
        return total
    end
    error("bad argument #1 to 'send' (bad data type " .. t .. " found)", depth + 3)
end

local function add_data(s, v)
    local t = type(v)
    if t == "string" then
        if #v > 0 then
            return C.mf_ffi_sock_send_add(s, v, #v) == OK
        end
        return true
    elseif t == "number" then
        local x = tostring(v)
        return C.mf_ffi_sock_send_add(s, x, #x) == OK
    end
    for i = 1, #v do
        if not add_data(s, v[i]) then
            return false
        end
    end
    return true
end

-- Shared by TCP and UDP: send(data) -> bytes (TCP) / 1 (UDP), or nil, err.
local function send(self, data, udp)
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    local t = type(data)
    if t == "nil" then
        data = "nil"
    elseif t == "boolean" then
        data = tostring(data)
    end
    local total = check_data(data, 0)
    if not is_open(st) then
        return nil, "closed"
    end
    if st.writing then
        return nil, "socket busy writing"
    end
    if st.connecting then
        return nil, "socket busy connecting"
    end
    if total == 0 and not udp then
        return 0
    end
    local s = st.s
    if not add_data(s, data) then
        return nil, failed(st)
    end
    st.writing = true
    local rc = C.mf_ffi_sock_send(s, st.wt)
    while rc == WAIT do
        wait(st, self)
        rc = C.mf_ffi_sock_send(s, st.wt)
    end
    st.writing = nil
    if rc ~= OK then
        return nil, failed(st)
    end
    return udp and 1 or total
end

-- The result of a receive call: data, or nil, err, partial.
local function received(st, rc)
    local data = ffi_string(pp[0], pl[0])
    st.reading = nil
    if rc == OK then
        if C.mf_ffi_sock_is_open(st.s) == 0 then
            released(st) -- "*a" reached EOF: the connection ended with it
            unregister(st)
        end
        return data
    end
    if rc == TIMEOUT then
        st.invalid = true
        return nil, "timeout", data
    end
    return nil, failed(st), data
end

local function check_read(self, level)
    local st = self._st
    local th, terr = thread_of(st, level + 1)
    if not th then
        return nil, terr
    end
    if not is_open(st) then
        return nil, "closed"
    end
    if st.reading then
        return nil, "socket busy reading"
    end
    if st.connecting then
        return nil, "socket busy connecting"
    end
    return st
end

local function receive_mode(obj, st, mode, size)
    local s = st.s
    st.reading = true
    local rc = C.mf_ffi_sock_receive(s, mode, size, st.rt, pp, pl)
    while rc == WAIT do
        wait(st, obj)
        rc = C.mf_ffi_sock_receive(s, mode, size, st.rt, pp, pl)
    end
    return received(st, rc)
end

-- TCP ------------------------------------------------------------------------------------

local tcp = {}
tcp.__index = tcp

function _M.tcp()
    return new_object(TCP, tcp)
end
_M.stream = _M.tcp

-- Waits for room in a full pool with a backlog (cosocket.md section 2): true (there is
-- room, or e: an idle connection of the pool) or nil, err.
local function queue_for(obj, st, pool, backlog)
    if #pool.queue >= backlog then
        return nil, "too many waiting connect operations"
    end
    local s, err = ensure(st)
    if not s then
        return nil, err
    end
    local q = pool.queue
    q[#q + 1] = st
    st.queued = pool
    st.connecting = true
    while true do
        local rc = C.mf_ffi_sock_pause(s, st.ct)
        if rc ~= WAIT then
            dequeue(pool, st)
            st.queued, st.connecting = nil, nil
            wake_queue(pool)
            return nil, rc == TIMEOUT and "timeout" or ffi_string(C.mf_ffi_sock_errmsg(s))
        end
        wait(st, obj)
        prune(pool)
        local e = #pool.idle > 0 and checkout(pool)
        if e or pool.total < pool.size then
            C.mf_ffi_sock_pause(s, -1)
            dequeue(pool, st)
            st.queued, st.connecting = nil, nil
            return true, e or nil
        end
    end
end

local function adopt(st, e, pool, th)
    if st.s ~= nil then
        C.mf_ffi_sock_free(st.s) -- the one that held the place in the queue
    end
    st.s, st.token, st.reused = e.s, e.token, e.reused + 1
    st.pool, st.invalid = pool, nil
    register(st, th)
end

function tcp:connect(host, port, opts)
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    local b = busy(st)
    if b then
        return nil, b
    end
    if type(port) == "table" and opts == nil then
        opts = port
        port = nil
    end
    local addr, pnum, key = parse_peer(host, port, "connect")
    if not addr then
        return nil, pnum
    end
    local pool_size, backlog
    if opts ~= nil then
        if type(opts) ~= "table" then
            error("bad argument #3 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
        end
        local p = opts.pool
        if p ~= nil then
            if type(p) ~= "string" and type(p) ~= "number" then
                error("bad \"pool\" option type: " .. type(p), 2)
            end
            key = tostring(p)
        end
        pool_size = opts.pool_size
        if pool_size ~= nil and (type(pool_size) ~= "number" or pool_size <= 0) then
            error("bad \"pool_size\" option value: " .. tostring(pool_size), 2)
        end
        backlog = opts.backlog
        if backlog ~= nil and (type(backlog) ~= "number" or backlog < 0) then
            error("bad \"backlog\" option value: " .. tostring(backlog), 2)
        end
    end
    -- Connecting a connected socket: the old connection closes, it does not go to a pool.
    if is_open(st) then
        close_conn(st)
    end
    local w = runtime.worker()
    local pool = get_pool(w, key)
    if pool_size and not pool.size then
        pool.size = math_floor(pool_size)
    end
    st.key, st.invalid = key, nil
    local e = checkout(pool)
    if e then
        adopt(st, e, pool, th)
        return 1
    end
    if backlog and pool.size then
        prune(pool)
        if pool.total >= pool.size then
            local ok, got = queue_for(self, st, pool, backlog)
            if not ok then
                return nil, got
            end
            if got then
                adopt(st, got, pool, th)
                return 1
            end
        end
    end
    local s, err = ensure(st)
    if not s then
        return nil, err
    end
    pool.total = pool.total + 1
    st.pool, st.reused = pool, 0
    register(st, th)
    st.connecting = true
    local rc = C.mf_ffi_sock_connect(s, addr, pnum, st.ct)
    while rc == WAIT do
        wait(st, self)
        rc = C.mf_ffi_sock_connecting(s)
    end
    st.connecting = nil
    if rc ~= OK then
        local msg = ffi_string(C.mf_ffi_sock_errmsg(s))
        close_conn(st)
        return nil, msg
    end
    return 1
end

function tcp:send(data)
    return send(self, data, false)
end

local SIZE_PATTERN = "^%s*%d+%s*$"

function tcp:receive(pattern)
    local mode, size = READ_LINE, 0
    if pattern ~= nil then
        local n = tonumber(pattern)
        if type(pattern) == "number" or (type(pattern) == "string" and n
            and pattern:find(SIZE_PATTERN)) then
            if not n or n < 0 or n ~= n then
                error("bad argument #1 to 'receive' (bad pattern argument: "
                    .. tostring(pattern) .. ")", 2)
            end
            mode, size = READ_SIZE, math_floor(n)
        elseif pattern == "*l" or pattern == "l" then
            mode = READ_LINE
        elseif pattern == "*a" or pattern == "a" then
            mode = READ_ALL
        else
            error("bad argument #1 to 'receive' (bad pattern argument: " .. tostring(pattern)
                .. ")", 2)
        end
    end
    local st, err = check_read(self, 2)
    if not st then
        return nil, err
    end
    if mode == READ_SIZE and size == 0 then
        return ""
    end
    return receive_mode(self, st, mode, size)
end

function tcp:receiveany(max)
    local n = tonumber(max)
    if not n or n <= 0 then
        error("bad argument #1 to 'receiveany' (bad max argument: " .. tostring(max) .. ")", 2)
    end
    local st, err = check_read(self, 2)
    if not st then
        return nil, err
    end
    return receive_mode(self, st, READ_ANY, math_floor(n))
end

function tcp:receiveuntil(pattern, opts)
    if type(pattern) ~= "string" then
        error("bad argument #1 to 'receiveuntil' (string expected, got " .. type(pattern) .. ")",
            2)
    end
    if pattern == "" then
        return nil, "pattern is empty"
    end
    local inclusive = false
    if opts ~= nil then
        if type(opts) ~= "table" then
            error("bad argument #2 to 'receiveuntil' (table expected, got " .. type(opts) .. ")",
                2)
        end
        if opts.inclusive ~= nil then
            if type(opts.inclusive) ~= "boolean" then
                error("bad \"inclusive\" option value type: " .. type(opts.inclusive), 2)
            end
            inclusive = opts.inclusive
        end
    end
    local sock, plen, ended = self, #pattern, false
    return function(size)
        local n = 0
        if size ~= nil then
            n = tonumber(size)
            if not n or n <= 0 then
                error("bad argument #1 to iterator (bad size: " .. tostring(size) .. ")", 2)
            end
            n = math_floor(n)
        end
        local st, err = check_read(sock, 2)
        if not st then
            return nil, err
        end
        if ended then
            ended = false
            return nil, nil
        end
        local s = st.s
        st.reading = true
        local rc = C.mf_ffi_sock_receive_until(s, pattern, plen, n, inclusive and 1 or 0, st.rt,
            pp, pl, pfound)
        while rc == WAIT do
            wait(st, sock)
            rc = C.mf_ffi_sock_receive_until(s, pattern, plen, n, inclusive and 1 or 0, st.rt,
                pp, pl, pfound)
        end
        if rc == OK and pfound[0] ~= 0 and n > 0 then
            st.reading = nil
            if pl[0] == 0 then
                return nil, nil
            end
            ended = true
            return ffi_string(pp[0], pl[0])
        end
        return received(st, rc)
    end
end

function tcp:settimeout(ms)
    local st = self._st
    local t = timeout_arg(ms, "settimeout")
    st.ct, st.wt, st.rt = t, t, t
end

function tcp:settimeouts(connect_ms, send_ms, read_ms)
    local st = self._st
    st.ct = timeout_arg(connect_ms, "settimeouts")
    st.wt = timeout_arg(send_ms, "settimeouts")
    st.rt = timeout_arg(read_ms, "settimeouts")
end

function tcp:setkeepalive(idle_ms, size)
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    local idle = DEFAULT_IDLE
    if idle_ms ~= nil then
        local n = tonumber(idle_ms)
        if not n or n < 0 then
            error("bad argument #1 to 'setkeepalive' (bad idle timeout: " .. tostring(idle_ms)
                .. ")", 2)
        end
        idle = n / 1000
    end
    if size ~= nil and (type(size) ~= "number" or size <= 0) then
        error("bad argument #2 to 'setkeepalive' (bad pool size: " .. tostring(size) .. ")", 2)
    end
    if not is_open(st) then
        return nil, "closed"
    end
    local b = busy(st)
    if b then
        return nil, b
    end
    if st.invalid then
        return nil, "invalid connection"
    end
    local s = st.s
    local rc = C.mf_ffi_sock_keepalive_check(s)
    if rc == 1 then
        return nil, "unread data in buffer"
    elseif rc == 2 then
        close_conn(st)
        return nil, "connection in dubious state"
    elseif rc ~= OK then
        close_conn(st)
        return nil, "closed"
    end
    local pool = st.pool
    if not pool then
        pool = get_pool(runtime.worker(), st.key)
        pool.total = pool.total + 1
    end
    if not pool.size then
        pool.size = size and math_floor(size) or DEFAULT_POOL_SIZE
    end
    prune(pool)
    local idle_list = pool.idle
    while #idle_list >= pool.size do
        -- Full: the least recently used idle connection makes room.
        local old = table.remove(idle_list, 1)
        C.mf_ffi_sock_close(old.s)
        pool.total = pool.total - 1
    end
    C.mf_ffi_sock_park(s, idle)
    idle_list[#idle_list + 1] = { s = ffi_gc(s, C.mf_ffi_sock_free), token = st.token,
                                  reused = st.reused }
    st.s, st.pool, st.token = nil, nil, nil
    unregister(st)
    wake_queue(pool)
    return 1
end

function tcp:getreusedtimes()
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    if not is_open(st) then
        return nil, "closed"
    end
    return st.reused
end

function tcp:close()
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    if not is_open(st) then
        return nil, "closed"
    end
    close_conn(st)
    return 1
end

function tcp:setoption(name, value)
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    if type(name) ~= "string" then
        error("bad argument #1 to 'setoption' (string expected, got " .. type(name) .. ")", 2)
    end
    if not is_open(st) then
        return nil, "closed"
    end
    local v
    if type(value) == "boolean" then
        v = value and 1 or 0
    else
        v = tonumber(value)
        if not v then
            error("bad argument #2 to 'setoption' (boolean or number expected, got "
                .. type(value) .. ")", 2)
        end
    end
    if C.mf_ffi_sock_setoption(st.s, name, v) ~= OK then
        return nil, ffi_string(C.mf_ffi_sock_errmsg(st.s))
    end
    return 1
end

-- sslhandshake(reused_session, server_name, ssl_verify, send_status_req): a session object
-- (or true when reused_session is false), or nil, err. send_status_req (OCSP) is ignored.
function tcp:sslhandshake(reused_session, server_name, ssl_verify)
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    if server_name ~= nil and type(server_name) ~= "string" then
        error("bad argument #2 to 'sslhandshake' (string expected, got " .. type(server_name)
            .. ")", 2)
    end
    if not is_open(st) then
        return nil, "closed"
    end
    local b = busy(st)
    if b then
        return nil, b
    end
    local reuse = nil
    if type(reused_session) == "cdata" and ffi.istype(session_t, reused_session) then
        reuse = reused_session
    end
    local want = reused_session ~= false and 1 or 0
    local verify = ssl_verify and 1 or 0
    local s = st.s
    st.connecting = true
    local rc = C.mf_ffi_sock_sslhandshake(s, reuse, server_name, verify, want, st.ct, psession)
    while rc == WAIT do
        wait(st, self)
        rc = C.mf_ffi_sock_sslhandshake(s, reuse, server_name, verify, want, st.ct, psession)
    end
    st.connecting = nil
    if rc ~= OK then
        return nil, failed(st)
    end
    if want == 0 then
        return true
    end
    return ffi_gc(psession[0], C.mf_ffi_sock_session_free)
end

-- For specs: whether the last handshake of the socket resumed a session.
function tcp:ssl_reused()
    local st = self._st
    return st.s ~= nil and C.mf_ffi_sock_ssl_reused(st.s) == 1
end

function _M.connect(host, port, opts)
    local sock = _M.tcp()
    local ok, err = sock:connect(host, port, opts)
    if not ok then
        return nil, err
    end
    return sock
end

-- UDP ------------------------------------------------------------------------------------

local udp = {}
udp.__index = udp

function _M.udp()
    return new_object(UDP, udp)
end

function udp:setpeername(host, port)
    local st = self._st
    local th, terr = thread_of(st, 2)
    if not th then
        return nil, terr
    end
    local b = busy(st)
    if b then
        return nil, b
    end
    local addr, pnum, key = parse_peer(host, port, "setpeername")
    if not addr then
        return nil, pnum
    end
    if is_open(st) then
        close_conn(st)
    end
    local s, err = ensure(st)
    if not s then
        return nil, err
    end
    st.key, st.invalid = key, nil
    register(st, th)
    st.connecting = true
    local rc = C.mf_ffi_sock_connect(s, addr, pnum, st.ct)
    while rc == WAIT do
        wait(st, self)
        rc = C.mf_ffi_sock_connecting(s)
    end
    st.connecting = nil
    if rc ~= OK then
        local msg = ffi_string(C.mf_ffi_sock_errmsg(s))
        close_conn(st)
        return nil, msg
    end
    return 1
end

function udp:send(data)
    return send(self, data, true)
end

function udp:receive(size)
    local n = UDP_MAX
    if size ~= nil then
        n = tonumber(size)
        if not n or n <= 0 then
            error("bad argument #1 to 'receive' (bad size: " .. tostring(size) .. ")", 2)
        end
        n = math_floor(n)
        if n > UDP_MAX then
            n = UDP_MAX
        end
    end
    local st, err = check_read(self, 2)
    if not st then
        return nil, err
    end
    local data, rerr = receive_mode(self, st, READ_ANY, n)
    return data, rerr
end

function udp:settimeout(ms)
    local st = self._st
    local t = timeout_arg(ms, "settimeout")
    st.ct, st.wt, st.rt = t, t, t
end

udp.close = tcp.close

-- moonfcgi.test's max_sockets, socket_timeout (seconds), socket_buffer (bytes) and
-- ssl_trusted_certificate (a PEM file); returns true or nil, err.
function _M.configure(w, max_sockets, timeout, buffer, trusted)
    C.mf_ffi_sock_configure(w, tonumber(max_sockets) or 0, tonumber(timeout) or 0,
        tonumber(buffer) or 0)
    if trusted ~= nil and C.mf_ffi_sock_set_trusted(w, tostring(trusted)) ~= 0 then
        return nil, "cannot load the certificates of " .. tostring(trusted)
    end
    return true
end

-- For specs: the open outbound sockets of worker w or of the one running now (pooled ones
-- included), and
-- the idle connections of a pool.
function _M.count(w)
    w = w or runtime.worker()
    return w and C.mf_ffi_sock_count(w) or 0
end

function _M.pool_stats(key)
    local w = runtime.worker()
    local pools = w and pools_of[worker_key(w)]
    local pool = pools and pools[key]
    if not pool then
        return nil
    end
    prune(pool)
    return { idle = #pool.idle, total = pool.total, queued = #pool.queue, size = pool.size }
end

return _M
