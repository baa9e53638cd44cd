-- The app behind spec/ngx: runs the function a spec registered in _G.ngx_handlers under the
-- name in the H param, in the request's own coroutine. The phase seen while this file loads
-- is kept for the specs.
_G.ngx_load_phase = ngx.get_phase()
_G.ngx_load_ctx = ngx.ctx

local function dispatch(req)
    local h = (_G.ngx_handlers or {})[req:param("H") or ""]
    if not h then
        ngx.status = 404
        ngx.say("no handler ", tostring(req:param("H")))
        return
    end
    return h(req)
end

return { respond = dispatch, authorize = dispatch }
