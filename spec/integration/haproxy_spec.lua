-- moonfcgi behind HAProxy (Debian's haproxy): an fcgi-app with option get-values and option
-- mpxs-conns, the one FastCGI client that multiplexes requests on a connection. Driven over
-- HTTP with curl. The configuration is the one docs/servers/haproxy.md shows
-- (spec/support/servers.lua), started on free loopback ports.
package.path = "spec/support/?.lua;" .. package.path
local servers = require "servers"

local ECHO = "spec/integration/apps/interop_echo.lua"

local stop_host = servers.stop_host

local summary = servers.summary

local worker_status = servers.worker_status

-- The lines interop_echo.lua appended to `path` that start with `kind`, parsed.
local function notes(path, kind)
    local out = {}
    for line in (servers.read_file(path) or ""):gmatch("[^\n]+") do
        if line:sub(1, #kind + 1) == kind .. " " then
            local t = { line = line }
            for k, v in line:gmatch("(%w+)=(%S+)") do
                t[k] = tonumber(v) or v
            end
            out[#out + 1] = t
        end
    end
    return out
end

describe("HAProxy in front of moonfcgi", function()
    local missing = servers.missing("haproxy", "haproxy")
    if missing then
        pending(missing)
        return
    end

    local app, srv, worker_pid
    local log = os.tmpname()

    setup(function()
        app = assert(servers.moonfcgi(ECHO, { args = { "--workers", "1" },
                                              env = { INTEROP_LOG = log } }))
        srv = assert(servers.haproxy.start(servers.documented("haproxy", { app = app.addr })))
        worker_pid = worker_status(app, function(st) return st.pid and st.pid > 0 end).pid
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
        stop_host(app)
        os.remove(log)
        servers.cleanup()
    end)

    it("passes a GET with its query string and headers through", function()
        local s = servers.checked_get(srv.url)
        assert.equal("true", s.keep_conn)
    end)

    it("passes a POST body of 300 KB through intact", function()
        servers.checked_post(srv.url)
    end)

    it("passes the app's status and headers through", function()
        local res = servers.curl{ url = srv.url .. "/x?status=418" }
        assert.equal(418, res.status)
        assert.equal("text/plain", res.headers["content-type"])
        assert.is_nil(res.headers["status"])
    end)

    it("multiplexes 200 concurrent requests over a few connections", function()
        os.remove(log)
        local codes = {}
        -- 200 requests, 50 at a time, each handler sleeping 0.2 s: about a second.
        local cmd = "curl -sS --no-progress-meter --parallel --parallel-max 50 --max-time 20 "
            .. "-o /dev/null "
            .. "-w '%{http_code}\\n' " .. servers.quote(srv.url .. "/mpx/[1-200]")
        local n = 0
        servers.each_line(cmd, 30, function(line)
            n = n + 1
            codes[line] = (codes[line] or 0) + 1
        end)
        assert.same({ ["200"] = 200 }, codes)

        -- Every handler noted how many requests the worker had in flight when it started,
        -- and how many connections it had open then. More requests than connections:
        -- requests shared a connection, each under its own request id.
        local mpx = notes(log, "mpx")
        assert.equal(200, #mpx)
        local shared, max_inflight, max_id = 0, 0, 0
        for _, t in ipairs(mpx) do
            if t.inflight > t.conns then
                shared = shared + 1
            end
            max_inflight = math.max(max_inflight, t.inflight)
            max_id = math.max(max_id, t.id)
        end
        assert.is_true(shared > 0, "no request shared a connection:\n" .. mpx[1].line)
        assert.is_true(max_inflight >= 10, "at most " .. max_inflight .. " requests in flight")
        assert.is_true(max_id > 1, "every request had id 1")
    end)

    it("ends the handler's request when the HTTP client goes away mid-response", function()
        os.remove(log)
        local res = servers.curl{ url = srv.url .. "/slow?seconds=5", max_time = 0.3 }
        assert.equal(28, res.exit) -- curl's "operation timed out"
        local slow = servers.eventually(function()
            return notes(log, "slow")[1]
        end, 4)
        assert.is_table(slow, "the handler did not finish")
        assert.equal("true", slow.aborted)
    end)

    -- HAProxy sends FCGI_ABORT_REQUEST while it is still forwarding the request body; once
    -- the body is through it closes the connection instead (both end the handler).
    it("ends the handler's request when the client goes away during the upload", function()
        os.remove(log)
        local res = servers.curl{ url = srv.url .. "/slow?seconds=5", max_time = 0.5,
                                  method = "POST", body = ("x"):rep(100000),
                                  headers = { ["Content-Type"] = "application/octet-stream" },
                                  args = { "--limit-rate 20k" } }
        assert.equal(28, res.exit)
        local slow = servers.eventually(function()
            return notes(log, "slow")[1]
        end, 4)
        assert.is_table(slow, "the handler did not finish")
        assert.equal("true", slow.aborted)
    end)

    it("stays healthy: same worker, nothing left in flight, still serving", function()
        local st = worker_status(app, function(s) return s.in_flight == 0 end)
        assert.equal(0, st.in_flight)
        assert.equal(worker_pid, st.pid)
        summary(servers.curl{ url = srv.url .. "/after" })
        assert.is_nil(app:output():match("%[error%][^\n]*"))
    end)

    servers.describe_rest(function(addr)
        return servers.haproxy.start(servers.documented("haproxy", { app = addr }))
    end)
end)
