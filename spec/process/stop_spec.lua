-- A graceful stop (docs/api.md, "Command line", and docs/process.md, "Signals"): on SIGTERM or
-- SIGINT the master stops accepting, the requests in flight finish (up to --timeout) and it
-- exits 0.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local process = require "process"
local client = require "moonfcgi.client"
local H = require "process_helpers"

local APP = "spec/process/apps/misbehave.lua"

-- Starts n sleeping requests (SLEEP seconds each) spread over `nconns` connections and waits
-- until the app logged that every one is running. Returns the list of { conn, id, tag }.
local function in_flight(proc, conns, n, nconns)
    local reader = H.log_reader(proc)
    local reqs = {}
    for i = 1, nconns do
        conns[i] = assert(client.connect(proc.addr, { timeout = 15 }))
    end
    for k = 1, n do
        local c = conns[(k - 1) % nconns + 1]
        local tag = "r" .. k
        reqs[k] = { c = c, tag = tag, id = assert(c:send{ params = {
            REQUEST_METHOD = "GET", REQUEST_URI = "/sleep", SLEEP = "1", TAG = tag } }) }
    end
    local started = 0
    H.wait_for(function()
        for _, line in ipairs(reader:lines()) do
            if line:find("sleeper r%d+ started") then
                started = started + 1
            end
        end
        return started == n
    end, 10)
    assert.equal(n, started, H.tail(proc:output()))
    return reqs
end

-- After the signal, connection attempts are refused (once the workers closed their copies of
-- the listening socket). Returns the error of the refused attempt, or nil.
local function refused(addr)
    return H.wait_for(function()
        local c, err = client.connect(addr, { timeout = 1 })
        if c then
            c:close()
            return nil
        end
        return err
    end, 3)
end

local function stops_gracefully(sig, n, nconns)
    local proc = H.start(APP)
    local conns = {}
    finally(function()
        for _, c in ipairs(conns) do
            c:close()
        end
        proc:cleanup()
    end)
    local reqs = in_flight(proc, conns, n, nconns)
    proc:signal(sig)
    local err = refused(proc.addr)
    assert.matches("refused", tostring(err), H.tail(proc:output()))
    for _, r in ipairs(reqs) do
        local res, rerr = r.c:wait(r.id, 10)
        assert.is_table(res, "request " .. r.tag .. ": " .. tostring(rerr) .. "\n"
            .. H.tail(proc:output()))
        assert.equal(200, res.status)
        assert.matches("^ok %d+$", res.body)
    end
    -- Each connection is closed by the worker once its requests are done; the web server
    -- then closes its side.
    for _, c in ipairs(conns) do
        assert.truthy(H.wait_for(function()
            return (c:closed())
        end, 5), H.tail(proc:output()))
        c:close()
    end
    -- Still refused: nothing listens any more.
    local c2, err2 = client.connect(proc.addr, { timeout = 1 })
    assert.is_nil(c2)
    assert.matches("refused", tostring(err2))
    assert.equal(0, proc:wait(15), H.tail(proc:output()))
    assert.matches("stopped %(exit status 0%)", proc:output())
end

describe("a graceful stop", function()
    it("on SIGTERM finishes all 50 requests in flight over 5 connections, refuses new "
        .. "connections, and exits 0", function()
        stops_gracefully(process.SIGTERM, 50, 5)
    end)

    it("on SIGINT does the same", function()
        stops_gracefully(process.SIGINT, 10, 2)
    end)

    it("on SIGTERM that comes while the workers are starting still stops every worker and "
        .. "exits 0", function()
        -- systemctl stop right after a start, or while a dead worker is being replaced. The
        -- signal goes to the master as soon as it logs that it starts the workers (the app
        -- passed its check), while they are being forked. Idle workers stop at once; one that missed the stop would
        -- keep the master waiting --timeout + 5 s and make it exit 1, so 3 s is plenty.
        local procs = {}
        finally(function()
            for _, p in ipairs(procs) do
                p:cleanup()
            end
        end)
        for trial = 1, 15 do
            local port = process.free_port()
            local p = assert(process.spawn({ process.bin, "--workers", "4", "--timeout", "1",
                "--listen", "127.0.0.1:" .. port, APP }, { env = {
                ASAN_OPTIONS = os.getenv("MOONFCGI_CHILD_ASAN_OPTIONS") or false,
                LD_PRELOAD = false } }))
            procs[#procs + 1] = p
            -- A tight poll (bounded): the window is the first milliseconds of a worker.
            local deadline = H.now() + 5
            while not p:output():find(" serving ", 1, true) and H.now() < deadline do
            end
            p:signal(process.SIGTERM)
            local status = p:wait(3)
            if status ~= 0 then
                p:signal(process.SIGKILL)
                p:wait(5)
            end
            assert.equal(0, status, "trial " .. trial .. ":\n" .. p:output())
        end
    end)
end)
