-- A filter (the FastCGI filter role): the web server sends the requested file on a second
-- stream, FCGI_DATA, and the filter sends back a transformed version. This one renders a
-- text file as an HTML page with numbered lines.
--
--   moonfcgi --listen 127.0.0.1:9002 examples/filter.lua
--
-- No mainstream web server sends this role; moonfcgi's test harness and client do
-- (app:request{ role = "filter", data = "..." }).
--
-- The file is read and written chunk by chunk, so a large file never sits in memory whole.
-- FCGI_DATA_LENGTH is the file's size: the filter reads that many bytes and no more
-- (FastCGI 1.0, section 6.4).

local tonumber, min = tonumber, math.min
local concat = table.concat
local format, gsub, date = string.format, string.gsub, os.date

local CHUNK = 16384

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }

local function escape(s)
    return (gsub(s, '[&<>"]', ESCAPES))
end

return {
    filter = function(req)
        local left = tonumber(req:param("FCGI_DATA_LENGTH")) -- nil: read to the end
        local modified = tonumber(req:param("FCGI_DATA_LAST_MOD")) or 0
        if modified > 0 then
            req:set_header("Last-Modified", date("!%a, %d %b %Y %H:%M:%S GMT", modified))
        end
        req:set_header("Content-Type", "text/html; charset=utf-8")
        local title = escape((req.uri or ""):match("^[^?]*"))
        req:write("<!DOCTYPE html>\n<title>", title, "</title>\n<pre>\n")

        local n, partial = 0, "" -- lines written; the start of a line a chunk cut off
        while left == nil or left > 0 do
            local chunk, err = req:read_data(left and min(left, CHUNK) or CHUNK)
            if not chunk then
                if err then
                    return -- aborted or timed out: nobody waits for the rest
                elseif left then
                    req:log("FCGI_DATA ended", left, "bytes short of FCGI_DATA_LENGTH")
                end
                break
            end
            if left then
                left = left - #chunk
            end
            local text, out = partial .. chunk, {}
            for line in text:gmatch("([^\n]-)\r?\n") do
                n = n + 1
                out[#out + 1] = format("%5d  %s\n", n, escape(line))
            end
            partial = text:match("[^\n]*$")
            req:write(concat(out))
        end
        if partial ~= "" then -- the last line had no newline
            req:write(format("%5d  %s\n", n + 1, escape(partial)))
        end
        req:write("</pre>\n")
    end,
}
