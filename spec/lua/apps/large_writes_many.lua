-- Two large writes per request, of strings built at run time from the param N, so each
-- request's body is its own and tokens of released pins get reused by later requests.
return function(req)
    local n = tonumber(req:param("N"))
    req:write(string.rep(string.char(65 + n % 26), 40 * 1024 + n), "|",
        string.rep(string.char(97 + n % 26), 33 * 1024 + n))
end
