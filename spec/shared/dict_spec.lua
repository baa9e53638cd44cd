-- Shared dictionaries (docs/shared.md): every method of OpenResty's ngx.shared.DICT with the
-- return values and error strings its documentation gives, on dictionaries that
-- moonfcgi.test declares for one app.
local test = require "moonfcgi.test"
local shdict = require "moonfcgi.shdict"

local function poll_sleep(seconds)
    local ffi = require "ffi"
    pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
    ffi.C.poll(nil, 0, math.floor(seconds * 1000))
end

-- Waits (bounded) until fn() is true; returns its last value.
local function eventually(fn, timeout)
    for _ = 1, math.floor((timeout or 3) / 0.01) do
        local v = fn()
        if v then
            return v
        end
        poll_sleep(0.01)
    end
    return fn()
end

local function consistent(d)
    local figures, err = shdict.check(d)
    assert(figures, err)
    return figures
end

describe("a shared dictionary", function()
    local app, d, small

    before_each(function()
        app = test.load("spec/shared/apps/dict.lua", { shared = { cache = "1m", small = "32k" } })
        d, small = app.shared.cache, app.shared.small
    end)

    after_each(function()
        consistent(d)
        consistent(small)
        app:close()
    end)

    describe("from a handler", function()
        it("is moonfcgi.shared.NAME, the same object the app took at load time", function()
            assert.equal("true", app:request{ params = { OP = "same" } }.body)
            assert.equal("1", app:request{ params = { OP = "incr" } }.body)
            assert.equal("2", app:request{ params = { OP = "incr" } }.body)
            assert.equal(2, d:get("hits"))
        end)

        it("is also ngx.shared.NAME", function()
            assert.equal("true", app:request{ params = { OP = "ngx" } }.body)
        end)

        it("is nil for a name that was not declared", function()
            assert.equal("nil", app:request{ params = { OP = "missing" } }.body)
        end)

        it("is private to the app that test.load declared it for", function()
            local other = test.load("spec/shared/apps/dict.lua", { shared = { cache = "64k" } })
            other.shared.cache:set("k", "other's")
            d:set("k", "mine")
            assert.equal("mine", app:request{ params = {} }.body)
            assert.equal("other's", other:request{ params = {} }.body)
            other:close()
        end)
    end)

    describe("set and get", function()
        it("keep strings, numbers, booleans and their types", function()
            assert.same({ true, nil, false }, { d:set("s", "text") })
            assert.same({ true, nil, false }, { d:set("n", 3.5) })
            assert.same({ true, nil, false }, { d:set("t", true) })
            assert.same({ true, nil, false }, { d:set("f", false) })
            assert.same({ true, nil, false }, { d:set("e", "") })
            assert.equal("text", d:get("s"))
            assert.equal(3.5, d:get("n"))
            assert.is_true(d:get("t"))
            assert.is_false(d:get("f"))
            assert.equal("", d:get("e"))
            assert.equal(1, select("#", d:get("s")))
        end)

        it("keep a string larger than the read buffer and with zero bytes", function()
            local big = ("a\0b"):rep(10000)
            assert.is_true((d:set("big", big)))
            assert.equal(big, d:get("big"))
        end)

        it("return flags as a second value only when they are not 0", function()
            d:set("k", "v", 0, 42)
            assert.same({ "v", 42 }, { d:get("k") })
            d:set("k", "v", 0, 0)
            assert.same({ "v" }, { d:get("k") })
        end)

        it("give nil for a missing key", function()
            assert.same({ nil }, { d:get("nope") })
            assert.equal(1, select("#", d:get("nope")))
        end)

        it("turn number keys into strings", function()
            d:set(12, "twelve")
            assert.equal("twelve", d:get("12"))
            assert.equal("twelve", d:get(12))
        end)

        it("refuse nil, empty and too long keys with OpenResty's messages", function()
            assert.same({ nil, "nil key" }, { d:get(nil) })
            assert.same({ nil, "empty key" }, { d:get("") })
            assert.same({ nil, "key too long" }, { d:get(("k"):rep(65536)) })
            assert.same({ nil, "nil key" }, { d:set(nil, 1) })
            assert.same({ nil, "empty key" }, { d:set("", 1) })
            assert.same({ nil, "key too long" }, { d:set(("k"):rep(65536), 1) })
            assert.is_true((d:set(("k"):rep(65535), 1)))
            assert.equal(1, d:get(("k"):rep(65535)))
        end)

        it("refuse tables and functions with \"bad value type\"", function()
            assert.same({ nil, "bad value type" }, { d:set("k", {}) })
            assert.same({ nil, "bad value type" }, { d:set("k", print) })
        end)

        it("raise on a negative exptime, bad flags, or a call without the dictionary", function()
            assert.has_error(function() d:set("k", 1, -1) end, 'bad "exptime" argument')
            assert.has_error(function() d:set("k", 1, 0, "x") end, 'bad "flags" argument')
            assert.has_error(function() d.get(nil, "k") end, 'bad "zone" argument')
            assert.has_error(function() d.set({}, "k", 1) end, 'bad "zone" argument')
        end)

        it("set with nil deletes, and so does delete", function()
            d:set("a", 1)
            d:set("b", 2)
            assert.same({ true, nil, false }, { d:set("a", nil) })
            assert.is_nil(d:get("a"))
            assert.same({ true, nil, false }, { d:delete("b") })
            assert.is_nil(d:get("b"))
            assert.same({ true, nil, false }, { d:delete("never there") })
        end)

        it("overwrite a value of another type and size", function()
            d:set("k", "a long string value")
            d:set("k", 7)
            assert.equal(7, d:get("k"))
            d:set("k", ("x"):rep(5000))
            assert.equal(("x"):rep(5000), d:get("k"))
            assert.equal(1, consistent(d).keys)
        end)
    end)

    describe("expiry", function()
        it("hides a value once its exptime has passed; get_stale still sees it", function()
            d:set("k", "v", 0.05, 3)
            assert.same({ "v", 3 }, { d:get("k") })
            assert.is_truthy(eventually(function() return select(3, d:get_stale("k")) end))
            assert.same({ "v", 3, true }, { d:get_stale("k") })
            assert.is_nil(d:get("k"))
        end)

        it("get_stale returns value, nil flags and false for a live value", function()
            d:set("k", "v")
            assert.same({ "v", nil, false }, { d:get_stale("k") })
            assert.equal(3, select("#", d:get_stale("k")))
            assert.same({ nil }, { d:get_stale("missing") })
        end)

        it("never expires with exptime 0", function()
            d:set("k", "v", 0)
            assert.equal(0, d:ttl("k"))
        end)

        it("ttl counts down in seconds; \"not found\" once gone", function()
            d:set("k", "v", 10)
            local ttl = d:ttl("k")
            assert.is_true(ttl > 9 and ttl <= 10, tostring(ttl))
            assert.same({ nil, "not found" }, { d:ttl("missing") })
            d:set("short", "v", 0.03)
            assert.is_truthy(eventually(function() return d:ttl("short") == nil end))
            assert.same({ nil, "not found" }, { d:ttl("short") })
            assert.same({ nil, "nil key" }, { d:ttl(nil) })
        end)

        it("expire sets a new exptime, 0 for never; \"not found\" for a missing key", function()
            d:set("k", "v", 0.05)
            assert.same({ true }, { d:expire("k", 100) })
            assert.is_true(d:ttl("k") > 99)
            assert.same({ true }, { d:expire("k", 0) })
            assert.equal(0, d:ttl("k"))
            assert.same({ nil, "not found" }, { d:expire("missing", 1) })
            assert.has_error(function() d:expire("k") end, 'bad "exptime" argument')
            d:expire("k", 0.03)
            assert.is_truthy(eventually(function() return d:get("k") == nil end))
        end)

        it("flush_expired frees expired items and says how many, up to max_count", function()
            for i = 1, 5 do
                d:set("e" .. i, i, 0.02)
            end
            d:set("live", 1)
            assert.is_truthy(eventually(function() return d:get_stale("e5") == nil or
                select(3, d:get_stale("e5")) end))
            assert.equal(2, d:flush_expired(2))
            assert.equal(3, d:flush_expired())
            assert.equal(0, d:flush_expired())
            assert.equal(1, consistent(d).keys)
        end)

        it("flush_all marks every item expired: get sees none, get_stale still may", function()
            d:set("a", 1)
            d:set("b", 2)
            assert.is_nil(d:flush_all())
            assert.is_nil(d:get("a"))
            assert.is_nil(d:get("b"))
            assert.same({}, d:get_keys())
            d:flush_expired()
            assert.equal(0, consistent(d).keys)
        end)
    end)

    describe("add, safe_add and replace", function()
        it("add stores only a new key; \"exists\" otherwise", function()
            assert.same({ true, nil, false }, { d:add("k", 1) })
            assert.same({ false, "exists", false }, { d:add("k", 2) })
            assert.equal(1, d:get("k"))
        end)

        it("add takes the place of an expired value", function()
            d:set("k", 1, 0.02)
            assert.is_truthy(eventually(function() return d:get("k") == nil end))
            assert.same({ true, nil, false }, { d:add("k", 2) })
            assert.equal(2, d:get("k"))
        end)

        it("replace stores only over a live key; \"not found\" otherwise", function()
            assert.same({ false, "not found", false }, { d:replace("k", 1) })
            d:set("k", 1)
            assert.same({ true, nil, false }, { d:replace("k", "two", 0, 5) })
            assert.same({ "two", 5 }, { d:get("k") })
        end)

        it("add and replace refuse nil values", function()
            assert.same({ false, "attempt to add or replace nil values", false }, { d:add("k", nil) })
            d:set("k", 1)
            assert.same({ false, "attempt to add or replace nil values", false },
                { d:replace("k", nil) })
        end)

        it("safe_add is add without eviction", function()
            assert.same({ true, nil, false }, { d:safe_add("k", 1) })
            assert.same({ false, "exists", false }, { d:safe_add("k", 1) })
        end)
    end)

    describe("when full", function()
        local function fill(dict)
            local n = 0
            repeat
                n = n + 1
                local ok, err, forcible = dict:set("fill" .. n, ("v"):rep(200))
                assert.is_true(ok, err)
            until forcible
            return n
        end

        it("set evicts the least recently used items and says forcible", function()
            local n = fill(small)
            assert.is_true(n > 20, n)
            -- fill1 was the oldest and was never read again: it went first.
            assert.is_nil(small:get("fill1"))
            assert.equal(("v"):rep(200), small:get("fill" .. n))
        end)

        it("keeps what was read recently", function()
            small:set("keep", "me")
            for i = 1, 1000 do
                small:set("x" .. i, ("v"):rep(200))
                assert.equal("me", small:get("keep"))
            end
        end)

        it("safe_set and safe_add refuse with \"no memory\" instead of evicting", function()
            fill(small)
            local keys = consistent(small).keys
            assert.same({ false, "no memory", false }, { small:safe_set("new", ("v"):rep(2000)) })
            assert.same({ false, "no memory", false }, { small:safe_add("new", ("v"):rep(2000)) })
            assert.equal(keys, consistent(small).keys)
            -- As OpenResty: an old value whose room was not enough is gone as well.
            small:set("old", "x")
            assert.same({ false, "no memory", false }, { small:safe_set("old", ("v"):rep(2000)) })
            assert.is_nil(small:get("old"))
        end)

        it("refuses a value larger than the whole dictionary with \"no memory\"", function()
            local ok, err = small:set("huge", ("v"):rep(64 * 1024))
            assert.is_false(ok)
            assert.equal("no memory", err)
        end)

        it("free_space shrinks as values are stored and comes back when they go", function()
            local free = small:free_space()
            assert.equal(32 * 1024, small:capacity())
            assert.is_true(free > 0 and free < small:capacity())
            small:set("k", ("v"):rep(1000))
            assert.is_true(small:free_space() <= free - 1000)
            small:delete("k")
            assert.equal(free, small:free_space())
        end)
    end)

    describe("incr", function()
        it("adds to a number and returns the new value", function()
            d:set("n", 10)
            assert.same({ 11 }, { d:incr("n", 1) })
            assert.same({ 8.5 }, { d:incr("n", -2.5) })
            assert.equal(8.5, d:get("n"))
        end)

        it("gives nil, \"not found\" for a missing key without init", function()
            assert.same({ nil, "not found" }, { d:incr("missing", 1) })
            assert.is_nil(d:get("missing"))
        end)

        it("starts a missing key at init + value, returning forcible as a third value", function()
            assert.same({ 6, nil, false }, { d:incr("n", 1, 5) })
            assert.same({ 7, nil, false }, { d:incr("n", 1, 5) })
        end)

        it("gives the new key init_ttl, and leaves an existing key's ttl alone", function()
            d:incr("n", 1, 0, 0.05)
            assert.is_true(d:ttl("n") > 0)
            d:incr("n", 1, 0, 100)
            assert.is_true(d:ttl("n") <= 0.05)
            assert.is_truthy(eventually(function() return d:get("n") == nil end))
            assert.same({ 1, nil, false }, { d:incr("n", 1, 0, 100) })
        end)

        it("refuses a value that is not a number with \"not a number\"", function()
            d:set("s", "text")
            assert.same({ nil, "not a number" }, { d:incr("s", 1) })
            assert.same({ nil, "not a number" }, { d:incr("s", 1, 0) })
            d:lpush("l", 1)
            assert.same({ nil, "not a number" }, { d:incr("l", 1) })
        end)

        it("checks its arguments as OpenResty does", function()
            assert.same({ nil, "nil key" }, { d:incr(nil, 1) })
            assert.has_error(function() d:incr("n", 1, "x") end,
                "bad init arg: number expected, got string")
            assert.has_error(function() d:incr("n", 1, nil, 1) end,
                'must provide "init" when providing "init_ttl"')
            assert.has_error(function() d:incr("n", 1, 0, -1) end, 'bad "init_ttl" argument')
            assert.same({ 3, nil, false }, { d:incr("n", "3", 0) }) -- tonumber'd, as OpenResty
        end)
    end)

    describe("lists", function()
        it("lpush and rpush return the new length; lpop and rpop take from each end", function()
            assert.equal(1, d:lpush("l", "b"))
            assert.equal(2, d:lpush("l", "a"))
            assert.equal(3, d:rpush("l", 3))
            assert.equal(3, d:llen("l"))
            assert.equal("a", d:lpop("l"))
            assert.equal(3, d:rpop("l"))
            assert.equal("b", d:rpop("l"))
            assert.same({ nil }, { d:lpop("l") })
            assert.equal(0, d:llen("l"))
        end)

        it("an emptied list is gone", function()
            d:rpush("l", 1)
            d:lpop("l")
            assert.equal(0, consistent(d).keys)
            assert.is_nil(d:get("l"))
        end)

        it("pop and llen give nil and 0 for a missing key", function()
            assert.same({ nil }, { d:lpop("missing") })
            assert.same({ nil }, { d:rpop("missing") })
            assert.same({ 0 }, { d:llen("missing") })
        end)

        it("refuse a key that holds something else with \"value not a list\"", function()
            d:set("s", "x")
            assert.same({ nil, "value not a list" }, { d:lpush("s", 1) })
            assert.same({ nil, "value not a list" }, { d:rpush("s", 1) })
            assert.same({ nil, "value not a list" }, { d:lpop("s") })
            assert.same({ nil, "value not a list" }, { d:rpop("s") })
            assert.same({ nil, "value not a list" }, { d:llen("s") })
        end)

        it("get on a list gives nil, \"value is a list\"", function()
            d:rpush("l", 1)
            assert.same({ nil, "value is a list" }, { d:get("l") })
        end)

        it("take strings and numbers only", function()
            assert.same({ nil, "bad value type" }, { d:lpush("l", true) })
            assert.same({ nil, "bad value type" }, { d:rpush("l", {}) })
            assert.same({ nil, "bad value type" }, { d:rpush("l", nil) })
        end)

        it("set and delete replace a whole list, nodes included", function()
            for i = 1, 3000 do
                d:rpush("l", ("n"):rep(i % 50))
            end
            assert.equal(3000, consistent(d).list_nodes)
            d:set("l", "plain")
            assert.equal("plain", d:get("l"))
            assert.equal(0, consistent(d).list_nodes)
            for i = 1, 10 do
                d:rpush("l2", i)
            end
            d:delete("l2")
            assert.equal(0, consistent(d).list_nodes)
        end)

        it("push answers false, \"no memory\" when the list does not fit", function()
            assert.same({ false, "no memory" }, { small:rpush("l", ("v"):rep(40000)) })
            assert.equal(0, consistent(small).keys)
        end)
    end)

    describe("get_keys", function()
        it("lists live keys, oldest first, at most 1024 by default, all with 0", function()
            for i = 1, 1100 do
                d:set("k" .. i, i)
            end
            d:set("gone", 1, 0.01)
            assert.is_truthy(eventually(function() return d:get("gone") == nil end))
            local keys = d:get_keys()
            assert.equal(1024, #keys)
            assert.equal("k1", keys[1])
            assert.equal(1100, #d:get_keys(0))
            assert.same({ "k1", "k2" }, d:get_keys(2))
        end)

        it("gives an empty table for an empty dictionary", function()
            assert.same({}, d:get_keys())
        end)
    end)

    describe("capacity and free_space", function()
        it("capacity is the declared size in bytes", function()
            assert.equal(1024 * 1024, d:capacity())
        end)

        it("the free space and the blocks in use account for the whole heap", function()
            for i = 1, 500 do
                d:set("k" .. i, ("v"):rep(i))
            end
            for i = 1, 500, 3 do
                d:delete("k" .. i)
            end
            local f = consistent(d)
            assert.equal(d:free_space(), f.free_bytes)
            assert.equal(500 - 167, f.keys)
        end)
    end)
end)

describe("test.load's shared option", function()
    it("refuses a bad name or size", function()
        assert.has_error(function()
            test.load("spec/shared/apps/dict.lua", { shared = { ["bad name"] = "1m" } })
        end)
        assert.has_error(function()
            test.load("spec/shared/apps/dict.lua", { shared = { cache = "1k" } })
        end)
    end)
end)
