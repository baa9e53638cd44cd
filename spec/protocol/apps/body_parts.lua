-- Answers with what req:body() (and, as a filter, req:data()) returned: the bytes, or
-- "error:" and the error. For the specs of bodies whose records arrive in pieces.
local function show(s, err)
    if s == nil then
        return "error:" .. tostring(err)
    end
    return #s .. ":" .. s
end

return {
    respond = function(req)
        req:set_header("Content-Type", "text/plain")
        req:write(show(req:body()))
    end,
    filter = function(req)
        req:set_header("Content-Type", "text/plain")
        local body = show(req:body())
        req:write(body, "|", show(req:data()))
    end,
}
