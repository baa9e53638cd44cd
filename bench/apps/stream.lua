-- The backpressure workload: streams MiB mebibytes (default 100, ?mib=N) in 64 KiB writes.
-- req:write() waits while the web server is slow to take output, so a slow reader must not
-- make the worker buffer the stream.
local tonumber, rep = tonumber, string.rep

local CHUNK = rep("s", 65536)

return function(req)
    local mib = tonumber((req:param("QUERY_STRING") or ""):match("mib=(%d+)")) or 100
    req:set_header("Content-Type", "application/octet-stream")
    for _ = 1, mib * 16 do
        if not req:write(CHUNK) then
            return -- aborted: the reader went away
        end
    end
end
