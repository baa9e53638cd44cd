-- The resolver's options (docs/api.md, docs/outbound.md "DNS"): on the command line, where a
-- malformed one stops moonfcgi before it serves, and in the test API's load().
package.path = "spec/support/?.lua;" .. package.path
local process = require "process"
local mtest = require "moonfcgi.test"

local APP = "examples/hello.lua"

local function run(args)
    local argv = { process.bin }
    for _, a in ipairs(args) do
        argv[#argv + 1] = a
    end
    local p = assert(process.spawn(argv, { env = {
        ASAN_OPTIONS = os.getenv("MOONFCGI_CHILD_ASAN_OPTIONS") or false } }))
    local st = p:wait(10)
    local out = p:output()
    p:cleanup()
    return st, out
end

describe("the resolver options on the command line", function()
    it("are listed by --help", function()
        local st, out = run({ "--help" })
        assert.equal(0, st)
        for _, opt in ipairs({ "--resolver ADDR", "--resolver-timeout SECONDS",
                               "--resolver-valid SECONDS", "--resolver-ipv6 on|off" }) do
            assert.truthy(out:find(opt, 1, true), opt)
        end
    end)

    it("refuse a malformed value before serving", function()
        for _, bad in ipairs({
            { "--resolver", "dns.example" },
            { "--resolver", "127.0.0.1,," },
            { "--resolver", "127.0.0.1:70000" },
            { "--resolver-timeout", "0" },
            { "--resolver-valid", "soon" },
            { "--resolver-ipv6", "maybe" },
        }) do
            local st, out = run({ bad[1], bad[2], APP })
            assert.equal(2, st, out)
            assert.matches("invalid value for " .. bad[1]:gsub("%-", "%%-"), out)
        end
    end)

    it("accept IPv4 and IPv6 servers with or without a port, then serve", function()
        local p = assert(process.moonfcgi(APP, { args = {
            "--resolver", "127.0.0.1:5353,[::1]:53,10.0.0.1", "--resolver-timeout", "0.5",
            "--resolver-valid", "30", "--resolver-ipv6", "off" } }))
        assert.is_true(p:running())
        assert.equal(0, p:stop())
        p:cleanup()
    end)
end)

describe("the resolver options of moonfcgi.test", function()
    it("are taken by load()", function()
        local app = mtest.load(APP, { resolver = "127.0.0.1:5353", resolver_timeout = 1,
                                      resolver_valid = 5, resolver_ipv6 = false })
        local res = assert(app:request{ params = { REQUEST_METHOD = "GET", REQUEST_URI = "/" } })
        assert.equal(200, res.status)
        app:close()
    end)

    it("refuse malformed name servers", function()
        assert.has_error(function()
            mtest.load(APP, { resolver = "not an address" })
        end, "bad option 'resolver' (IP, IP:PORT or [V6]:PORT, comma-separated): not an address")
        assert.has_error(function()
            mtest.load(APP, { resolver = 53 })
        end, "bad option 'resolver' (a string of name servers expected)")
    end)
end)
