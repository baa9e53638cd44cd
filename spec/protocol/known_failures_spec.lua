-- docs/protocol.md "Bugs of other implementations we test for": one
-- describe per implementation, one `it` per failure.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local client = require "moonfcgi.client"
local process = require "process"
local H = require "protocol_helpers"
local log_times = require "log_times"

local rep, char = string.rep, string.char
local MiB = 1024 * 1024

local function begin(id)
    return proto.begin_request(id, "responder", true)
end

-- Sends content as a params stream of request 1 and returns its response.
local function with_params(app, content)
    local conn = app:connect()
    assert(conn:send_raw(begin(1) .. proto.stream(proto.PARAMS, 1, content)
        .. proto.stream(proto.STDIN, 1, "")))
    local recs = assert(H.read_until_end(conn, 1))
    conn:close()
    return H.response(recs, 1)
end

describe("libfcgi CVE-2025-23016 and Go #81293, #11824 (params lengths)", function()
    local app

    before_each(function()
        app = test.load(H.APP, { max_params = 4 * MiB })
    end)

    after_each(function()
        app:close()
    end)

    it("answers 400 to lengths near 2^31 whose sum overflows 32 bits", function()
        for _, content in ipairs({
            "\255\255\255\255\255\255\255\255" .. rep("a", 100),
            "\255\255\255\240\128\0\0\32" .. rep("a", 100),
            "\1\255\255\255\255" .. "n" .. rep("v", 100),
            "\192\0\0\0\192\0\0\0" .. rep("x", 1000),
        }) do
            local res = with_params(app, content)
            assert.equal(400, res.status)
            assert.equal(1, res.ends)
        end
        assert.equal(0, app:stats().requests)
    end)

    it("answers 400 to a length that runs past the end by one byte", function()
        local content = proto.encode_pair("NAME", rep("v", 300))
        assert.equal(200, with_params(app, content).status)
        assert.equal(400, with_params(app, content:sub(1, -2)).status)
        assert.equal(400, with_params(app, content .. "\4").status)
    end)

    it("answers every malformed params stream (300 random ones) once, and keeps serving", function()
        math.randomseed(23016)
        local conn = app:connect()
        for i = 1, 300 do
            local bytes = {}
            for j = 1, math.random(1, 40) do
                local r = math.random()
                bytes[j] = char(r < 0.3 and 255 or r < 0.5 and 128 or math.random(0, 255))
            end
            assert(conn:send_raw(begin(2) .. proto.stream(proto.PARAMS, 2, table.concat(bytes))
                .. proto.stream(proto.STDIN, 2, "")))
            local recs = assert(H.read_until_end(conn, 2), "stream " .. i)
            local res = H.response(recs, 2)
            assert.equal(1, res.ends)
            assert.is_true(res.status == 200 or res.status == 400 or res.status == 404)
        end
        assert.equal(0, app:stats().requests)
        assert.equal("ok:", assert(conn:request{ params = { TAG = "ok" }, stdin = "" }).body)
        conn:close()
    end)
end)

describe("tokio-fastcgi #4 (partial socket writes)", function()
    it("keeps the stream in sync when every write is partial (a client reading slowly)", function()
        local app = test.load(H.APP, { timeout = 20 })
        finally(function() app:close() end)
        local size = MiB
        local conn = app:connect()
        local bytes = {}
        for id = 1, 5 do
            bytes[id] = H.request_bytes(id, { params = { ACTION = "big", SIZE = tostring(size),
                                                         CHUNK = tostring(5000 + id * 777) } })
        end
        assert(conn:send_raw(table.concat(bytes)))
        local recs = {}
        local ended = 0
        local deadline = client.now() + 20
        while ended < 5 and client.now() < deadline do
            app:run(0.002) -- the core fills the socket; its next write is partial
            for _ = 1, 3 do
                local rec = conn:read_record(0.5)
                if not rec then
                    break
                end
                recs[#recs + 1] = rec
                if rec.type == proto.END_REQUEST then
                    ended = ended + 1
                end
            end
        end
        assert.equal(5, ended)
        local want = H.state().pattern(0, size)
        for id = 1, 5 do
            local res = H.response(recs, id)
            assert.equal(1, res.ends)
            assert.is_true(res.body == want, "id " .. id)
        end
        conn:close()
        app:close()
    end)
end)

describe("Go #81548 and Go's abort on a kept connection", function()
    it("does not keep BEGIN_REQUESTs that never finish: 408 each, OVERLOADED past the limit",
       function()
        local app = test.load(H.APP, { max_reqs = 50, read_timeout = 0.3 })
        finally(function() app:close() end)
        local conn = app:connect()
        local out = {}
        for id = 1, 60 do
            out[id] = begin(id)
        end
        assert(conn:send_raw(table.concat(out)))
        local ids = {}
        for id = 1, 60 do
            ids[id] = id
        end
        local recs = assert(H.read_until_end(conn, ids, 5))
        local overloaded, timed_out = 0, 0
        for id = 1, 60 do
            local res = H.response(recs, id)
            assert.equal(1, res.ends)
            if res.protocol_status == proto.OVERLOADED then
                overloaded = overloaded + 1
            elseif res.status == 408 then
                timed_out = timed_out + 1
            end
        end
        assert.equal(10, overloaded)
        assert.equal(50, timed_out)
        assert.equal(0, app:stats().requests)
        conn:close()
        app:close()
    end)

    it("after an ABORT on a kept connection sends one END_REQUEST, then nothing for the id",
       function()
        local app = test.load(H.APP, { timeout = 5 })
        finally(function() app:close() end)
        local conn = app:connect()
        assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "flood",
            SIZE = tostring(4 * MiB), TAG = "go" } })))
        assert.is_true(H.run_until(app, function()
            return H.state().go and (H.state().go.written or 0) > 0
        end))
        assert(conn:send_raw(proto.abort_request(1)))
        local recs = assert(H.read_until_end(conn, 1))
        -- The next request reuses id 1, as nginx does: nothing of the old one may reach it.
        local res = assert(conn:request{ id = 1, params = { TAG = "new" }, stdin = "n" })
        assert.equal("new:n", res.body)
        assert.equal(200, res.status)
        assert.equal(1, #H.of(recs, 1, proto.END_REQUEST))
        assert.same({}, H.read_rest(conn))
        conn:close()
        app:close()
    end)
