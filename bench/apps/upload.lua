-- The upload workload: reads the whole request body with req:body(), then greets. The
-- answer says how many bytes arrived only in the log of a failure, so that every response
-- has the ceiling's size.
local tonumber = tonumber

return function(req)
    local body, err = req:body()
    if not body then
        req:set_status(err == "too large" and 413 or 400)
        return
    end
    local want = tonumber(req:param("CONTENT_LENGTH") or "0")
    if #body ~= want then
        req:set_status(500)
        req:log("body has ", #body, " bytes, CONTENT_LENGTH says ", want)
        return
    end
    req:set_header("Content-Type", "text/plain")
    req:write("Hello, world!\n")
end
