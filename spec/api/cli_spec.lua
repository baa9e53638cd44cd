-- docs/api.md, "Command line": the command line, against the moonfcgi binary ($MOONFCGI_BIN):
-- options, --check, the listening forms, --allow and FCGI_WEB_SERVER_ADDRS, the stopping
-- signals, and what reaches the host log.
package.path = "spec/support/?.lua;" .. package.path
local ffi = require "ffi"
local process = require "process"
local client = require "moonfcgi.client"

local APP = "spec/api/apps/cli_app.lua"

local cdefs = {
    "struct mf_cli_spec_sockaddr_un { uint16_t family; char path[108]; };",
    "int mf_cli_spec_socket(int, int, int) __asm__(\"socket\");",
    "int mf_cli_spec_bind(int, const void *, uint32_t) __asm__(\"bind\");",
    "int mf_cli_spec_close(int) __asm__(\"close\");",
    "int mf_cli_spec_poll(void *, unsigned long, int) __asm__(\"poll\");",
    "int mf_cli_spec_getpid(void) __asm__(\"getpid\");",
    "struct mf_cli_spec_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr;"
        .. " uint8_t zero[8]; };",
    "int mf_cli_spec_listen(int, int) __asm__(\"listen\");",
}
for _, def in ipairs(cdefs) do
    pcall(ffi.cdef, def)
end
local C = ffi.C

local function sleep(seconds)
    C.mf_cli_spec_poll(nil, 0, math.floor(seconds * 1000))
end