end)

describe("libfcgi", function()
    local app

    before_each(function()
        app = test.load(H.APP)
    end)

    after_each(function()
        app:close()
    end)

    it("answers a GET_VALUES repeating a known name 3000 times with that name once", function()
        local names = {}
        for i = 1, 3000 do
            names[i] = i % 2 == 0 and "FCGI_MAX_REQS" or "FCGI_MAX_CONNS"
        end
        local conn = app:connect()
        assert(conn:send_raw(proto.get_values(names)))
        local rec = assert(conn:read_record(2))
        assert.equal(proto.GET_VALUES_RESULT, rec.type)
        local list = assert(proto.decode_params(rec.content))
        assert.equal(2, #list)
        assert.equal("o:k", assert(conn:request{ params = { TAG = "o" }, stdin = "k" }).body)
        conn:close()
    end)

    it("keeps an unknown management record's content out of the request body", function()
        local conn = app:connect()
        assert(conn:send_raw(begin(1) .. proto.stream(proto.PARAMS, 1,
            proto.encode_params({ TAG = "leak" }))
            .. proto.record(proto.STDIN, 1, "before")
            .. proto.record(77, 0, "LEAKED CONTENT")
            .. proto.record(proto.GET_VALUES_RESULT, 0, "\1\1ab")
            .. proto.record(proto.STDIN, 1, "after")
            .. proto.record(proto.STDIN, 1, "")))
        local recs = assert(H.read_until_end(conn, 1))
        assert.equal("leak:beforeafter", H.response(recs, 1).body)
        conn:close()
    end)

    it("does not read the padding of an empty PARAMS terminator as a header", function()
        -- The padding holds what looks like a STDIN record header with 4 content bytes.
        local fake = char(1, proto.STDIN, 0, 1, 0, 4, 0, 0)
        local bytes = begin(1)
            .. proto.record(proto.PARAMS, 1, proto.encode_params({ TAG = "pad" }))
            .. char(1, proto.PARAMS, 0, 1, 0, 0, 8, 0) .. fake
            .. proto.stream(proto.STDIN, 1, "real")
        local conn = app:connect()
        assert(conn:send_raw(bytes))
        local recs = assert(H.read_until_end(conn, 1))
        assert.equal("pad:real", H.response(recs, 1).body)
        conn:close()
    end)

    it("is not broken by a late empty record for an unknown id", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.record(proto.STDIN, 2, "") .. proto.record(proto.PARAMS, 2, "")
            .. proto.record(proto.DATA, 3, "")))
        assert.same({}, H.read_rest(conn))
        local res = assert(conn:request{ id = 2, params = { TAG = "two" }, stdin = "body" })
        assert.equal("two:body", res.body)
        res = assert(conn:request{ id = 3, role = "filter", params = {}, stdin = "s", data = "d" })
        assert.equal("filter:s|d|1", res.body)
        conn:close()
    end)
end)

