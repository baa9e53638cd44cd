-- docs/api.md, "The request object", "Errors": a handler that raises an error (or fails an assert).
local test = require "moonfcgi.test"

_G.api_handlers = _G.api_handlers or {}
local handlers = _G.api_handlers

describe("a handler error", function()
    local app, conn

    before_each(function()
        app = test.load("spec/api/apps/handlers.lua")
        conn = app:connect()
    end)

    after_each(function()
        conn:close()
        app:close()
    end)

    local function request(name, fn)
        handlers[name] = fn
        return assert(conn:request{ params = { H = name }, stdin = "" })
    end

    it("is sent to FCGI_STDERR with its message and traceback", function()
        local res = request("err", function()
            error("the handler broke")
        end)
        assert.matches("the handler broke", res.stderr)
        assert.matches("traceback", res.stderr)
    end)

    it("answers 500 when nothing was sent yet", function()
        local res = request("err500", function(req)
            req:set_status(201)
            req:set_header("X-Before", "1")
            error("before any output")
        end)
        assert.equal(500, res.status)
        assert.is_nil(res.headers["x-before"])
    end)

    it("answers 500 when the body was only buffered, not sent", function()
        local res = request("err_buffered", function(req)
            req:write("buffered")
            error("after a buffered write")
        end)
        assert.equal(500, res.status)
        assert.is_nil(res.body:find("buffered", 1, true))
    end)

    it("just ends the output when something was sent", function()
        local res = request("err_sent", function(req)
            req:write("partial")
            req:flush()
            error("after output")
        end)
        assert.equal(200, res.status)
        assert.equal("partial", res.body)
        assert.matches("after output", res.stderr)
    end)

    it("sets the app status to 1", function()
        local res = request("err_status", function()
            error("status")
        end)
        assert.equal(1, res.app_status)
        assert.equal("complete", res.protocol_status)
    end)

    it("from a failed assert is handled the same way", function()
        local res = request("err_assert", function()
            assert(false, "assertion in the handler")
        end)
        assert.equal(500, res.status)
        assert.equal(1, res.app_status)
        assert.matches("assertion in the handler", res.stderr)
        assert.matches("traceback", res.stderr)
    end)

    it("with a non-string error value is reported too", function()
        local res = request("err_table", function()
            error({ code = 7 })
        end)
        assert.equal(500, res.status)
        assert.equal(1, res.app_status)
        assert.is_true(#res.stderr > 0)
    end)

    it("leaves the connection usable and the worker going", function()
        request("err_first", function() error("first") end)
        assert.is_false(conn:closed())
        local res = request("ok_after", function(req) req:write("still serving") end)
        assert.equal(200, res.status)
        assert.equal("still serving", res.body)
        assert.equal(0, app:stats().requests)
    end)

    it("in a request that waits does not disturb the requests beside it", function()
        handlers.err_wait = function()
            require("moonfcgi").sleep(0.05)
            error("after a sleep")
        end
        handlers.fine = function(req)
            require("moonfcgi").sleep(0.1)
            req:write("fine")
        end
        local a = assert(conn:send{ params = { H = "err_wait" }, stdin = "" })
        local b = assert(conn:send{ params = { H = "fine" }, stdin = "" })
        assert.equal(500, assert(conn:wait(a)).status)
        assert.equal("fine", assert(conn:wait(b)).body)
    end)
end)
