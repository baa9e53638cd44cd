-- Figures that once were upper bounds inside specs, where a loaded machine could miss them
-- and a fast one never would: how fast the Lua codec is, how late timers and timeouts fire,
-- what the worker spends paused on EMFILE. Printed, never asserted. Run by bench/timings.sh.
--   TIMING name=... value=... unit=...  (one line per figure, last)
local proto = require "moonfcgi.proto"
local client = require "moonfcgi.client"
local test = require "moonfcgi.test"
local moonfcgi = require "moonfcgi"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local lines = {}
local function report(name, value, unit, note)
    local line = ("TIMING name=%s value=%.4g unit=%s"):format(name, value, unit)
    lines[#lines + 1] = line
    print(("%-28s %10.4g %-4s %s"):format(name, value, unit, note or ""))
end

-- proto.request: 5,000 small requests (spec/lua/proto_spec.lua checks what they hold).
do
    local t = os.clock()
    local n = 0
    for i = 1, 5000 do
        n = n + #proto.request({ id = i, params = { REQUEST_METHOD = "GET",
                                                    REQUEST_URI = "/" .. i }, stdin = "" })
    end
    report("proto_request_5000", (os.clock() - t) * 1000, "ms", n .. " bytes, CPU time")
end

-- proto.parser: 8 MiB of STDIN fed in 1,000-byte pieces.
do
    local big = proto.stream(proto.STDIN, 1, string.rep("b", 8 * 1024 * 1024))
    local t = os.clock()
    local p = proto.parser()
    for i = 1, #big, 1000 do
        p:feed(big:sub(i, i + 999))
        while p:next() do
        end
    end
    local s = os.clock() - t
    report("proto_parser_8mib", s * 1000, "ms", ("%.0f MB/s, CPU time"):format(#big / s / 1e6))
end

-- Timers of the in-process core: how late moonfcgi.sleep(0.1) returns in a handler, how late
-- a --timeout of 0.3 s answers 504, how late a --idle-timeout of 0.3 s closes.
do
    local elapsed
    _G.api_handlers = {
        sleep = function()
            local t0 = moonfcgi.now()
            moonfcgi.sleep(0.1)
            elapsed = moonfcgi.now() - t0
        end,
        long = function()
            moonfcgi.sleep(5)
        end,
    }
    local app = test.load("spec/api/apps/handlers.lua", { timeout = 0.3, idle_timeout = 0.3 })
    assert(app:request{ params = { H = "sleep" } })
    report("sleep_0.1_late", (elapsed - 0.1) * 1000, "ms", "moonfcgi.sleep(0.1) in a handler")
    local t0 = client.now()
    local res = assert(app:request{ params = { H = "long" } })
    report("timeout_0.3_late", (client.now() - t0 - 0.3) * 1000, "ms",
        "504 (status " .. res.status .. ") after --timeout 0.3")
    local conn = app:connect()
    assert(conn:request{ params = { H = "sleep" } })
    t0 = client.now()
    local deadline = t0 + 10
    while not conn:closed() and client.now() < deadline do
        app:run(0.001)
    end
    report("idle_timeout_0.3_late", (client.now() - t0 - 0.3) * 1000, "ms",
        "close after --idle-timeout 0.3 (counted from after the answer)")
    conn:close()
    app:close()
end

-- The worker's CPU while it has no descriptor left for a new connection (EMFILE): it pauses
-- accepting for 100 ms at a time (spec/limits/descriptors_spec.lua checks the pauses).
do
    local process = require "process"
    if os.execute("command -v prlimit >/dev/null 2>&1") ~= 0 then
        print("emfile_worker_cpu: skipped, prlimit (util-linux) is not installed")
    else
        local function cpu_seconds(pid)
            local f = io.open("/proc/" .. pid .. "/stat")
            if not f then
                return nil
            end
            local s = f:read("*a")
            f:close()
            local fields = {}
            for x in s:match("%) (.*)$"):gmatch("%S+") do
                fields[#fields + 1] = x
            end
            return (tonumber(fields[12]) + tonumber(fields[13])) / 100
        end
        local addr = "127.0.0.1:" .. process.free_port()
        local p = assert(process.spawn({ "prlimit", "--nofile=48:48", process.bin, "--workers",
            "1", "--listen", addr, "examples/hello.lua" }))
        assert(process.wait_connectable(addr, 10, p))
        local f = io.popen("cat /proc/" .. p.pid .. "/task/" .. p.pid .. "/children")
        local worker = tonumber(f:read("*a"):match("%d+"))
        f:close()
        local held = {}
        for i = 1, 80 do
            held[i] = assert(client.connect(addr, { timeout = 5 }))
        end
        ffi.C.poll(nil, 0, 300)
        local before = cpu_seconds(worker)
        ffi.C.poll(nil, 0, 1500)
        report("emfile_worker_cpu", (cpu_seconds(worker) - before) * 1000, "ms",
            "CPU of the worker in 1.5 s at EMFILE")
        for i = 1, #held do
            held[i]:close()
        end
        p:stop()
        p:cleanup()
    end
end

print()
for _, l in ipairs(lines) do
    print(l)
end