describe("PHP-FPM", function()
    local app

    before_each(function()
        app = test.load(H.APP)
    end)

    after_each(function()
        app:close()
    end)

    it("accepts params records of 65529..65535 bytes padded to a multiple of 8 (nginx)", function()
        local conn = app:connect()
        for len = 65529, 65535 do
            local big = rep("p", len - 14 - 8)
            local content = proto.encode_params({ { "ACTION", "params" }, { "BIG", big } })
            assert.equal(len, #content)
            local pad = (8 - len % 8) % 8
            assert.is_true(len + pad > 65535)
            assert(conn:send_raw(begin(1) .. proto.record(proto.PARAMS, 1, content, pad)
                .. proto.record(proto.PARAMS, 1, "") .. proto.stream(proto.STDIN, 1, "")))
            local recs = assert(H.read_until_end(conn, 1))
            local res = H.response(recs, 1)
            assert.equal(200, res.status, "length " .. len)
            assert.equal("ACTION=params\nBIG=" .. big .. "\n", res.body)
        end
        conn:close()
    end)

    it("keeps the connection after a GET_VALUES", function()
        local conn = app:connect()
        assert(conn:get_values{ "FCGI_MPXS_CONNS" })
        -- Still answering: a second GET_VALUES (H.read_rest's) gets its answer.
        local rest, err = H.read_rest(conn)
        assert.same({}, rest)
        assert.is_nil(err)
        assert.equal("a:b", assert(conn:request{ params = { TAG = "a" }, stdin = "b" }).body)
        conn:close()
    end)

    it("drains unread input before closing (no reset loses the response)", function()
        local conn = app:connect()
        assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "log" },
                                                  stdin = rep("i", 2 * MiB), keep_conn = false })))
        local recs, err = conn:read_until_closed(5)
        assert.equal("closed", err)
        assert.is_false(conn.reset)
        assert.equal("logged", H.response(recs, 1).body)
        conn:close()
    end)
end)

describe("HAProxy", function()
    local app

    before_each(function()
        app = test.load(H.APP)
    end)

    after_each(function()
        app:close()
    end)

    it("reads the record after one of 65535 + 255 bytes from the right place", function()
        local body = rep("h", 65535)
        local conn = app:connect()
        assert(conn:send_raw(begin(1) .. proto.stream(proto.PARAMS, 1,
            proto.encode_params({ TAG = "h" }))
            .. proto.record(proto.STDIN, 1, body, 255)
            .. proto.record(proto.STDIN, 1, body, 255)
            .. proto.record(proto.STDIN, 1, "end", 255)
            .. proto.record(proto.STDIN, 1, "", 255)
            .. H.request_bytes(2, { params = { TAG = "next" }, stdin = "2" })))
        local recs = assert(H.read_until_end(conn, { 1, 2 }))
        assert.equal("h:" .. body .. body .. "end", H.response(recs, 1).body)
        assert.equal("next:2", H.response(recs, 2).body)
        conn:close()
    end)

    it("delivers a body that looks like records as the body, starting nothing", function()
        local evil = begin(2)
            .. proto.stream(proto.PARAMS, 2, proto.encode_params({ TAG = "evil" }))
            .. proto.stream(proto.STDIN, 2, "") .. proto.end_request(1, 0, 0)
            .. proto.abort_request(1) .. char(9, 9, 9)
        local runs = H.state().runs
        local res = assert(app:request{ params = { TAG = "b" }, stdin = evil })
        assert.equal("b:" .. evil, res.body)
        assert.equal(1, res.records - 2) -- STDOUT, its empty end, END_REQUEST: nothing for id 2
        -- A request that came after it on the connection: had the body started one, that one
        -- would have started first.
        assert.equal("c:", assert(app:request{ params = { TAG = "c" }, stdin = "" }).body)
        assert.equal(runs + 2, H.state().runs)
        assert.equal(0, app:stats().requests)
    end)

    it("never resynchronises after a bad header: what follows it is not served", function()
        local conn = app:connect()
        assert(conn:send_raw("\0\0\0\0\0\0\0\0" .. H.request_bytes(1, { params = { TAG = "x" },
                                                                       stdin = "" })))
        local recs, err = conn:read_until_closed(2)
        assert.equal("closed", err)
        assert.same({}, recs)
        conn:close()
    end)
end)

