-- The table form: one handler per role.
return {
    respond = function(req)
        req:write("respond")
    end,
    authorize = function(req)
        req:set_status(200)
        req:set_variable("FORM", "table")
    end,
    filter = function(req)
        req:write("filter ", req:data())
    end,
}
