-- Streams MiB mebibytes (param MIB, default 100) in 64 KiB writes; X-Worker-Pid says which
-- process to measure.
local ffi = require "ffi"
pcall(ffi.cdef, "int getpid(void);")

local chunk = string.rep("0123456789abcdef", 4096)

return function(req)
    local mib = tonumber(req:param("MIB") or "100")
    req:set_header("Content-Type", "application/octet-stream")
    req:set_header("X-Worker-Pid", tostring(ffi.C.getpid()))
    for _ = 1, mib * 16 do
        local ok, err = req:write(chunk)
        if not ok then
            return 1
        end
    end
end
