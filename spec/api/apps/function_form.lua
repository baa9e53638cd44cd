-- The function form: the app is its responder.
return function(req)
    req:write("function form, role ", req.role)
end
