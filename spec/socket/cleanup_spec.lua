-- Every socket a request holds is closed however the request ends (cosocket.md section 2):
-- a handler error, --timeout, an abort by the web server, a stop past the grace period; the
-- fd count comes back. And one worker serves many requests that wait on sockets at once.
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local process = require "process"
local client = require "moonfcgi.client"
local socket = require "moonfcgi.socket"

describe("moonfcgi.socket cleanup", function()
    local peer

    setup(function()
        peer = h.start_peer()
    end)

    teardown(function()
        peer.stop()
    end)

    -- A handler that connects three sockets to the silent peer and then waits on one of them.
    local function waiter(after)
        return function()
            local socks = {}
            for i = 1, 3 do
                socks[i] = socket.tcp()
                assert(socks[i]:connect("127.0.0.1", peer.tcp))
                socks[i]:send("silent\n")
            end
            WAITING = (WAITING or 0) + 1
            if after then
                after()
            end
            socks[1]:settimeout(30000)
            return socks[1]:receive()
        end
    end

    it("a handler error closes the sockets it opened", function()
        local app = h.load()
        local base = h.fd_count()
        local out = h.run(app, function()
            local s = socket.tcp()
            assert(s:connect("127.0.0.1", peer.tcp))
            local u = socket.udp()
            assert(u:setpeername("127.0.0.1", peer.udp))
            assert(h.fd_count() >= base + 2)
            error("boom")
        end)
        assert.is_false(out.ok)
        -- The case's pcall caught it; now a real handler error:
        SOCKET_RAW["/err"] = function()
            local s = socket.tcp()
            assert(s:connect("127.0.0.1", peer.tcp))
            error("handler fails")
        end
        local res = app:request({ params = { REQUEST_URI = "/err" }, stdin = "" })
        assert.matches("handler fails", res.stderr)
        assert.equal(0, socket.count(app.w))
        assert.is_true(h.fd_count() <= base)
        app:close()
    end)

    it("--timeout closes the sockets of the request it ends", function()
        local app = h.load({ timeout = 0.3 })
        local base = h.fd_count()
        SOCKET_CASES["/slow"] = waiter()
        local res = app:request({ params = { REQUEST_URI = "/slow" }, stdin = "" })
        assert.is_truthy(res)
        assert.is_true(h.eventually(app, function()
            return socket.count(app.w) == 0 and h.fd_count() <= base
        end))
        app:close()
    end)

    it("app:close() closes the sockets of requests in flight and of the pools", function()
        local base = h.fd_count()
        local app = h.load()
        h.call(app, function()
            local s = socket.tcp()
            assert(s:connect("127.0.0.1", peer.tcp))
            assert(s:setkeepalive())
        end)
        WAITING = 0
        SOCKET_CASES["/held"] = waiter()
        local conn = app:connect()
        conn:send({ params = { REQUEST_URI = "/held" }, stdin = "" })
        assert.is_true(h.eventually(app, function()
            return WAITING == 1
        end))
        conn:close()
        local w = app.w
        app:close()
        assert.is_true(h.fd_count() <= base)
    end)

    it("a garbage-collected socket is closed", function()
        local app = h.load()
        local r = h.call(app, function()
            local base = socket.count()
            local function forget()
                local s = socket.tcp()
                assert(s:connect("127.0.0.1", peer.tcp))
            end
            forget()
            collectgarbage()
            collectgarbage()
            return socket.count() - base
        end)
        assert.equal(0, r)
        app:close()
    end)

    it("an ended request's open socket is reported at debug level with its URI", function()
        local app = h.load({ log_level = "debug" })
        SOCKET_CASES["/leaky"] = function()
            LEAKED = socket.tcp()
            assert(LEAKED:connect("127.0.0.1", peer.tcp))
        end
        local logged = {}
        local runtime = require "moonfcgi.runtime"
        local log = runtime.log
        runtime.log = function(level, msg)
            logged[#logged + 1] = msg
            return log(level, msg)
        end
        app:request({ params = { REQUEST_URI = "/leaky" }, stdin = "" })
        runtime.log = log
        local found
        for _, m in ipairs(logged) do
            if m:find("/leaky", 1, true) and m:find("socket", 1, true) then
                found = m
            end
        end
        assert.is_truthy(found, table.concat(logged, "\n"))
        LEAKED = nil
        app:close()
    end)

    it("--max-sockets bounds the open sockets of a worker: too many sockets", function()
        local app = h.load({ max_sockets = 3 })
        local r = { h.call(app, function()
            local out, socks = {}, {}
            for i = 1, 4 do
                socks[i] = socket.tcp()
                out[i] = select(2, socks[i]:connect("127.0.0.1", peer.tcp)) or "ok"
            end
            socks[1]:close()
            out[5] = socks[4]:connect("127.0.0.1", peer.tcp)
            return out
        end) }
        assert.same({ "ok", "ok", "ok", "too many sockets", 1 }, r[1])
        app:close()
    end)

    it("at load time a socket call says cosockets are not available while the app loads",
        function()
            local dir = os.tmpname()
            local f = assert(io.open(dir, "w"))
            f:write([[
                local socket = require "moonfcgi.socket"
                LOAD_RESULT = { socket.tcp():connect("127.0.0.1", 1) }
                return function() end
            ]])
            f:close()
            local test = require "moonfcgi.test"
            local app = test.load(dir)
            os.remove(dir)
            assert.same({ nil, "cosockets are not available while the app loads" }, LOAD_RESULT)
            app:close()
        end)

    it("1,000 concurrent requests each wait 100 ms on a socket of their own, while other "
        .. "requests are served", function()
        local app = h.load({ max_conns = 3000, max_reqs = 3000 })
        SOCKET_CASES["/plain"] = function()
            return "served"
        end
        assert.equal("ok", app:request({ params = { REQUEST_URI = "/plain" }, stdin = "" }).body)
        local base = h.fd_count()
        local started = h.start_many(app, 1000, function()
            local s = socket.tcp()
            assert(s:connect("127.0.0.1", peer.tcp))
            s:send("later 100 pong\\n\n")
            return s:receive()
        end)
        -- Meanwhile a plain request is answered, before the waiters are done.
        local plain = app:request({ params = { REQUEST_URI = "/plain" }, stdin = "" })
        assert.equal("ok", plain.body)
        local done = 0
        for _, st in ipairs(started) do
            if SOCKET_RESULTS[st.uri] then
                done = done + 1
            end
        end
        assert.is_true(done < 1000)
        local results = h.wait_all(started)
        local pongs = 0
        for _, res in ipairs(results) do
            if res.ok and res[1] == "pong" then
                pongs = pongs + 1
            end
        end
        assert.equal(1000, pongs)
        assert.is_true(h.eventually(app, function()
            return socket.count(app.w) == 0 and h.fd_count() <= base
        end), "fds " .. h.fd_count() .. " of " .. base)
        app:close()
    end)
end)

describe("moonfcgi.socket in the binary", function()
    local peer

    setup(function()
        peer = h.start_peer()
    end)

    teardown(function()
        peer.stop()
    end)

    it("a stop past the grace period closes the sockets of the requests it ends", function()
        local app = os.tmpname() .. ".lua"
        local f = assert(io.open(app, "w"))
        f:write(string.format([[
            local socket = require "moonfcgi.socket"
            return function(req)
                local s = socket.tcp()
                assert(s:connect("127.0.0.1", %d))
                s:send("silent\n")
                req:write("connected\n")
                req:flush()
                s:receive()
            end
        ]], peer.tcp))
        f:close()
        local p = assert(process.moonfcgi(app, { args = { "--workers", "1", "--timeout", "1" } }))
        local conn = assert(client.connect(p.addr, { timeout = 10 }))
        -- The worker's pid from its log line; its fds grow by the upstream socket once the
        -- handler connected.
        local worker
        assert.is_true(h.eventually(nil, function()
            worker = p:output():match("worker 1%[(%d+)%]")
            return worker ~= nil
        end))
        local base = h.fd_count(worker)
        local id = conn:send({ params = { REQUEST_URI = "/" }, stdin = "" })
        assert.is_true(h.eventually(nil, function()
            return h.fd_count(worker) > base
        end))
        p:signal(process.SIGTERM)
        -- Past --timeout the worker ends the request; ASan's leak check (MOONFCGI_CHILD_ASAN_
        -- OPTIONS) makes the exit status say whether the socket's memory went with it.
        local res = conn:wait(id, 15)
        assert.is_truthy(res)
        local st = p:wait(15)
        conn:close()
        os.remove(app)
        assert.equal(0, st, p:output())
        assert.matches("stopping", p:output())
    end)
end)
