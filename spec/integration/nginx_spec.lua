-- moonfcgi behind a real nginx (Debian's), driven over HTTP with curl: the deployment the
-- guide describes, with the configurations spec/support/nginx.lua generates.
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local needs = require "needs"
local process = require "process"
local nginx = require "nginx"
local http = require "http_client"
local client = require "moonfcgi.client"
local cjson = require "cjson"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local REST = "examples/rest.lua"
local PROBE = "spec/integration/apps/probe.lua"
local SIGUSR1 = 10

local function sleep(seconds)
    ffi.C.poll(nil, 0, seconds * 1000)
end

-- Worker 1's counters, from the status lines SIGUSR1 makes the master log (docs/api.md).
-- Workers refresh them on every tick of their loop (at most a second apart), so this asks
-- until want(status) holds or `timeout` passes, and returns the last status seen.
local function worker_status(p, want, timeout)
    local deadline = client.now() + (timeout or 5)
    local st
    repeat
        p:signal(SIGUSR1)
        sleep(0.1)
        local line
        for l in p:output():gmatch("status: worker 1 [^\n]*") do
            line = l
        end
        if line then
            st = {
                served = tonumber(line:match("served (%d+)")),
                in_flight = tonumber(line:match("in%-flight (%d+)")),
                conns = tonumber(line:match("conns (%d+)")),
                accepted = tonumber(line:match("accepted (%d+)")),
            }
            if not want or want(st) then
                return st
            end
        end
        sleep(0.1)
    until client.now() >= deadline
    return st
end

-- The status once it has settled: two readings a worker tick (at most a second) apart agree.
local function settled_status(p)
    local last = worker_status(p)
    for _ = 1, 5 do
        sleep(1.05)
        local st = worker_status(p)
        if st and last and st.served == last.served and st.accepted == last.accepted
            and st.in_flight == last.in_flight then
            return st
        end
        last = st
    end
    return nil
end

-- Stops moonfcgi and checks it exited 0: a graceful stop, and under the ASan suite no leak
-- (those specs make a leak exit with status 23).
local function stop_host(p)
    if p then
        local st = p:stop()
        local out = p:output()
        p:cleanup()
        assert.equal(0, st, "moonfcgi exited with status " .. tostring(st) .. ":\n" .. out)
    end
end

local function json(res)
    return cjson.decode(res.body)
end

local function send_json(method, url, doc)
    return http.request{ method = method, url = url, body = cjson.encode(doc),
                         headers = { ["Content-Type"] = "application/json" }, max_time = 10 }
end

-- Bytes 0..255 in an order that changes along the body, so that a dropped, repeated or
-- reordered chunk shows.
local function pattern(n)
    local block = {}
    for i = 0, 255 do
        block[#block + 1] = string.char((i * 7 + 3) % 256)
    end
    block = table.concat(block)
    local parts, len, k = {}, 0, 0
    while len < n do
        local piece = block:sub(k % 256 + 1) .. block:sub(1, k % 256) .. string.format("%08d", k)
        parts[#parts + 1] = piece
        len = len + #piece
        k = k + 1
    end
    return table.concat(parts):sub(1, n)
end

describe("nginx in front of moonfcgi", function()
    if not nginx.find() then
        pending(needs.missing("nginx not installed (apt-get install nginx); these specs need it"))
        return
    end
    if not http.have_curl() then
        pending(needs.missing("curl not installed (apt-get install curl); these specs need it"))
        return
    end

    teardown(function()
        http.cleanup()
    end)

    describe("with examples/rest.lua, fastcgi_keep_conn on and a keepalive pool", function()
        local p, srv

        setup(function()
            p = assert(process.moonfcgi(REST, { args = { "--workers", "1" } }))
            srv = assert(nginx.start{ upstream = p.addr, keepalive = 4, keepalive_requests = 10000 })
        end)

        teardown(function()
            if srv then
                srv:stop()
            end
            stop_host(p)
        end)

        it("answers GET /items with a JSON list", function()
            local res = http.get(srv.url .. "/items", { max_time = 10 })
            assert.equal(200, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.equal("table", type(json(res)))
        end)

        it("creates, reads, replaces and deletes an item", function()
            local res = send_json("POST", srv.url .. "/items", { name = "apple" })
            assert.equal(201, res.status)
            local item = json(res)
            assert.equal("apple", item.name)
            assert.equal("/items/" .. item.id, res.headers["location"])
            local url = srv.url .. res.headers["location"]

            res = http.get(url, { max_time = 10 })
            assert.equal(200, res.status)
            assert.same(item, json(res))

            res = send_json("PUT", url, { name = "pear", colour = "green" })
            assert.equal(200, res.status)
            assert.same({ id = item.id, name = "pear", colour = "green" }, json(res))

            res = http.get(srv.url .. "/items", { max_time = 10 })
            local found
            for _, it in ipairs(json(res)) do
                if it.id == item.id then
                    found = it
                end
            end
            assert.same({ id = item.id, name = "pear", colour = "green" }, found)

            res = http.request{ method = "DELETE", url = url, max_time = 10 }
            assert.equal(204, res.status)
            assert.equal("", res.body)

            res = http.get(url, { max_time = 10 })
            assert.equal(404, res.status)
            assert.is_string(json(res).error)
        end)

        it("passes a response larger than nginx's buffers through its temp file", function()
            local name = pattern(1024 * 1024):gsub("[^%w]", "x")
            local res = send_json("POST", srv.url .. "/items", { name = name })
            assert.equal(201, res.status)
            local item = json(res)
            assert.is_true(item.name == name, "the 1 MiB name came back changed")
            res = http.request{ method = "DELETE", url = srv.url .. "/items/" .. item.id,
                                max_time = 10 }
            assert.equal(204, res.status)
        end)

        it("passes the app's errors through: 415 for a body that is not JSON", function()
            local res = http.request{ method = "POST", url = srv.url .. "/items", body = "name=x",
                                      headers = { ["Content-Type"] = "text/plain" }, max_time = 10 }
            assert.equal(415, res.status)
            assert.is_string(json(res).error)
        end)

        it("serves 1,000 sequential requests over one kept upstream connection", function()
            local before = assert(settled_status(p))
            assert.equal(0, before.in_flight)
            local urls = {}
            for i = 1, 1000 do
                urls[i] = srv.url .. "/items"
            end
            local results = http.many(urls, 60)
            assert.equal(1000, #results)
            local ok, connects = 0, 0
            for _, r in ipairs(results) do
                if r.status == 200 then
                    ok = ok + 1
                end
                connects = connects + r.connects
            end
            assert.equal(1000, ok)
            -- curl itself used one HTTP connection for them all.
            assert.equal(1, connects)
            local after = assert(worker_status(p, function(s)
                return s.served >= before.served + 1000 and s.in_flight == 0
            end))
            assert.equal(before.served + 1000, after.served)
            -- nginx kept its connection to moonfcgi: at most one new one for all 1,000.
            assert.is_true(after.accepted - before.accepted <= 1,
                "moonfcgi accepted " .. (after.accepted - before.accepted) .. " connections")
            assert.equal(1, after.conns)
        end)
    end)

    describe("with fastcgi_buffering off", function()
        local p, srv, log

        setup(function()
            log = http.scratch("probe.log")
            p = assert(process.moonfcgi(PROBE, { args = { "--workers", "1" },
                                                 env = { PROBE_LOG = log } }))
            srv = assert(nginx.start{
                upstream = p.addr,
                keepalive = 4,
                buffering = false,
                client_max_body_size = "11m",
                large_client_header_buffers = "4 64k",
                timeouts = { connect = "5s", send = "10s", read = "10s" },
            })
        end)

        teardown(function()
            if srv then
                srv:stop()
            end
            stop_host(p)
        end)

        it("passes request bodies from empty to 10 MiB and echoes them back intact", function()
            for _, n in ipairs({ 0, 1, 8191, 32768, 65536, 1024 * 1024 + 7, 10 * 1024 * 1024 }) do
                local body = pattern(n)
                local res = http.request{ method = "POST", url = srv.url .. "/echo", body = body,
                                          headers = { ["Content-Type"] = "application/octet-stream" },
                                          max_time = 30 }
                assert.equal(200, res.status, "status for a body of " .. n .. " bytes")
                assert.equal(tostring(n), res.headers["x-body-length"])
                assert.equal(n, #res.body)
                assert.is_true(res.body == body, "the echo of " .. n .. " bytes differs")
            end
        end)

        it("accepts a long URL that nginx sends as one params record of 65528 to 65535 bytes",
            function()
                -- The query string appears twice in the params (QUERY_STRING, REQUEST_URI) and
                -- the X-Pad header once: measure once, then size both to hit each total.
                local q0, p0 = 1000, 200
                local function ask(qlen, plen)
                    return http.get(srv.url .. "/params?x=" .. ("q"):rep(qlen - 2),
                        { headers = { ["X-Pad"] = ("p"):rep(plen) }, max_time = 10 })
                end
                local res = ask(q0, p0)
                assert.equal(200, res.status)
                local t0 = tonumber(res.body:match("total=(%d+)"))
                assert.equal(q0, tonumber(res.body:match("query=(%d+)")))
                for _, target in ipairs({ 65528, 65529, 65534, 65535 }) do
                    local d = target - t0
                    local qlen, plen = q0 + math.floor(d / 2), p0 + d % 2
                    res = ask(qlen, plen)
                    assert.equal(200, res.status, "params of " .. target .. " bytes: " .. res.body)
                    assert.equal(target, tonumber(res.body:match("total=(%d+)")))
                    assert.equal(qlen, tonumber(res.body:match("query=(%d+)")))
                end
            end)

        it("streams a response in pieces as the handler flushes them", function()
            local pieces = {}
            http.each_line("curl -sS -N --max-time 10 '" .. srv.url .. "/stream?n=4&gap=0.3'", 15,
                function(line, t)
                    pieces[#pieces + 1] = { line = line, t = t }
                end)
            assert.equal(4, #pieces)
            for i = 1, 4 do
                assert.equal("piece " .. i, pieces[i].line)
            end
            -- Three pauses of 0.3 s between the first and the last piece: had nginx or moonfcgi
            -- held the output back, the pieces would arrive together.
            assert.is_true(pieces[4].t - pieces[1].t >= 0.75,
                "pieces arrived within " .. (pieces[4].t - pieces[1].t) .. " s")
            for i = 2, 4 do
                assert.is_true(pieces[i].t - pieces[i - 1].t >= 0.15,
                    "piece " .. i .. " came " .. (pieces[i].t - pieces[i - 1].t) .. " s after the last")
            end
        end)

        it("ends the handler's request when the HTTP client goes away mid-response", function()
            local res = http.get(srv.url .. "/slow", { max_time = 1 })
            assert.equal(28, res.exit) -- curl: operation timed out, after part of the body
            assert.matches("^line 1\n", res.body)
            local noted
            local deadline = client.now() + 5
            repeat
                noted = http.read_file(log)
                if noted and noted ~= "" then
                    break
                end
                sleep(0.05)
            until client.now() >= deadline
            local lines = tonumber((noted or ""):match("aborted (%d+)"))
            assert.is_number(lines, "the handler did not see the abort: " .. tostring(noted))
            assert.is_true(lines >= 5 and lines < 60, "lines before the abort: " .. lines)
            -- The worker is back to no request in flight and serves the next one.
            local st = worker_status(p, function(s) return s.in_flight == 0 end)
            assert.equal(0, st.in_flight)
            res = http.get(srv.url .. "/", { max_time = 10 })
            assert.equal(200, res.status)
            assert.equal("ok GET /\n", res.body)
        end)
    end)

    describe("with moonfcgi on a unix socket", function()
        local p, srv, dir

        setup(function()
            dir = assert(nginx.make_prefix()) -- world-traversable: nginx's workers connect
            p = assert(process.moonfcgi(PROBE, {
                listen = "unix:" .. dir .. "/moonfcgi.sock",
                args = { "--workers", "1", "--socket-mode", "0666" },
            }))
            srv = assert(nginx.start{ upstream = "unix:" .. dir .. "/moonfcgi.sock", keepalive = 2 })
        end)

        teardown(function()
            if srv then
                srv:stop()
            end
            local ok, err = pcall(stop_host, p)
            if dir then
                os.execute("rm -rf " .. http.quote(dir))
            end
            assert(ok, err)
        end)

        it("serves requests through it", function()
            for i = 1, 3 do
                local res = http.get(srv.url .. "/hello/" .. i, { max_time = 10 })
                assert.equal(200, res.status)
                assert.equal("ok GET /hello/" .. i .. "\n", res.body)
            end
        end)
    end)

    describe("with fastcgi_next_upstream and one upstream down", function()
        local p, srv

        setup(function()
            p = assert(process.moonfcgi(PROBE, { args = { "--workers", "1" } }))
            local dead = "127.0.0.1:" .. process.free_port()
            srv = assert(nginx.start{ upstream = { dead, p.addr }, next_upstream = "error timeout",
                                      timeouts = { connect = "2s" } })
        end)

        teardown(function()
            if srv then
                srv:stop()
            end
            stop_host(p)
        end)

        it("still answers every request from the live one", function()
            for i = 1, 6 do
                local res = http.get(srv.url .. "/n/" .. i, { max_time = 10 })
                assert.equal(200, res.status)
                assert.equal("ok GET /n/" .. i .. "\n", res.body)
            end
        end)
    end)
end)