-- Runs the binary with args to its end; returns exit status and output (stdout + stderr).
local function run(args, env)
    local argv = { process.bin }
    for _, a in ipairs(args) do
        argv[#argv + 1] = a
    end
    local p = assert(process.spawn(argv, { env = env }))
    local status = p:wait(10)
    if status == nil then
        p:stop()
    end
    local out = p:output()
    p:cleanup()
    return status, out
end

-- Waits until the output of p holds every pattern; true, or nil after 10 s.
local function logged(p, patterns)
    local deadline = client.now() + 10
    while true do
        local out, all = p:output(), true
        for _, pat in ipairs(patterns) do
            all = all and out:find(pat) ~= nil
        end
        if all then
            return true
        end
        if client.now() >= deadline then
            return nil
        end
        sleep(0.02)
    end
end

local function lines(s)
    local t = {}
    for l in s:gmatch("[^\n]+") do
        t[#t + 1] = l
    end
    return t
end

local nsock = 0
local function socket_path()
    nsock = nsock + 1
    return ("/tmp/moonfcgi-api-spec-%d-%d.sock"):format(C.mf_cli_spec_getpid(), nsock)
end

-- Sends one request; returns the result or nil, err.
local function ask(addr, params, timeout)
    local conn, err = client.connect(addr, { timeout = timeout or 5 })
    if not conn then
        return nil, err
    end
    local res, rerr = conn:request{ params = params or {}, stdin = "", timeout = timeout or 5 }
    conn:close()
    return res, rerr
end

describe("moonfcgi --help and --version", function()
    it("--help prints the usage and exits 0", function()
        local status, out = run({ "--help" })
        assert.equal(0, status)
        assert.matches("usage: moonfcgi", out)
        assert.matches("%-%-listen", out)
    end)

    it("--version prints the version and exits 0", function()
        local status, out = run({ "--version" })
        assert.equal(0, status)
        assert.matches("^moonfcgi %d+%.%d+", out)
    end)
end)

describe("moonfcgi with a bad command line", function()
    it("prints one line naming an unknown option and exits 2", function()
        local status, out = run({ "--frobnicate", APP })
        assert.equal(2, status)
        assert.equal(1, #lines(out))
        assert.matches("%-%-frobnicate", out)
    end)

    it("prints one line naming an option with a bad value and exits 2", function()
        local status, out = run({ "--max-reqs", "lots", APP })
        assert.equal(2, status)
        assert.equal(1, #lines(out))
        assert.matches("%-%-max%-reqs", out)
        assert.matches("lots", out)
    end)

    for _, bad in ipairs({ { "--timeout", "-1" }, { "--workers", "0" }, { "--max-params", "1X" },
                           { "--log-level", "loud" }, { "--socket-mode", "999" } }) do
        it("rejects " .. bad[1] .. " " .. bad[2] .. " in one line, exit 2", function()
            local status, out = run({ bad[1], bad[2], APP })
            assert.equal(2, status)
            assert.equal(1, #lines(out))
            assert.matches(bad[1]:gsub("%-", "%%-"), out)
        end)
    end

    it("prints one line naming a missing app file and exits 2", function()
        local status, out = run({ "spec/api/apps/does_not_exist.lua" })
        assert.equal(2, status)
        assert.equal(1, #lines(out))
        assert.matches("does_not_exist%.lua", out)
    end)
end)

describe("moonfcgi --check", function()
    it("exits 0 for an app that loads", function()
        local status = run({ "--check", APP })
        assert.equal(0, status)
    end)

    it("exits 1 for a syntax error, printing file:line", function()
        local status, out = run({ "--check", "spec/api/apps/syntax_error.lua" })
        assert.equal(1, status)
        assert.matches("spec/api/apps/syntax_error%.lua:3:", out)
    end)

    it("exits 1 for an app that does not return a handler", function()
        local status, out = run({ "--check", "spec/api/apps/bad_return_number.lua" })
        assert.equal(1, status)
        assert.matches("bad_return_number%.lua", out)
    end)

    it("exits 1 for an error at the top level, printing file:line", function()
        local status, out = run({ "--check", "spec/api/apps/top_error.lua" })
        assert.equal(1, status)
        assert.matches("top_error%.lua:2:", out)
    end)
end)

describe("moonfcgi --listen", function()
    it("serves on HOST:PORT", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        assert.matches("^127%.0%.0%.1:%d+$", p.addr)
        local res = assert(ask(p.addr, { TAG = "v4" }))
        assert.equal("worker 1 v4", res.body)
        assert.equal(0, p:stop())
        p:cleanup()
    end)

    it("serves on [V6]:PORT", function()
        local inet6 = io.open("/proc/net/if_inet6")
        local has_v6 = inet6 and inet6:read("*a"):find("00000000000000000000000000000001") ~= nil
        if inet6 then
            inet6:close()
        end
        if not has_v6 then
            return -- no IPv6 loopback here: nothing to test
        end
        local addr = "[::1]:" .. process.free_port()
        local p = assert(process.moonfcgi(APP, { listen = addr, args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local res = assert(ask(addr, { TAG = "v6" }))
        assert.equal("worker 1 v6", res.body)
        assert.equal(0, p:stop())
        p:cleanup()
    end)

    it("serves on unix:/PATH with the mode of --socket-mode", function()
        local path = socket_path()
        local p = assert(process.moonfcgi(APP, { listen = "unix:" .. path, args = {
            "--workers", "1", "--socket-mode", "0604" } }))
        finally(function() p:cleanup() end)
        local st = io.popen("stat -c %a " .. path)
        local mode = st:read("*l")
        st:close()
        local res = assert(ask("unix:" .. path, { TAG = "unix" }))
        assert.equal(0, p:stop())
        p:cleanup()
        os.remove(path)
        assert.equal("604", mode)
        assert.equal("worker 1 unix", res.body)
    end)

    it("gives a unix socket mode 0660 by default", function()
        local path = socket_path()
        local p = assert(process.moonfcgi(APP, { listen = "unix:" .. path,
                                                 args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local st = io.popen("stat -c %a " .. path)
        local mode = st:read("*l")
        st:close()
        p:stop()
        p:cleanup()
        os.remove(path)
        assert.equal("660", mode)
    end)

    it("replaces a stale unix socket file", function()
        local path = socket_path()
        local fd = C.mf_cli_spec_socket(1, 1, 0)
        assert.is_true(fd >= 0)
        local sa = ffi.new("struct mf_cli_spec_sockaddr_un")
        sa.family = 1
        ffi.copy(sa.path, path)
        assert.equal(0, C.mf_cli_spec_bind(fd, sa, 2 + #path + 1))
        C.mf_cli_spec_close(fd) -- the file stays; nobody accepts on it
        local p = assert(process.moonfcgi(APP, { listen = "unix:" .. path,
                                                 args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local res = assert(ask("unix:" .. path, { TAG = "stale" }))
        p:stop()
        p:cleanup()
        os.remove(path)
        assert.equal("worker 1 stale", res.body)
    end)

    it("refuses a unix socket another server is listening on", function()
        local path = socket_path()
        local first = assert(process.moonfcgi(APP, { listen = "unix:" .. path,
                                                     args = { "--workers", "1" } }))
        finally(function() first:cleanup() end)
        local status, out = run({ "--listen", "unix:" .. path, "--workers", "1", APP })
        local res = ask("unix:" .. path, { TAG = "first" })
        first:stop()
        first:cleanup()
        os.remove(path)
        assert.is_not_nil(status)
        assert.is_true(status ~= 0, "the second server exited " .. tostring(status))
        assert.matches(path:gsub("%p", "%%%0"), out)
        assert.is_table(res)
        assert.equal("worker 1 first", res.body)
    end)
end)

describe("moonfcgi without --listen", function()
    it("serves on fd 0 when it is a listening socket (FCGI_LISTENSOCK_FILENO)", function()
        local port = process.free_port()
        local fd = C.mf_cli_spec_socket(2, 1, 0)
        assert.is_true(fd >= 0)
        local sa = ffi.new("struct mf_cli_spec_sockaddr_in")
        sa.family = 2
        sa.port = bit.rshift(bit.bswap(port), 16)
        sa.addr = 0x0100007f
        assert.equal(0, C.mf_cli_spec_bind(fd, sa, ffi.sizeof(sa)))
        assert.equal(0, C.mf_cli_spec_listen(fd, 16))
        local p = assert(process.spawn({ process.bin, "--workers", "1", APP }, { stdin_fd = fd }))
        finally(function() p:cleanup() end)
        C.mf_cli_spec_close(fd)
        local addr = "127.0.0.1:" .. port
        local ok = process.wait_connectable(addr, 10, p)
        local res = ok and ask(addr, { TAG = "fd0" })
        local status = p:stop()
        local log = p:output()
        p:cleanup()
        assert.is_true(ok and true or false, log)
        assert.is_table(res)
        assert.equal("worker 1 fd0", res.body)
        assert.equal(0, status)
    end)
end)

describe("moonfcgi --allow and FCGI_WEB_SERVER_ADDRS", function()
    -- The connection is accepted by the kernel, then closed by moonfcgi without an answer.
    local function refused(addr)
        local conn = assert(client.connect(addr, { timeout = 3 }))
        conn:send_raw(require("moonfcgi.proto").request{ id = 1, params = {}, stdin = "" })
        local recs, err = conn:read_until_closed(3)
        conn:close()
        return err == "closed" and #recs == 0
    end

    it("--allow 127.0.0.2 closes a connection from 127.0.0.1 at accept", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1",
                                                          "--allow", "127.0.0.2" } }))
        finally(function() p:cleanup() end)
        local is_refused = refused(p.addr)
        p:stop()
        local log = p:output()
        p:cleanup()
        assert.is_true(is_refused)
        assert.matches("127%.0%.0%.1", log)
    end)

    it("--allow listing 127.0.0.1 serves it", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1", "--allow",
                                                          "127.0.0.2,127.0.0.1" } }))
        finally(function() p:cleanup() end)
        local res = ask(p.addr, { TAG = "allowed" })
        p:stop()
        p:cleanup()
        assert.is_table(res)
        assert.equal("worker 1 allowed", res.body)
    end)

    it("FCGI_WEB_SERVER_ADDRS=127.0.0.2 closes a connection from 127.0.0.1 at accept", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1" },
                                                 env = { FCGI_WEB_SERVER_ADDRS = "127.0.0.2" } }))
        finally(function() p:cleanup() end)
        local is_refused = refused(p.addr)
        p:stop()
        p:cleanup()
        assert.is_true(is_refused)
    end)

    it("FCGI_WEB_SERVER_ADDRS listing 127.0.0.1 serves it", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1" },
            env = { FCGI_WEB_SERVER_ADDRS = "127.0.0.2,127.0.0.1" } }))
        finally(function() p:cleanup() end)
        local res = ask(p.addr, { TAG = "env" })
        p:stop()
        p:cleanup()
        assert.is_table(res)
        assert.equal("worker 1 env", res.body)
    end)
end)

describe("moonfcgi stopping", function()
    for _, sig in ipairs({ { "SIGTERM", process.SIGTERM, "1" }, { "SIGINT", process.SIGINT, "1" },
                           { "SIGTERM", process.SIGTERM, "2" } }) do
        it("on " .. sig[1] .. " finishes the requests in flight and exits 0 (--workers "
            .. sig[3] .. ")", function()
            local p = assert(process.moonfcgi(APP, { args = { "--workers", sig[3] } }))
            finally(function() p:cleanup() end)
            local conns, ids = {}, {}
            for i = 1, 3 do
                conns[i] = assert(client.connect(p.addr, { timeout = 5 }))
                ids[i] = assert(conns[i]:send{ params = { SLEEP = "1", TAG = "t" .. i,
                                                          LOG = "handler t" .. i .. " runs" },
                                               stdin = "" })
            end
            assert.truthy(logged(p, { "handler t1 runs", "handler t2 runs", "handler t3 runs" }),
                p:output())
            p:signal(sig[2])
            local results = {}
            for i = 1, 3 do
                results[i] = conns[i]:wait(ids[i], 5)
                conns[i]:close()
            end
            local status = p:wait(5)
            local log = p:output()
            p:cleanup()
            for i = 1, 3 do
                assert.is_table(results[i], "request " .. i .. " was lost:\n" .. log)
                assert.matches("^worker [12] t" .. i .. "$", results[i].body)
                assert.equal("complete", results[i].protocol_status)
            end
            -- The signal came while all three were in flight, by the workers' own count.
            local in_flight = 0
            for n in log:gmatch("stopping gracefully %((%d+) requests? in flight%)") do
                in_flight = in_flight + tonumber(n)
            end
            assert.equal(3, in_flight, log)
            assert.equal(0, status)
        end)
    end

    it("on SIGTERM takes no new connections", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local conn = assert(client.connect(p.addr, { timeout = 5 }))
        local id = assert(conn:send{ params = { SLEEP = "1", TAG = "busy",
                                                LOG = "handler busy runs" }, stdin = "" })
        assert.truthy(logged(p, { "handler busy runs" }), p:output())
        p:signal(process.SIGTERM)
        -- Once the master and the worker have stopped listening, a new connection is refused
        -- (not left in a backlog): the listening socket is closed everywhere.
        assert.truthy(logged(p, { "stopping 1 workers gracefully",
                                  "stopping gracefully %(1 requests? in flight%)" }), p:output())
        local deadline = client.now() + 10
        local late, err
        repeat
            late, err = client.connect(p.addr, { timeout = 1 })
            if late then
                late:close()
                sleep(0.01)
            end
        until not late or client.now() >= deadline
        assert.is_nil(late)
        assert.matches("refused", err)
        local busy = conn:wait(id, 5)
        conn:close()
        local status = p:wait(5)
        p:cleanup()
        assert.is_table(busy)
        assert.equal("worker 1 busy", busy.body)
        assert.equal(0, status)
    end)
end)

describe("the host log", function()
    it("has moonfcgi.log lines and handler errors with their traceback", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local logged = assert(ask(p.addr, { LOG = "a line from the app" }))
        local failed = assert(ask(p.addr, { ERROR = "the handler failed here" }))
        p:stop()
        local log = p:output()
        p:cleanup()
        assert.equal(200, logged.status)
        assert.matches("a line from the app", log)
        assert.equal(500, failed.status)
        assert.matches("the handler failed here", log)
        assert.matches("traceback", log)
    end)

    it("moonfcgi.worker is 1 with --workers 1", function()
        local p = assert(process.moonfcgi(APP, { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local res = assert(ask(p.addr, { TAG = "w" }))
        p:stop()
        p:cleanup()
        assert.equal("worker 1 w", res.body)
    end)
end)
