-- The master supervises its workers: one that dies (killed, os.exit, a crash in native code)
-- or gets stuck (a handler that never yields) is replaced, and only the requests it was
-- running fail. The listening socket stays open in the master throughout, so new connections
-- are never refused.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local process = require "process"
local client = require "moonfcgi.client"
local H = require "process_helpers"

local APP = "spec/process/apps/misbehave.lua"

local function pid_of(res)
    return tonumber(res.body:match("^ok (%d+)$"))
end

-- The status slot (worker number) that pid runs in, from a status report.
local function slot_of(st, pid)
    for i = 1, st.workers do
        if st[i].pid == pid then
            return i
        end
    end
end

-- Load whose kept connections each have requests sleeping in the worker (so a worker that
-- dies has requests in flight), plus a new connection per round for a quick request.
local function sleepy_load(addr)
    return H.load(addr, {
        conns = 4, depth = 2, fresh = true,
        params = function(_, conn)
            if conn == "fresh" then
                return { REQUEST_METHOD = "GET", REQUEST_URI = "/" }
            end
            return { REQUEST_METHOD = "GET", REQUEST_URI = "/sleep", SLEEP = "0.05" }
        end,
    })
end

-- Runs the load while `trigger` makes worker `victim` die, until the status shows another pid
-- in its slot (bounded by `bound` seconds), then half a second more. Connection attempts are
-- made all along. Returns what happened.
local function through_a_death(proc, load, victim, trigger, bound)
    local st = assert(H.status(proc))
    local slot = assert(slot_of(st, victim), "pid " .. victim .. " is not a worker")
    local r = { victim = victim, slot = slot, connects = 0, refused = {} }
    r.t0 = H.now()
    load:send("before the death")
    trigger()
    load:collect()
    local deadline = r.t0 + bound + 2
    local next_status = 0
    while H.now() < deadline do
        if not r.gone_at and H.gone(victim) then
            r.gone_at = H.now()
        end
        for _ = 1, 3 do
            local c, err = client.connect(proc.addr, { timeout = 2 })
            r.connects = r.connects + 1
            if c then
                c:close()
            else
                r.refused[#r.refused + 1] = tostring(err)
            end
        end
        load:round("while replacing")
        if H.now() >= next_status then
            local s = H.status(proc, 1)
            if s and s[slot].pid > 0 and s[slot].pid ~= victim then
                r.replaced_at = H.now()
                r.new_pid = s[slot].pid
                break
            end
            next_status = H.now() + 0.1
        end
    end
    r.gone_at = r.gone_at or r.replaced_at
    local after = H.now() + 0.5
    repeat
        load:round("after the replacement")
    until H.now() >= after
    -- Failures allowed: requests on connections of the dead worker (or new connections it
    -- may have accepted before it died), sent before it was gone. Nothing else.
    r.allowed, r.unexpected = 0, {}
    for _, f in ipairs(load.failures) do
        local on_victim = f.pid == victim or f.pid == nil or f.conn == "fresh"
        if f.kind ~= "connect" and on_victim and r.gone_at and f.sent and f.sent <= r.gone_at then
            r.allowed = r.allowed + 1
        else
            r.unexpected[#r.unexpected + 1] = f.msg
        end
    end
    r.where = ("victim %d (worker %d), replaced by %s after %s s; %d connects; %s\n%s"):format(
        victim, slot, tostring(r.new_pid),
        r.replaced_at and ("%.2f"):format(r.replaced_at - r.t0) or "never", r.connects,
        load:report(), H.tail(proc:output()))
    return r
end

local function assert_replaced_cleanly(r, bound)
    assert.is_number(r.new_pid, r.where)
    assert.is_true(r.replaced_at - r.t0 <= bound, r.where)
    assert.same({}, r.refused, r.where)
    assert.same({}, r.unexpected, r.where)
end

describe("a worker that dies", function()
    local proc, load

    before_each(function()
        proc = H.start(APP)
        load = sleepy_load(proc.addr)
        -- Warm up until every kept connection has answered, so we know its worker.
        local deadline = H.now() + 5
        repeat
            load:round("warm-up")
        until (load.conn_pid[1] and load.conn_pid[2] and load.conn_pid[3] and load.conn_pid[4])
            or H.now() > deadline
        assert.equal(0, load.failed, load:report())
    end)

    after_each(function()
        load:close()
        proc:cleanup()
    end)

    it("of kill -9 is replaced within 1 s; only its in-flight requests fail and new "
        .. "connections are never refused", function()
        local victim = load.conn_pid[1]
        local r = through_a_death(proc, load, victim, function()
            H.kill(victim, process.SIGKILL)
        end, 1.0)
        assert_replaced_cleanly(r, 1.0)
        -- Connection 1 had requests sleeping in the victim: those, and only such, failed.
        assert.is_true(r.allowed >= 1, r.where)
        assert.matches("worker %d+ %(pid " .. victim .. "%) died of signal 9", proc:output())
        -- The other worker was never touched.
        local st = assert(H.status(proc))
        assert.is_true(st[1].pid ~= victim and st[2].pid ~= victim)
        assert.equal(0, proc:stop())
    end)

    for _, case in ipairs({
        { uri = "/exit", what = "os.exit() in a handler", log = "exited with status 3" },
        { uri = "/segv", what = "a crash through the FFI (SIGSEGV)", log = "died of signal 11" },
    }) do
        it("of " .. case.what .. " is replaced; other requests keep succeeding", function()
            local c = assert(client.connect(proc.addr, { timeout = 10 }))
            finally(function()
                c:close()
            end)
            local victim = pid_of(assert(c:request{ params = { REQUEST_URI = "/" } }))
            local res, err
            local r = through_a_death(proc, load, victim, function()
                res, err = c:request{ params = { REQUEST_URI = case.uri } }
            end, 5)
            -- The request that killed its worker gets no answer.
            assert.is_nil(res, r.where)
            assert.equal("closed", err, r.where)
            assert_replaced_cleanly(r, 5)
            -- Under the sanitizer build, ASan reports the crash (or leaks at exit) and exits.
            local log = os.getenv("MOONFCGI_CHILD_ASAN_OPTIONS") and "exited with status %d+"
                or case.log
            assert.matches("worker %d+ %(pid " .. victim .. "%) " .. log, proc:output())
            assert.equal(0, proc:stop())
        end)
    end
end)

describe("a worker whose handler never yields", function()
    it("is killed and replaced after --timeout plus the grace period while requests keep "
        .. "succeeding on the other worker", function()
        local proc = H.start(APP, { args = { "--timeout", "1" } })
        local spin = assert(client.connect(proc.addr, { timeout = 15 }))
        finally(function()
            spin:close()
            proc:cleanup()
        end)
        local st = assert(H.status(proc))
        local victim = pid_of(assert(spin:request{ params = { REQUEST_URI = "/" } }))
        local slot = assert(slot_of(st, victim))
        local other = st[3 - slot].pid

        local t0 = H.now()
        local id = assert(spin:send{ params = { REQUEST_URI = "/spin", TAG = "v" } })
        -- Once the victim took the request its loop does not run, so it accepts nothing more.
        assert.truthy(H.wait_for(function()
            return proc:output():find("spinner v started", 1, true)
        end, 10), proc:output())
        local answered, failures, replaced_at, new_pid = {}, {}, nil, nil
        local next_status = 0
        local deadline = t0 + 12
        while H.now() < deadline do
            local res, err = H.request(proc.addr, { REQUEST_URI = "/" }, 5)
            if not res then
                failures[#failures + 1] = tostring(err)
            else
                local pid = pid_of(res)
                answered[pid] = (answered[pid] or 0) + 1
                -- The other worker, or (once it is up) the victim's replacement.
                if pid == victim then
                    failures[#failures + 1] = "answered by the stuck worker " .. tostring(pid)
                end
            end
            if H.now() >= next_status then
                local s = H.status(proc, 1)
                if s and s[slot].pid ~= victim and s[slot].pid > 0 then
                    if not replaced_at then
                        replaced_at = H.now()
                        new_pid = s[slot].pid
                        deadline = math.min(deadline, H.now() + 0.5)
                    end
                end
                next_status = H.now() + 0.1
            end
            H.sleep(0.01)
        end
        local log = proc:output()
        local where = ("victim %d, other %d, new %s after %s s\n%s"):format(victim, other,
            tostring(new_pid), replaced_at and ("%.2f"):format(replaced_at - t0) or "never",
            H.tail(log))
        assert.same({}, failures, where)
        assert.is_number(new_pid, where)
        assert.is_true((answered[other] or 0) >= 10, where)
        -- Not before the grace period (--timeout 1 + 2 s, less a heartbeat interval).
        assert.is_true(replaced_at - t0 >= 2.5, where)
        assert.equal(1, H.count(log, "%(pid " .. victim .. "%): its loop has not run"), where)
        -- The stuck request ends with its worker; its connection is closed.
        local res, err = spin:wait(id, 5)
        assert.is_nil(res, where)
        assert.equal("closed", err, where)
        -- The replacement serves.
        local served_by_new = H.wait_for(function()
            local r2 = H.request(proc.addr, { REQUEST_URI = "/" }, 5)
            return r2 and pid_of(r2) == new_pid
        end, 5)
        assert.truthy(served_by_new, where)
        assert.equal(0, proc:stop())
    end)
end)