describe("lighttpd 1.4.69 (authorizer answered with UNKNOWN_ROLE)", function()
    it("answers UNKNOWN_ROLE with no output and warns in the host log", function()
        local p = assert(process.moonfcgi("spec/protocol/apps/responder_only.lua",
                                          { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local conn = assert(client.connect(p.addr, { timeout = 5 }))
        local res = assert(conn:request{ role = "authorizer", params = {}, stdin = "" })
        conn:close()
        assert.equal(0, p:stop())
        local log = p:output()
        p:cleanup()
        assert.equal("unknown_role", res.protocol_status)
        assert.equal("", res.stdout)
        assert.matches("authoriz", log)
        assert.matches("[Ww][Aa][Rr][Nn]", log)
    end)
end)

-- pid and its children (a master and its workers).
local function family(pid)
    local pids = { pid }
    local children = H.read_file("/proc/" .. pid .. "/task/" .. pid .. "/children")
    for c in children:gmatch("%d+") do
        pids[#pids + 1] = tonumber(c)
    end
    return pids
end

-- The most descriptors any process of pid's family has open.
local function max_fds(pid)
    local most = 0
    for _, p in ipairs(family(pid)) do
        local ls = io.popen("ls /proc/" .. p .. "/fd 2>/dev/null | wc -l")
        most = math.max(most, tonumber(ls:read("*a")) or 0)
        ls:close()
    end
    return most
end

describe("libevent pitfalls, with the moonfcgi binary", function()
    it("survives a client that closes while its handler writes (SIGPIPE ignored)", function()
        local p = assert(process.moonfcgi(H.APP, { args = { "--workers", "1" } }))
        finally(function() p:cleanup() end)
        local conn = assert(client.connect(p.addr, { timeout = 5 }))
        assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "flood",
            SIZE = tostring(50 * MiB), TAG = "sp" } })))
        -- The handler writes (far more than the client will ever read) when it closes.
        local first = assert(conn:read_record(5))
        assert.equal(proto.STDOUT, first.type)
        conn:close()
        local ok_after
        local deadline2 = client.now() + 5
        repeat
            local c2 = client.connect(p.addr, { timeout = 2 })
            if c2 then
                local res = c2:request{ params = { TAG = "alive" }, stdin = "yes" }
                ok_after = res and res.body
                c2:close()
            end
        until ok_after or client.now() >= deadline2
        local running = p:running()
        local status = p:stop()
        local log = p:output()
        p:cleanup()
        assert.is_true(running, "moonfcgi died: " .. log)
        assert.equal("alive:yes", ok_after)
        assert.equal(0, status)
    end)

    it("pauses accepting when out of descriptors instead of spinning, then serves again", function()
        local port = process.free_port()
        local addr = "127.0.0.1:" .. port
        local p = assert(process.spawn({ "sh", "-c", 'ulimit -n 24 && exec "$0" "$@"', process.bin,
            "--listen", addr, "--workers", "1", H.APP }))
        finally(function() p:cleanup() end)
        assert(process.wait_connectable(addr, 10, p))
        local conns = {}
        for i = 1, 40 do
            conns[i] = client.connect(addr, { timeout = 2 })
        end
        -- Accepting is impossible now: the worker must idle, not spin on accept errors.
        -- Each failed accept pauses accepting for 100 ms and says so: by the lines' own
        -- timestamps, five in a row span at least 0.4 s, where a spinning worker would have
        -- logged them within a millisecond (its CPU use: bench/timings.sh).
        local stamps = log_times.wait_stamps(function() return p:output() end,
            "pausing accepts", 5)
        -- The limit was reached (else this spec proves nothing).
        local nfds = max_fds(p.pid)
        for i = 1, 40 do
            if conns[i] then
                conns[i]:close()
            end
        end
        local served
        local deadline2 = client.now() + 5
        repeat
            local c = client.connect(addr, { timeout = 2 })
            if c then
                local res = c:request{ params = { TAG = "back" }, stdin = "again", timeout = 1 }
                served = res and res.body
                c:close()
            end
        until served or client.now() >= deadline2
        local running = p:running()
        p:stop()
        local log = p:output()
        p:cleanup()
        assert.is_true(running, log)
        assert.is_true(nfds >= 20, "only " .. nfds .. " descriptors open")
        assert.is_true(#stamps >= 5, log)
        for i = 2, 5 do
            local gap = log_times.gap(stamps[i - 1], stamps[i])
            assert.is_true(gap >= 0.099, ("pause %d began %.3f s after the one before")
                :format(i, gap))
        end
        assert.equal("back:again", served)
    end)
end)

describe("libevent pitfalls, in the embedded core", function()
    it("does not let a SIGPIPE kill a process that embeds the core (moonfcgi.test)", function()
        -- The child loads the core library as busted does: with the sanitizer runtimes
        -- preloaded when the suite runs on the sanitizer build.
        local p = assert(process.spawn({ "luajit", "spec/protocol/apps/sigpipe_child.lua", H.APP },
            { env = { LD_PRELOAD = os.getenv("LD_PRELOAD") or false } }))
        finally(function() p:cleanup() end)
        local status = p:wait(20)
        local out = p:output()
        p:cleanup()
        assert.equal(0, status, "the child ended with status " .. tostring(status)
            .. (status == 141 and " (killed by SIGPIPE)" or "") .. ": " .. out)
        assert.matches("survived aborted", out)
    end)
end)
