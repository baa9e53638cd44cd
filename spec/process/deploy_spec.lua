-- Deployment (docs/api.md, "Command line"): where moonfcgi takes its listening socket from (fd
-- 0 from a spawner, systemd socket activation), dropping privileges with --user, the pid file,
-- `moonfcgi --check` in a reload script, and the systemd units in contrib/.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local needs = require "needs"
local process = require "process"
local H = require "process_helpers"

local APP = "spec/process/apps/misbehave.lua"
local CHILD_ENV = { ASAN_OPTIONS = os.getenv("MOONFCGI_CHILD_ASAN_OPTIONS") or false,
    LD_PRELOAD = false }

local cwd = assert(io.popen("pwd")):read("*l")
local function absolute(path)
    return path:sub(1, 1) == "/" and path or cwd .. "/" .. path
end
local BIN = absolute(process.bin)

local function have(cmd)
    return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == 0
end

local function is_root()
    return H.ids("self") == 0
end

-- Serves a request at addr (waiting for it to accept first, and for every worker to have
-- started) and returns the answering pid and the response.
local function serves(addr, proc, params)
    assert(process.wait_connectable(addr, 10, proc))
    if proc then
        assert.truthy(H.wait_workers(proc, 2), proc:output())
    end
    local res, err = H.request(addr, params or { REQUEST_METHOD = "GET", REQUEST_URI = "/" })
    assert.is_table(res, tostring(err) .. "\n" .. (proc and H.tail(proc:output()) or ""))
    assert.equal(200, res.status)
    return tonumber(res.body:match("^ok (%d+)$")), res
end

