-- The header block moonfcgi writes for a handler: defaults and the error answers.
local test = require "moonfcgi.test"

describe("the response header block", function()
    local app

    setup(function()
        app = test.load("spec/lua/apps/response.lua", { timeout = 0.3 })
    end)

    teardown(function()
        app:close()
    end)

    it("puts Location before Status (HAProxy makes a 302 of a Location after Status)", function()
        local res = app:request{ params = { WHAT = "created" } }
        assert.equal(201, res.status)
        assert.equal("/items/7", res.headers["location"])
        local loc = res.stdout:find("Location: /items/7\r\n", 1, true)
        local st = res.stdout:find("Status: 201 Created\r\n", 1, true)
        local other = res.stdout:find("X-First: 1\r\n", 1, true)
        assert.is_true(loc < st and st < other)
    end)

    it("gives the standard reason phrase of a less common status", function()
        local res = app:request{ params = { WHAT = "teapot" } }
        assert.matches("Status: 418 I'm a teapot\r\n", res.stdout, 1, true)
    end)

    it("has no default Content-Type on a 204", function()
        local res = app:request{ params = { WHAT = "204" } }
        assert.equal(204, res.status)
        assert.is_nil(res.headers["content-type"])
        assert.equal("", res.body)
    end)

    it("has no Content-Type once the handler removed it", function()
        local res = app:request{ params = { WHAT = "no-type" } }
        assert.equal(200, res.status)
        assert.is_nil(res.headers["content-type"])
        assert.equal("bytes", res.body)
    end)

    it("answers 500 when a raw_write handler fails before anything reached the server", function()
        local res = app:request{ params = { WHAT = "raw-error" } }
        assert.equal(500, res.status)
        assert.equal(1, res.app_status)
    end)

    it("answers 500, not the authorizer's default 401, when an authorizer fails", function()
        local res = app:request{ role = "authorizer", params = { WHAT = "error" }, stdin = false }
        assert.equal(500, res.status)
        assert.equal(1, res.app_status)
        assert.matches("authorizer failed", res.stderr)
    end)

    it("answers 504 when an authorizer runs past --timeout", function()
        local res = app:request{ role = "authorizer", params = { WHAT = "slow" }, stdin = false }
        assert.equal(504, res.status)
    end)

    it("gives an authorizer an empty body at once, even when no STDIN is sent", function()
        local res = app:request{ role = "authorizer", params = { WHAT = "read" }, stdin = false }
        assert.equal(200, res.status)
        assert.equal("none", res.headers["variable-body"])
    end)

    it("denies with 401 when an authorizer sets no status", function()
        local res = app:request{ role = "authorizer", params = {}, stdin = false }
        assert.equal(401, res.status)
        assert.equal(0, res.app_status)
    end)
end)
