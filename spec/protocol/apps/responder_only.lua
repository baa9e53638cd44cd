-- An app with only a responder: authorizer and filter requests must get UNKNOWN_ROLE.
return function(req)
    req:set_header("Content-Type", "text/plain")
    req:write("responder")
end
