-- How a new version is checked before it is installed (docs/process.md, "Reloading"): the
-- app's top level runs in a throwaway check process, never in the master. A top level that
-- exits, crashes the process or loops past --check-timeout is refused like one with an error:
-- the old version keeps serving, the master and its workers live on, and the log has one
-- error line saying why.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local process = require "process"
local H = require "process_helpers"

local APP = "spec/process/apps/versioned"
local BIN = process.bin

local function version_file(content)
    return ("return %q\n"):format(content)
end

local function version_of(res)
    return res.body:match("^(%S+)")
end

-- version.lua contents whose top level never returns a version, and what the refusal says.
local BAD = {
    ["os.exit"] = {
        src = 'os.exit(3)\nreturn "B1"\n',
        says = "version%.lua:1: os%.exit%(3%) called while the app loads",
    },
    ["an endless loop"] = {
        src = 'local n = 0\nwhile true do n = n + 1 end\nreturn "B1"\n',
        says = "did not finish within 2 s",
    },
    ["an FFI crash"] = {
        src = 'local ffi = require "ffi"\nffi.cast("int *", 0)[0] = 1\nreturn "B1"\n',
        says = "crashed its check process %(signal 11",
    },
}

-- Reads the log until a line matching pattern appears, running load rounds meanwhile;
-- returns the line (nil after `timeout` seconds).
local function line_under_load(reader, pattern, load, timeout)
    local deadline = H.now() + (timeout or 10)
    repeat
        load:round("A0")
        for _, line in ipairs(reader:lines()) do
            if line:find(pattern) then
                return line
            end
        end
    until H.now() >= deadline
end

local function worker_pids(st)
    local pids = { st[1].pid, st[2].pid }
    table.sort(pids)
    return pids
end

