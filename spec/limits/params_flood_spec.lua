-- --max-params acts at the record that crosses it, not at the end of the stream: a sender
-- that never ends its params gets its 431 at once, and what it goes on sending for that
-- request is dropped as it comes (the id is no longer active), so the worker's memory stays
-- flat however much it sends.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local process = require "process"
local client = require "moonfcgi.client"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

local function rss_kib(pid)
    local s = H.read_file("/proc/" .. pid .. "/status")
    return tonumber(s:match("VmRSS:%s*(%d+) kB"))
end

local function worker_pid(master)
    local s = H.read_file("/proc/" .. master .. "/task/" .. master .. "/children")
    return tonumber(s:match("%d+"))
end

describe("params that never end", function()
    local p

    before_each(function()
        p = assert(process.moonfcgi(H.APP, { args = { "--workers", "1", "--max-params", "64K" } }))
    end)

    after_each(function()
        p:cleanup()
    end)

    it("get a 431 within a second of crossing --max-params; the worker's memory stays flat "
        .. "while the sender goes on", function()
        local conn = assert(client.connect(p.addr, { timeout = 30 }))
        local piece = proto.record(proto.PARAMS, 1, proto.encode_pair("P", ("v"):rep(16378)))
        assert.equal(8 + 16384, #piece)
        -- Four records are exactly 64 KiB of params; the fifth crosses the limit.
        assert(conn:send_raw(proto.begin_request(1, "responder", true) .. piece:rep(5)))
        local recs, err = H.read_until_end(conn, 1, 1)
        assert(recs, err)
        local res = H.response(recs, 1)
        assert.equal(431, res.status)
        assert.equal(1, res.ends)

        local pid = assert(worker_pid(p.pid))
        local before = assert(rss_kib(pid))
        -- 128 MiB more of the same request's params, in writes of 1 MiB.
        local mib = piece:rep(64)
        for _ = 1, 128 do
            assert(conn:send_raw(mib))
        end
        -- The worker has read all of it once it answers what comes after.
        local values = assert(conn:get_values({ "FCGI_MPXS_CONNS" }, 10))
        assert.equal("1", values.FCGI_MPXS_CONNS)
        local after = assert(rss_kib(pid))
        -- The connection goes on serving.
        local ok = assert(conn:request{ id = 3, params = { TAG = "after" }, stdin = "x" })
        assert.equal("after:x", ok.body)
        conn:close()
        if os.getenv("MOONFCGI_SANITIZED") then
            -- AddressSanitizer's quarantine makes RSS figures meaningless: the plain build
            -- checks the bound; here, that the answers came.
            return
        end
        assert.is_true(after - before < 8 * 1024,
            ("worker RSS grew from %d to %d KiB"):format(before, after))
    end)
end)
