-- examples/ratelimit.lua: per client address, in a dictionary shared by the workers.
package.path = "spec/support/?.lua;spec/process/?.lua;" .. package.path
local test = require "moonfcgi.test"
local H = require "process_helpers"

local APP = "examples/ratelimit.lua"

local function hit(app, addr, role)
    return assert(app:request{ role = role or "responder",
        params = { REQUEST_METHOD = "GET", REQUEST_URI = "/", REMOTE_ADDR = addr },
        stdin = role == "authorizer" and false or "" })
end

describe("the rate limiter example", function()
    local app

    before_each(function()
        app = test.load(APP, { shared = { ratelimit = "1m" } })
    end)

    after_each(function()
        app:close()
    end)

    it("lets a client make 10 requests a second, then answers 429 with Retry-After", function()
        for i = 1, 10 do
            local res = hit(app, "192.0.2.1")
            assert.equal(200, res.status)
            assert.equal("ok\n", res.body)
            assert.equal(tostring(10 - i), res.headers["x-ratelimit-remaining"])
            assert.equal("10", res.headers["x-ratelimit-limit"])
        end
        local res = hit(app, "192.0.2.1")
        assert.equal(429, res.status)
        assert.equal("1", res.headers["retry-after"])
        assert.equal("0", res.headers["x-ratelimit-remaining"])
    end)

    it("counts each client address on its own", function()
        for _ = 1, 11 do
            hit(app, "192.0.2.1")
        end
        assert.equal(429, hit(app, "192.0.2.1").status)
        assert.equal(200, hit(app, "192.0.2.2").status)
    end)

    it("lets the client in again once its window has passed", function()
        for _ = 1, 11 do
            hit(app, "192.0.2.1")
        end
        local status
        for _ = 1, 300 do -- at most 3 s
            H.sleep(0.01)
            status = hit(app, "192.0.2.1").status
            if status == 200 then
                break
            end
        end
        assert.equal(200, status)
    end)

    it("as an authorizer: 200 lets the request on, 429 refuses it", function()
        for _ = 1, 10 do
            assert.equal(200, hit(app, "192.0.2.3", "authorizer").status)
        end
        assert.equal(429, hit(app, "192.0.2.3", "authorizer").status)
    end)

    it("refuses to load without its dictionary", function()
        assert.error_matches(function() test.load(APP) end,
            "needs a shared dictionary: start moonfcgi with --shared ratelimit:1m", nil, true)
    end)
end)

describe("the rate limiter example with several workers", function()
    it("allows exactly 10 requests per client in total, whichever workers serve them", function()
        local proc = H.start(APP, { workers = 3, args = { "--shared", "ratelimit:1m" },
            env = { RATELIMIT_RATE = "10", RATELIMIT_WINDOW = "60" } })
        local ok, refused = 0, 0
        for _ = 1, 30 do
            local res = assert(H.request(proc.addr,
                { REQUEST_METHOD = "GET", REQUEST_URI = "/", REMOTE_ADDR = "198.51.100.7" }))
            if res.status == 200 then
                ok = ok + 1
            else
                assert.equal(429, res.status)
                refused = refused + 1
            end
        end
        proc:cleanup()
        assert.equal(10, ok)
        assert.equal(20, refused)
    end)
end)
