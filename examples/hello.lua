-- The smallest moonfcgi app: a responder that greets whoever asks.
--   moonfcgi examples/hello.lua            (listens on 127.0.0.1:9000)
return function(req)
    req:set_header("Content-Type", "text/plain")
    req:write("Hello, world!\n")
end