for _, how in ipairs({ "SIGHUP", "watch" }) do
    describe("a " .. (how == "SIGHUP" and "SIGHUP reload" or "--watch reload") .. " to a "
        .. "version whose top level never returns", function()
        local dir, proc, load

        before_each(function()
            dir = H.app_copy(APP)
            local args = { "--check-timeout", "2" }
            if how == "watch" then
                args[#args + 1] = "--watch"
            end
            proc = H.start(dir .. "/app.lua", { args = args })
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

        for _, kind in ipairs({ "os.exit", "an endless loop", "an FFI crash" }) do
            it("(" .. kind .. ") is refused under load: no request fails, the old version "
                .. "answers, master and workers live on, one error line", function()
                local bad = BAD[kind]
                local reader = H.log_reader(proc)
                local before = assert(H.status(proc))
                for _ = 1, 5 do
                    load:round("A0")
                end
                local path = dir .. "/version.lua"
                if how == "SIGHUP" then
                    H.write(path, bad.src)
                    proc:signal(process.SIGHUP)
                else
                    H.replace(path, bad.src)
                end
                local refused = line_under_load(reader, "refused", load)
                -- Load goes on after the refusal too.
                for _ = 1, 20 do
                    load:round("A0")
                end
                local log = proc:output()
                local where = H.tail(log) .. "\n" .. load:report()
                assert.is_string(refused, where)
                assert.matches(bad.says, refused, 1, where)
                assert.matches(how == "SIGHUP" and "reload %(SIGHUP%) refused, version 1 keeps"
                    or "reload %(file change%) refused, version 1 keeps", refused, 1, where)
                assert.equal(0, load.failed, where)
                assert.equal(0, load.wrong, where)
                assert.is_true(load.ok > 0, where)
                assert.equal(1, H.count(log, "%[error%]"), where)
                assert.equal(0, H.count(log, "workers load app version"), where)

                -- The master and the same two workers, still on version 1; the check
                -- process is gone (reaped).
                assert.is_false(H.gone(proc.pid), where)
                local after = assert(H.status(proc))
                assert.same(worker_pids(before), worker_pids(after), where)
                assert.same(worker_pids(before), H.children(proc.pid), where)
                assert.equal(1, after.version)
                assert.equal(1, after[1].version)
                assert.equal(1, after[2].version)

                -- The master still takes a good version.
                if how == "SIGHUP" then
                    H.write(path, version_file("B1"))
                    proc:signal(process.SIGHUP)
                else
                    H.replace(path, version_file("B1"))
                end
                assert.truthy(H.wait_for(function()
                    local l = proc:output()
                    return l:find("worker 1: app version 2 loaded", 1, true)
                        and l:find("worker 2: app version 2 loaded", 1, true)
                end, 10), H.tail(proc:output()))
                local res = assert(H.request(proc.addr))
                assert.equal("B1", version_of(res))
            end)
        end
    end)
end

describe("the master", function()
    local dir, proc
    after_each(function()
        if proc then
            proc:cleanup()
        end
        proc = nil
        H.rmtree(dir)
    end)

    it("never runs the app's top level itself, at start or at a reload", function()
        dir = H.app_copy(APP)
        local pids = dir .. "/pids"
        -- A version that notes the pid of every process that runs its top level.
        local noting = ('local ffi = require "ffi"\npcall(ffi.cdef, "int getpid(void);")\n'
            .. 'local f = assert(io.open(%q, "a"))\nf:write(ffi.C.getpid(), "\\n")\nf:close()\n'
            .. 'return %%q\n'):format(pids)
        H.write(dir .. "/version.lua", noting:format("A0"))
        proc = H.start(dir .. "/app.lua")
        H.write(dir .. "/version.lua", noting:format("B1"))
        proc:signal(process.SIGHUP)
        assert.truthy(H.wait_for(function()
            local l = proc:output()
            return l:find("worker 1: app version 2 loaded", 1, true)
                and l:find("worker 2: app version 2 loaded", 1, true)
        end, 10), H.tail(proc:output()))
        local seen = {}
        for pid in (H.read(pids) or ""):gmatch("%d+") do
            seen[tonumber(pid)] = true
        end
        local st = assert(H.status(proc))
        assert.is_nil(seen[proc.pid], "the master ran the top level: " .. (H.read(pids) or ""))
        -- It did run: in each worker (at start and at the reload), and in the checks.
        assert.truthy(seen[st[1].pid], H.read(pids))
        assert.truthy(seen[st[2].pid], H.read(pids))
    end)

    it("goes on supervising while a check runs: a worker that dies is replaced meanwhile",
        function()
        dir = H.app_copy(APP)
        proc = H.start(dir .. "/app.lua", { args = { "--check-timeout", "60" } })
        local reader = H.log_reader(proc)
        local flag = dir .. "/go"
        -- The new version's top level spins until the spec lets it go, then fails.
        H.write(dir .. "/version.lua", ('io.stderr:write("top level spinning\\n")\n'
            .. 'while not io.open(%q) do end\nerror("spun")\n'):format(flag))
        proc:signal(process.SIGHUP)
        assert.truthy(H.wait_for(function()
            for _, line in ipairs(reader:lines()) do
                if line:find("top level spinning", 1, true) then
                    return true
                end
            end
        end, 10), proc:output())
        local before = assert(H.status(proc))
        assert.is_true(H.kill(before[1].pid, process.SIGKILL))
        local replaced = H.wait_for(function()
            local st = H.status(proc, 1)
            return st and st[1].pid ~= before[1].pid and st[1].pid > 0 and st[1].version == 1
                and st
        end, 10)
        assert.truthy(replaced, H.tail(proc:output()))
        local res = assert(H.request(proc.addr))
        assert.equal("A0", version_of(res))
        -- The check was still spinning all along: it ends only now.
        assert.equal(0, H.count(proc:output(), "refused"), proc:output())
        H.write(flag, "")
        assert.truthy(H.wait_for(function()
            return proc:output():find("refused, version 1 keeps serving: .*version%.lua:3: spun")
        end, 10), proc:output())
        assert.equal(0, proc:stop(), H.tail(proc:output()))
    end)

    it("stops cleanly on SIGTERM while the check at start runs", function()
        dir = H.app_copy(APP)
        local flag = dir .. "/go"
        H.write(dir .. "/version.lua", ('io.stderr:write("top level spinning\\n")\n'
            .. 'while not io.open(%q) do end\nreturn "A0"\n'):format(flag))
        proc = assert(process.moonfcgi(dir .. "/app.lua", { args = { "--workers", "2" } }))
        assert.truthy(H.wait_for(function()
            return proc:output():find("top level spinning", 1, true)
        end, 10), proc:output())
        local kids = H.children(proc.pid)
        assert.equal(1, #kids, "only the check process runs: " .. proc:output())
        proc:signal(process.SIGTERM)
        assert.equal(0, proc:wait(10), proc:output())
        assert.truthy(H.wait_for(function()
            return H.gone(kids[1])
        end, 5), "the check process outlived the master")
        assert.equal(0, H.count(proc:output(), "serving"), proc:output())
    end)
end)

describe("moonfcgi --check", function()
    local dir
    before_each(function()
        dir = H.app_copy(APP)
    end)
    after_each(function()
        H.rmtree(dir)
    end)

    local function check(...)
        local args = { H.shell_quote(BIN) }
        for _, a in ipairs({ ... }) do
            args[#args + 1] = H.shell_quote(a)
        end
        args[#args + 1] = H.shell_quote(dir .. "/app.lua")
        return H.run(table.concat(args, " "))
    end

    it("runs the same check as a reload: a top level that exits, crashes or loops fails it",
        function()
        -- os.exit(0) at the top level must not pass for "loads fine".
        H.write(dir .. "/version.lua", 'os.exit(0)\nreturn "B1"\n')
        local status, out = check("--check")
        assert.equal(1, status, out)
        assert.matches("version%.lua:1: os%.exit%(0%) called while the app loads", out)
        assert.not_matches(": ok", out)

        H.write(dir .. "/version.lua", BAD["an FFI crash"].src)
        status, out = check("--check")
        assert.equal(1, status, out)
        assert.matches(BAD["an FFI crash"].says, out)

        H.write(dir .. "/version.lua", BAD["an endless loop"].src)
        status, out = check("--check", "--check-timeout", "2")
        assert.equal(1, status, out)
        assert.matches(BAD["an endless loop"].says, out)

        H.write(dir .. "/version.lua", version_file("B1"))
        status, out = check("--check")
        assert.equal(0, status, out)
        assert.matches("app%.lua: ok", out)
    end)
end)