-- The systemd wrapper: LISTEN_PID is the pid that will exec moonfcgi, the socket moves from
-- fd 0 to fd 3, and fd 0 becomes /dev/null (so moonfcgi cannot take it for a spawner's).
local function socket_activated(argv, opts)
    local cmd = { "sh", "-c",
        'exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=app exec "$@"', "sh" }
    local prefix = opts.prefix or {}
    for i = #prefix, 1, -1 do
        table.insert(cmd, 1, prefix[i])
    end
    for _, a in ipairs(argv) do
        cmd[#cmd + 1] = a
    end
    return assert(process.spawn(cmd, { stdin_fd = opts.fd, env = CHILD_ENV }))
end

local function stat(path)
    local f = assert(io.popen("stat -c '%u %g %a %F' " .. H.shell_quote(path) .. " 2>&1"))
    local s = f:read("*l")
    f:close()
    return s
end

-- A fresh folder (t.dir) for each test of the describe block it is called in, and the
-- processes the test started (t.procs), cleaned up after it.
local function scratch()
    local t = {}
    before_each(function()
        t.dir = H.tmpdir()
        t.procs = {}
    end)
    after_each(function()
        for _, p in ipairs(t.procs) do
            p:cleanup()
        end
        H.rmtree(t.dir)
    end)
    return t
end

describe("the listening socket", function()
    local t = scratch()

    it("is taken from fd 0 when fd 0 is a listening socket (FCGI_LISTENSOCK_FILENO)",
        function()
        local fd, addr = H.listen_tcp()
        local p = assert(process.spawn({ BIN, "--workers", "2", APP },
            { stdin_fd = fd, env = CHILD_ENV }))
        H.close_fd(fd)
        t.procs[#t.procs + 1] = p
        serves(addr, p)
        assert.matches("listening: fd 0", p:output())
        assert.equal(0, p:stop())
    end)

    it("is taken from fd 0 under spawn-fcgi -n", function()
        if not have("spawn-fcgi") then
            pending(needs.missing("spawn-fcgi is not available (apt-get install spawn-fcgi)"))
            return
        end
        local port = process.free_port()
        local p = assert(process.spawn({ "spawn-fcgi", "-n", "-a", "127.0.0.1", "-p",
            tostring(port), "--", BIN, "--workers", "2", APP }, { env = CHILD_ENV }))
        t.procs[#t.procs + 1] = p
        local addr = "127.0.0.1:" .. port
        serves(addr, p)
        -- spawn-fcgi -n execs moonfcgi in its own process: the pid we hold is the master.
        assert.equal("moonfcgi", (H.read("/proc/" .. p.pid .. "/comm") or ""):match("%S+"))
        assert.matches("listening: fd 0", p:output())
        assert.equal(2, #H.children(p.pid))
        assert.equal(0, p:stop())
    end)

    it("is taken from fd 0 under cgi-fcgi -start, which leaves moonfcgi running detached",
        function()
        if not have("cgi-fcgi") then
            pending(needs.missing("cgi-fcgi is not available (apt-get install libfcgi-bin)"))
            return
        end
        -- cgi-fcgi starts APP without arguments: a script supplies them.
        local script = t.dir .. "/run.sh"
        H.write(script, ("#!/bin/sh\nexec %s --workers 2 --pid-file %s %s\n"):format(
            H.shell_quote(BIN), H.shell_quote(t.dir .. "/pid"), H.shell_quote(absolute(APP))))
        os.execute("chmod 755 " .. H.shell_quote(script))
        local port = process.free_port()
        -- moonfcgi outlives cgi-fcgi; as subreaper we get it as our child, to stop and reap.
        assert.is_true(H.subreaper(true))
        finally(function()
            H.subreaper(false)
        end)
        local spawner = assert(process.spawn({ "cgi-fcgi", "-start", "-connect",
            "127.0.0.1:" .. port, script }, { env = CHILD_ENV }))
        t.procs[#t.procs + 1] = spawner
        assert.equal(0, spawner:wait(10), spawner:output())
        local pid = tonumber(H.wait_for(function()
            return H.read(t.dir .. "/pid")
        end, 5))
        assert.is_number(pid)
        local daemon = setmetatable({ pid = pid, log = spawner.log }, getmetatable(spawner))
        t.procs[#t.procs + 1] = daemon
        -- Its log is not ours to read: both workers answering shows both are up.
        local seen, n = {}, 0
        H.wait_for(function()
            local answered = serves("127.0.0.1:" .. port)
            if not seen[answered] then
                seen[answered], n = true, n + 1
            end
            return n == 2
        end, 5)
        assert.equal(2, n)
        assert.equal(2, #H.children(pid))
        assert.equal(0, daemon:stop())
        assert.is_nil(H.read(t.dir .. "/pid"))
    end)

    it("is taken from systemd socket activation (LISTEN_PID/LISTEN_FDS, fd 3), and the "
        .. "workers do not inherit those variables", function()
        local fd, addr = H.listen_tcp()
        local p = socket_activated({ BIN, "--workers", "2", APP }, { fd = fd })
        H.close_fd(fd)
        t.procs[#t.procs + 1] = p
        local _, res = serves(addr, p, { REQUEST_URI = "/", ENV = "LISTEN_PID" })
        assert.matches("listening: systemd", p:output())
        assert.equal("unset", res.headers["x-env"])
        _, res = serves(addr, p, { REQUEST_URI = "/", ENV = "LISTEN_FDS" })
        assert.equal("unset", res.headers["x-env"])
        assert.equal(0, p:stop())
    end)

    it("is taken from systemd-socket-activate", function()
        if not have("systemd-socket-activate") then
            pending(needs.missing("systemd-socket-activate is not available (package systemd)"))
            return
        end
        local port = process.free_port()
        local addr = "127.0.0.1:" .. port
        local p = assert(process.spawn({ "systemd-socket-activate", "-l", addr, BIN,
            "--workers", "2", APP }, { env = CHILD_ENV }))
        t.procs[#t.procs + 1] = p
        -- It execs moonfcgi when the first connection comes; that one is served too.
        serves(addr, p)
        assert.matches("listening: systemd", p:output())
        assert.equal(0, p:stop())
    end)
end)

describe("--user", function()
    local t = scratch()

    it("runs the master and the workers as that user after binding", function()
        if not is_root() then
            pending(needs.missing("needs root"))
            return
        end
        local app = t.dir .. "/app.lua"
        H.write(app, assert(H.read(APP)))
        local p = H.start(app, { args = { "--user", "nobody" } })
        t.procs[#t.procs + 1] = p
        local pid = serves(p.addr, p)
        local nobody = tonumber(io.popen("id -u nobody"):read("*l"))
        local workers = H.children(p.pid)
        assert.equal(2, #workers)
        for _, w in ipairs({ p.pid, workers[1], workers[2] }) do
            local uid, gid = H.ids(w)
            assert.equal(nobody, uid, "pid " .. w)
            assert.equal(tonumber(io.popen("id -g nobody"):read("*l")), gid, "pid " .. w)
            assert.matches("\nGroups:%s*\n", H.read("/proc/" .. w .. "/status"), nil, false)
        end
        assert.is_true(pid == workers[1] or pid == workers[2])
        assert.matches("running as user nobody", p:output())
        assert.equal(0, p:stop())
    end)

    it("USER:GROUP gives a unix socket it created to that user and group, with "
        .. "--socket-mode", function()
        if not is_root() then
            pending(needs.missing("needs root"))
            return
        end
        local app = t.dir .. "/app.lua"
        H.write(app, assert(H.read(APP)))
        local sock = t.dir .. "/app.sock"
        local args = { "--user", "nobody:nogroup", "--socket-mode", "0660" }
        local p = H.start(app, { args = args, listen = "unix:" .. sock })
        t.procs[#t.procs + 1] = p
        serves("unix:" .. sock, p)
        local nobody = io.popen("id -u nobody"):read("*l")
        local nogroup = io.popen("getent group nogroup | cut -d: -f3"):read("*l")
        assert.equal(nobody .. " " .. nogroup .. " 660 socket", stat(sock))
        assert.equal(0, p:stop())
        -- A socket file left in a folder the user cannot write is stale, and the next start
        -- replaces it.
        local again = H.start(app, { args = args, listen = "unix:" .. sock })
        t.procs[#t.procs + 1] = again
        serves("unix:" .. sock, again)
        assert.equal(0, again:stop())
    end)

    it("writes --pid-file before dropping privileges, so it may live in a root-owned "
        .. "folder such as /run", function()
        if not is_root() then
            pending(needs.missing("needs root"))
            return
        end
        local app = t.dir .. "/app.lua"
        H.write(app, assert(H.read(APP)))
        local pidfile = t.dir .. "/moonfcgi.pid" -- the folder is root's, mode 755
        local port = process.free_port()
        local p = assert(process.spawn({ BIN, "--workers", "1", "--user", "nobody",
            "--listen", "127.0.0.1:" .. port, "--pid-file", pidfile, app }, { env = CHILD_ENV }))
        t.procs[#t.procs + 1] = p
        local ok, err = process.wait_connectable("127.0.0.1:" .. port, 10, p)
        assert.truthy(ok, err)
        assert.equal(tostring(p.pid), (H.read(pidfile) or ""):match("%d+"))
    end)
end)

describe("--pid-file", function()
    it("holds the master's pid while it runs and is removed at exit", function()
        local dir = H.tmpdir()
        local pidfile = dir .. "/moonfcgi.pid"
        local p = H.start(APP, { args = { "--pid-file", pidfile } })
        finally(function()
            p:cleanup()
            H.rmtree(dir)
        end)
        assert.equal(p.pid .. "\n", H.read(pidfile))
        p:signal(process.SIGHUP) -- a reload does not touch it: checked once it is done
        assert.truthy(H.wait_for(function()
            return H.count(p:output(), "worker %d+: app version 2 loaded") >= 2
        end, 10), p:output())
        assert.equal(p.pid .. "\n", H.read(pidfile))
        assert.equal(0, p:stop())
        assert.is_nil(H.read(pidfile))
    end)

    it("is not left behind by a start that fails (an app that does not load)", function()
        local dir = H.tmpdir()
        local p
        finally(function()
            if p then
                p:cleanup()
            end
            H.rmtree(dir)
        end)
        local app = dir .. "/app.lua"
        H.write(app, "return (\n")
        local pidfile = dir .. "/moonfcgi.pid"
        p = assert(process.spawn({ BIN, "--listen", "127.0.0.1:" .. process.free_port(),
            "--pid-file", pidfile, app }, { env = CHILD_ENV }))
        assert.equal(1, p:wait(10), p:output())
        assert.matches("app%.lua:2:", p:output())
        assert.is_nil(H.read(pidfile), "a pid file naming a process that is gone")
    end)
end)

describe("moonfcgi --check", function()
    local dir
    before_each(function()
        dir = H.app_copy("spec/process/apps/versioned")
    end)
    after_each(function()
        H.rmtree(dir)
    end)

    local function check(path)
        return H.run(H.shell_quote(BIN) .. " --check " .. H.shell_quote(path))
    end

    it("exits 0 for an app that loads, 1 with file:line for one that does not, 2 for no app",
        function()
        local app = dir .. "/app.lua"
        local status, out = check(app)
        assert.equal(0, status, out)
        assert.matches("app%.lua: ok", out)

        H.write(dir .. "/version.lua", 'return "B1" +\n')
        status, out = check(app)
        assert.equal(1, status, out)
        assert.matches("version%.lua:2:", out)

        H.write(dir .. "/version.lua", 'error("no version today")\n')
        status, out = check(app)
        assert.equal(1, status, out)
        assert.matches("version%.lua:1: no version today", out)

        status, out = check(dir .. "/missing.lua")
        assert.equal(2, status, out)
    end)

    it("in contrib/moonfcgi-reload, keeps a broken version from being signalled and reloads "
        .. "a good one", function()
        local app = dir .. "/app.lua"
        local pidfile = dir .. "/moonfcgi.pid"
        local p = H.start(app, { args = { "--pid-file", pidfile } })
        finally(function()
            p:cleanup()
        end)
        local reload = "MOONFCGI=" .. H.shell_quote(BIN) .. " sh contrib/moonfcgi-reload "
            .. H.shell_quote(pidfile) .. " " .. H.shell_quote(app)

        -- The broken version's pid file names a stand-in: had the script sent it SIGHUP
        -- before it exited, our later SIGTERM would find that signal pending or delivered
        -- (Linux delivers the lower-numbered first), and the stand-in would die of SIGHUP.
        local stand_in = assert(process.spawn({ "sleep", "60" }))
        finally(function()
            stand_in:cleanup()
        end)
        local stand_in_pidfile = dir .. "/stand-in.pid"
        H.write(stand_in_pidfile, stand_in.pid .. "\n")
        H.write(dir .. "/version.lua", "return (\n")
        local status, out = H.run("MOONFCGI=" .. H.shell_quote(BIN)
            .. " sh contrib/moonfcgi-reload " .. H.shell_quote(stand_in_pidfile) .. " "
            .. H.shell_quote(app))
        assert.equal(1, status, out)
        assert.matches("version%.lua:2:", out)
        stand_in:signal(process.SIGTERM)
        assert.equal(128 + process.SIGTERM, stand_in:wait(10), "the stand-in got SIGHUP")
        assert.matches("^A0 ", assert(H.request(p.addr)).body)

        H.write(dir .. "/version.lua", 'return "B1"\n')
        status, out = H.run(reload)
        assert.equal(0, status, out)
        assert.truthy(H.wait_for(function()
            local log = p:output()
            return log:find("worker 1: app version 2 loaded", 1, true)
                and log:find("worker 2: app version 2 loaded", 1, true)
        end, 5), p:output())
        assert.matches("^B1 ", assert(H.request(p.addr)).body)
        assert.equal(0, p:stop())
    end)
end)

-- The [Section] Key=value pairs of a unit file; repeated keys become lists.
local function parse_unit(path)
    local unit, section = {}, nil
    for line in assert(io.lines(path)) do
        local s = line:match("^%[(.+)%]$")
        if s then
            section = s
            unit[s] = unit[s] or {}
        elseif section and not line:match("^%s*[#;]") then
            local k, v = line:match("^(%w+)=(.*)$")
            if k then
                local t = unit[section]
                t[k] = t[k] or {}
                table.insert(t[k], v)
            end
        end
    end
    return unit
end

local function words(cmdline)
    local out = {}
    for w in cmdline:gmatch("%S+") do
        out[#out + 1] = w
    end
    return out
end

describe("contrib/moonfcgi.service and moonfcgi.socket", function()
    local service = parse_unit("contrib/moonfcgi.service")
    local socket = parse_unit("contrib/moonfcgi.socket")

    it("pass systemd-analyze verify", function()
        if not have("systemd-analyze") then
            pending(needs.missing("systemd-analyze is not available (package systemd)"))
            return
        end
        -- The units name /usr/local/bin/moonfcgi, which verify wants to exist: point them at
        -- the binary under test.
        local dir = H.tmpdir()
        finally(function()
            H.rmtree(dir)
        end)
        for _, name in ipairs({ "moonfcgi.service", "moonfcgi.socket" }) do
            local text = assert(H.read("contrib/" .. name))
            H.write(dir .. "/" .. name, (text:gsub("/usr/local/bin/moonfcgi", BIN)))
        end
        local status, out = H.run("cd " .. dir .. " && SYSTEMD_LOG_LEVEL=warning "
            .. "systemd-analyze verify ./moonfcgi.socket ./moonfcgi.service")
        assert.equal(0, status, out)
        assert.equal("", out)
    end)

    it("run the way systemd runs them: ExecStart on the passed socket as User=, "
        .. "ExecReload reloads, KillSignal stops with exit 0", function()
        local s = service.Service
        assert.same({ "/usr/local/bin/moonfcgi /srv/app/app.lua" }, s.ExecStart)
        assert.same({ "SIGTERM" }, s.KillSignal)
        assert.same({ "/run/moonfcgi/app.sock" }, socket.Socket.ListenStream)
        assert.same({ "0660" }, socket.Socket.SocketMode)
        local user, group = s.User[1], s.Group[1]
        local sock_group = socket.Socket.SocketGroup[1]

        local dir = H.tmpdir()
        local p
        finally(function()
            if p then
                p:cleanup()
            end
            H.rmtree(dir)
        end)
        H.write(dir .. "/app.lua", assert(H.read(APP)))
        local function substitute(cmdline, mainpid)
            local argv = words(cmdline)
            for i, w in ipairs(argv) do
                if w == "/usr/local/bin/moonfcgi" then
                    argv[i] = BIN
                elseif w == "/srv/app/app.lua" then
                    argv[i] = dir .. "/app.lua"
                elseif w == "$MAINPID" then
                    argv[i] = tostring(mainpid)
                end
            end
            return argv
        end
        -- What the .socket makes: the socket file with its mode and group, then fd 3.
        local path = dir .. "/app.sock"
        local fd, addr = H.listen_unix(path)
        os.execute(("chmod %s %s && chgrp %s %s"):format(socket.Socket.SocketMode[1],
            H.shell_quote(path), sock_group, H.shell_quote(path)))
        local prefix = {}
        local as_user = is_root() and have("setpriv")
        if as_user then
            prefix = { "setpriv", "--reuid=" .. user, "--regid=" .. group, "--init-groups" }
        end
        p = socket_activated(substitute(s.ExecStart[1]), { fd = fd, prefix = prefix })
        H.close_fd(fd)
        serves(addr, p)
        assert.matches("listening: systemd", p:output())
        if as_user then
            local uid = tonumber(io.popen("id -u " .. user):read("*l"))
            assert.equal(uid, (H.ids(p.pid)))
            for _, w in ipairs(H.children(p.pid)) do
                assert.equal(uid, (H.ids(w)))
            end
        end

        -- ExecReload: the lines run in order; the first that fails stops the reload.
        for _, line in ipairs(s.ExecReload) do
            local argv = substitute(line, p.pid)
            local r = assert(process.spawn(argv, { env = CHILD_ENV }))
            assert.equal(0, r:wait(10), line .. ": " .. r:output())
            r:cleanup()
        end
        assert.truthy(H.wait_for(function()
            return p:output():find("reload (SIGHUP): workers load app version 2", 1, true)
        end, 5), p:output())
        serves(addr, p)

        p:signal(process.SIGTERM)
        assert.equal(0, p:wait(10), p:output())
    end)
end)
