-- A small HTTP client for the integration specs (servers.lua's curl is this too): curl, run through io.popen, every run bounded
-- by --max-time. Bodies travel through files in a temp directory, so binary data and
-- megabytes are fine. curl runs without LD_PRELOAD: under the ASan suite busted has the
-- sanitizer runtimes preloaded, and they are no business of curl's.
local client = require "moonfcgi.client"

local format, concat = string.format, table.concat
local io_open, io_popen, os_execute = io.open, io.popen, os.execute
local tonumber, tostring, pairs, ipairs, assert = tonumber, tostring, pairs, ipairs, assert

local _M = {}

-- A word for the shell: single-quoted, with embedded single quotes escaped.
function _M.quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local q = _M.quote

function _M.have_curl()
    return os_execute("command -v curl >/dev/null 2>&1") == 0
end

function _M.read_file(path)
    local f = io_open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

function _M.write_file(path, data)
    local f = assert(io_open(path, "wb"))
    f:write(data)
    f:close()
end

local tmpdir
local function scratch(name)
    if not tmpdir then
        local p = io_popen("mktemp -d /tmp/moonfcgi-http.XXXXXX")
        tmpdir = p:read("*l")
        p:close()
    end
    return tmpdir .. "/" .. name
end
_M.scratch = scratch

-- Removes the scratch directory (call from a teardown).
function _M.cleanup()
    if tmpdir and tmpdir:match("^/tmp/moonfcgi%-http%.") then
        os_execute("rm -rf " .. q(tmpdir))
    end
    tmpdir = nil
end

local function parse_headers(raw)
    local headers = {}
    -- With redirects or 100-continue there may be several header blocks: keep the last.
    local last = raw:match(".*\r\n\r\n(HTTP/.-\r\n\r\n)") or raw
    for name, value in last:gmatch("([^:\r\n]+):[ \t]*([^\r\n]*)\r\n") do
        local k = name:lower()
        -- A repeated header reads as one, its values joined, as HTTP allows.
        headers[k] = headers[k] and headers[k] .. ", " .. value or value
    end
    return headers
end

-- One request. opts: method, url, body (a string), body_file (a path), headers (name to
-- value), user ("name:password" for basic auth), args (extra curl arguments, already
-- quoted), max_time (seconds, default 30). Returns { status, headers (lower-case names),
-- body, time, exit (curl's exit status), err (what curl printed) }; status is 0 when curl
-- got no response.
function _M.request(opts)
    local args = { "env -u LD_PRELOAD curl", "-sS", "--max-time", tostring(opts.max_time or 30),
                   "-o", q(scratch("resp.body")), "-D", q(scratch("resp.head")),
                   "-w", q("%{http_code} %{time_total}") }
    if opts.method then
        args[#args + 1] = "-X " .. q(opts.method)
    end
    for name, value in pairs(opts.headers or {}) do
        args[#args + 1] = "-H " .. q(name .. ": " .. value)
    end
    if opts.user then
        args[#args + 1] = "-u " .. q(opts.user)
    end
    local body_file = opts.body_file
    if opts.body then
        body_file = scratch("req.body")
        _M.write_file(body_file, opts.body)
    end
    if body_file then
        args[#args + 1] = "--data-binary @" .. q(body_file)
    end
    for _, a in ipairs(opts.args or {}) do
        args[#args + 1] = a
    end
    args[#args + 1] = q(opts.url)
    os.remove(scratch("resp.body"))
    os.remove(scratch("resp.head"))
    local p = io_popen(concat(args, " ") .. " 2>" .. q(scratch("curl.err")) .. "; echo \" $?\"")
    local out = p:read("*a")
    p:close()
    local status, time, code = out:match("^(%d+) ([%d.]+) +(%d+)")
    local res = {
        status = tonumber(status) or 0,
        time = tonumber(time),
        body = _M.read_file(scratch("resp.body")) or "",
        headers = parse_headers(_M.read_file(scratch("resp.head")) or ""),
        exit = tonumber(code or out:match("(%d+)%s*$")),
        err = _M.read_file(scratch("curl.err")) or "",
    }
    return res
end

function _M.get(url, opts)
    opts = opts or {}
    opts.url = url
    return _M.request(opts)
end

-- Runs a shell command line under `timeout` (so it ends within `limit` seconds whatever it
-- does), handing each line of its standard output to fn(line, t) as it arrives, t the seconds
-- since the start.
function _M.each_line(cmd, limit, fn)
    local t0 = client.now()
    local p = io_popen(format("env -u LD_PRELOAD timeout -s KILL %d sh -c %s", limit, q(cmd)))
    for line in p:lines() do
        fn(line, client.now() - t0)
    end
    p:close()
end

-- Many URLs over one curl run, which reuses one HTTP connection for them all. Returns the list
-- of { status, connects } per URL (connects: new connections curl opened for that transfer).
function _M.many(urls, max_time)
    local cfg = scratch("many.curlrc")
    local lines = {}
    for _, u in ipairs(urls) do
        lines[#lines + 1] = format('url = "%s"\noutput = "/dev/null"', u)
    end
    _M.write_file(cfg, concat(lines, "\n") .. "\n")
    local results = {}
    local cmd = format("curl -sS --max-time %d -w '%%{http_code} %%{num_connects}\\n' -K %s",
        max_time or 60, q(cfg))
    _M.each_line(cmd, (max_time or 60) + 5, function(line)
        local status, connects = line:match("^(%d+) (%d+)")
        results[#results + 1] = { status = tonumber(status), connects = tonumber(connects) }
    end)
    return results
end

return _M
