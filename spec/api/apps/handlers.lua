-- The app behind most of spec/api: every role runs the function the spec registered in
-- _G.api_handlers under the name in the H param, so that each spec states its handler next
-- to its assertions while the handler still runs in the real core, in its own coroutine.
local function dispatch(req)
    local h = (_G.api_handlers or {})[req:param("H") or ""]
    if not h then
        req:set_status(404)
        req:write("no handler ", tostring(req:param("H")))
        return 0
    end
    return h(req)
end

return {
    respond = dispatch,
    authorize = dispatch,
    filter = dispatch,
}
