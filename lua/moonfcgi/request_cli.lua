-- moonfcgi-request: sends one FastCGI request of any role to a running host and prints the
-- answer, like cgi-fcgi but for all three roles (the filter role's DATA stream included).
local client = require "moonfcgi.client"

local _M = {}

local usage = [[
usage: moonfcgi-request [OPTIONS] [URI]
  --connect ADDR        HOST:PORT, [V6]:PORT or unix:/PATH (default 127.0.0.1:9000)
  --role ROLE           responder (default), authorizer or filter
  --method METHOD       REQUEST_METHOD (default GET, or POST with --stdin)
  --param NAME=VALUE    a param (repeatable); REQUEST_URI, SCRIPT_NAME and friends are
                        filled in from URI unless given
  --header NAME=VALUE   an HTTP request header, sent as HTTP_NAME (repeatable)
  --stdin FILE          the request body (FCGI_STDIN) from FILE, or - for standard input
  --no-stdin            send no STDIN stream at all (as Apache's authorizer does)
  --data FILE           the filter role's file (FCGI_DATA); sets FCGI_DATA_LENGTH and
                        FCGI_DATA_LAST_MOD
  --timeout SECONDS     give up after this long (default 30)
  --include             print the CGI header block before the body (default: body only)
  --verbose             also print the status, app status and protocol status to stderr
Prints the body on standard output and FCGI_STDERR on standard error. Exit status: 0 when
the request completed with app status 0 and an HTTP status below 400, 1 otherwise, 2 on
bad usage.]]

local function read_file(path)
    local f, err
    if path == "-" then
        f = io.stdin
    else
        f, err = io.open(path, "rb")
        if not f then
            return nil, err
        end
    end
    local s = f:read("*a")
    if f ~= io.stdin then
        f:close()
    end
    return s
end

local function file_mtime(path)
    local p = io.popen("stat -c %Y '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null")
    local t = p and p:read("*l")
    if p then
        p:close()
    end
    return t or "0"
end

local function fail(msg)
    io.stderr:write("moonfcgi-request: ", msg, "\n")
    return 2
end

function _M.main(argv)
    local opts = { connect = "127.0.0.1:9000", role = "responder", timeout = 30 }
    local params, order = {}, {}
    local function set(name, value)
        if params[name] == nil then
            order[#order + 1] = name
        end
        params[name] = value
    end
    local i, uri = 1, nil
    while i <= #argv do
        local a = argv[i]
        local function value()
            i = i + 1
            if argv[i] == nil then
                error({ usage = "option " .. a .. " needs a value" })
            end
            return argv[i]
        end
        local ok, err = pcall(function()
            if a == "--help" or a == "-h" then
                opts.help = true
            elseif a == "--connect" then
                opts.connect = value()
            elseif a == "--role" then
                opts.role = value()
            elseif a == "--method" then
                opts.method = value()
            elseif a == "--param" or a == "--header" then
                local kv = value()
                local k, v = kv:match("^([^=]+)=(.*)$")
                if not k then
                    error({ usage = a .. " takes NAME=VALUE, not '" .. kv .. "'" })
                end
                if a == "--header" then
                    k = "HTTP_" .. k:upper():gsub("-", "_")
                end
                set(k, v)
            elseif a == "--stdin" then
                opts.stdin = value()
            elseif a == "--no-stdin" then
                opts.no_stdin = true
            elseif a == "--data" then
                opts.data = value()
            elseif a == "--timeout" then
                opts.timeout = tonumber(value())
                if not opts.timeout then
                    error({ usage = "--timeout takes seconds" })
                end
            elseif a == "--include" then
                opts.include = true
            elseif a == "--verbose" then
                opts.verbose = true
            elseif a:sub(1, 1) == "-" and a ~= "-" then
                error({ usage = "unknown option " .. a })
            elseif uri then
                error({ usage = "more than one URI" })
            else
                uri = a
            end
        end)
        if not ok then
            return fail(type(err) == "table" and err.usage or tostring(err))
        end
        i = i + 1
    end
    if opts.help then
        io.stdout:write(usage, "\n")
        return 0
    end
    if opts.role ~= "responder" and opts.role ~= "authorizer" and opts.role ~= "filter" then
        return fail("--role takes responder, authorizer or filter")
    end

    local body, data
    if opts.stdin then
        local err
        body, err = read_file(opts.stdin)
        if not body then
            return fail("cannot read " .. opts.stdin .. ": " .. tostring(err))
        end
    end
    if opts.data then
        local err
        data, err = read_file(opts.data)
        if not data then
            return fail("cannot read " .. opts.data .. ": " .. tostring(err))
        end
        if params.FCGI_DATA_LENGTH == nil then
            set("FCGI_DATA_LENGTH", tostring(#data))
        end
        if params.FCGI_DATA_LAST_MOD == nil then
            set("FCGI_DATA_LAST_MOD", opts.data == "-" and "0" or file_mtime(opts.data))
        end
    end
    uri = uri or "/"
    local path, query = uri:match("^([^?]*)%??(.*)$")
    local defaults = {
        REQUEST_METHOD = opts.method or (body and "POST" or "GET"),
        REQUEST_URI = uri,
        SCRIPT_NAME = path,
        DOCUMENT_URI = path,
        QUERY_STRING = query,
        SERVER_PROTOCOL = "HTTP/1.1",
        GATEWAY_INTERFACE = "CGI/1.1",
        SERVER_SOFTWARE = "moonfcgi-request",
        REMOTE_ADDR = "127.0.0.1",
        SERVER_NAME = "localhost",
    }
    if body then
        defaults.CONTENT_LENGTH = tostring(#body)
    end
    for _, k in ipairs({ "REQUEST_METHOD", "REQUEST_URI", "SCRIPT_NAME", "DOCUMENT_URI",
        "QUERY_STRING", "CONTENT_LENGTH", "SERVER_PROTOCOL", "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE", "REMOTE_ADDR", "SERVER_NAME" }) do
        if params[k] == nil and defaults[k] ~= nil and opts.role ~= "authorizer"
            or (params[k] == nil and opts.role == "authorizer" and k ~= "CONTENT_LENGTH"
                and k ~= "SCRIPT_NAME" and defaults[k] ~= nil) then
            set(k, defaults[k])
        end
    end
    local list = {}
    for _, k in ipairs(order) do
        list[#list + 1] = { k, params[k] }
    end

    local conn, err = client.connect(opts.connect, { timeout = opts.timeout })
    if not conn then
        io.stderr:write("moonfcgi-request: cannot connect to ", opts.connect, ": ", tostring(err),
            "\n")
        return 1
    end
    local res
    res, err = conn:request{
        role = opts.role,
        params = list,
        stdin = opts.no_stdin and false or (body or ""),
        data = data,
        keep_conn = false,
    }
    conn:close()
    if not res then
        io.stderr:write("moonfcgi-request: ", tostring(err), "\n")
        return 1
    end
    if res.stderr and #res.stderr > 0 then
        io.stderr:write(res.stderr)
    end
    if opts.include then
        io.stdout:write(res.stdout)
    else
        io.stdout:write(res.body or "")
    end
    io.stdout:flush()
    if opts.verbose then
        io.stderr:write(string.format("status %s, app status %s, protocol status %s\n",
            tostring(res.status), tostring(res.app_status), tostring(res.protocol_status)))
    end
    local good = res.protocol_status == "complete" and res.app_status == 0
        and (res.status or 200) < 400
    return good and 0 or 1
end

return _M
