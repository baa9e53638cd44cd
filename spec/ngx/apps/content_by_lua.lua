-- An OpenResty content_by_lua_block body, unchanged, wrapped as `return function() ... end`.
return function()
    local args = ngx.req.get_uri_args()
    local name = args.name or "world"
    if not ngx.re.find(name, [[^[a-z]+$]], "jo") then
        ngx.status = ngx.HTTP_BAD_REQUEST
        ngx.say("bad name")
        return ngx.exit(ngx.HTTP_OK)
    end
    if ngx.var.request_method == "POST" then
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        ngx.log(ngx.INFO, "got ", #body, " bytes")
        ngx.ctx.body = body
    end
    if args.go then
        return ngx.redirect("/hello?name=" .. ngx.escape_uri(name), ngx.HTTP_MOVED_PERMANENTLY)
    end
    ngx.header["Content-Type"] = "text/plain"
    ngx.header.X_Powered_By = "moonfcgi"
    ngx.say("hello, ", name, "!")
    ngx.print("scheme=", ngx.var.scheme, " host=", ngx.var.host, " ua=",
        ngx.req.get_headers()["user-agent"], "\n")
    if ngx.ctx.body then
        ngx.say("md5=", ngx.md5(ngx.ctx.body))
    end
    ngx.flush(true)
end
