-- app:close() frees the worker: nothing that outlives it (a request object a spec kept, a
-- string pinned for a connection's output) may still point into the freed memory.
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local runtime = require "moonfcgi.runtime"

local box

-- Loads the app, starts n requests of the given mode and waits until each handler has
-- handed its request object over.
local function start(mode, n)
    box = {}
    package.loaded.close_spec_box = box
    local app = test.load("spec/api/apps/kept.lua")
    local conns = {}
    for i = 1, n do
        conns[i] = app:connect()
        assert(conns[i]:send_raw(proto.request{ id = 1, params = { MODE = mode } }))
    end
    local deadline = os.time() + 10
    while #box < n and os.time() < deadline do
        app:step(0.01)
    end
    assert.equal(n, #box)
    return app, conns
end

describe("app:close()", function()
    after_each(function()
        package.loaded.close_spec_box = nil
    end)

    it("ends the request objects of requests in flight", function()
        local app, conns = start("sleep", 3)
        assert.equal("sleep", box[1]:param("MODE"))
        app:close()
        for i = 1, 3 do
            local req = box[i]
            assert.is_true(req:aborted())
            assert.error_matches(function() req:param("MODE") end, "the request has ended")
            assert.error_matches(function() req:header("Host") end, "the request has ended")
            assert.error_matches(function() req:write("x") end, "the request has ended")
            assert.error_matches(function() req:each_param() end, "the request has ended")
            assert.error_matches(function() return req.params end, "the request has ended")
            conns[i]:close()
        end
    end)

    it("unpins the strings its connections still referenced", function()
        local before = runtime.pinned_count()
        local app, conns = start("write", 2)
        -- The clients read nothing: each handler waits with its output queued, by reference.
        local deadline = os.time() + 10
        while runtime.pinned_count() - before < 2 and os.time() < deadline do
            app:step(0.01)
        end
        assert.is_true(runtime.pinned_count() - before >= 2,
            "pinned: " .. runtime.pinned_count() - before)
        app:close()
        assert.equal(before, runtime.pinned_count())
        for i = 1, 2 do
            assert.error_matches(function() box[i]:param("MODE") end, "the request has ended")
            conns[i]:close()
        end
    end)

    it("may be called twice", function()
        local app = start("sleep", 1)
        app:close()
        app:close()
        assert.error_matches(function() app:connect() end, "the app was closed")
    end)
end)
