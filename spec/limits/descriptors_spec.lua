-- Running out of file descriptors (EMFILE) must not make the worker spin on accept, and the
-- worker must serve again once descriptors are free.
package.path = "spec/support/?.lua;" .. package.path
local needs = require "needs"
local process = require "process"
local client = require "moonfcgi.client"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local function cpu_seconds(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    -- Fields after the command name: utime and stime are the 12th and 13th.
    local rest = s:match("%) (.*)$")
    local fields = {}
    for x in rest:gmatch("%S+") do
        fields[#fields + 1] = x
    end
    return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

local function children(pid)
    local out = {}
    local p = io.popen("cat /proc/" .. pid .. "/task/" .. pid .. "/children 2>/dev/null")
    for c in p:read("*a"):gmatch("%d+") do
        out[#out + 1] = tonumber(c)
    end
    p:close()
    return out
end

describe("out of file descriptors", function()
    it("pauses accepting instead of spinning, and recovers", function()
        if os.execute("command -v prlimit >/dev/null 2>&1") ~= 0 then
            pending(needs.missing("prlimit (util-linux) is not installed"))
            return
        end
        local port = process.free_port()
        local addr = "127.0.0.1:" .. port
        local p = assert(process.spawn({ "prlimit", "--nofile=48:48", process.bin, "--workers",
            "1", "--listen", addr, "examples/hello.lua" },
            { env = { LD_PRELOAD = false, ASAN_OPTIONS = os.getenv("MOONFCGI_CHILD_ASAN_OPTIONS") or false } }))
        finally(function()
            p:cleanup()
        end)
        assert(process.wait_connectable(addr, 10, p))
        local worker = children(p.pid)[1]
        assert.is_number(worker)

        -- Hold more connections than the worker has descriptors for.
        local held = {}
        for i = 1, 80 do
            held[i] = assert(client.connect(addr, { timeout = 5 }))
        end
        ffi.C.poll(nil, 0, 300)
        local before = cpu_seconds(worker)
        ffi.C.poll(nil, 0, 1500)
        local used = cpu_seconds(worker) - before
        assert.is_true(used < 0.5, "the worker used " .. used .. " s of CPU in 1.5 s at EMFILE")
        assert.matches("pausing accepts", p:output())

        for i = 1, #held do
            held[i]:close()
        end
        local c = assert(client.connect(addr, { timeout = 5 }))
        local res = assert(c:request{ params = { REQUEST_METHOD = "GET" } })
        assert.equal(200, res.status)
        c:close()
    end)
end)

describe("--max-conns", function()
    it("serves N connections and leaves connection N+1 waiting until one closes", function()
        local p = assert(process.moonfcgi("examples/hello.lua",
            { args = { "--workers", "1", "--max-conns", "2" } }))
        finally(function()
            p:cleanup()
        end)
        local get = { params = { REQUEST_METHOD = "GET" } }
        local a = assert(client.connect(p.addr, { timeout = 5 }))
        local b = assert(client.connect(p.addr, { timeout = 5 }))
        assert.equal(200, assert(a:request(get)).status)
        assert.equal(200, assert(b:request(get)).status)
        assert.equal("2", a:get_values{ "FCGI_MAX_CONNS" }.FCGI_MAX_CONNS)

        -- The third connection is in the kernel's backlog: connected, but not served.
        local c = assert(client.connect(p.addr, { timeout = 5 }))
        local id = assert(c:send(get))
        local res, err = c:wait(id, 0.5)
        assert.is_nil(res)
        assert.equal("timeout", err)

        a:close()
        res = assert(c:wait(id, 5))
        assert.equal(200, res.status)
        b:close()
        c:close()
    end)
end)
