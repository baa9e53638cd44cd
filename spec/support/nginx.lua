-- nginx in front of moonfcgi, for specs and for examples/serve-behind-nginx.sh: builds an
-- nginx configuration from a small table, writes it into a directory of its own, starts
-- nginx on it in the foreground and stops it by pid. The configuration text is kept on the
-- server object (and returned by _M.config), because the deployment guide quotes these very
-- configurations: what the specs run is what the docs show.
--
--   local nginx = require "nginx"
--   local srv = assert(nginx.start{ upstream = "127.0.0.1:9000", keepalive = 8 })
--   -- srv.url is "http://127.0.0.1:PORT", srv.conf the nginx.conf text
--   srv:stop()
--
-- Options (all optional but `upstream`):
--   upstream              "HOST:PORT" or "unix:/PATH", or a list of them; an entry of the
--                         list may be a table { ADDR, max_fails = N, fail_timeout = "10s",
--                         weight = N, backup = true } for the options of its server line
--   max_fails, fail_timeout  the same for every server line (default: nginx's, 1 and 10s)
--   listen                "127.0.0.1:PORT" (default: a free loopback port)
--   keepalive             idle connections each nginx worker keeps to moonfcgi; when set,
--                         `fastcgi_keep_conn on` too (default: none, one connection per request)
--   keepalive_requests    requests over one kept connection before nginx closes it
--                         (default: nginx's, 1000)
--   keepalive_timeout     how long an idle kept connection stays open (default: nginx's,
--                         60s); keep it below moonfcgi's --idle-timeout (60 s by default)
--   keep_conn             force `fastcgi_keep_conn` on or off
--   buffering             `fastcgi_buffering`, true or false (default true)
--   request_buffering     `fastcgi_request_buffering`, true or false (default: nginx's, on)
--   client_max_body_size  e.g. "16m" (default "16m", moonfcgi's --max-body)
--   large_client_header_buffers  e.g. "4 64k" (default: nginx's, 4 8k)
--   timeouts              { connect = "5s", send = "60s", read = "60s" }
--   next_upstream         e.g. "error timeout" or "off" (`fastcgi_next_upstream`)
--   next_upstream_tries   `fastcgi_next_upstream_tries` (default: nginx's, 0: no limit)
--   next_upstream_timeout `fastcgi_next_upstream_timeout` (default: nginx's, 0: no limit)
--   locations             more locations after `location /`: a list of tables { path =
--                         "/events/", ... } whose other fields override the options above
--                         for that location (buffering, request_buffering, timeouts, ...)
--   log_upstream          true: each access log line is "$msec $request_time "$request"
--                         $status upstream=$upstream_addr upstream_status=$upstream_status":
--                         when it ended, how long it took, and every upstream nginx tried
--   workers               nginx worker processes (default 1)
--   master_process        true or false (default true)
--   user                  the user nginx workers run as when started as root (default:
--                         www-data, else nobody); ignored when not root
--   params                "include" (Debian's /etc/nginx/fastcgi_params, the default when it
--                         exists) or "inline" (the same standard list, written out)
--   prefix                the directory for nginx.conf, logs, pid and temp files (default: a
--                         new one under /tmp, removed by stop())
--   error_log_level       default "info"
--
-- _M.site(opts) is the upstream and server blocks alone, the part a deployment adds to its own
-- nginx; _M.recipe(name, overrides) the options of a configuration the guides show
-- (docs/servers/nginx.md, docs/scaling.md quote site(recipe(name)), and
-- spec/integration/docs_nginx_spec.lua checks that they still do).
--
-- Generating a configuration needs only LuaJIT; starting nginx needs process.lua (and so
-- moonfcgi.client), which is loaded only then.
local ffi = require "ffi"

local concat, insert = table.concat, table.insert
local format = string.format
local type, pairs, ipairs, tostring, tonumber, assert = type, pairs, ipairs, tostring, tonumber, assert
local io_open, os_getenv, os_execute, os_remove = io.open, os.getenv, os.execute, os.remove

pcall(ffi.cdef, [[
unsigned mf_nginx_geteuid(void) __asm__("geteuid");
void *mf_nginx_getpwnam(const char *name) __asm__("getpwnam");
char *mf_nginx_mkdtemp(char *template) __asm__("mkdtemp");
int mf_nginx_chmod(const char *path, unsigned mode) __asm__("chmod");
]])
local C = ffi.C

local _M = {}
local Server = {}
Server.__index = Server

-- The standard parameters nginx sends, as in the fastcgi_params file nginx ships. Used when
-- that file is not installed, or when asked for with params = "inline".
_M.FASTCGI_PARAMS = {
    { "QUERY_STRING", "$query_string" },
    { "REQUEST_METHOD", "$request_method" },
    { "CONTENT_TYPE", "$content_type" },
    { "CONTENT_LENGTH", "$content_length" },
    { "SCRIPT_NAME", "$fastcgi_script_name" },
    { "REQUEST_URI", "$request_uri" },
    { "DOCUMENT_URI", "$document_uri" },
    { "DOCUMENT_ROOT", "$document_root" },
    { "SERVER_PROTOCOL", "$server_protocol" },
    { "REQUEST_SCHEME", "$scheme" },
    { "HTTPS", "$https if_not_empty" },
    { "GATEWAY_INTERFACE", "CGI/1.1" },
    { "SERVER_SOFTWARE", "nginx/$nginx_version" },
    { "REMOTE_ADDR", "$remote_addr" },
    { "REMOTE_PORT", "$remote_port" },
    { "SERVER_ADDR", "$server_addr" },
    { "SERVER_PORT", "$server_port" },
    { "SERVER_NAME", "$server_name" },
}
_M.FASTCGI_PARAMS_FILE = "/etc/nginx/fastcgi_params"

local function readable(path)
    local f = io_open(path, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

-- The nginx binary: $NGINX_BIN, /usr/sbin/nginx, or nginx on the PATH; nil if none.
function _M.find()
    local env = os_getenv("NGINX_BIN")
    if env and env ~= "" then
        return readable(env) and env or nil
    end
    if readable("/usr/sbin/nginx") then
        return "/usr/sbin/nginx"
    end
    for dir in (os_getenv("PATH") or ""):gmatch("[^:]+") do
        if readable(dir .. "/nginx") then
            return dir .. "/nginx"
        end
    end
    return nil
end

function _M.is_root()
    return C.mf_nginx_geteuid() == 0
end

local function worker_user(opts)
    if not _M.is_root() then
        return nil
    end
    if opts.user then
        return opts.user
    end
    if C.mf_nginx_getpwnam("www-data") ~= nil then
        return "www-data"
    end
    return "nobody"
end

local function list(v)
    if type(v) == "table" then
        return v
    end
    return { v }
end

local function onoff(v)
    return v and "on" or "off"
end

-- A `server` line of the upstream block: an address, or a table { ADDR, max_fails = N,
-- fail_timeout = "10s", weight = N, backup = true }; max_fails and fail_timeout default to
-- the options of the same name.
local function server_line(entry, opts)
    local e = type(entry) == "table" and entry or { entry }
    local parts = { (assert(e[1], "nginx.config: an upstream entry without an address")) }
    if e.weight then
        insert(parts, "weight=" .. e.weight)
    end
    local max_fails = e.max_fails or opts.max_fails
    if max_fails then
        insert(parts, "max_fails=" .. max_fails)
    end
    local fail_timeout = e.fail_timeout or opts.fail_timeout
    if fail_timeout then
        insert(parts, "fail_timeout=" .. fail_timeout)
    end
    if e.backup then
        insert(parts, "backup")
    end
    return "server " .. concat(parts, " ") .. ";"
end

-- The fastcgi_* directives of one location: o holds the options (a location of
-- opts.locations overrides the top-level ones it names).
local function location_lines(line, o, params)
    local keep_conn = o.keep_conn
    if keep_conn == nil then
        keep_conn = o.keepalive ~= nil and o.keepalive > 0
    end
    local buffering = o.buffering
    if buffering == nil then
        buffering = true
    end
    line(3, "fastcgi_pass moonfcgi;")
    line(3, "fastcgi_keep_conn %s;", onoff(keep_conn))
    line(3, "fastcgi_buffering %s;", onoff(buffering))
    if o.request_buffering ~= nil then
        line(3, "fastcgi_request_buffering %s;", onoff(o.request_buffering))
    end
    local timeouts = o.timeouts or {}
    for _, k in ipairs({ "connect", "send", "read" }) do
        if timeouts[k] then
            line(3, "fastcgi_%s_timeout %s;", k, tostring(timeouts[k]))
        end
    end
    if o.next_upstream then
        line(3, "fastcgi_next_upstream %s;", o.next_upstream)
    end
    if o.next_upstream_tries then
        line(3, "fastcgi_next_upstream_tries %d;", o.next_upstream_tries)
    end
    if o.next_upstream_timeout then
        line(3, "fastcgi_next_upstream_timeout %s;", tostring(o.next_upstream_timeout))
    end
    if params == "include" then
        line(3, "include %s;", _M.FASTCGI_PARAMS_FILE)
    else
        for _, p in ipairs(_M.FASTCGI_PARAMS) do
            line(3, "fastcgi_param %-17s %s;", p[1], p[2])
        end
    end
    line(3, "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;")
end

-- Appends the upstream and server blocks for opts to out, each line indented by `base`
-- levels: what a site adds to nginx's http block.
local function site_lines(opts, out, base)
    assert(type(opts) == "table", "nginx.config: a table of options expected")
    assert(opts.upstream, "nginx.config: upstream is required")
    local listen = opts.listen or "127.0.0.1:8080"
    local params = opts.params
    if params == nil then
        params = readable(_M.FASTCGI_PARAMS_FILE) and "include" or "inline"
    end
    local function line(indent, fmt, ...)
        if fmt == "" then
            insert(out, "")
        else
            insert(out, (" "):rep((base + indent - 1) * 4) .. format(fmt, ...))
        end
    end

    line(1, "# moonfcgi: one server line per address (host:port or unix:/path).")
    line(1, "upstream moonfcgi {")
    for _, entry in ipairs(list(opts.upstream)) do
        line(2, "%s", server_line(entry, opts))
    end
    if opts.keepalive and opts.keepalive > 0 then
        -- Idle connections kept open per nginx worker; needs fastcgi_keep_conn on.
        line(2, "keepalive %d;", opts.keepalive)
        if opts.keepalive_requests then
            line(2, "keepalive_requests %d;", opts.keepalive_requests)
        end
        if opts.keepalive_timeout then
            line(2, "keepalive_timeout %s;", tostring(opts.keepalive_timeout))
        end
    end
    line(1, "}")
    line(0, "")
    line(1, "server {")
    line(2, "listen %s;", listen)
    line(2, "client_max_body_size %s;", opts.client_max_body_size or "16m")
    if opts.large_client_header_buffers then
        line(2, "large_client_header_buffers %s;", opts.large_client_header_buffers)
    end
    line(0, "")
    line(2, "location / {")
    location_lines(line, opts, params)
    line(2, "}")
    for _, loc in ipairs(opts.locations or {}) do
        local o = {}
        for k, v in pairs(opts) do
            o[k] = v
        end
        for k, v in pairs(loc) do
            o[k] = v
        end
        line(0, "")
        line(2, "location %s {", (assert(loc.path, "nginx.config: a location without a path")))
        location_lines(line, o, params)
        line(2, "}")
    end
    line(1, "}")
end

-- The upstream and server blocks alone, unindented: what goes into a file that nginx's http
-- block includes (Debian: /etc/nginx/conf.d/moonfcgi.conf). The same text, indented, is in
-- every nginx.conf that config() writes for the same options; the deployment guides quote it.
function _M.site(opts)
    local out = {}
    site_lines(opts, out, 0)
    return concat(out, "\n") .. "\n"
end

-- The nginx.conf text for opts; opts.prefix and opts.listen must be set (start() sets them).
-- Every path in it is absolute, under opts.prefix, so nothing is written elsewhere.
function _M.config(opts)
    assert(type(opts) == "table", "nginx.config: a table of options expected")
    assert(opts.upstream, "nginx.config: upstream is required")
    local dir = assert(opts.prefix, "nginx.config: prefix is required")

    local out = {}
    local function line(indent, fmt, ...)
        insert(out, (" "):rep(indent * 4) .. format(fmt, ...))
    end

    line(0, "# nginx in front of moonfcgi (generated by spec/support/nginx.lua).")
    line(0, "# The first block runs nginx in the foreground with every file under one directory,")
    line(0, "# the way the specs and examples/serve-behind-nginx.sh start it.")
    line(0, "daemon off;")
    line(0, "master_process %s;", onoff(opts.master_process ~= false))
    line(0, "worker_processes %d;", opts.workers or 1)
    local user = worker_user(opts)
    if user then
        line(0, "user %s;", user)
    end
    line(0, "pid %s/nginx.pid;", dir)
    line(0, "error_log %s/error.log %s;", dir, opts.error_log_level or "info")
    line(0, "")
    line(0, "events {")
    line(1, "worker_connections 1024;")
    line(0, "}")
    line(0, "")
    line(0, "http {")
    if opts.log_upstream then
        -- Which upstream answered, and every one nginx tried before it (retries).
        line(1, "log_format moonfcgi_upstream '$msec $request_time \"$request\" $status '")
        line(2, "'upstream=$upstream_addr upstream_status=$upstream_status';")
        line(1, "access_log %s/access.log moonfcgi_upstream;", dir)
    else
        line(1, "access_log %s/access.log;", dir)
    end
    for _, t in ipairs({ "client_body", "fastcgi", "proxy", "uwsgi", "scgi" }) do
        line(1, "%s_temp_path %s/temp/%s;", t, dir, t)
    end
    line(0, "")
    site_lines(opts, out, 1)
    line(0, "}")
    return concat(out, "\n") .. "\n"
end

-- The configurations the deployment guides show (docs/servers/nginx.md, docs/scaling.md), by
-- the name of their marker in the guide (`<!-- config: NAME -->`). The addresses are the
-- guides' examples; specs run the same options with their own addresses put over them, and
-- spec/integration/docs_nginx_spec.lua checks that each guide still shows site(recipe(NAME)).
local function common(extra)
    local o = {
        listen = "80",
        params = "include",
        -- No connect per request: nginx keeps up to 16 idle connections per worker, and
        -- closes one idle for 50 s, before moonfcgi's --idle-timeout (60 s) would.
        keepalive = 16,
        keepalive_timeout = "50s",
        client_max_body_size = "16m",
        -- Past moonfcgi's --timeout (60 s): a handler that runs too long ends with moonfcgi's
        -- 504 before nginx gives up on the read.
        timeouts = { read = "65s" },
    }
    for k, v in pairs(extra or {}) do
        o[k] = v
    end
    return o
end

_M.RECIPES = {
    ["keepalive-tcp"] = common{ upstream = "127.0.0.1:9000" },
    ["unix-socket"] = common{ upstream = "unix:/run/moonfcgi/app.sock" },
    ["streaming"] = common{
        upstream = "127.0.0.1:9000",
        locations = { { path = "/stream/", buffering = false } },
    },
    ["large-requests"] = common{
        upstream = "127.0.0.1:9000",
        client_max_body_size = "64m",
        large_client_header_buffers = "4 64k",
    },
    ["scale-out"] = common{
        upstream = { "10.0.0.11:9000", "10.0.0.12:9000", "10.0.0.13:9000" },
        max_fails = 1,
        fail_timeout = "5s",
        timeouts = { connect = "1s", read = "65s" },
        next_upstream = "error timeout invalid_header http_503",
    },
}

-- A copy of the recipe `name` with the fields of `overrides` put over it (to run it on other
-- addresses: { upstream = ..., listen = ... }).
function _M.recipe(name, overrides)
    local r = _M.RECIPES[name]
    if not r then
        error("nginx.recipe: no recipe " .. tostring(name), 2)
    end
    local o = {}
    for k, v in pairs(r) do
        o[k] = v
    end
    for k, v in pairs(overrides or {}) do
        o[k] = v
    end
    return o
end

-- A new directory for one nginx: /tmp/moonfcgi-nginx.XXXXXX, readable by the workers' user
-- (nginx started as root runs its workers as that user; they use the temp paths in it).
function _M.make_prefix()
    local buf = ffi.new("char[?]", 64, "/tmp/moonfcgi-nginx.XXXXXX")
    if C.mf_nginx_mkdtemp(buf) == nil then
        return nil, "mkdtemp failed"
    end
    local dir = ffi.string(buf)
    C.mf_nginx_chmod(dir, tonumber("755", 8))
    return dir
end

-- Writes opts.prefix/nginx.conf (creating the prefix when opts has none); returns its path,
-- the config text and the options completed with the chosen prefix and listen address.
function _M.write(opts)
    local o = {}
    for k, v in pairs(opts) do
        o[k] = v
    end
    if not o.prefix then
        local dir, err = _M.make_prefix()
        if not dir then
            return nil, err
        end
        o.prefix, o.own_prefix = dir, true
    end
    os_execute(format("mkdir -p '%s/temp'", o.prefix))
    local text = _M.config(o)
    local path = o.prefix .. "/nginx.conf"
    local f, err = io_open(path, "wb")
    if not f then
        return nil, err
    end
    f:write(text)
    f:close()
    return path, text, o
end

local function read_file(path)
    local f = io_open(path, "rb")
    if not f then
        return ""
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- Starts nginx with opts (see the top of this file) and waits until it accepts on its listen
-- address. Returns the server, or nil and an error that includes nginx's own messages.
-- The server: .url, .listen, .port, .prefix, .conf (the text), .conf_path, .proc.
function _M.start(opts)
    local process = require "process"
    local bin = _M.find()
    if not bin then
        return nil, "nginx not installed"
    end
    local o = {}
    for k, v in pairs(opts) do
        o[k] = v
    end
    if not o.listen then
        o.listen = "127.0.0.1:" .. process.free_port()
    end
    local path, text, full = _M.write(o)
    if not path then
        return nil, "cannot write nginx.conf: " .. tostring(text)
    end
    local dir = full.prefix
    local proc, err = process.spawn({ bin, "-p", dir .. "/", "-c", path, "-e", dir .. "/error.log" },
        -- Under the ASan suite busted runs with the sanitizer runtimes preloaded: not nginx.
        { log = dir .. "/stderr.log", env = { LD_PRELOAD = false, ASAN_OPTIONS = false } })
    if not proc then
        return nil, err
    end
    local srv = setmetatable({
        proc = proc,
        prefix = dir,
        own_prefix = full.own_prefix,
        conf = text,
        conf_path = path,
        listen = full.listen,
        port = tonumber(full.listen:match(":(%d+)$")),
        url = "http://" .. full.listen,
    }, Server)
    local ok, werr = process.wait_connectable(full.listen, opts.start_timeout or 10, proc)
    if not ok then
        local log = srv:error_log()
        srv:stop()
        return nil, "nginx did not start: " .. tostring(werr) .. "\n" .. log
    end
    return srv
end

function Server:error_log()
    return read_file(self.prefix .. "/stderr.log") .. read_file(self.prefix .. "/error.log")
end

function Server:access_log()
    return read_file(self.prefix .. "/access.log")
end

-- Stops nginx (SIGTERM to the master, which stops its workers; SIGKILL after a grace
-- period) and removes the prefix directory if start() made it. Returns the exit status.
function Server:stop()
    local st = self.proc:stop(5)
    if self.own_prefix and not self.keep_prefix and self.prefix:match("^/tmp/moonfcgi%-nginx%.") then
        os_execute(format("rm -rf '%s'", self.prefix))
        os_remove(self.proc.log)
    end
    return st
end

return _M
