local moonfcgi = require "moonfcgi"

return {
    respond = function(req)
        local what = req:param("WHAT")
        if what == "204" then
            req:set_status(204)
        elseif what == "no-type" then
            req:set_header("Content-Type", nil)
            req:write("bytes")
        elseif what == "created" then
            req:set_status(201)
            req:set_header("X-First", "1")
            req:set_header("Location", "/items/7")
            req:write("{}")
        elseif what == "teapot" then
            req:set_status(418)
        elseif what == "raw-error" then
            req:raw_write("Status: 200 OK\r\n")
            error("after raw bytes were only buffered")
        end
    end,
    authorize = function(req)
        local what = req:param("WHAT")
        if what == "error" then
            error("authorizer failed")
        elseif what == "slow" then
            moonfcgi.sleep(5)
        elseif what == "read" then
            -- No STDIN comes to an authorizer (Apache sends none): the body is empty at once.
            local chunk = req:read()
            req:set_status(200)
            req:set_variable("BODY", chunk == nil and "none" or "some")
        end
    end,
}
