-- Limits and broken input: --max-params, malformed params, bad versions and duplicate
-- BEGIN_REQUESTs, late records, output backpressure, the graceful close, and the three
-- timeouts. Each limit is tested at the limit and one past it.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local client = require "moonfcgi.client"
local H = require "protocol_helpers"

local rep = string.rep
local MiB = 1024 * 1024

describe("--max-params", function()
    local app, S

    before_each(function()
        app = test.load(H.APP, { max_params = 1000 })
        S = H.state()
    end)

    after_each(function()
        app:close()
    end)

    -- One pair X=value whose encoding is `total` bytes (1 + 4 + 1 + value).
    local function params_of(total)
        local p = proto.encode_params({ { "X", rep("v", total - 6) } })
        assert.equal(total, #p)
        return p
    end

    local function send(conn, content, chunk)
        local out = { proto.begin_request(1, "responder", true) }
        for off = 1, #content, chunk do
            out[#out + 1] = proto.record(proto.PARAMS, 1, content:sub(off, off + chunk - 1))
        end
        out[#out + 1] = proto.record(proto.PARAMS, 1, "")
        out[#out + 1] = proto.stream(proto.STDIN, 1, "")
        assert(conn:send_raw(table.concat(out)))
        local recs = assert(H.read_until_end(conn, 1))
        return H.response(recs, 1)
    end

    it("serves a request whose params are exactly --max-params bytes", function()
        local conn = app:connect()
        local runs = S.runs
        local res = send(conn, params_of(1000), 1000)
        assert.equal(200, res.status)
        assert.equal(runs + 1, S.runs)
        res = send(conn, params_of(1000), 99)
        assert.equal(200, res.status)
        conn:close()
    end)

    it("answers 431 to params one byte past --max-params, and the connection goes on", function()
        local conn = app:connect()
        local runs = S.runs
        local res = send(conn, params_of(1001), 1001)
        assert.equal(431, res.status)
        assert.equal(1, res.ends)
        assert.equal(runs, S.runs)
        res = send(conn, params_of(1001), 100)
        assert.equal(431, res.status)
        assert.equal(runs, S.runs)
        res = send(conn, params_of(200), 10)
        assert.equal(200, res.status)
        conn:close()
    end)
end)

describe("malformed params", function()
    local app, S

    before_each(function()
        app = test.load(H.APP)
        S = H.state()
    end)

    after_each(function()
        app:close()
    end)

    local function check(content)
        local conn = app:connect()
        local runs = S.runs
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.stream(proto.PARAMS, 1, content) .. proto.stream(proto.STDIN, 1, "")))
        local recs = assert(H.read_until_end(conn, 1))
        local res = H.response(recs, 1)
        assert.equal(400, res.status)
        assert.equal(1, res.ends)
        assert.equal(runs, S.runs, "the handler must not run")
        assert.equal(0, app:stats().requests)
        local ok = assert(conn:request{ id = 1, params = { TAG = "next" }, stdin = "fine" })
        assert.equal("next:fine", ok.body)
        conn:close()
    end

    it("get 400 alone for a truncated pair; the next request works", function()
        check(proto.encode_pair("A", "b") .. "\5\3abc")
    end)

    it("get 400 alone for a truncated 4-byte length; the next request works", function()
        check("\128\0")
    end)

    it("get 400 alone for a name length of 2^31-1; the next request works", function()
        check("\255\255\255\255\1" .. "abc")
    end)

    it("get 400 alone for name and value lengths of 2^31-1 (sum past 2^32)", function()
        check("\255\255\255\255\255\255\255\255" .. rep("z", 64))
    end)
end)

describe("a broken stream", function()
    local app

    before_each(function()
        app = test.load(H.APP)
    end)

    after_each(function()
        app:close()
    end)

    for _, version in ipairs({ 0, 2, 255 }) do
        it("with version " .. version .. " is closed; another connection is still served",
           function()
            local other = app:connect()
            local conn = app:connect()
            assert(conn:send_raw(string.char(version, 1, 0, 1, 0, 8, 0, 0)
                .. proto.record(proto.BEGIN_REQUEST, 1, "\0\1\1\0\0\0\0\0"):sub(9)))
            local recs, err = conn:read_until_closed(2)
            assert.equal("closed", err)
            assert.same({}, recs)
            conn:close()
            assert.equal("o:k", assert(other:request{ params = { TAG = "o" }, stdin = "k" }).body)
            other:close()
        end)
    end

    it("with a bad version in the middle of a request is closed and the request freed", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.record(proto.PARAMS, 1, proto.encode_params({ A = "b" }))))
        assert.is_true(H.run_until(app, function() return app:stats().requests == 1 end))
        assert(conn:send_raw("\2\4\0\1\0\0\0\0"))
        local _, err = conn:read_until_closed(2)
        assert.equal("closed", err)
        assert.is_true(H.run_until(app, function() return app:stats().requests == 0 end))
        conn:close()
    end)

    it("with a second BEGIN_REQUEST for an active id is closed", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.record(proto.PARAMS, 1, proto.encode_params({ A = "b" }))
            .. proto.begin_request(1, "responder", true)))
        local _, err = conn:read_until_closed(2)
        assert.equal("closed", err)
        assert.is_true(H.run_until(app, function() return app:stats().requests == 0 end))
        conn:close()
    end)
