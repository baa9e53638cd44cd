-- ngx.log at load time and in a handler (spec/ngx/global_spec.lua reads the host log).
ngx.log(ngx.WARN, "at load ", nil, " ", true, " ", ngx.null, " ", 1)

return function()
    ngx.log(ngx.ERR, "an error")
    ngx.log(ngx.DEBUG, "a debug line")
    ngx.log(ngx.INFO, "handler done")
    ngx.say("ok ", ngx.worker.id(), "/", ngx.worker.count(), " ", ngx.worker.pid())
end
