-- examples/hello.lua, driven through the real core with real FastCGI records.
local test = require "moonfcgi.test"

describe("the hello example", function()
    local app

    setup(function()
        app = test.load("examples/hello.lua")
    end)

    teardown(function()
        app:close()
    end)

    it("greets whoever asks, in plain text", function()
        for _, uri in ipairs{ "/", "/anything?at=all" } do
            local res = assert(app:request{
                params = { REQUEST_METHOD = "GET", REQUEST_URI = uri },
                stdin = "",
            })
            assert.equal("complete", res.protocol_status)
            assert.equal(0, res.app_status)
            assert.equal(200, res.status)
            assert.equal("text/plain", res.headers["content-type"])
            assert.equal("Hello, world!\n", res.body)
        end
    end)

    it("is a responder only: an authorizer request gets FCGI_UNKNOWN_ROLE", function()
        local res = assert(app:request{
            role = "authorizer",
            params = { REQUEST_METHOD = "GET", REQUEST_URI = "/" },
            stdin = false,
        })
        assert.equal("unknown_role", res.protocol_status)
        assert.equal("", res.stdout)
    end)
end)
