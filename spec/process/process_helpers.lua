-- What the process specs share: temp folders, file edits the way editors make them, reading
-- the host's log as it grows, the master's SIGUSR1 status report, and a load generator that
-- keeps requests in flight from one Lua loop. Every wait here has a deadline.
local ffi = require "ffi"
local bit = require "bit"
local client = require "moonfcgi.client"
local process = require "process"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
pcall(ffi.cdef, "int kill(int pid, int sig);")
pcall(ffi.cdef, "char *mkdtemp(char *template);")

local H = {}

H.now = client.now
H.SIGUSR1 = 10

-- Sends sig to pid (a process this spec started, or one of its workers).
function H.kill(pid, sig)
    return ffi.C.kill(pid, sig) == 0
end

function H.sleep(seconds)
    ffi.C.poll(nil, 0, math.floor(seconds * 1000))
end

-- Polls fn() every 20 ms until it returns a true value or `timeout` seconds pass; returns
-- fn()'s last values.
function H.wait_for(fn, timeout)
    local deadline = H.now() + (timeout or 5)
    while true do
        local a, b = fn()
        if a or H.now() >= deadline then
            return a, b
        end
        H.sleep(0.02)
    end
end

-- The end of a long text (a log) for a failure message.
function H.tail(text, n)
    n = n or 4000
    if #text <= n then
        return text
    end
    return "...\n" .. text:sub(-n)
end

function H.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- A new folder under /tmp, readable by everyone (workers that dropped privileges load the
-- app from it).
function H.tmpdir()
    local buf = ffi.new("char[64]", "/tmp/moonfcgi-process-XXXXXX")
    assert(ffi.C.mkdtemp(buf) ~= nil, "mkdtemp failed")
    local dir = ffi.string(buf)
    os.execute("chmod 755 " .. dir)
    return dir
end

function H.rmtree(dir)
    if dir and dir:match("^/tmp/moonfcgi%-process%-") then
        os.execute("rm -rf " .. H.shell_quote(dir))
    end
end

