-- Running out of file descriptors (EMFILE) must not make the worker spin on accept, and the
-- worker must serve again once descriptors are free.
package.path = "spec/support/?.lua;" .. package.path
local needs = require "needs"
local log_times = require "log_times"
local process = require "process"
local client = require "moonfcgi.client"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")


-- How many connections wait in the kernel's accept queue of the TCP listener on
-- 127.0.0.1:port (for a listening socket, /proc/net/tcp's rx_queue is that count).
local function accept_queue(port)
    for line in io.lines("/proc/net/tcp") do
        local lport, st, rxq = line:match("^%s*%d+: 0100007F:(%x+) 00000000:0000 (%x+) %x+:(%x+)")
        if lport and tonumber(lport, 16) == port and st == "0A" then
            return tonumber(rxq, 16)
        end
    end
    return nil
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
        -- Each failed accept pauses accepting for 100 ms and says so: five of those lines in a
        -- row, by their own timestamps, span at least 0.4 s (a timer never fires early),
        -- where a worker that spun would have written them within a millisecond. (Its CPU
        -- use meanwhile is a figure of bench/timings.sh.)
        local stamps = log_times.wait_stamps(function() return p:output() end,
            "pausing accepts", 5)
        assert.is_true(#stamps >= 5, p:output())
        for i = 2, 5 do
            local gap = log_times.gap(stamps[i - 1], stamps[i])
            assert.is_true(gap >= 0.099, ("pause %d began %.3f s after the one before")
                :format(i, gap))
        end

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

        -- The third connection is in the kernel's backlog: connected, but not accepted. A
        -- request on a, answered after c was queued, is a loop turn of the worker in which
        -- it would have accepted c had it been accepting.
        local port = tonumber(p.addr:match(":(%d+)$"))
        local c = assert(client.connect(p.addr, { timeout = 5 }))
        local id = assert(c:send(get))
        local deadline = client.now() + 10
        while accept_queue(port) ~= 1 and client.now() < deadline do
            ffi.C.poll(nil, 0, 10)
        end
        assert.equal(1, accept_queue(port))
        assert.equal(200, assert(a:request(get)).status)
        assert.equal(1, accept_queue(port))
        local res

        a:close()
        res = assert(c:wait(id, 5))
        assert.equal(200, res.status)
        b:close()
        c:close()
    end)
end)
