-- --shared NAME:SIZE with the real binary: one dictionary for all workers, made by the master,
-- that outlives workers and stays usable and consistent when workers die in the middle of
-- writing to it (docs/shared.md).
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local client = require "moonfcgi.client"
local H = require "process_helpers"

local APP = "spec/shared/apps/workers.lua"

local function get(proc, params)
    local res = assert(H.request(proc.addr, params, 30))
    return res.body
end

describe("--shared with several workers", function()
    local proc

    after_each(function()
        if proc then
            proc:cleanup()
            proc = nil
        end
    end)

    it("is one dictionary: two workers incrementing one key 10^5 times each end at 2 x 10^5",
        function()
            proc = H.start(APP, { workers = 2, args = { "--shared", "store:1m" } })
            local N = 100000
            local first = assert(client.connect(proc.addr, { timeout = 60 }))
            local id = assert(first:send{ params = { OP = "race", N = tostring(N) } })
            -- The first worker waits for a second one to join; new connections may land on
            -- the first worker again, which answers "again" at once.
            local second
            for _ = 1, 50 do
                local body = get(proc, { OP = "race", N = tostring(N) })
                if body == "done" then
                    second = true
                    break
                end
                assert.equal("again", body)
            end
            assert.is_true(second, "no second worker joined")
            assert.equal("done", assert(first:wait(id)).body)
            first:close()
            assert.equal(tostring(2 * N), get(proc, { OP = "get", KEY = "n" }))
        end)

    it("outlives the workers: a replaced worker sees what the dead one wrote", function()
        proc = H.start(APP, { workers = 1, args = { "--shared", "store:1m" } })
        assert.equal("5", get(proc, { OP = "incr", N = "5" }))
        local pid = H.children(proc.pid)[1]
        H.kill(pid, 9)
        assert.is_truthy(H.wait_for(function()
            local c = H.children(proc.pid)
            return c[1] and c[1] ~= pid and H.count(proc:output(), "app version %d+ loaded") >= 2
        end, 10))
        assert.equal("5", get(proc, { OP = "get", KEY = "n" }))
    end)

    it("shows in the SIGUSR1 status report: capacity, free space and keys", function()
        proc = H.start(APP, { workers = 1,
            args = { "--shared", "store:1m", "--shared", "other:64k" } })
        assert.equal("3", get(proc, { OP = "incr", N = "3" }))
        local reader = H.log_reader(proc)
        reader:lines()
        H.kill(proc.pid, H.SIGUSR1)
        local found = {}
        assert.is_truthy(H.wait_for(function()
            for _, line in ipairs(reader:lines()) do
                local name, cap, free, keys =
                    line:match("status: shared (%w+) capacity (%d+) free (%d+) keys (%d+)")
                if name then
                    found[name] = { tonumber(cap), tonumber(free), tonumber(keys) }
                end
            end
            return found.store and found.other
        end, 5), proc:output())
        assert.equal(1024 * 1024, found.store[1])
        assert.equal(1, found.store[3])
        assert.is_true(found.store[2] > 0 and found.store[2] < found.store[1])
        assert.same({ 64 * 1024, found.other[2], 0 }, found.other)
    end)

    it("stays usable and consistent after 100 workers were SIGKILLed in the middle of writes",
        function()
            local workers = 4
            proc = H.start(APP, { workers = workers,
                args = { "--shared", "store:4m", "--timeout", "30" } })
            local seen, conns, kills = {}, {}, 0
            local function send_loop()
                local c = assert(client.connect(proc.addr, { timeout = 60 }))
                assert(c:send{ params = { OP = "write_loop" } })
                conns[#conns + 1] = c
                if #conns > 3 * workers then
                    table.remove(conns, 1):close()
                end
            end
            -- One looping request per worker, sent apart so that each lands on its own.
            for _ = 1, workers do
                send_loop()
                H.sleep(0.2)
            end
            local deadline = H.now() + 240
            while kills < 100 and H.now() < deadline do
                local now = H.now()
                for _, pid in ipairs(H.children(proc.pid)) do
                    if not seen[pid] then
                        -- A new worker: it takes the next looping request.
                        seen[pid] = now
                        send_loop()
                    elseif now - seen[pid] > 1.1 and H.proc_state(pid) == "R" and kills < 100 then
                        -- Old enough that the master replaces it at once (no back-off), and
                        -- running: in the middle of its write loop.
                        H.kill(pid, 9)
                        seen[pid] = math.huge
                        kills = kills + 1
                    end
                end
                H.sleep(0.01)
            end
            assert.equal(100, kills)
            -- Stop the loops still running; then a fresh worker reads everything back.
            for _, c in ipairs(conns) do
                c:close()
            end
            for _, pid in ipairs(H.children(proc.pid)) do
                H.kill(pid, 9)
            end
            local body
            assert.is_truthy(H.wait_for(function()
                local res = H.request(proc.addr, { OP = "verify" }, 30)
                body = res and res.body
                return body
            end, 20))
            local keys, recoveries = body:match("^ok keys (%d+) recoveries (%d+)$")
            assert.is_truthy(keys, body)
            assert.is_true(tonumber(keys) > 50, body)
            -- Some of the kills landed while the worker held the dictionary's lock.
            assert.is_true(tonumber(recoveries) > 0, body)
            assert.equal("fine", get(proc, { OP = "get", KEY = "after" }))
        end)
end)