function H.read(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

function H.write(path, content)
    local f = assert(io.open(path, "wb"))
    f:write(content)
    f:close()
end

-- Writes a temp file beside path and renames it over path, as editors do: the file is
-- never seen half-written. The temp name does not end in .lua.
function H.replace(path, content)
    local tmp = path:gsub("([^/]*)$", ".%1.swp")
    H.write(tmp, content)
    assert(os.rename(tmp, path))
end

-- Copies the files of a test app folder (or a single app file) into a new temp folder.
function H.app_copy(src)
    local dir = H.tmpdir()
    assert(os.execute("cp -r " .. H.shell_quote(src) .. (src:match("%.lua$") and " " or "/. ")
        .. H.shell_quote(dir) .. "/") == 0)
    return dir
end

-- The log of a process, read as it grows: reader:lines() returns the complete lines written
-- since the last call.
function H.log_reader(proc)
    local r = { path = proc.log, offset = 0, partial = "" }
    function r:lines()
        local f = io.open(self.path, "rb")
        if not f then
            return {}
        end
        f:seek("set", self.offset)
        local s = f:read("*a") or ""
        f:close()
        self.offset = self.offset + #s
        s = self.partial .. s
        local out = {}
        local last = 1
        for line, pos in s:gmatch("([^\n]*)\n()") do
            out[#out + 1] = line
            last = pos
        end
        self.partial = s:sub(last)
        return out
    end
    return r
end

-- Counts the log lines matching a Lua pattern.
function H.count(text, pattern)
    local n = 0
    for line in text:gmatch("[^\n]+") do
        if line:find(pattern) then
            n = n + 1
        end
    end
    return n
end

-- Asks the master for its status report (SIGUSR1) and parses it: { workers = N, version = V,
-- [i] = { pid, version, served, in_flight, conns, accepted, rss } }. Nil, err when no complete
-- report came within `timeout` seconds.
function H.status(proc, timeout)
    local reader = proc.status_reader
    if not reader then
        reader = H.log_reader(proc)
        proc.status_reader = reader
    end
    reader:lines() -- older reports do not count
    ffi.C.kill(proc.pid, H.SIGUSR1)
    local report
    local deadline = H.now() + (timeout or 5)
    repeat
        for _, line in ipairs(reader:lines()) do
            local n, v = line:match("status: (%d+) workers, app version (%d+)")
            if n then
                report = { workers = tonumber(n), version = tonumber(v) }
            elseif report then
                local i, pid, ver, served, inf, conns, acc, rss = line:match(
                    "status: worker (%d+) pid (%d+) version (%d+) served (%d+) in%-flight (%d+)"
                    .. " conns (%d+) accepted (%d+) rss (%d+) KiB")
                if i then
                    report[tonumber(i)] = {
                        pid = tonumber(pid), version = tonumber(ver), served = tonumber(served),
                        in_flight = tonumber(inf), conns = tonumber(conns),
                        accepted = tonumber(acc), rss = tonumber(rss),
                    }
                    if tonumber(i) == report.workers then
                        return report
                    end
                end
            end
        end
        H.sleep(0.02)
    until H.now() >= deadline
    return nil, "no complete status report in the log:\n" .. proc:output()
end

-- The pids of a process's children.
function H.children(pid)
    local out = {}
    local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
    if f then
        for c in f:read("*a"):gmatch("%d+") do
            out[#out + 1] = tonumber(c)
        end
        f:close()
    end
    table.sort(out)
    return out
end

-- The one-letter state of a process ("R", "S", "Z", ...), or nil once it is gone.
function H.proc_state(pid)
    local s = H.read("/proc/" .. pid .. "/stat")
    return s and s:match("%) (%a)")
end

function H.gone(pid)
    local st = H.proc_state(pid)
    return st == nil or st == "Z" or st == "X"
end

-- The real, effective uid and gid of a process, from /proc/PID/status.
function H.ids(pid)
    local s = H.read("/proc/" .. pid .. "/status")
    if not s then
        return nil
    end
    local uid = s:match("\nUid:%s+(%d+)%s+(%d+)")
    local gid = s:match("\nGid:%s+(%d+)%s+(%d+)")
    return tonumber(uid), tonumber(gid)
end

-- Listening sockets made here, to hand to moonfcgi the way a spawner or systemd does. Own
-- names (asm labels) so that other modules' declarations cannot clash.
for _, d in ipairs({
    "struct mf_pspec_sin { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };",
    "struct mf_pspec_sun { uint16_t family; char path[108]; };",
    "int mf_pspec_socket(int, int, int) __asm__(\"socket\");",
    "int mf_pspec_bind(int, const void *, uint32_t) __asm__(\"bind\");",
    "int mf_pspec_listen(int, int) __asm__(\"listen\");",
    "int mf_pspec_getsockname(int, void *, uint32_t *) __asm__(\"getsockname\");",
    "int mf_pspec_close(int) __asm__(\"close\");",
    "int mf_pspec_prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)"
        .. " __asm__(\"prctl\");",
}) do
    pcall(ffi.cdef, d)
end
local SOCK_STREAM_CLOEXEC = 1 + 524288 -- the copy a child gets through dup2 is not CLOEXEC

-- A listening TCP socket on 127.0.0.1 with a port the kernel picks. Returns fd, "HOST:PORT".
function H.listen_tcp()
    local fd = ffi.C.mf_pspec_socket(2, SOCK_STREAM_CLOEXEC, 0)
    assert(fd >= 0, "socket failed")
    local sa = ffi.new("struct mf_pspec_sin")
    sa.family = 2
    sa.addr = 0x0100007f
    assert(ffi.C.mf_pspec_bind(fd, sa, ffi.sizeof(sa)) == 0, "bind failed")
    assert(ffi.C.mf_pspec_listen(fd, 128) == 0, "listen failed")
    local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
    assert(ffi.C.mf_pspec_getsockname(fd, sa, len) == 0)
    return fd, "127.0.0.1:" .. bit.rshift(bit.bswap(sa.port), 16)
end

-- A listening unix socket at path. Returns fd, "unix:PATH".
function H.listen_unix(path)
    local fd = ffi.C.mf_pspec_socket(1, SOCK_STREAM_CLOEXEC, 0)
    assert(fd >= 0, "socket failed")
    local sa = ffi.new("struct mf_pspec_sun")
    sa.family = 1
    ffi.copy(sa.path, path)
    assert(ffi.C.mf_pspec_bind(fd, sa, ffi.sizeof(sa)) == 0, "bind " .. path .. " failed")
    assert(ffi.C.mf_pspec_listen(fd, 128) == 0, "listen failed")
    return fd, "unix:" .. path
end

function H.close_fd(fd)
    ffi.C.mf_pspec_close(fd)
end

-- While on, orphaned descendants (a daemon whose spawner exited) become our children, so we
-- can reap them: PR_SET_CHILD_SUBREAPER.
function H.subreaper(on)
    return ffi.C.mf_pspec_prctl(36, on and 1 or 0, 0, 0, 0) == 0
end

-- Runs a command line through sh and returns its exit status and its output (stdout and
-- stderr together).
function H.run(cmd)
    local out = os.tmpname()
    local p = assert(process.spawn({ "sh", "-c", cmd }, { log = out }))
    local status = p:wait(30)
    if status == nil then
        p:stop()
    end
    local text = H.read(out) or ""
    os.remove(out)
    return status, text
end

-- One request on a connection of its own. Returns the result or nil, err.
function H.request(addr, params, timeout)
    local c, err = client.connect(addr, { timeout = timeout or 10 })
    if not c then
        return nil, "connect: " .. tostring(err)
    end
    local res
    res, err = c:request{ params = params or { REQUEST_METHOD = "GET", REQUEST_URI = "/" } }
    c:close()
    return res, err
end

-- Waits until n workers logged loading the app (the listening socket accepts before that:
-- the master binds it before it forks them). True, or nil after `timeout`.
function H.wait_workers(proc, n, timeout)
    return H.wait_for(function()
        return H.count(proc:output(), "worker %d+: app version %d+ loaded") >= n
    end, timeout or 10)
end

-- Starts moonfcgi and fails the spec unless it comes up with all of its workers
-- (opts.workers, default 2, passed as --workers).
function H.start(app, opts)
    opts = opts or {}
    local n = opts.workers or 2
    local args = { "--workers", tostring(n) }
    for _, a in ipairs(opts.args or {}) do
        args[#args + 1] = a
    end
    local p, err = process.moonfcgi(app, { args = args, listen = opts.listen, env = opts.env })
    assert(p, err)
    if not H.wait_workers(p, n) then
        local out = p:output()
        p:cleanup()
        error("moonfcgi did not start its " .. n .. " workers:\n" .. out, 2)
    end
    return p
end

-- A load generator: `conns` kept connections that each carry `depth` multiplexed requests
-- per round, plus (with fresh = true) one request on a new connection per round. send()
-- sends a round, collect() waits for its answers; a spec does its own work in between.
--   check(res, info): called per answer; info = { tag, conn (index, or "fresh"), sent
--   (time), params }; returns nil (fine) or a message (a wrong answer).
--   params(n, conn): the params of request n on connection conn.
-- Failed requests (no answer: error, closed connection) are counted in failed and their
-- messages kept in errors; the connection is replaced for the next round.
function H.load(addr, opts)
    local L = {
        addr = addr, opts = opts, conns = {}, pending = {}, n = 0,
        ok = 0, failed = 0, wrong = 0, errors = {}, conn_pid = {}, failures = {},
    }
    local depth = opts.depth or 2
    local nconns = opts.conns or 4
    local timeout = opts.timeout or 10
    local params = opts.params or function()
        return { REQUEST_METHOD = "GET", REQUEST_URI = "/" }
    end

    local function note(msg)
        if #L.errors < 20 then
            L.errors[#L.errors + 1] = msg
        end
    end

    -- what: { conn = index or "fresh", kind = "connect" or "request", sent = time, pid = the
    -- pid that last answered on that connection }.
    function L:fail(msg, what)
        self.failed = self.failed + 1
        note(msg)
        what = what or {}
        what.msg = msg
        what.time = what.time or H.now()
        self.failures[#self.failures + 1] = what
    end

    function L:connection(i)
        local c = self.conns[i]
        if not c then
            local err
            c, err = client.connect(self.addr, { timeout = timeout })
            if not c then
                self:fail("connect (conn " .. i .. "): " .. tostring(err),
                    { conn = i, kind = "connect" })
                return nil
            end
            self.conns[i] = c
            self.conn_pid[i] = nil
        end
        return c
    end

    function L:send(tag)
        local t = H.now()
        for i = 1, nconns do
            local c = self:connection(i)
            for _ = 1, c and depth or 0 do
                self.n = self.n + 1
                local p = params(self.n, i)
                local id, err = c:send{ params = p }
                if not id then
                    self:fail("send (conn " .. i .. "): " .. tostring(err),
                        { conn = i, kind = "request", sent = t, pid = self.conn_pid[i] })
                    c:close()
                    self.conns[i] = nil
                    break
                end
                self.pending[#self.pending + 1] = { conn = i, c = c, id = id, sent = t,
                    tag = tag, params = p, pid = self.conn_pid[i] }
            end
        end
        if opts.fresh then
            self.n = self.n + 1
            local p = params(self.n, "fresh")
            local c, err = client.connect(self.addr, { timeout = timeout })
            if not c then
                self:fail("connect (fresh): " .. tostring(err), { conn = "fresh", kind = "connect" })
            else
                local id
                id, err = c:send{ params = p, keep_conn = false }
                if not id then
                    self:fail("send (fresh): " .. tostring(err),
                        { conn = "fresh", kind = "request", sent = t })
                    c:close()
                else
                    self.pending[#self.pending + 1] = { conn = "fresh", c = c, id = id, sent = t,
                        tag = tag, params = p }
                end
            end
        end
    end

    function L:collect()
        local pending = self.pending
        self.pending = {}
        for _, q in ipairs(pending) do
            local res, err = q.c:wait(q.id)
            if q.conn == "fresh" then
                q.c:close()
            end
            if not res then
                self:fail(("request on conn %s (%s): %s"):format(q.conn, tostring(q.tag),
                    tostring(err)), { conn = q.conn, kind = "request", sent = q.sent, pid = q.pid })
                if q.conn ~= "fresh" and self.conns[q.conn] == q.c then
                    q.c:close()
                    self.conns[q.conn] = nil
                end
            elseif res.status ~= 200 then
                self:fail(("request on conn %s (%s): status %s, body %q"):format(q.conn,
                    tostring(q.tag), tostring(res.status), tostring(res.body)),
                    { conn = q.conn, kind = "status", sent = q.sent, pid = q.pid })
            else
                self.ok = self.ok + 1
                local pid = tonumber(res.body:match("(%d+)%s*$"))
                if q.conn ~= "fresh" then
                    self.conn_pid[q.conn] = pid
                end
                local wrong = opts.check and opts.check(res, q)
                if wrong then
                    self.wrong = self.wrong + 1
                    note(wrong)
                end
            end
        end
    end

    function L:round(tag)
        self:send(tag)
        self:collect()
    end

    function L:close()
        for i, c in pairs(self.conns) do
            c:close()
            self.conns[i] = nil
        end
    end

    function L:report()
        return ("%d answered, %d failed, %d wrong; first problems:\n  %s"):format(self.ok,
            self.failed, self.wrong, table.concat(self.errors, "\n  "))
    end

    return L
end

return H
