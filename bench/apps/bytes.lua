-- The 64 KiB response workload: one write of a string built once per worker.
--   ?n=BYTES sets the size (default 65536), so the same app serves other sizes.
local tonumber, rep = tonumber, string.rep

local cache = {}

return function(req)
    local n = tonumber((req:param("QUERY_STRING") or ""):match("n=(%d+)")) or 65536
    local body = cache[n]
    if not body then
        body = rep("x", n)
        cache[n] = body
    end
    req:set_header("Content-Type", "application/octet-stream")
    req:write(body)
end
