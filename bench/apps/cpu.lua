-- The CPU-bound workload of bench/scaling.sh: about 1 ms of Lua work per request, so that
-- the load generator's own cost is small next to the workers'.
local ITERATIONS = tonumber(os.getenv("MF_CPU_ITERATIONS") or "") or 200000

return function(req)
    local x = 0
    for i = 1, ITERATIONS do
        x = (x + i * 7) % 1000003
    end
    req:set_header("Content-Type", "text/plain")
    req:write("Hello, world!\n")
    return x < 0 and 1 or 0
end
