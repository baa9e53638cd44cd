-- Connection pools (cosocket.md section 2, setkeepalive and connect's pool options) against
-- a real redis-server started on a free port, and the specs' own peer for the edge cases.
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local upstreams = require "upstreams"
local socket = require "moonfcgi.socket"

-- A Redis command over a connected socket; returns the reply's first line.
local function redis(s, ...)
    local args = { ... }
    local cmd = { "*" .. #args .. "\r\n" }
    for _, a in ipairs(args) do
        a = tostring(a)
        cmd[#cmd + 1] = { "$", #a, "\r\n", a, "\r\n" }
    end
    local n, err = s:send(cmd)
    if not n then
        return nil, err
    end
    local line, rerr = s:receive()
    if not line then
        return nil, rerr
    end
    if line:sub(1, 1) == "$" and tonumber(line:sub(2)) >= 0 then
        local body = s:receive(tonumber(line:sub(2)) + 2)
        return body and body:sub(1, -3)
    end
    return line
end

local function total_connections(srv)
    local info = assert(srv:cli("INFO", "stats"))
    return tonumber(info:match("total_connections_received:(%d+)"))
end

describe("moonfcgi.socket pools", function()
    local srv, peer, app

    setup(function()
        srv = assert(upstreams.redis())
        peer = h.start_peer()
        app = h.load()
    end)

    teardown(function()
        app:close()
        peer.stop()
        srv:stop()
    end)

    it("a second request reuses the first one's connection", function()
        local a = { h.call(app, function()
            local s = socket.tcp()
            assert(s:connect(srv.host, srv.port))
            local r = { s:getreusedtimes(), redis(s, "SET", "k", "v") }
            r[#r + 1] = s:setkeepalive()
            r[#r + 1] = select(2, s:getreusedtimes())
            return r
        end) }
        assert.same({ 0, "+OK", 1, "closed" }, a[1])
        local b = { h.call(app, function()
            local s = socket.tcp()
            local r = { s:connect(srv.host, srv.port) }
            r[#r + 1] = s:getreusedtimes()
            r[#r + 1] = redis(s, "GET", "k")
            s:setkeepalive()
            return r
        end) }
        assert.same({ 1, 1, "v" }, b[1])
    end)

    it("keys pools by host:port as given, by the pool option and by the unix path", function()
        local r = { h.call(app, function()
            local out = {}
            local function use(host, port, opts)
                local s = socket.tcp()
                assert(s:connect(host, port, opts))
                out[#out + 1] = s:getreusedtimes()
                assert(redis(s, "PING") == "+PONG")
                assert(s:setkeepalive(0, 5))
            end
            use(srv.host, tostring(srv.port), { pool = "mine" })
            use(srv.host, srv.port, { pool = "mine" })
            use(srv.unix)
            use(srv.unix)
            use(srv.unix, { pool = 7 })
            return out, socket.pool_stats("mine").idle, socket.pool_stats("unix:" .. srv.socket)
        end) }
        assert.same({ 0, 1, 0, 1, 0 }, r[1])
        assert.equal(1, r[2])
        assert.equal(1, r[3].idle)
    end)

    it("a pooled connection that Redis killed is dropped, not handed out", function()
        h.call(app, function()
            local s = socket.tcp()
            assert(s:connect(srv.host, srv.port, { pool = "killed" }))
            assert(redis(s, "PING") == "+PONG")
            assert(s:setkeepalive())
        end)
        assert(srv:cli("CLIENT", "KILL", "TYPE", "normal"))
        assert.is_true(h.eventually(app, function()
            return socket.pool_stats ~= nil and h.call(app, function()
                return socket.pool_stats("killed").idle
            end) == 0
        end))
        local r = { h.call(app, function()
            local s = socket.tcp()
            assert(s:connect(srv.host, srv.port, { pool = "killed" }))
            return { s:getreusedtimes(), redis(s, "PING") }
        end) }
        assert.same({ 0, "+PONG" }, r[1])
    end)

    it("setkeepalive: unread data, invalid connection, dubious state, closed", function()
        local r = { h.call(app, function()
            local out = {}
            local s = socket.tcp()
            assert(s:connect("127.0.0.1", peer.tcp))
            s:send("send ab\\n\n")
            assert(s:receive(1) == "a")
            out[#out + 1] = select(2, s:setkeepalive())
            out[#out + 1] = s:receive() -- still usable
            s:settimeout(30)
            out[#out + 1] = select(2, s:receive())
            out[#out + 1] = select(2, s:setkeepalive())
            s:close()
            local d = socket.tcp()
            assert(d:connect("127.0.0.1", peer.tcp))
            d:send("send unasked\n")
            -- Wait until the peer's bytes are in: a read of nothing that times out.
            d:settimeout(200)
            local t = socket.tcp()
            assert(t:connect("127.0.0.1", peer.tcp))
            t:send("later 100 x\n")
            t:receive(1)
            out[#out + 1] = select(2, d:setkeepalive())
            out[#out + 1] = select(2, d:receive())
            out[#out + 1] = select(2, d:setkeepalive())
            return out
        end) }
        assert.same({ "unread data in buffer", "b", "timeout", "invalid connection",
                      "connection in dubious state", "closed", "closed" }, r[1])
    end)

    it("an idle pooled connection that receives data or outlives its idle time is closed",
        function()
            h.call(app, function()
                local s = socket.tcp()
                assert(s:connect("127.0.0.1", peer.tcp, { pool = "speaks" }))
                s:send("later 100 surprise\n")
                assert(s:setkeepalive())
                local t = socket.tcp()
                assert(t:connect(srv.host, srv.port, { pool = "idle" }))
                assert(t:setkeepalive(50))
            end)
            assert.is_true(h.eventually(app, function()
                return h.call(app, function()
                    return socket.pool_stats("speaks").idle + socket.pool_stats("idle").idle
                end) == 0
            end))
        end)

    it("a full pool closes its least recently used idle connection", function()
        local r = { h.call(app, function()
            local socks = {}
            for i = 1, 3 do
                socks[i] = socket.tcp()
                assert(socks[i]:connect("127.0.0.1", peer.tcp, { pool = "lru" }))
                socks[i]:send("reply\n")
                socks[i]:send("n" .. i .. "\n")
                assert(socks[i]:receive() == "got n" .. i)
            end
            for i = 1, 3 do
                assert(socks[i]:setkeepalive(0, 2))
            end
            local out = { socket.pool_stats("lru").idle }
            -- The most recently pooled comes first: n3, then n2; n1 was evicted.
            for _ = 1, 3 do
                local s = socket.tcp()
                assert(s:connect("127.0.0.1", peer.tcp, { pool = "lru" }))
                out[#out + 1] = s:getreusedtimes()
                s:send("who\n")
                out[#out + 1] = s:receive()
            end
            return out
        end) }
        assert.same({ 2, 1, "got who", 1, "got who", 0, nil }, { r[1][1], r[1][2], r[1][3],
            r[1][4], r[1][5], r[1][6] })
    end)

    it("200 concurrent requests with pool_size 10 and backlog 100 use 10 connections",
        function()
            local before = total_connections(srv)
            local started = h.start_many(app, 200, function()
                local s = socket.tcp()
                local ok, err = s:connect(srv.host, srv.port,
                    { pool = "bounded", pool_size = 10, backlog = 100 })
                if not ok then
                    return nil, err
                end
                local reply = redis(s, "BLPOP", "nothing-here", "0.1")
                assert(s:setkeepalive())
                return reply
            end)
            local results = h.wait_all(started)
            local after = total_connections(srv)
            local ok, refused, other = 0, 0, {}
            for _, res in ipairs(results) do
                if res.ok and res[1] == "*-1" then
                    ok = ok + 1
                elseif res.ok and res[2] == "too many waiting connect operations" then
                    refused = refused + 1
                else
                    other[#other + 1] = tostring(res[1]) .. " " .. tostring(res[2])
                end
            end
            assert.same({}, other)
            assert.equal(110, ok)
            assert.equal(90, refused)
            -- INFO itself is one connection of redis-cli's.
            assert.is_true(after - before - 1 <= 10, "connections: " .. (after - before - 1))
        end)

    it("a queued connect past its timeout gets timeout", function()
        local r = { h.call(app, function()
            local holder = socket.tcp()
            assert(holder:connect(srv.host, srv.port, { pool = "one", pool_size = 1,
                                                        backlog = 1 }))
            local s = socket.tcp()
            s:settimeout(50)
            return { s:connect(srv.host, srv.port, { pool = "one", pool_size = 1, backlog = 1 }) }
        end) }
        assert.same({ nil, "timeout" }, r[1])
    end)

    it("killing redis-server under load gives errors, and it works again after a restart",
        function()
            local started = h.start_many(app, 50, function()
                local errors, done = 0, 0
                for i = 1, 40 do
                    local s = socket.tcp()
                    s:settimeout(2000)
                    local ok = s:connect(srv.host, srv.port, { pool = "load" })
                    local reply = ok and redis(s, "BLPOP", "nothing", "0.02")
                    if reply then
                        done = done + 1
                        s:setkeepalive()
                    else
                        errors = errors + 1
                        s:close()
                    end
                    if i == 5 and errors == 0 then
                        h.sleep(0) -- nothing: keeps the loop shape simple
                    end
                end
                return done, errors
            end)
            -- Let the load run, then kill Redis while requests wait on it.
            app:run(0.3)
            srv:kill()
            local results = h.wait_all(started)
            local errors = 0
            for _, res in ipairs(results) do
                assert.is_true(res.ok, tostring(res[1]))
                errors = errors + res[2]
            end
            assert.is_true(errors > 0)
            assert(srv:restart())
            local reply = h.call(app, function()
                local s = socket.tcp()
                assert(s:connect(srv.host, srv.port, { pool = "load" }))
                return redis(s, "PING")
            end)
            assert.equal("+PONG", reply)
        end)
end)