end)

describe("records for an inactive request id", function()
    it("are ignored, and the next request is fine (libfcgi's bug)", function()
        local app = test.load(H.APP)
        finally(function() app:close() end)
        local conn = app:connect()
        local first = assert(conn:request{ id = 1, params = { TAG = "a" }, stdin = "1" })
        assert.equal("a:1", first.body)
        assert(conn:send_raw(proto.record(proto.STDIN, 1, "")
            .. proto.record(proto.STDIN, 1, "junk")
            .. proto.record(proto.PARAMS, 1, "")
            .. proto.record(proto.PARAMS, 5, proto.encode_params({ X = "y" }))
            .. proto.record(proto.DATA, 1, "")
            .. proto.abort_request(9)
            .. proto.record(proto.STDOUT, 1, "")
            .. proto.end_request(1, 0, 0)))
        assert.same({}, H.read_rest(conn))
        local again = assert(conn:request{ id = 1, params = { TAG = "b" }, stdin = "2" })
        assert.equal("b:2", again.body)
        assert.equal(0, app:stats().requests)
        conn:close()
        app:close()
    end)
end)

describe("output backpressure", function()
    it("suspends a handler writing 20 MiB to a client that does not read, then completes",
       function()
        local app = test.load(H.APP, { timeout = 30 })
        finally(function() app:close() end)
        local S = H.state()
        local conn = app:connect()
        local size = 20 * MiB
        local id = assert(conn:send{ params = { ACTION = "flood", SIZE = tostring(size),
                                                TAG = "bp" } })
        assert.is_true(H.run_until(app, function() return S.bp and S.bp.written end))
        -- The counter stops advancing while the client does not read.
        local last, stable = -1, 0
        for _ = 1, 100 do
            app:run(0.02)
            if S.bp.written == last then
                stable = stable + 1
                if stable >= 5 then
                    break
                end
            else
                stable, last = 0, S.bp.written
            end
        end
        assert.equal(5, stable)
        assert.is_true(S.bp.written <= 4 * MiB, "written " .. S.bp.written .. " bytes unread")
        assert.is_nil(S.bp.done)
        -- Reading everything lets it finish, with every byte in place.
        local res = assert(conn:wait(id, 30))
        assert.equal(200, res.status)
        assert.equal(size, #res.body)
        assert.is_nil(res.body:find("[^x]"))
        assert.is_true(S.bp.done)
        assert.equal(size, S.bp.written)
        conn:close()
        app:close()
    end)
end)

describe("the graceful close", function()
    it("after a request without KEEP_CONN: half-close, every byte, then EOF, no reset", function()
        local app = test.load(H.APP)
        finally(function() app:close() end)
        local conn = app:connect()
        -- The handler answers without reading its 3 MiB body: input is still unread when the
        -- request ends.
        local body = rep("u", 3 * MiB)
        assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "big", SIZE = "200000" },
                                                  stdin = body, keep_conn = false })))
        local recs, err = conn:read_until_closed(5)
        assert.equal("closed", err)
        local closed, how = conn:closed()
        assert.is_true(closed)
        assert.is_nil(how)
        assert.is_false(conn.reset)
        local res = H.response(recs, 1)
        assert.equal(200000, #res.body)
        assert.equal(1, res.ends)
        assert.equal(proto.END_REQUEST, recs[#recs].type)
        conn:close()
        app:close()
    end)

    it("over TCP with the moonfcgi binary: every byte, then EOF, no reset", function()
        local process = require "process"
        local p = assert(process.moonfcgi(H.APP, { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local results = {}
        for i = 1, 3 do
            local conn = assert(client.connect(p.addr, { timeout = 5 }))
            assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "big",
                SIZE = "300000" }, stdin = rep("t", 4 * MiB), keep_conn = false })))
            local recs, err = conn:read_until_closed(5)
            results[i] = { err = err, reset = conn.reset, res = H.response(recs, 1) }
            conn:close()
        end
        p:stop()
        p:cleanup()
        for i = 1, 3 do
            assert.equal("closed", results[i].err)
            assert.is_false(results[i].reset)
            assert.equal(300000, #results[i].res.body)
            assert.equal(1, results[i].res.ends)
        end
    end)
end)

