-- Memory stays bounded however slowly the web server reads: the connection's output is
-- capped (256 KiB high-water mark) and a handler that writes more waits.
package.path = "spec/support/?.lua;" .. package.path
local process = require "process"
local client = require "moonfcgi.client"
local proto = require "moonfcgi.proto"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local function status_kib(pid, field)
    local f = io.open("/proc/" .. pid .. "/status")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

describe("a 100 MiB response to a client that reads slowly", function()
    local p

    before_each(function()
        p = assert(process.moonfcgi("spec/limits/apps/stream.lua", { args = { "--workers", "1" } }))
    end)

    after_each(function()
        p:cleanup()
    end)

    it("keeps the worker's memory under 64 MiB and delivers every byte", function()
        local conn = assert(client.connect(p.addr, { timeout = 60 }))
        -- Raw records, so that this spec reads them itself, one at a time.
        local id = 1
        assert(conn:send_raw(proto.request{ id = id, params = { REQUEST_METHOD = "GET", MIB = "100" } }))
        local collected, pid, body_bytes, records = "", nil, 0, 0
        local head_done = false
        while true do
            local rec = assert(conn:read_record(30))
            records = records + 1
            if rec.type == proto.END_REQUEST then
                assert.equal(id, rec.id)
                break
            end
            if rec.type == proto.STDOUT then
                assert.is_true(#rec.content <= 65528)
                if not head_done then
                    collected = collected .. rec.content
                    local hend = collected:find("\r\n\r\n", 1, true)
                    if hend then
                        head_done = true
                        pid = tonumber(collected:match("X%-Worker%-Pid: (%d+)"))
                        body_bytes = #collected - (hend + 3)
                    end
                else
                    body_bytes = body_bytes + #rec.content
                end
            end
            -- Read at most about 32 MB/s: far slower than the worker can produce.
            if records % 8 == 0 then
                ffi.C.poll(nil, 0, 16)
            end
        end
        conn:close()
        assert.equal(100 * 1024 * 1024, body_bytes)
        assert.is_number(pid)
        local peak = status_kib(pid, "VmHWM")
        assert.is_number(peak)
        if os.getenv("MOONFCGI_SANITIZED") then
            -- AddressSanitizer's shadow memory and quarantine dwarf what moonfcgi holds: the
            -- bound is checked on the plain build; here, that every byte arrived.
            return
        end
        assert.is_true(peak < 64 * 1024, "worker peak RSS " .. tostring(peak) .. " KiB")
    end)
end)
