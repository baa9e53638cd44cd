-- moonfcgi-request: the command-line client that covers all three roles, run as a user
-- would run it, against a moonfcgi binary.
package.path = "spec/support/?.lua;" .. package.path
local process = require "process"

local tool = (process.bin:gsub("moonfcgi$", "moonfcgi-request"))

local function run(args)
    local out, errf = os.tmpname(), os.tmpname()
    local cmd = tool .. " " .. args .. " >" .. out .. " 2>" .. errf
    local ok, _, code = os.execute(cmd)
    local status = type(ok) == "number" and ok / 256 or code
    local function slurp(p)
        local f = io.open(p, "rb")
        local s = f:read("*a")
        f:close()
        os.remove(p)
        return s
    end
    return status, slurp(out), slurp(errf)
end

local function tmpfile(content)
    local p = os.tmpname()
    local f = io.open(p, "wb")
    f:write(content)
    f:close()
    return p
end

describe("moonfcgi-request", function()
    local filter, auth, rest

    setup(function()
        filter = assert(process.moonfcgi("examples/filter.lua", { args = { "--workers", "1" } }))
        auth = assert(process.moonfcgi("examples/auth.lua", { args = { "--workers", "1" } }))
        rest = assert(process.moonfcgi("examples/rest.lua", { args = { "--workers", "1" } }))
    end)

    teardown(function()
        filter:cleanup()
        auth:cleanup()
        rest:cleanup()
    end)

    it("sends a filter request with a DATA file and prints the transformed file", function()
        local data = tmpfile("first <line>\nsecond\n")
        local status, out = run("--connect " .. filter.addr .. " --role filter --data " .. data
            .. " /notes.txt")
        os.remove(data)
        assert.equal(0, status)
        assert.matches("1  first &lt;line&gt;", out, 1, true)
        assert.matches("2  second", out, 1, true)
    end)

    it("sends an authorizer request without STDIN and reports a denial by its exit status",
        function()
            local status, out = run("--connect " .. auth.addr .. " --role authorizer --no-stdin"
                .. " --include /private")
            assert.equal(1, status)
            assert.matches("^Status: 401", out)
        end)

    it("posts a body from a file to a responder", function()
        local body = tmpfile('{"name":"lamp"}')
        local status, out = run("--connect " .. rest.addr .. " --stdin " .. body
            .. " --param CONTENT_TYPE=application/json --include /items")
        os.remove(body)
        assert.equal(0, status)
        assert.matches("Status: 201", out, 1, true)
        assert.matches('"name":"lamp"', out, 1, true)
    end)

    it("exits 2 with one line on a bad option", function()
        local status, _, err = run("--frobnicate")
        assert.equal(2, status)
        assert.matches("unknown option %-%-frobnicate", err)
    end)

    it("exits 1 when nothing listens at the address", function()
        local status, _, err = run("--connect 127.0.0.1:" .. process.free_port() .. " /")
        assert.equal(1, status)
        assert.matches("cannot connect", err)
    end)
end)
