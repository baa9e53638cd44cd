-- req:body() sizes its block for the announced CONTENT_LENGTH, so that a body is read into
-- place without growing. What the unfinished bodies of a worker reserve that way, ahead of
-- their bytes, is capped at max(64 MiB, 4 x --max-body): past it, a body is not reserved ahead
-- and grows as its bytes arrive, so 1,000 requests that each announce 16 MiB and send nothing
-- do not take 16 GB, and each is still served whole.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

local MiB = 1024 * 1024

-- The address space of this process (the in-process core runs in it), in KiB.
local function vm_kib()
    return tonumber(H.read_file("/proc/self/status"):match("VmSize:%s*(%d+) kB"))
end

describe("bodies announced but not yet sent", function()
    it("reserve at most 64 MiB together: 1,000 requests announcing 16 MiB each, then served "
        .. "with the bodies they do send", function()
        local app = test.load(H.APP, { timeout = 60, read_timeout = 60 })
        finally(function() app:close() end)
        local S = H.state()
        local conn = app:connect()
        local runs = S.runs
        local before = vm_kib()
        local out = {}
        for id = 1, 1000 do
            out[#out + 1] = proto.begin_request(id, "responder", true)
                .. proto.stream(proto.PARAMS, id, proto.encode_params({
                    TAG = "r" .. id, CONTENT_LENGTH = tostring(16 * MiB) }))
        end
        assert(conn:send_raw(table.concat(out)))
        -- Every handler is in req:body(), waiting for a body that has not come.
        assert.is_true(H.run_until(app, function() return S.runs - runs == 1000 end, 20))
        app:run(0.05)
        assert.equal(1000, app:stats().requests)
        local grown = vm_kib() - before
        assert.is_true(grown < 1024 * 1024, ("the process grew by %d KiB"):format(grown))
        -- Each sends a short body; a request past the cap that sends its whole 4 MiB gets it too.
        local big = ("b"):rep(4 * MiB)
        out = { proto.begin_request(1001, "responder", true)
            .. proto.stream(proto.PARAMS, 1001, proto.encode_params({
                TAG = "big", CONTENT_LENGTH = tostring(#big) })) }
        for id = 1, 1000 do
            out[#out + 1] = proto.stream(proto.STDIN, id, "body of " .. id)
        end
        out[#out + 1] = proto.stream(proto.STDIN, 1001, big)
        assert(conn:send_raw(table.concat(out), 30))
        local ids = {}
        for id = 1, 1001 do
            ids[id] = id
        end
        local recs, err = H.read_until_end(conn, ids, 60)
        assert(recs, err)
        for id = 1, 1000 do
            local res = H.response(recs, id)
            assert.equal(200, res.status)
            assert.equal("r" .. id .. ":body of " .. id, res.body)
        end
        local res = H.response(recs, 1001)
        assert.equal(200, res.status)
        assert.is_true(res.body == "big:" .. big, "the 4 MiB body arrived changed")
        assert.equal(0, app:stats().requests)
        conn:close()
    end)
end)