describe("the linger after a graceful close", function()
    it("is bounded even when the client goes on sending", function()
        local sigpipe = H.ignore_sigpipe()
        local app = test.load(H.APP, { idle_timeout = 0.3 })
        finally(function() app:close() end)
        local conn = app:connect()
        assert(conn:send_raw(H.request_bytes(1, { params = { TAG = "l" }, stdin = "",
                                                  keep_conn = false })))
        local recs, err = conn:read_until_closed(3)
        assert.equal("closed", err)
        assert.equal("l:", H.response(recs, 1).body)
        -- The server has half-closed; a client that keeps writing must not keep it forever.
        local gone = H.run_until(app, function()
            conn:send_raw(rep("j", 64), 0.1)
            return app:stats().connections == 0
        end, 4)
        conn:close()
        app:close()
        H.restore_sigpipe(sigpipe)
        assert.is_true(gone, "the connection still lingers after 4 s of client input")
    end)
end)

describe("--read-timeout", function()
    local app, S

    before_each(function()
        app = test.load(H.APP, { read_timeout = 0.3, timeout = 5 })
        S = H.state()
    end)

    after_each(function()
        app:close()
    end)

    it("answers 408 when the params are not complete in time, and not before", function()
        local conn = app:connect()
        local runs = S.runs
        local t0 = client.now()
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.record(proto.PARAMS, 1, proto.encode_params({ A = "b" }))))
        local recs = assert(H.read_until_end(conn, 1, 3))
        local res = H.response(recs, 1)
        assert.equal(408, res.status)
        assert.equal(1, res.ends)
        assert.is_true(client.now() - t0 >= 0.3)
        assert.equal(runs, S.runs)
        assert.equal(0, app:stats().requests)
        local again = assert(conn:request{ id = 1, params = { TAG = "n" }, stdin = "1" })
        assert.equal("n:1", again.body)
        conn:close()
    end)

    it("lets every read() wait up to it, however long the whole body takes", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.stream(proto.PARAMS, 1, proto.encode_params({ ACTION = "read", TAG = "ok" }))))
        for i = 1, 4 do
            app:run(0.15)
            assert(conn:send_raw(proto.record(proto.STDIN, 1, "p" .. i)))
        end
        assert(conn:send_raw(proto.record(proto.STDIN, 1, "")))
        local recs = assert(H.read_until_end(conn, 1))
        assert.equal("p1p2p3p4", H.response(recs, 1).body)
        assert.is_nil(S.ok.read_err)
        conn:close()
    end)

    it("makes a read() that waits longer fail with nil, \"timeout\"", function()
        local conn = app:connect()
        local t0 = client.now()
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.stream(proto.PARAMS, 1, proto.encode_params({ ACTION = "read", TAG = "rt" }))
            .. proto.record(proto.STDIN, 1, "part")))
        assert.is_true(H.run_until(app, function() return S.rt and S.rt.chunks == 1 end))
        -- Not before: the read ends no sooner than --read-timeout after the data was sent.
        assert.is_true(H.run_until(app, function() return S.rt.done end, 10))
        assert.is_nil(S.rt.read_result)
        assert.equal("timeout", S.rt.read_err)
        assert.is_true(client.now() - t0 >= 0.3)
        local res = assert(H.read_until_end(conn, 1))
        assert.equal("part", H.response(res, 1).body)
        conn:close()
    end)
end)

describe("--timeout", function()
    local app, S

    before_each(function()
        app = test.load(H.APP, { timeout = 0.3 })
        S = H.state()
    end)

    after_each(function()
        app:close()
    end)

    it("lets a handler that finishes within it complete", function()
        local res = assert(app:request{ params = { ACTION = "sleep", SECONDS = "0.1",
                                                   TAG = "in" } })
        assert.equal(200, res.status)
        assert.equal("slept", res.body)
    end)

    it("answers 504 when a handler sleeps past it with nothing sent", function()
        local t0 = client.now()
        local res = assert(app:request{ params = { ACTION = "sleep", SECONDS = "2",
                                                   TAG = "over" } })
        assert.equal(504, res.status)
        assert.equal("complete", res.protocol_status)
        assert.is_true(client.now() - t0 >= 0.3)
        -- The 504 came while the handler still slept: the timeout, not the handler, ended it.
        assert.is_nil(S.over.done)
        assert.equal(0, app:stats().requests)
    end)

    it("just ends the output when something was already sent", function()
        local res = assert(app:request{ params = { ACTION = "sleep", SECONDS = "2", TAG = "part",
                                                   FIRST = "partial" } })
        assert.equal(200, res.status)
        assert.equal("partial", res.body)
        assert.equal("complete", res.protocol_status)
        assert.is_nil(S.part.done)
        assert.equal(0, app:stats().requests)
        -- The connection goes on.
        assert.equal("a:b", assert(app:request{ params = { TAG = "a" }, stdin = "b" }).body)
    end)
end)

