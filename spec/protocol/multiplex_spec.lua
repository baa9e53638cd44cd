-- Many requests on one connection (docs/protocol.md: we answer FCGI_MPXS_CONNS=1, HAProxy
-- multiplexes): each gets its own answer, and the records of different requests never mix.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

describe("multiplexing", function()
    local app

    before_each(function()
        app = test.load(H.APP, { timeout = 10 })
    end)

    after_each(function()
        app:close()
    end)

    local function send_all(conn, n)
        local ids = {}
        for i = 1, n do
            local body = ("body of request %d "):format(i):rep(i % 7 + 1)
            ids[i] = assert(conn:send{ params = { TAG = "t" .. i }, stdin = body })
        end
        return ids
    end

    local function expect(res, i)
        assert.is_table(res, "request " .. i)
        assert.equal(200, res.status)
        assert.equal("t" .. i .. ":" .. ("body of request %d "):format(i):rep(i % 7 + 1), res.body)
        assert.equal("complete", res.protocol_status)
    end

    it("completes 200 requests sent at once on one connection, waited in order", function()
        local conn = app:connect()
        local ids = send_all(conn, 200)
        for i = 1, 200 do
            expect(conn:wait(ids[i], 10), i)
        end
        assert.equal(0, app:stats().requests)
        conn:close()
    end)

    it("completes 200 requests sent at once on one connection, waited in reverse order", function()
        local conn = app:connect()
        local ids = send_all(conn, 200)
        for i = 200, 1, -1 do
            expect(conn:wait(ids[i], 10), i)
        end
        assert.equal(0, app:stats().requests)
        conn:close()
    end)

    it("uses the request ids the web server chose (1, 3, 5 ... as HAProxy does)", function()
        local conn = app:connect()
        local ids = {}
        for i = 1, 9, 2 do
            ids[#ids + 1] = assert(conn:send{ id = i, params = { TAG = "odd" .. i }, stdin = "" })
        end
        assert(conn:send{ id = 65535, params = { TAG = "max" }, stdin = "" })
        for _, id in ipairs(ids) do
            assert.equal("odd" .. id .. ":", conn:wait(id).body)
        end
        assert.equal("max:", conn:wait(65535).body)
        conn:close()
    end)

    it("never interleaves the records of different requests", function()
        -- 20 responses of 300 KiB, all in flight at once, written in pieces of 1000 bytes
        -- (gathered into records) or of 150000 bytes (framed straight from the string).
        local size = 300 * 1024
        local conn = app:connect()
        local bytes = {}
        for id = 1, 20 do
            local chunk = id % 2 == 0 and "150000" or "1000"
            bytes[id] = H.request_bytes(id, { params = { ACTION = "big", SIZE = tostring(size),
                                                         CHUNK = chunk } })
        end
        assert(conn:send_raw(table.concat(bytes)))
        local ids = {}
        for id = 1, 20 do
            ids[id] = id
        end
        local recs, err = H.read_until_end(conn, ids, 20)
        assert(recs, err)
        local want = H.state().pattern(0, size)
        for id = 1, 20 do
            local res = H.response(recs, id)
            assert.equal(1, res.ends)
            assert.equal(size, #res.body, "id " .. id)
            assert.is_true(res.body == want, "id " .. id .. ": body differs from the pattern")
        end
        for _, r in ipairs(recs) do
            assert.is_true(r.type == proto.STDOUT or r.type == proto.END_REQUEST)
        end
        conn:close()
    end)

    it("keeps serving other requests while one waits for its body", function()
        local conn = app:connect()
        local slow = assert(conn:send{ params = { TAG = "slow" }, stdin = false })
        local fast = assert(conn:send{ params = { TAG = "fast" }, stdin = "quick" })
        assert.equal("fast:quick", conn:wait(fast).body)
        assert(conn:send_raw(proto.stream(proto.STDIN, slow, "late")))
        assert.equal("slow:late", conn:wait(slow).body)
        conn:close()
    end)
end)
