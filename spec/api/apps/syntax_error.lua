-- A syntax error on line 3.
return function(req)
    req:write("x" ..)
end
