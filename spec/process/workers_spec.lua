-- --workers N: N processes share the listening socket, and the master's SIGUSR1 report shows
-- each one.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local client = require "moonfcgi.client"
local H = require "process_helpers"

local APP = "spec/process/apps/misbehave.lua"

local function pid_of(res)
    return tonumber(res.body:match("^ok (%d+)$"))
end

-- The status once the workers published the counters of `served` requests and closed every
-- connection (they publish from their loop's tick, about once a second).
local function settled_status(proc, served)
    return H.wait_for(function()
        local s = H.status(proc, 2)
        return s and s[1].served + s[2].served >= served and s[1].conns + s[2].conns == 0
            and s[1].rss > 0 and s[2].rss > 0 and s
    end, 5)
end

describe("--workers 2", function()
    local proc

    after_each(function()
        if proc then
            proc:cleanup()
        end
    end)

    it("has both workers take connections: 20 connections made one after another all "
        .. "succeed and both workers accepted some", function()
        proc = H.start(APP, { workers = 2 })
        local pids = {}
        for _ = 1, 20 do
            local res = assert(H.request(proc.addr, { REQUEST_METHOD = "GET" }))
            assert.equal(200, res.status)
            pids[pid_of(res)] = (pids[pid_of(res)] or 0) + 1
        end
        local st = settled_status(proc, 20)
        local where = H.tail(proc:output())
        assert.is_table(st, where)
        for i = 1, 2 do
            assert.equal(pids[st[i].pid] or 0, st[i].served, where)
            assert.is_true(st[i].accepted > 0, "worker " .. i .. " accepted none\n" .. where)
        end
    end)

    it("reports on SIGUSR1 each worker's pid, version, served, in-flight, conns, accepted "
        .. "and rss", function()
        -- --max-conns 10 makes the 20 connections, all held open, split over both workers.
        proc = H.start(APP, { workers = 2, args = { "--max-conns", "10" } })
        local conns, pids = {}, {}
        finally(function()
            for _, c in ipairs(conns) do
                c:close()
            end
        end)
        for i = 1, 20 do
            conns[i] = assert(client.connect(proc.addr, { timeout = 10 }))
        end
        for i = 1, 20 do
            local res = assert(conns[i]:request{ params = { REQUEST_METHOD = "GET" } })
            assert.equal(200, res.status)
            pids[pid_of(res)] = (pids[pid_of(res)] or 0) + 1
        end
        local open = H.wait_for(function()
            local s = H.status(proc, 2)
            return s and s[1].conns + s[2].conns == 20 and s
        end, 5)
        assert.is_table(open, H.tail(proc:output()))
        assert.equal(10, open[1].conns)
        assert.equal(10, open[2].conns)
        for i = 1, 20 do
            conns[i]:close()
        end

        local st = settled_status(proc, 20)
        local where = H.tail(proc:output())
        assert.is_table(st, where)
        assert.equal(2, st.workers)
        assert.equal(1, st.version)
        -- The pids are the master's children, and the ones that answered.
        assert.same(H.children(proc.pid), { math.min(st[1].pid, st[2].pid),
            math.max(st[1].pid, st[2].pid) })
        for i = 1, 2 do
            local w = st[i]
            assert.equal(1, w.version, where)
            assert.equal(0, w.in_flight, where)
            assert.equal(pids[w.pid], w.served, where)
            -- The 20, and the start-up probe of the spec helper.
            assert.is_true(w.accepted >= 10, where)
            assert.is_true(w.rss > 1000, where)
        end
        assert.equal(20, st[1].served + st[2].served, where)
        -- One summary line and one line per worker, in the documented form.
        assert.matches("status: 2 workers, app version 1", proc:output())
        for i = 1, 2 do
            assert.matches("status: worker " .. i .. " pid " .. st[i].pid .. " version 1 served "
                .. "%d+ in%-flight 0 conns 0 accepted %d+ rss %d+ KiB", proc:output())
        end
    end)

    it("reports requests in flight", function()
        proc = H.start(APP, { workers = 2 })
        local conns = {}
        finally(function()
            for _, c in ipairs(conns) do
                c:close()
            end
        end)
        local reader = H.log_reader(proc)
        for i = 1, 3 do
            conns[i] = assert(client.connect(proc.addr, { timeout = 10 }))
            assert(conns[i]:send{ params = { REQUEST_URI = "/sleep", SLEEP = "3",
                TAG = "s" .. i } })
        end
        local n = 0
        assert.truthy(H.wait_for(function()
            for _, line in ipairs(reader:lines()) do
                if line:find("sleeper s%d started") then
                    n = n + 1
                end
            end
            return n == 3
        end, 5), H.tail(proc:output()))
        local st = H.wait_for(function()
            local s = H.status(proc, 2)
            return s and s[1].in_flight + s[2].in_flight == 3 and s
        end, 2.5)
        assert.is_table(st, H.tail(proc:output()))
        assert.equal(3, st[1].conns + st[2].conns)
    end)
end)
