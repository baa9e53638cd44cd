-- What lua-resty-lock, lua-resty-limit-traffic and lua-resty-mlcache need from a shared
-- dictionary, with the return values OpenResty documents: add with an expiry as a lock that
-- waiters poll over moonfcgi.sleep, incr with init and init_ttl as a counter per window,
-- incr up and down as a connection count, binary records in strings, and get_stale.
local ffi = require "ffi"
local test = require "moonfcgi.test"

local APP = "spec/shared/apps/libraries.lua"

local function wait_all(conn, ids)
    local out = {}
    for i, id in ipairs(ids) do
        out[i] = assert(conn:wait(id)).body
    end
    return out
end

describe("lua-resty-lock's operations", function()
    local app, dict

    before_each(function()
        app = test.load(APP, { shared = { locks = "1m" } })
        dict = app.shared.locks
    end)

    after_each(function()
        app:close()
    end)

    local function order()
        local out = {}
        for i = 1, dict:llen("order") do
            out[i] = dict:lpop("order")
        end
        return out
    end

    it("a second holder waits until the first unlocks: never both inside", function()
        local conn = app:connect()
        local a = assert(conn:send{ params = { OP = "critical", NAME = "a" } })
        local b = assert(conn:send{ params = { OP = "critical", NAME = "b" } })
        assert.same({ "at once", "waited" }, wait_all(conn, { a, b }))
        assert.same({ "a in", "a out", "b in", "b out" }, order())
        assert.is_nil(dict:get("lock"))
        conn:close()
    end)

    it("a waiter gives up with \"timeout\"", function()
        local conn = app:connect()
        local a = assert(conn:send{ params = { OP = "critical", NAME = "a", HOLD = "0.3" } })
        local b = assert(conn:send{ params = { OP = "critical", NAME = "b", TIMEOUT = "0.05" } })
        assert.same({ "at once", "failed: timeout" }, wait_all(conn, { a, b }))
        conn:close()
    end)

    it("a lock whose holder never unlocks frees itself at its exptime", function()
        local conn = app:connect()
        local a = assert(conn:send{ params = { OP = "critical", NAME = "a", KEEP = "1",
            EXPTIME = "0.1", HOLD = "0" } })
        local b = assert(conn:send{ params = { OP = "critical", NAME = "b" } })
        assert.same({ "at once", "waited" }, wait_all(conn, { a, b }))
        conn:close()
    end)

    it("expire on a lock no longer held answers \"not found\"", function()
        assert.equal("not found", app:request{ params = { OP = "expire" } }.body)
        dict:add("lock", true, 30)
        assert.equal("nil", app:request{ params = { OP = "expire" } }.body)
        assert.is_true(dict:ttl("lock") <= 1)
    end)

    it("add answers false, \"exists\", false while the lock is held", function()
        assert.same({ true, nil, false }, { dict:add("k", true, 1) })
        assert.same({ false, "exists", false }, { dict:add("k", true, 1) })
        assert.same({ true, nil, false }, { dict:delete("k") })
        assert.same({ true, nil, false }, { dict:add("k", true, 1) })
    end)
end)

describe("lua-resty-limit-traffic's operations", function()
    local app, dict

    before_each(function()
        app = test.load(APP, { shared = { locks = "1m" } })
        dict = app.shared.locks
    end)

    after_each(function()
        app:close()
    end)

    it("resty.limit.count: incr(key, -1, limit, window) counts down from the limit", function()
        assert.same({ 2, nil, false }, { dict:incr("client", -1, 3, 0.2) })
        assert.same({ 1, nil, false }, { dict:incr("client", -1, 3, 0.2) })
        assert.same({ 0, nil, false }, { dict:incr("client", -1, 3, 0.2) })
        assert.same({ -1, nil, false }, { dict:incr("client", -1, 3, 0.2) }) -- rejected
        local ttl = dict:ttl("client")
        assert.is_true(ttl > 0 and ttl <= 0.2, tostring(ttl))
        -- The window ends with the key: the next request starts a new count.
        local fresh
        for _ = 1, 300 do
            require("moonfcgi").sleep(0.01)
            if dict:get("client") == nil then
                fresh = true
                break
            end
        end
        assert.is_true(fresh)
        assert.same({ 2, nil, false }, { dict:incr("client", -1, 3, 0.2) })
    end)

    it("resty.limit.conn: incr up on entry and down on leaving", function()
        assert.same({ 1, nil, false }, { dict:incr("conn", 1, 0) })
        assert.same({ 2, nil, false }, { dict:incr("conn", 1, 0) })
        assert.same({ 1 }, { dict:incr("conn", -1) })
        assert.same({ 0 }, { dict:incr("conn", -1) })
    end)

    it("resty.limit.req: a binary record kept as a string comes back byte for byte", function()
        pcall(ffi.cdef, "typedef struct { uint64_t excess; uint64_t last; } mf_spec_limit_rec;")
        local rec = ffi.new("mf_spec_limit_rec")
        rec.excess, rec.last = 1500, 1733577600123ULL
        assert.is_true((dict:set("req", ffi.string(rec, ffi.sizeof(rec)))))
        local v = dict:get("req")
        assert.equal(16, #v)
        local back = ffi.new("mf_spec_limit_rec")
        ffi.copy(back, v, 16)
        assert.equal(1500ULL, back.excess)
        assert.equal(1733577600123ULL, back.last)
    end)
end)

describe("lua-resty-mlcache's operation", function()
    it("get_stale returns an expired value with stale = true until its room is reused",
        function()
            local app = test.load(APP, { shared = { locks = "1m" } })
            local dict = app.shared.locks
            dict:set("cached", "value", 0.02, 7)
            local stale
            for _ = 1, 300 do
                require("moonfcgi").sleep(0.01)
                stale = select(3, dict:get_stale("cached"))
                if stale then
                    break
                end
            end
            assert.same({ "value", 7, true }, { dict:get_stale("cached") })
            assert.is_nil(dict:get("cached"))
            app:close()
        end)
end)