describe("--timeout with a handler blocked on write backpressure", function()
    it("ends the request: the output just ends, one END_REQUEST, the request is freed", function()
        local app = test.load(H.APP, { timeout = 0.3 })
        finally(function() app:close() end)
        local S = H.state()
        local conn = app:connect()
        local id = assert(conn:send{ params = { ACTION = "flood", SIZE = tostring(20 * MiB),
                                                TAG = "tw" } })
        -- The client reads nothing: only --timeout can end the request.
        assert.is_true(H.run_until(app, function() return S.tw ~= nil end))
        assert.is_true(H.run_until(app, function() return app:stats().requests == 0 end, 10))
        assert.is_nil(S.tw.done)
        local res = assert(conn:wait(id, 5))
        assert.equal(200, res.status)
        assert.equal("complete", res.protocol_status)
        assert.is_true(#res.body > 0 and #res.body < 20 * MiB)
        assert.is_nil(res.body:find("[^x]"))
        assert.equal(0, app:stats().requests)
        assert.same({}, H.read_rest(conn))
        conn:close()
        app:close()
    end)
end)

describe("unread input", function()
    it("stops being read past 1 MiB per request, and all of it arrives once the handler reads",
       function()
        local moonfcgi = require "moonfcgi"
        local app = test.load("spec/api/apps/handlers.lua", { timeout = 10 })
        finally(function() app:close() end)
        local conn = app:connect()
        local body = {}
        for i = 1, 5 * 1024 do
            body[i] = ("%07d "):format(i):rep(128)
        end
        body = table.concat(body)
        -- The handler reads nothing until the client's byte counter (it runs in this Lua
        -- state, so it can look) stood still for 10 turns of the worker's loop in a row: a
        -- host that still read would have let the client write more in each of them. Then
        -- the client must have stalled well short of the whole body.
        local sent_while_asleep, got
        _G.api_handlers = _G.api_handlers or {}
        _G.api_handlers.slow_reader = function(req)
            local last, still = -1, 0
            for _ = 1, 5000 do
                moonfcgi.sleep(0.001)
                if conn.stats.sent == last then
                    still = still + 1
                    if still >= 10 then
                        break
                    end
                else
                    last, still = conn.stats.sent, 0
                end
            end
            sent_while_asleep = conn.stats.sent
            got = req:body()
        end
        local res = assert(conn:request{ params = { H = "slow_reader" }, stdin = body,
                                         timeout = 10 })
        assert.equal(200, res.status)
        assert.is_true(got == body, "the body arrived changed")
        assert.is_true(sent_while_asleep < 3 * MiB, "the client wrote " .. sent_while_asleep
            .. " bytes while the handler read nothing")
        conn:close()
        app:close()
    end)
end)

describe("--idle-timeout", function()
    it("closes a kept connection that stays idle past it, and not before", function()
        local app = test.load(H.APP, { idle_timeout = 0.3 })
        finally(function() app:close() end)
        local conn = app:connect()
        local t0 = client.now()
        assert(conn:request{ params = { TAG = "i" }, stdin = "" })
        assert.is_true(H.run_until(app, function() return conn:closed() end, 10))
        -- Not before: the request ended after t0, and the close came 0.3 s after that.
        assert.is_true(client.now() - t0 >= 0.3, "closed after " .. client.now() - t0 .. " s")
        conn:close()
        app:close()
    end)

    it("counts the idle time from the end of the last request", function()
        local app = test.load(H.APP, { idle_timeout = 0.5, timeout = 5 })
        finally(function() app:close() end)
        local conn = app:connect()
        -- The request outlasts --idle-timeout: counted from the last input, the connection
        -- would be closed as soon as it ends.
        local res = assert(conn:request{ params = { ACTION = "sleep", SECONDS = "0.8",
                                                    TAG = "long1" } })
        assert.equal("slept", res.body)
        -- Idle for less than --idle-timeout: the web server may still reuse it (nginx).
        local t0 = client.now()
        res = conn:request{ params = { TAG = "reuse" }, stdin = "d" }
        assert.is_table(res, "the kept connection was closed before it was idle for 0.5 s")
        assert.equal("reuse:d", res.body)
        -- And the idle time starts again from the end of that request.
        assert.is_true(H.run_until(app, function() return conn:closed() end, 10))
        assert.is_true(client.now() - t0 >= 0.5, "closed after " .. client.now() - t0 .. " s")
        conn:close()
        app:close()
    end)

    it("does not close a connection whose request runs longer than it", function()
        local app = test.load(H.APP, { idle_timeout = 0.2, timeout = 5 })
        finally(function() app:close() end)
        local conn = app:connect()
        local res = assert(conn:request{ params = { ACTION = "sleep", SECONDS = "0.5",
                                                    TAG = "long" } })
        assert.equal("slept", res.body)
        conn:close()
        app:close()
    end)
end)
