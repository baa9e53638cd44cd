-- Shared by the socket specs: the controllable peer (spec/socket/peer.py, a separate process
-- stopped by pid), an app under moonfcgi.test that runs a case function per request
-- (spec/socket/apps/cases.lua), and the fd count of this process.
local ffi = require "ffi"
local test = require "moonfcgi.test"
local process = require "process"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
pcall(ffi.cdef, "int getpid(void);")

local _M = {}

local function sleep(s)
    ffi.C.poll(nil, 0, s * 1000)
end
_M.sleep = sleep

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- Starts the peer; returns { tcp = port, udp = port, unix = "unix:/path", proc, stop }.
function _M.start_peer()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir) == 0 or true)
    local portfile, unix = dir .. "/ports", dir .. "/peer.sock"
    local proc = assert(process.spawn({ "python3", "spec/socket/peer.py", portfile, unix }))
    local text
    for _ = 1, 500 do
        text = read_file(portfile)
        if text or not proc:running() then
            break
        end
        sleep(0.01)
    end
    assert(text, "the peer did not start: " .. proc:output())
    local tcp, udp, tarpit = text:match("(%d+) (%d+) (%d+)")
    local peer = { tcp = tonumber(tcp), udp = tonumber(udp), tarpit = tonumber(tarpit), unix = "unix:" .. unix,
                   path = unix, proc = proc, dir = dir }
    function peer.stop()
        proc:stop(2)
        os.remove(unix)
        os.remove(portfile)
        os.remove(proc.log)
        os.remove(dir)
    end
    return peer
end

-- An app that runs SOCKET_CASES[uri]; opts as test.load's.
-- One request is made at once, so the kept connection that app:request uses is open before a
-- spec counts fds.
function _M.load(opts)
    local app = test.load("spec/socket/apps/cases.lua", opts)
    assert(app:request({ params = { REQUEST_URI = "/warm-up" }, stdin = "" }))
    return app
end

local seq = 0

-- Runs fn(req) in a handler of app; returns its results as a packed table ({ ok, n, ... }).
function _M.run(app, fn, opts)
    seq = seq + 1
    local uri = "/case/" .. seq
    SOCKET_CASES = SOCKET_CASES or {}
    SOCKET_RESULTS = SOCKET_RESULTS or {}
    SOCKET_CASES[uri] = fn
    local res, err = app:request({ params = { REQUEST_METHOD = "GET", REQUEST_URI = uri },
                                   stdin = "", timeout = opts and opts.timeout or 30 })
    SOCKET_CASES[uri] = nil
    local out = SOCKET_RESULTS[uri]
    SOCKET_RESULTS[uri] = nil
    if not out then
        return { ok = false, n = 1, "no result: " .. tostring(res and res.stderr or err),
                 res = res }
    end
    out.res = res
    return out
end

-- Like run, but asserts that fn returned without a Lua error, and returns its results.
function _M.call(app, fn, opts)
    local out = _M.run(app, fn, opts)
    assert(out.ok, tostring(out[1]))
    return unpack(out, 1, out.n)
end

-- Starts n requests at once (each on a connection of its own), fn(req, i) each; returns the
-- connections and their ids, for wait_all.
function _M.start_many(app, n, fn)
    local started = {}
    SOCKET_CASES = SOCKET_CASES or {}
    SOCKET_RESULTS = SOCKET_RESULTS or {}
    for i = 1, n do
        seq = seq + 1
        local uri = "/many/" .. seq
        SOCKET_CASES[uri] = function(req)
            return fn(req, i)
        end
        local conn = app:connect({ timeout = 60 })
        local id = conn:send({ params = { REQUEST_METHOD = "GET", REQUEST_URI = uri },
                               stdin = "" })
        started[i] = { conn = conn, id = id, uri = uri }
    end
    return started
end

-- Waits for the requests start_many started; returns their results (packed tables).
function _M.wait_all(started)
    local out = {}
    for i, s in ipairs(started) do
        local res, err = s.conn:wait(s.id, 60)
        s.conn:close()
        SOCKET_CASES[s.uri] = nil
        out[i] = SOCKET_RESULTS[s.uri] or { ok = false, n = 1, "no result: " .. tostring(err),
                                            res = res }
        SOCKET_RESULTS[s.uri] = nil
    end
    return out
end

-- Open fds of a process (default: this one).
function _M.fd_count(pid)
    if not pid then
        -- Sockets of earlier specs' objects close when collected: not now, in the middle.
        collectgarbage()
        collectgarbage()
    end
    local p = io.popen("ls /proc/" .. (pid or ffi.C.getpid()) .. "/fd 2>/dev/null | wc -l")
    local n = tonumber(p:read("*a"))
    p:close()
    return n
end

-- Calls check() until it returns true, driving the apps' loops meanwhile (at most `seconds`).
function _M.eventually(app, check, seconds)
    local deadline = os.time() + (seconds or 10)
    repeat
        if check() then
            return true
        end
        if app then
            app:run(0.02)
        else
            sleep(0.02)
        end
    until os.time() > deadline
    return check()
end

return _M
