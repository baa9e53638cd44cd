-- Runs the case the spec registered for the request's URI (the app and the spec share one Lua
-- state under moonfcgi.test): SOCKET_CASES[uri](req); its results, or its error, go to
-- SOCKET_RESULTS[uri] as a packed table { ok = bool, n = , ... }.
SOCKET_RAW = SOCKET_RAW or {}
SOCKET_CASES, SOCKET_RESULTS = SOCKET_CASES or {}, SOCKET_RESULTS or {}

local function pack(ok, ...)
    return { ok = ok, n = select("#", ...), ... }
end

return function(req)
    local uri = req.uri
    -- SOCKET_RAW[uri]: run without pcall, so that its errors are the handler's own.
    local raw = SOCKET_RAW and SOCKET_RAW[uri]
    if raw then
        return raw(req)
    end
    local case = SOCKET_CASES[uri]
    if not case then
        req:set_status(404)
        return
    end
    local res = pack(pcall(case, req))
    SOCKET_RESULTS[uri] = res
    req:write(res.ok and "ok" or tostring(res[1]))
end
