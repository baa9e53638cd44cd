-- Reloading under load (docs/api.md, "Command line", and docs/process.md, "Reloading"): the
-- master compiles the new code once and only then asks the workers to load it; requests already
-- running finish on the old code, new requests run the new code, and no request fails. A
-- version that does not load is refused with one error line and the old one keeps serving.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local process = require "process"
local H = require "process_helpers"

local APP = "spec/process/apps/versioned"
-- How long a reload may take to reach every worker, from the signal or the file edit. The
-- spec asserts that it happens, and checks every answer after it; this bound only keeps a
-- reload that never arrives from hanging the spec.
local SETTLE = 2.0
-- After a reload reached every worker, the load runs at least this long (and until every
-- kept connection had an answer) before the next reload, checking that only the new
-- version answers.
local VERIFY = 0.15

local function version_file(content)
    return ("return %q\n"):format(content)
end

-- The version named in an answer's body ("VERSION PID").
local function version_of(res)
    return res.body:match("^(%S+)")
end

-- One moonfcgi with its own copy of the app, reloaded `target` times by `how` ("SIGHUP":
-- write version.lua, then signal; "watch": --watch, and version.lua is replaced by a rename
-- as editors do). Its state machine moves from "ready" (the next reload can start) to
-- "waiting" (the new version is on disk; workers may answer with either) to "verifying"
-- (every worker logged loading it: only it may answer).
local function reloaded_server(how, target)
    local dir = H.app_copy(APP)
    local args = { "--log-level", "info" }
    if how == "watch" then
        args[#args + 1] = "--watch"
    end
    local s = {
        how = how, target = target, dir = dir, path = dir .. "/version.lua",
        current = "A0", serial = 0, done = 0, phase = "ready",
        loaded = {}, problems = {}, settle_max = 0,
    }
    s.proc = H.start(dir .. "/app.lua", { args = args })
    s.log = H.log_reader(s.proc)
    s.load = H.load(s.proc.addr, {
        conns = 4, depth = 2, fresh = true,
        params = function(n)
            local p = { REQUEST_METHOD = "GET", REQUEST_URI = "/" }
            -- Some requests are still running when a reload arrives.
            if n % 7 == 0 then
                p.SLEEP = "0.03"
            end
            return p
        end,
        check = function(res, q)
            local v = version_of(res)
            local want = q.tag
            if not want.accept[v] then
                return ("%s reload %d (%s): answer %q, expected %s"):format(how, want.serial,
                    want.phase, res.body, want.describe)
            end
            if want.phase == "verifying" and q.conn ~= "fresh" and want.serial == s.serial then
                s.seen[q.conn] = true
            end
        end,
    })
    return s
end

-- What an answer to a request sent now may say.
local function expectation(s)
    local e = { serial = s.serial, phase = s.phase, accept = { [s.current] = true } }
    if s.phase == "waiting" then
        e.accept[s.next] = true
        e.describe = s.current .. " or " .. s.next
    else
        e.describe = s.current
    end
    return e
end

local function problem(s, msg)
    if #s.problems < 10 then
        s.problems[#s.problems + 1] = msg
    end
end

-- Reads the new log lines and moves the state machine on.
local function advance(s, now)
    for _, line in ipairs(s.log:lines()) do
        local gen = line:match("reload %([^)]*%): workers load app version (%d+)")
        if gen and s.phase == "waiting" and not s.gen then
            s.gen = tonumber(gen)
        end
        local w, v = line:match("worker (%d+): app version (%d+) loaded")
        if w then
            s.loaded[tonumber(w)] = tonumber(v)
        end
        if line:find("refused", 1, true) or line:find("reload failed", 1, true)
            or line:find("died of signal", 1, true) or line:find("exited with status", 1, true) then
            problem(s, "log: " .. line)
        end
    end
    if s.phase == "ready" then
        if s.done >= s.target then
            s.phase = "finished"
            return
        end
        s.serial = s.serial + 1
        s.next = (s.serial % 2 == 1 and "B" or "A") .. s.serial
        s.gen = nil
        s.t_start = now
        s.phase = "waiting"
        -- Done after this round's requests are sent, so that the reload lands while they run.
        s.action = function()
            if s.how == "SIGHUP" then
                H.write(s.path, version_file(s.next))
                s.proc:signal(process.SIGHUP)
            else
                H.replace(s.path, version_file(s.next))
            end
        end
    elseif s.phase == "waiting" then
        if s.gen and (s.loaded[1] or 0) >= s.gen and (s.loaded[2] or 0) >= s.gen then
            s.current = s.next
            s.settle_max = math.max(s.settle_max, now - s.t_start)
            s.phase = "verifying"
            s.verify_until = now + VERIFY
            s.seen = {}
        elseif now - s.t_start > SETTLE then
            problem(s, ("%s reload %d (%s) did not reach both workers within %.1f s"
                .. " (master generation %s, workers loaded %s and %s)"):format(s.how, s.serial,
                s.next, SETTLE, tostring(s.gen), tostring(s.loaded[1]), tostring(s.loaded[2])))
            s.phase = "failed"
        end
    elseif s.phase == "verifying" then
        if now >= s.verify_until and s.seen[1] and s.seen[2] and s.seen[3] and s.seen[4] then
            s.done = s.done + 1
            s.phase = "ready"
        end
    end
end

local function busy(s)
    return s.phase ~= "finished" and s.phase ~= "failed"
end

describe("reloading under load", function()
    it("serves only the new version once a reload settles, and fails no request, over 50 "
        .. "SIGHUP reloads and 20 --watch edits", function()
        local hup = reloaded_server("SIGHUP", 50)
        local watch = reloaded_server("watch", 20)
        finally(function()
            hup.load:close()
            watch.load:close()
            hup.proc:cleanup()
            watch.proc:cleanup()
            H.rmtree(hup.dir)
            H.rmtree(watch.dir)
        end)
        local servers = { hup, watch }
        local deadline = H.now() + 40
        local rounds = 0
        while (busy(hup) or busy(watch)) and H.now() < deadline do
            rounds = rounds + 1
            for _, s in ipairs(servers) do
                advance(s, H.now())
            end
            -- Both servers take a round of requests at once; a finished one keeps serving
            -- load until the other is done.
            for _, s in ipairs(servers) do
                s.load:send(expectation(s))
            end
            for _, s in ipairs(servers) do
                if s.action then
                    s.action()
                    s.action = nil
                end
            end
            for _, s in ipairs(servers) do
                s.load:collect()
            end
        end
        for _, s in ipairs(servers) do
            local where = ("%s server (%d rounds, slowest reload %.2f s): %s\n%s"):format(s.how,
                rounds, s.settle_max, s.load:report(), table.concat(s.problems, "\n"))
            if os.getenv("PROCESS_SPEC_VERBOSE") then
                io.stderr:write(where, "\n")
            end
            assert.equal(0, s.load.failed, where)
            assert.equal(0, s.load.wrong, where)
            assert.same({}, s.problems, where)
            assert.equal("finished", s.phase, where)
            assert.equal(s.target, s.done, where)
            assert.is_true(s.load.ok > 20 * s.target, where)
            -- Both workers run the last version (and none died: see problems).
            local st = assert(H.status(s.proc))
            assert.equal(st.version, st[1].version)
            assert.equal(st.version, st[2].version)
        end
        assert.equal(0, hup.proc:stop(), H.tail(hup.proc:output()))
        assert.equal(0, watch.proc:stop(), H.tail(watch.proc:output()))
    end)
end)

describe("a reload", function()
    it("lets running requests finish on the old code while new requests on the same "
        .. "connections run the new code", function()
        local client = require "moonfcgi.client"
        local dir = H.app_copy(APP)
        local proc = H.start(dir .. "/app.lua")
        local conns = {}
        finally(function()
            for _, c in ipairs(conns) do
                c:close()
            end
            proc:cleanup()
            H.rmtree(dir)
        end)
        local reader = H.log_reader(proc)
        local running = {}
        for i = 1, 4 do
            conns[i] = assert(client.connect(proc.addr, { timeout = 10 }))
            for k = 1, 2 do
                local tag = i .. "." .. k
                running[#running + 1] = { c = conns[i], tag = tag, id = assert(conns[i]:send{
                    params = { REQUEST_METHOD = "GET", SLEEP = "1.5", TAG = tag } }) }
            end
        end
        local started = 0
        H.wait_for(function()
            for _, line in ipairs(reader:lines()) do
                if line:find("request %S+ running on A0") then
                    started = started + 1
                end
            end
            return started == #running
        end, 5)
        assert.equal(#running, started, proc:output())

        H.write(dir .. "/version.lua", version_file("B1"))
        proc:signal(process.SIGHUP)
        assert.truthy(H.wait_for(function()
            local log = proc:output()
            return log:find("worker 1: app version 2 loaded") and
                log:find("worker 2: app version 2 loaded")
        end, SETTLE), proc:output())

        -- New requests, on the connections whose old requests still run, and on new ones.
        for i = 1, 4 do
            local res = assert(conns[i]:request{ params = { REQUEST_METHOD = "GET" } })
            assert.equal(200, res.status)
            assert.equal("B1", version_of(res))
            res = assert(H.request(proc.addr))
            assert.equal("B1", version_of(res))
        end
        for _, r in ipairs(running) do
            local res, err = r.c:wait(r.id)
            assert.is_table(res, "request " .. r.tag .. ": " .. tostring(err))
            assert.equal(200, res.status)
            assert.equal("A0", version_of(res), "request " .. r.tag)
        end
    end)
end)

describe("a reload the master accepted", function()
    it("has the workers load the version the master checked, even when the file changes "
        .. "again before they get to it", function()
        local client = require "moonfcgi.client"
        local dir = H.app_copy(APP)
        local proc = H.start(dir .. "/app.lua", { workers = 1 })
        local c = assert(client.connect(proc.addr, { timeout = 10 }))
        finally(function()
            c:close()
            proc:cleanup()
            H.rmtree(dir)
        end)
        local reader = H.log_reader(proc)
        -- The only worker is busy, so it takes the reload only after the steps below.
        local id = assert(c:send{ params = { REQUEST_METHOD = "GET", BUSY = "1" } })
        assert.truthy(H.wait_for(function()
            for _, line in ipairs(reader:lines()) do
                if line:find("busy for", 1, true) then
                    return true
                end
            end
        end, 5), proc:output())
        H.write(dir .. "/version.lua", version_file("B1"))
        proc:signal(process.SIGHUP)
        assert.truthy(H.wait_for(function()
            return proc:output():find("workers load app version 2", 1, true)
        end, 0.8), proc:output())
        -- A later save, broken, lands before the worker reloads (no signal for it).
        H.write(dir .. "/version.lua", "return (\n")
        local res = assert(c:wait(id))
        assert.equal("A0", version_of(res))
        local outcome = H.wait_for(function()
            local log = proc:output()
            return log:find("worker 1: app version 2 loaded", 1, true) and "loaded"
                or log:find("reload failed", 1, true) and "failed"
        end, 5)
        local where = H.tail(proc:output())
        assert.equal("loaded", outcome, where)
        res = assert(c:request{ params = { REQUEST_METHOD = "GET" } })
        assert.equal("B1", version_of(res), where)
    end)
end)

-- Sends rounds of load for `seconds`, every answer checked against `want`.
local function run_load(load, seconds, want)
    local deadline = H.now() + seconds
    repeat
        load:round(want)
    until H.now() >= deadline
end

-- Reads the log until a line matching pattern appears (bounded); returns it.
local function await_line(reader, pattern, timeout)
    return H.wait_for(function()
        for _, line in ipairs(reader:lines()) do
            if line:find(pattern) then
                return line
            end
        end
    end, timeout or 5)
end

describe("a reload to code that does not load", function()
    local dir, proc, load

    before_each(function()
        dir = H.app_copy(APP)
        proc = H.start(dir .. "/app.lua")
        load = H.load(proc.addr, {
            conns = 4, depth = 2, fresh = true,
            check = function(res, q)
                if version_of(res) ~= q.tag then
                    return ("answer %q, expected version %s"):format(res.body, q.tag)
                end
            end,
        })
    end)

    after_each(function()
        load:close()
        proc:cleanup()
        H.rmtree(dir)
    end)

    it("is refused with one error line naming file:line, the old version keeps serving, and "
        .. "the fixed version is taken", function()
        local reader = H.log_reader(proc)
        local app_src = assert(H.read(dir .. "/app.lua"))
        run_load(load, 0.3, "A0")

        -- A syntax error in the app file itself, on its last line.
        local broken = app_src .. "local x = = 1\n"
        local _, nlines = broken:gsub("\n", "")
        H.write(dir .. "/app.lua", broken)
        proc:signal(process.SIGHUP)
        local refused = await_line(reader, "refused")
        assert.is_string(refused, proc:output())
        run_load(load, 0.5, "A0")

        -- An error at the top level of a module the app requires.
        H.write(dir .. "/app.lua", app_src)
        H.write(dir .. "/version.lua", 'error("the version file is broken")\nreturn "B1"\n')
        proc:signal(process.SIGHUP)
        assert.is_string(await_line(reader, "refused"), proc:output())
        run_load(load, 0.5, "A0")

        local log = proc:output()
        local where = log .. "\n" .. load:report()
        assert.equal(0, load.failed, where)
        assert.equal(0, load.wrong, where)
        -- Each broken version: one error, from the master, naming the file and line; the
        -- workers were not asked to load it.
        assert.equal(2, H.count(log, "%[error%]"), where)
        assert.equal(2, H.count(log, "reload %(SIGHUP%) refused"), where)
        assert.equal(1, H.count(log, "app%.lua:" .. nlines .. ":"), where)
        assert.equal(1, H.count(log, "version%.lua:1: the version file is broken"), where)
        assert.equal(0, H.count(log, "reload failed"), where)
        assert.equal(0, H.count(log, "workers load app version"), where)

        -- Fixed: the next reload takes it.
        H.write(dir .. "/version.lua", version_file("B1"))
        proc:signal(process.SIGHUP)
        assert.is_string(await_line(reader, "workers load app version 2"), proc:output())
        local both = H.wait_for(function()
            local log2 = proc:output()
            return log2:find("worker 1: app version 2 loaded") and
                log2:find("worker 2: app version 2 loaded")
        end, SETTLE)
        assert.truthy(both, proc:output())
        run_load(load, 0.5, "B1")
        assert.equal(0, load.failed, load:report())
        assert.equal(0, load.wrong, load:report())
        local st = assert(H.status(proc))
        assert.equal(2, st[1].version)
        assert.equal(2, st[2].version)
    end)

    it("keeps serving the old version from a worker started after the refused reload "
        .. "(a replaced worker must not load the broken code from disk)", function()
        run_load(load, 0.2, "A0")
        H.write(dir .. "/version.lua", "return (\n")
        proc:signal(process.SIGHUP)
        assert.is_string(await_line(H.log_reader(proc), "refused"), proc:output())
        -- Both workers die and are replaced while the broken file is on disk.
        load:close()
        local st = assert(H.status(proc))
        local old = { st[1].pid, st[2].pid }
        for _, pid in ipairs(old) do
            H.kill(pid, process.SIGKILL)
        end
        local replaced = H.wait_for(function()
            local s = H.status(proc, 1)
            return s and s[1].pid ~= old[1] and s[2].pid ~= old[2] and s[1].pid > 0
                and s[2].pid > 0 and s
        end, 5)
        -- Whatever the workers are, the old version answers every request.
        local answers, failures = {}, {}
        for i = 1, 10 do
            local res, err = H.request(proc.addr, nil, 3)
            if not res then
                failures[#failures + 1] = "request " .. i .. ": " .. tostring(err)
                break
            end
            answers[#answers + 1] = res.status .. " " .. res.body
        end
        local where = proc:output()
        assert.same({}, failures, where)
        for _, a in ipairs(answers) do
            assert.matches("^200 A0 ", a, where)
        end
        assert.truthy(replaced, where)
    end)
end)
