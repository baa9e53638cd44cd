-- Each case misuses the request API on one line and records that line first: errors must
-- point at the handler's line, not into moonfcgi.
local L
local cases = {
    write_table = function(req) L = debug.getinfo(1, "l").currentline; req:write({}) end,
    write_second = function(req) L = debug.getinfo(1, "l").currentline; req:write("a", {}) end,
    raw_after_write = function(req) req:write("a"); L = debug.getinfo(1, "l").currentline; req:raw_write("b") end,
    raw_second = function(req) req:write("a"); L = debug.getinfo(1, "l").currentline; req:raw_write("", "b") end,
    header_name = function(req) L = debug.getinfo(1, "l").currentline; req:set_header(1, "x") end,
    header_value = function(req) L = debug.getinfo(1, "l").currentline; req:set_header("X", true) end,
    header_list = function(req) L = debug.getinfo(1, "l").currentline; req:set_header("X", { "a", {} }) end,
    header_crlf = function(req) L = debug.getinfo(1, "l").currentline; req:set_header("X", "a\r\nb") end,
    header_late = function(req) req:write("a"); L = debug.getinfo(1, "l").currentline; req:set_header("X", "y") end,
    status_code = function(req) L = debug.getinfo(1, "l").currentline; req:set_status("x") end,
    status_late = function(req) req:write("a"); L = debug.getinfo(1, "l").currentline; req:set_status(201) end,
    param_name = function(req) L = debug.getinfo(1, "l").currentline; req:param(1) end,
    read_negative = function(req) L = debug.getinfo(1, "l").currentline; req:read(-1) end,
    read_data = function(req) L = debug.getinfo(1, "l").currentline; req:read_data() end,
    variable = function(req) L = debug.getinfo(1, "l").currentline; req:set_variable("A", "b") end,
}

return function(req)
    local ok, err = pcall(cases[req:param("CASE")], req)
    -- Whatever the case wrote before failing is dropped from the answer by a fresh line.
    req:write("\n", tostring(ok), "|", tostring(L), "|", tostring(err))
end
