-- Apache httpd, lighttpd, Caddy and HAProxy in front of moonfcgi, for the integration specs
-- and the guides in docs/servers/. For each server: a generator that turns a small table into
-- the server's configuration text, and a starter that writes that text into a directory of its
-- own, runs the server in the foreground as a child of the spec and stops it by pid.
--
-- The guides quote these very configurations: servers.docs holds the parameters each guide
-- documents, spec/integration/docs_servers_spec.lua checks that the text between the marker
-- comments of a guide is what the generator makes of them, and the integration specs start
-- the servers with the same parameters, only on free loopback ports and temp directories.
--
--   local servers = require "servers"
--   local srv = assert(servers.apache.start{ app = "127.0.0.1:9000" })
--   -- srv.url is "http://127.0.0.1:PORT", srv.conf the configuration text
--   srv:stop()
--
-- Every generator takes `listen` ("127.0.0.1:PORT") and `app`, moonfcgi's address
-- ("HOST:PORT", or "unix:/PATH" where the server supports it); the other options are listed
-- with each generator. Every starter also takes `start_timeout` (seconds, default 10) and
-- returns nil and an error that includes the server's own messages when it does not start;
-- `servers.X.find()` returns the binary, or nil when the server is not installed.
--
-- Generating a configuration needs only LuaJIT; starting a server needs process.lua (and so
-- moonfcgi.client), which is loaded only then.
local ffi = require "ffi"

local concat = table.concat
local format = string.format
local type, pairs, ipairs, tostring, tonumber, assert, setmetatable =
    type, pairs, ipairs, tostring, tonumber, assert, setmetatable
local io_open, io_popen, os_getenv, os_execute, os_remove =
    io.open, io.popen, os.getenv, os.execute, os.remove

pcall(ffi.cdef, [[
unsigned mf_servers_geteuid(void) __asm__("geteuid");
void *mf_servers_getpwnam(const char *name) __asm__("getpwnam");
char *mf_servers_mkdtemp(char *template) __asm__("mkdtemp");
int mf_servers_chmod(const char *path, unsigned mode) __asm__("chmod");
]])
local C = ffi.C

local _M = {}

-- Helpers ------------------------------------------------------------------------------------

local http = require "http_client"
local needs = require "needs"
local q = http.quote
_M.quote = q

local function readable(path)
    local f = io_open(path, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

_M.read_file = http.read_file
_M.write_file = http.write_file

function _M.is_root()
    return C.mf_servers_geteuid() == 0
end

-- The unprivileged user a server started as root runs as: www-data, else nobody.
function _M.run_user()
    if C.mf_servers_getpwnam("www-data") ~= nil then
        return "www-data"
    end
    return "nobody"
end

-- $ENV_NAME when set (nil if that file does not exist: a way to hide an installed server),
-- else `default` if it exists, else `name` found on the PATH; nil if none.
local function find_binary(name, env_name, default)
    local env = os_getenv(env_name)
    if env and env ~= "" then
        return readable(env) and env or nil
    end
    if readable(default) then
        return default
    end
    for dir in (os_getenv("PATH") or ""):gmatch("[^:]+") do
        if readable(dir .. "/" .. name) then
            return dir .. "/" .. name
        end
    end
    return nil
end

-- A new directory /tmp/moonfcgi-NAME.XXXXXX, readable by everyone (servers started as root
-- serve from it and log into it as an unprivileged user).
function _M.make_dir(name)
    local buf = ffi.new("char[?]", 64, "/tmp/moonfcgi-" .. name .. ".XXXXXX")
    if C.mf_servers_mkdtemp(buf) == nil then
        return nil, "mkdtemp failed"
    end
    local dir = ffi.string(buf)
    C.mf_servers_chmod(dir, tonumber("755", 8))
    return dir
end

-- Makes `dir` (and its parents) and, when we are root, gives it to `user`.
local function make_owned_dir(dir, user)
    os_execute("mkdir -p " .. q(dir))
    if user and _M.is_root() then
        os_execute(format("chown %s %s", q(user), q(dir)))
    end
end

local function copy(t)
    local o = {}
    for k, v in pairs(t or {}) do
        o[k] = v
    end
    return o
end

local function split_addr(addr)
    local host, port = tostring(addr):match("^%[?([^%]]*)%]?:(%d+)$")
    return host, tonumber(port)
end

local function unix_path(addr)
    return tostring(addr):match("^unix:(.+)$")
end

-- Builds a configuration text line by line: line(level, fmt, ...) indents by `level` times
-- indent_unit; line() adds an empty line.
local function writer(indent_unit)
    local out = {}
    local w = {}
    function w.line(level, fmt, ...)
        if fmt == nil then
            out[#out + 1] = ""
        else
            out[#out + 1] = indent_unit:rep(level) .. format(fmt, ...)
        end
    end
    function w.text()
        return concat(out, "\n") .. "\n"
    end
    return w
end

-- A running server -------------------------------------------------------------------------

local Server = {}
Server.__index = Server

-- Reads a file of the server's directory (a log), or "" when it is not there.
function Server:file(name)
    return _M.read_file(self.dir .. "/" .. name) or ""
end

-- The server's own standard output and error.
function Server:output()
    return self.proc and self.proc:output() or ""
end

-- Stops the server (SIGTERM, SIGKILL after a grace period) and removes its directory.
-- Returns the exit status.
function Server:stop()
    if self.stopped then
        return self.status
    end
    self.stopped = true
    self.status = self.proc:stop(5)
    if not self.keep_dir and self.dir:match("^/tmp/moonfcgi%-[%w]+%.") then
        os_execute("rm -rf " .. q(self.dir))
    end
    os_remove(self.proc.log)
    return self.status
end

-- Writes `text` to dir/conf_name, spawns argv and waits until `listen` accepts.
local function launch(name, dir, conf_name, text, argv, listen, opts, env)
    local process = require "process"
    _M.write_file(dir .. "/" .. conf_name, text)
    C.mf_servers_chmod(dir .. "/" .. conf_name, tonumber("644", 8))
    -- The servers are not instrumented: keep out the sanitizer runtime the spec may run
    -- under (a moonfcgi that lighttpd spawns is built with it when it needs it).
    local e = { LD_PRELOAD = false, ASAN_OPTIONS = false }
    for k, v in pairs(env or {}) do
        e[k] = v
    end
    local proc, err = process.spawn(argv, { env = e })
    if not proc then
        return nil, err
    end
    local srv = setmetatable({
        name = name,
        proc = proc,
        dir = dir,
        conf = text,
        conf_path = dir .. "/" .. conf_name,
        listen = listen,
        port = select(2, split_addr(listen)),
        url = "http://" .. listen,
        keep_dir = opts.keep_dir,
    }, Server)
    local ok, werr = process.wait_connectable(listen, opts.start_timeout or 10, proc)
    if not ok then
        local out = srv:output()
        srv:stop()
        return nil, name .. " did not start: " .. tostring(werr) .. "\n" .. out
    end
    return srv
end

-- Fills in what every starter needs: a directory and a free loopback port.
local function prepare(name, opts)
    local process = require "process"
    local o = copy(opts)
    local dir, err = _M.make_dir(name)
    if not dir then
        return nil, err
    end
    o.listen = o.listen or ("127.0.0.1:" .. process.free_port())
    return o, dir
end

-- Apache httpd: mod_proxy_fcgi, and mod_authnz_fcgi for the authorizer ----------------------

_M.apache = {}

-- Options:
--   listen, app            as above; app may be "unix:/PATH"
--   reuse                  `enablereuse=on`: Apache keeps its connections to moonfcgi
--                          (default true)
--   flush                  flushpackets: "auto" (default), "on" or "off"
--   ttl                    seconds an idle kept connection may be reused (default 30)
--   authorizer             moonfcgi's address serving the authorizer (TCP only: mod_authnz_fcgi
--                          has no unix sockets); nil for none
--   protect                a regular expression for the URLs the authorizer guards
--                          (default "^/(private|admin)/")
--   run_dir, log_dir       where the pid file and runtime files, and the logs go
--   docroot                DocumentRoot (default /var/www/html)
--   modules_dir            default /usr/lib/apache2/modules
--   user                   User and Group (default: none, as when not started as root)
--   max_body               LimitRequestBody in bytes (default 16 MiB, moonfcgi's --max-body)
--   timeout                ProxyTimeout in seconds (default 60, moonfcgi's --timeout)
function _M.apache.config(opts)
    assert(type(opts) == "table" and opts.app, "apache.config: app is required")
    local run, logs = assert(opts.run_dir, "run_dir"), assert(opts.log_dir, "log_dir")
    local mods = opts.modules_dir or "/usr/lib/apache2/modules"
    local reuse = opts.reuse ~= false
    local w = writer("    ")
    local L = w.line

    local backend
    local path = unix_path(opts.app)
    if path then
        backend = format("unix:%s|fcgi://localhost/", path)
    else
        backend = format("fcgi://%s/", opts.app)
    end

    L(0, "# Apache httpd in front of moonfcgi (generated by spec/support/servers.lua).")
    L(0, "# A whole server: apache2 -f THIS_FILE -DFOREGROUND. On Debian's stock Apache, put")
    L(0, "# the part between \"moonfcgi: begin\" and \"moonfcgi: end\" in a site or conf file")
    L(0, "# and enable the modules listed here with a2enmod.")
    L(0, "ServerName 127.0.0.1")
    L(0, "Listen %s", opts.listen or "127.0.0.1:8080")
    L(0, "PidFile %s/apache2.pid", run)
    L(0, "DefaultRuntimeDir %s", run)
    L(0, "Mutex file:%s default", run)
    L(0, "ErrorLog %s/error.log", logs)
    L(0, "LogLevel warn")
    if opts.user then
        L(0, "User %s", opts.user)
        L(0, "Group %s", opts.user)
    end
    L(0, "DocumentRoot %s", opts.docroot or "/var/www/html")
    L()
    local modules = { "mpm_event", "authz_core", "proxy", "proxy_fcgi" }
    if opts.authorizer then
        modules[#modules + 1] = "authn_core"
        modules[#modules + 1] = "authz_user"
        modules[#modules + 1] = "authnz_fcgi"
    end
    for _, m in ipairs(modules) do
        L(0, "LoadModule %s_module %s/mod_%s.so", m, mods, m)
    end
    L()
    L(0, "# The authorizer's variables (Variable-USER, Variable-ROLE) are request")
    L(0, "# environment variables: %%{USER}e logs them.")
    L(0, "LogFormat \"%s user=%%{USER}e role=%%{ROLE}e\" moonfcgi", [[%h %l %u %t \"%r\" %>s %b]])
    L(0, "CustomLog %s/access.log moonfcgi", logs)
    L()
    L(0, "# moonfcgi: begin")
    L(0, "# Request bodies up to moonfcgi's --max-body (16 MiB): larger ones get 413.")
    L(0, "LimitRequestBody %d", opts.max_body or 16777216)
    L(0, "# How long Apache waits on moonfcgi's connection, keep it at or above --timeout.")
    L(0, "ProxyTimeout %d", opts.timeout or 60)
    L(0, "# enablereuse=on: Apache sets FCGI_KEEP_CONN and keeps its connections to moonfcgi")
    L(0, "# between requests (without it, one connection per request); ttl closes them before")
    L(0, "# moonfcgi's --idle-timeout (60 s) does. flushpackets=auto: what a handler flushes")
    L(0, "# reaches the client when moonfcgi pauses; without it Apache holds small writes back,")
    L(0, "# and notices a client that left only at the end of the response.")
    L(0, "ProxyPass \"/\" \"%s\"%s flushpackets=%s", backend,
        reuse and format(" enablereuse=on ttl=%d", opts.ttl or 30) or "", opts.flush or "auto")
    L(0, "<Location \"/\">")
    L(1, "# Apache passes the Authorization header (HTTP_AUTHORIZATION) to FastCGI apps, the")
    L(1, "# authorizer included, only when asked.")
    L(1, "CGIPassAuth On")
    L(0, "</Location>")
    if opts.authorizer then
        L()
        L(0, "# examples/auth.lua as a FastCGI authorizer. Apache sends it no request body.")
        L(0, "AuthnzFcgiDefineProvider authn moonfcgi-auth fcgi://%s/", opts.authorizer)
        L(0, "<LocationMatch \"%s\">", opts.protect or "^/(private|admin)/")
        L(1, "AuthnzFcgiCheckAuthnProvider moonfcgi-auth Authoritative On \\")
        L(2, "RequireBasicAuth Off UserExpr \"%%{reqenv:USER}\"")
        L(1, "Require valid-user")
        L(0, "</LocationMatch>")
    end
    L(0, "# moonfcgi: end")
    return w.text()
end

function _M.apache.find()
    return find_binary("apache2", "APACHE_BIN", "/usr/sbin/apache2")
end

-- Starts Apache (apache2 -DFOREGROUND) with opts; see apache.config. The server: .url,
-- .listen, .port, .dir, .conf, :file("access.log"), :file("error.log"), :stop().
function _M.apache.start(opts)
    local bin = _M.apache.find()
    if not bin then
        return nil, "apache2 not installed"
    end
    local o, dir = prepare("apache", opts)
    if not o then
        return nil, dir
    end
    o.run_dir, o.log_dir = dir, dir
    o.docroot = o.docroot or (dir .. "/htdocs")
    os_execute("mkdir -p " .. q(o.docroot))
    if _M.is_root() then
        o.user = o.user or _M.run_user()
    end
    local text = _M.apache.config(o)
    return launch("apache2", dir, "apache2.conf", text,
        { bin, "-f", dir .. "/apache2.conf", "-DFOREGROUND" }, o.listen, o)
end

-- lighttpd: mod_fastcgi as responder and as authorizer ---------------------------------------

_M.lighttpd = {}

local function lighttpd_backend(L, level, addr, extra)
    local path = unix_path(addr)
    if path then
        L(level, "\"socket\" => \"%s\",", path)
    else
        local host, port = split_addr(addr)
        L(level, "\"host\" => \"%s\",", host)
        L(level, "\"port\" => %d,", port)
    end
    for _, e in ipairs(extra or {}) do
        L(level, "%s", e)
    end
end

-- Options:
--   listen                 as above
--   app                    moonfcgi's address, "HOST:PORT" or "unix:/PATH"; or nil with spawn
--   spawn                  instead of app: lighttpd starts moonfcgi itself, passing it the
--                          listening socket on fd 0: { bin = "/usr/local/bin/moonfcgi",
--                          app = "/abs/app.lua", socket = "/run/lighttpd/moonfcgi.sock",
--                          args = "--workers 2" }
--   authorizer             moonfcgi's address serving the authorizer; nil for none
--   protect                a regular expression for the URLs it guards (default
--                          "^/(private|admin)/"); what it grants is served from docroot
--   docroot                server.document-root (default /var/www/html)
--   run_dir, log_dir       where the pid file and the logs go
--   user                   server.username and groupname (default: none)
--   max_body_kib           server.max-request-size in KiB (default 16384, moonfcgi's
--                          --max-body)
--   stream_response        server.stream-response-body (default 1)
function _M.lighttpd.config(opts)
    assert(type(opts) == "table" and (opts.app or opts.spawn), "lighttpd.config: app or spawn")
    local run, logs = assert(opts.run_dir, "run_dir"), assert(opts.log_dir, "log_dir")
    local host, port = split_addr(opts.listen or "127.0.0.1:8080")
    local w = writer("    ")
    local L = w.line

    L(0, "# lighttpd in front of moonfcgi (generated by spec/support/servers.lua).")
    L(0, "# Run it in the foreground: lighttpd -D -f THIS_FILE")
    L(0, "server.bind = \"%s\"", host)
    L(0, "server.port = %d", port)
    L(0, "server.document-root = \"%s\"", opts.docroot or "/var/www/html")
    L(0, "server.pid-file = \"%s/lighttpd.pid\"", run)
    L(0, "server.errorlog = \"%s/error.log\"", logs)
    if opts.user then
        L(0, "server.username = \"%s\"", opts.user)
        L(0, "server.groupname = \"%s\"", opts.user)
    end
    L(0, "server.modules = ( \"mod_fastcgi\", \"mod_accesslog\" )")
    L(0, "# Request bodies up to moonfcgi's --max-body, in KiB.")
    L(0, "server.max-request-size = %d", opts.max_body_kib or 16384)
    L(0, "# 1: send the response on as it arrives (the default, 0, waits for all of it, and")
    L(0, "# notices a client that left only then); 2 also holds moonfcgi back to the client's")
    L(0, "# pace.")
    L(0, "server.stream-response-body = %d", opts.stream_response or 1)
    L(0, "# The authorizer's variables are request environment variables: %%{USER}e logs them.")
    L(0, "accesslog.filename = \"%s/access.log\"", logs)
    L(0, "accesslog.format = \"%s user=%%{USER}e role=%%{ROLE}e\"", [[%h %l %u %t \"%r\" %>s %b]])
    L()
    L(0, "# moonfcgi: begin")
    L(0, "fastcgi.server = ( \"/\" => ((")
    if opts.spawn then
        local s = opts.spawn
        L(1, "# lighttpd starts moonfcgi and hands it the listening socket on fd 0.")
        L(1, "\"bin-path\" => \"%s%s %s\",", s.bin, s.args and (" " .. s.args) or "", s.app)
        L(1, "\"socket\" => \"%s\",", s.socket)
        L(1, "\"max-procs\" => 1,")
    else
        lighttpd_backend(L, 1, opts.app)
    end
    L(1, "# moonfcgi serves every path, not only files that exist in the docroot.")
    L(1, "\"check-local\" => \"disable\",")
    L(1, "# SCRIPT_NAME \"\" and the whole path in PATH_INFO; without it lighttpd splits")
    L(1, "# /items/1 into SCRIPT_NAME=/items and PATH_INFO=/1.")
    L(1, "\"fix-root-scriptname\" => \"enable\",")
    L(0, ")) )")
    if opts.authorizer then
        L()
        L(0, "# examples/auth.lua guards these URLs; what it grants is served from the docroot.")
        L(0, "# An app without an authorize handler answers UNKNOWN_ROLE, and lighttpd 1.4.69")
        L(0, "# grants access on it: point \"mode\" => \"authorizer\" only at an authorizer.")
        L(0, "$HTTP[\"url\"] =~ \"%s\" {", opts.protect or "^/(private|admin)/")
        L(1, "fastcgi.server = ( \"/\" => ((")
        lighttpd_backend(L, 2, opts.authorizer, {
            "\"mode\" => \"authorizer\",",
            format("\"docroot\" => \"%s\",", opts.docroot or "/var/www/html"),
        })
        L(1, ")) )")
        L(0, "}")
    end
    L(0, "# moonfcgi: end")
    return w.text()
end

function _M.lighttpd.find()
    return find_binary("lighttpd", "LIGHTTPD_BIN", "/usr/sbin/lighttpd")
end

-- Starts lighttpd -D with opts; see lighttpd.config. opts.files: { ["private/a.txt"] = "..." }
-- written under the docroot. The server: as apache.start's; .docroot; with opts.spawn,
-- spawn.socket defaults to a path in the server's directory.
function _M.lighttpd.start(opts)
    local bin = _M.lighttpd.find()
    if not bin then
        return nil, "lighttpd not installed"
    end
    local o, dir = prepare("lighttpd", opts)
    if not o then
        return nil, dir
    end
    local user = _M.is_root() and (o.user or _M.run_user()) or nil
    o.user = user
    -- lighttpd opens its logs after dropping privileges, and creates the spawn socket as
    -- that user: both directories belong to it.
    o.run_dir, o.log_dir = dir, dir .. "/logs"
    make_owned_dir(o.log_dir, user)
    o.docroot = o.docroot or (dir .. "/htdocs")
    for name, data in pairs(o.files or {}) do
        local file = o.docroot .. "/" .. name
        os_execute("mkdir -p " .. q(file:match("^(.*)/")))
        _M.write_file(file, data)
    end
    os_execute("mkdir -p " .. q(o.docroot) .. " && chmod -R a+rX " .. q(o.docroot))
    if o.spawn then
        o.spawn = copy(o.spawn)
        make_owned_dir(dir .. "/sock", user)
        o.spawn.socket = o.spawn.socket or (dir .. "/sock/moonfcgi.sock")
    end
    local text = _M.lighttpd.config(o)
    local srv, err = launch("lighttpd", dir, "lighttpd.conf", text,
        { bin, "-D", "-f", dir .. "/lighttpd.conf" }, o.listen, o)
    if srv then
        srv.docroot = o.docroot
    end
    return srv, err
end

-- Caddy: reverse_proxy with the fastcgi transport ---------------------------------------------

_M.caddy = {}

-- Options:
--   listen, app            as above; app may be "unix:/PATH"
--   data_dir               Caddy's storage (certificates, locks), also its HOME in the specs
--   log_file               Caddy's log (default: standard error)
--   max_body               request_body max_size (default "16MiB", moonfcgi's --max-body)
--   flush_interval         reverse_proxy's flush_interval (default "-1": flush at once)
--   timeouts               { dial = "5s", read = "60s", write = "60s" }
function _M.caddy.config(opts)
    assert(type(opts) == "table" and opts.app, "caddy.config: app is required")
    local listen = opts.listen or "127.0.0.1:8080"
    local host = split_addr(listen)
    local t = opts.timeouts or {}
    local w = writer("\t")
    local L = w.line
    local upstream = unix_path(opts.app) and ("unix/" .. unix_path(opts.app)) or opts.app

    L(0, "# Caddy in front of moonfcgi (generated by spec/support/servers.lua).")
    L(0, "# Run it in the foreground: caddy run --config THIS_FILE --adapter caddyfile")
    L(0, "{")
    L(1, "# No admin endpoint and no automatic HTTPS: a plain HTTP site on loopback.")
    L(1, "admin off")
    L(1, "auto_https off")
    L(1, "storage file_system %s", assert(opts.data_dir, "data_dir"))
    if opts.log_file then
        L(1, "log {")
        L(2, "output file %s", opts.log_file)
        L(1, "}")
    end
    L(0, "}")
    L()
    L(0, "http://%s {", listen)
    L(1, "# Without bind Caddy listens on every address of the port.")
    L(1, "bind %s", host)
    L(1, "# moonfcgi: begin")
    L(1, "# Caddy 2.6 passes the CGI Status line on to the client as a header too.")
    L(1, "header -Status")
    L(1, "request_body {")
    L(2, "max_size %s", opts.max_body or "16MiB")
    L(1, "}")
    L(1, "reverse_proxy %s {", upstream)
    L(2, "# Send what a handler flushes on at once. Without it Caddy buffers the response,")
    L(2, "# and notices a client that left only when the handler is done.")
    L(2, "flush_interval %s", opts.flush_interval or "-1")
    L(2, "transport fastcgi {")
    L(3, "dial_timeout %s", t.dial or "5s")
    L(3, "read_timeout %s", t.read or "60s")
    L(3, "write_timeout %s", t.write or "60s")
    L(2, "}")
    L(1, "}")
    L(1, "# moonfcgi: end")
    L(0, "}")
    return w.text()
end

function _M.caddy.find()
    return find_binary("caddy", "CADDY_BIN", "/usr/bin/caddy")
end

-- Starts `caddy run` with opts; see caddy.config. HOME and the XDG directories point into the
-- server's directory, so Caddy writes nothing elsewhere.
function _M.caddy.start(opts)
    local bin = _M.caddy.find()
    if not bin then
        return nil, "caddy not installed"
    end
    local o, dir = prepare("caddy", opts)
    if not o then
        return nil, dir
    end
    o.data_dir = dir .. "/data"
    o.log_file = dir .. "/caddy.log"
    local text = _M.caddy.config(o)
    return launch("caddy", dir, "Caddyfile", text,
        { bin, "run", "--config", dir .. "/Caddyfile", "--adapter", "caddyfile" }, o.listen, o,
        { HOME = dir, XDG_DATA_HOME = dir .. "/data", XDG_CONFIG_HOME = dir .. "/config" })
end

-- HAProxy: an fcgi-app, multiplexed connections ------------------------------------------------

_M.haproxy = {}

-- Options:
--   listen, app            as above; app may be "unix:/PATH"
--   docroot                the fcgi-app's docroot (DOCUMENT_ROOT, SCRIPT_FILENAME)
--   run_dir                where the pid file goes
--   log                    "stderr" (the specs) or a syslog address such as "/dev/log"
--   mpxs                   option mpxs-conns (default true)
--   get_values             option get-values (default true)
--   reuse                  http-reuse (default "always")
--   timeouts               { connect = "5s", client = "60s", server = "60s" }
--   maxconn                global maxconn (default 1000)
function _M.haproxy.config(opts)
    assert(type(opts) == "table" and opts.app, "haproxy.config: app is required")
    local t = opts.timeouts or {}
    local w = writer("    ")
    local L = w.line
    local server = unix_path(opts.app) or opts.app

    L(0, "# HAProxy in front of moonfcgi (generated by spec/support/servers.lua).")
    L(0, "# Run it in the foreground: haproxy -f THIS_FILE -db")
    L(0, "global")
    L(1, "pidfile %s/haproxy.pid", assert(opts.run_dir, "run_dir"))
    L(1, "maxconn %d", opts.maxconn or 1000)
    if (opts.log or "stderr") == "stderr" then
        L(1, "log stderr format short local0 info")
    else
        L(1, "log %s local0 info", opts.log)
    end
    L()
    L(0, "defaults")
    L(1, "mode http")
    L(1, "log global")
    L(1, "option httplog")
    L(1, "timeout connect %s", t.connect or "5s")
    L(1, "timeout client %s", t.client or "60s")
    L(1, "timeout server %s", t.server or "60s")
    L()
    L(0, "frontend www")
    L(1, "bind %s", opts.listen or "127.0.0.1:8080")
    L(1, "default_backend moonfcgi")
    L()
    L(0, "# moonfcgi: begin")
    L(0, "fcgi-app moonfcgi")
    L(1, "docroot %s", opts.docroot or "/var/www/html")
    if opts.get_values ~= false then
        L(1, "# Ask moonfcgi for FCGI_MAX_REQS and FCGI_MPXS_CONNS on each new connection.")
        L(1, "option get-values")
    end
    if opts.mpxs ~= false then
        L(1, "# Many requests at once on one connection, each with its own request id.")
        L(1, "option mpxs-conns")
    end
    L(1, "# FCGI_STDERR (req:log) goes to HAProxy's log.")
    L(1, "log-stderr global")
    L()
    L(0, "backend moonfcgi")
    L(1, "use-fcgi-app moonfcgi")
    L(1, "# Share connections between clients: without it, the first request of each client")
    L(1, "# connection opens its own connection to moonfcgi.")
    L(1, "http-reuse %s", opts.reuse or "always")
    L(1, "server moonfcgi1 %s proto fcgi", server)
    L(0, "# moonfcgi: end")
    return w.text()
end

function _M.haproxy.find()
    return find_binary("haproxy", "HAPROXY_BIN", "/usr/sbin/haproxy")
end

-- Starts haproxy -db with opts; see haproxy.config. Its log lines go to its standard error:
-- srv:output().
function _M.haproxy.start(opts)
    local bin = _M.haproxy.find()
    if not bin then
        return nil, "haproxy not installed"
    end
    local o, dir = prepare("haproxy", opts)
    if not o then
        return nil, dir
    end
    o.run_dir = dir
    o.docroot = o.docroot or dir
    local text = _M.haproxy.config(o)
    return launch("haproxy", dir, "haproxy.cfg", text,
        { bin, "-f", dir .. "/haproxy.cfg", "-db" }, o.listen, o)
end

-- The parameters each guide in docs/servers/ documents -------------------------------------

_M.docs = {
    apache = {
        listen = "127.0.0.1:8080",
        app = "127.0.0.1:9000",
        authorizer = "127.0.0.1:9001",
        run_dir = "/run/apache2-moonfcgi",
        log_dir = "/var/log/apache2",
        user = "www-data",
    },
    lighttpd = {
        listen = "127.0.0.1:8080",
        app = "127.0.0.1:9000",
        authorizer = "127.0.0.1:9001",
        docroot = "/var/www/html",
        run_dir = "/run/lighttpd",
        log_dir = "/var/log/lighttpd",
        user = "www-data",
    },
    lighttpd_spawn = {
        listen = "127.0.0.1:8080",
        spawn = {
            bin = "/usr/local/bin/moonfcgi",
            args = "--workers 1",
            app = "/srv/app/app.lua",
            socket = "/run/lighttpd/moonfcgi.sock",
        },
        docroot = "/var/www/html",
        run_dir = "/run/lighttpd",
        log_dir = "/var/log/lighttpd",
        user = "www-data",
    },
    caddy = {
        listen = "127.0.0.1:8080",
        app = "127.0.0.1:9000",
        data_dir = "/var/lib/caddy",
    },
    haproxy = {
        listen = "127.0.0.1:8080",
        app = "127.0.0.1:9000",
        docroot = "/var/www/html",
        run_dir = "/run/haproxy",
        log = "/dev/log",
    },
}

-- The parameters of servers.docs[which] for a spec: the same configuration, less what belongs
-- to a machine (addresses, directories, users), which the starters fill in; then `overrides`.
function _M.documented(which, overrides)
    local o = copy(assert(_M.docs[which], which))
    for _, k in ipairs({ "listen", "run_dir", "log_dir", "user", "docroot", "data_dir", "log" }) do
        o[k] = nil
    end
    for k, v in pairs(overrides or {}) do
        o[k] = v
    end
    return o
end

-- Spec helpers -----------------------------------------------------------------------------

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

function _M.sleep(seconds)
    C.poll(nil, 0, seconds * 1000)
end

-- Calls fn() every 50 ms until it returns a true value, for at most `timeout` seconds (default
-- 5); returns that value, or nil.
function _M.eventually(fn, timeout)
    local now = require("moonfcgi.client").now
    local deadline = now() + (timeout or 5)
    repeat
        local v = fn()
        if v then
            return v
        end
        _M.sleep(0.05)
    until now() >= deadline
    return nil
end

-- Worker 1's line of the status SIGUSR1 makes the master log (pid, in-flight, conns), once
-- want(status) holds; workers refresh it on every tick of their loop (at most a second apart).
function _M.worker_status(p, want, timeout)
    local last
    _M.eventually(function()
        p:signal(10) -- SIGUSR1
        _M.sleep(0.05)
        local line
        for l in p:output():gmatch("status: worker 1 [^\n]*") do
            line = l
        end
        if line then
            last = {
                pid = tonumber(line:match(" pid (%d+)")),
                served = tonumber(line:match("served (%d+)")),
                in_flight = tonumber(line:match("in%-flight (%d+)")),
                conns = tonumber(line:match("conns (%d+)")),
            }
            return want(last)
        end
    end, timeout or 5)
    return last
end

-- `path` made absolute against the working directory.
function _M.absolute(path)
    if path:sub(1, 1) == "/" then
        return path
    end
    local p = io_popen("pwd")
    local cwd = p:read("*l")
    p:close()
    return cwd .. "/" .. path
end

-- Starts moonfcgi serving `app` (process.moonfcgi's options) and checks that a worker answers a
-- request: a worker that cannot load the app would otherwise show up as web server timeouts.
-- Returns the process, or nil and an error with moonfcgi's log.
function _M.moonfcgi(app, opts)
    local process = require "process"
    local client = require "moonfcgi.client"
    local p, err = process.moonfcgi(app, opts)
    if not p then
        return nil, err
    end
    local c, res
    c, err = client.connect(p.addr, { timeout = 5 })
    if c then
        res, err = c:request{ params = { REQUEST_METHOD = "GET", REQUEST_URI = "/" } }
        c:close()
    end
    if not res then
        local log = p:output()
        p:cleanup()
        return nil, "moonfcgi does not answer (" .. tostring(err) .. "):\n" .. log
    end
    return p
end

-- curl -------------------------------------------------------------------------------------

_M.have_curl = http.have_curl
-- Runs a shell command line under `timeout`, handing each line of its output to fn(line).
_M.each_line = http.each_line
-- Removes curl's scratch directory (call from a teardown).
_M.cleanup = http.cleanup

-- One request with curl (http_client.request), bounded by --max-time, 5 s unless opts say.
function _M.curl(opts)
    local o = {}
    for k, v in pairs(opts) do
        o[k] = v
    end
    o.max_time = o.max_time or 5
    return http.request(o)
end

-- examples/rest.lua's round trip through the server at `url`: each step's curl result.
function _M.rest_round_trip(url)
    local json = { ["Content-Type"] = "application/json" }
    local r = {}
    r.created = _M.curl{ method = "POST", url = url .. "/items", body = '{"name":"lamp"}',
                         headers = json }
    r.read = _M.curl{ url = url .. "/items/1" }
    r.replaced = _M.curl{ method = "PUT", url = url .. "/items/1", body = '{"name":"desk lamp"}',
                          headers = json }
    r.listed = _M.curl{ url = url .. "/items" }
    r.deleted = _M.curl{ method = "DELETE", url = url .. "/items/1" }
    r.gone = _M.curl{ url = url .. "/items/1" }
    return r
end

-- interop_echo.lua's summary of a request that must have succeeded.
function _M.summary(res)
    require("luassert").equal(200, res.status, res.err .. res.body)
    return _M.parse_summary(res.body)
end

-- A GET of /things/1?color=red with an X-Interop header through the server at url: the
-- checks every server passes, then interop_echo's summary and the curl result for the rest.
function _M.checked_get(url)
    local assert = require "luassert"
    local res = _M.curl{ url = url .. "/things/1?color=red", headers = { ["X-Interop"] = "hello" } }
    local s = _M.summary(res)
    assert.equal("responder", s.role)
    assert.equal("GET", s.method)
    assert.equal("/things/1?color=red", s.uri)
    assert.equal("color=red", s.params.QUERY_STRING)
    assert.equal("hello", s.params.HTTP_X_INTEROP)
    return s, res
end

-- A POST of a 300 KB body to /upload through the server at url: checks that it arrived
-- whole, then returns interop_echo's summary and the body.
function _M.checked_post(url)
    local assert = require "luassert"
    local body = ("0123456789abcdef"):rep(300000 / 16)
    local s = _M.summary(_M.curl{ url = url .. "/upload", method = "POST", body = body,
                                  headers = { ["Content-Type"] = "application/octet-stream" } })
    assert.equal("POST", s.method)
    assert.equal(tostring(#body), s.body_length)
    assert.equal(body:sub(1, 64), s.body)
    return s, body
end

-- Why a server's specs cannot run here (its binary or curl is missing), or nil; an error
-- instead in a strict run (CI, MOONFCGI_REQUIRE_ALL: spec/support/needs.lua).
function _M.missing(name, package)
    if not _M[name].find() then
        return needs.missing(name .. " not installed (apt-get install " .. package
            .. "); these specs need it")
    end
    if not _M.have_curl() then
        return needs.missing("curl not installed (apt-get install curl); these specs need it")
    end
    return nil
end

-- Asks url for interop_echo's slow answer and gives up after 0.3 s, as a client that goes
-- away mid-response; returns the line the handler wrote to log when it ended.
function _M.abort_mid_response(url, log)
    local assert = require "luassert"
    local res = _M.curl{ url = url .. "/slow?seconds=5", max_time = 0.3 }
    assert.equal(28, res.exit) -- curl's "operation timed out"
    local line = _M.eventually(function()
        return (_M.read_file(log) or ""):match("slow id=%d+ [^\n]*")
    end, 4)
    assert.is_string(line, "the handler did not finish")
    return line
end

-- Stops a moonfcgi host started by a spec and asserts it exited 0 (under the sanitizer
-- build, a leak makes that fail).
function _M.stop_host(p)
    if p then
        local st = p:stop()
        local out = p:output()
        p:cleanup()
        require("luassert").equal(0, st, "moonfcgi exited with status " .. tostring(st) .. ":\n"
            .. out)
    end
end

-- Declares, in the calling spec, the examples/rest.lua round trip through a server:
-- start_site(moonfcgi_addr) starts the server in front of a moonfcgi running rest.lua.
function _M.describe_rest(start_site)
    local env = getfenv(2)
    local describe, it, setup, teardown = env.describe, env.it, env.setup, env.teardown
    local assert = require "luassert"
    local cjson = require "cjson"

    describe("with examples/rest.lua", function()
        local rest, site, r

        setup(function()
            rest = assert(_M.moonfcgi("examples/rest.lua", { args = { "--workers", "1" } }))
            site = assert(start_site(rest.addr))
            r = _M.rest_round_trip(site.url)
        end)

        teardown(function()
            if site then
                site:stop()
            end
            _M.stop_host(rest)
        end)

        it("answers POST /items with 201 Created and a Location header", function()
            assert.equal(201, r.created.status, r.created.err .. r.created.body)
            assert.equal("/items/1", r.created.headers.location)
            assert.equal("lamp", cjson.decode(r.created.body).name)
        end)

        it("reads, replaces, lists and deletes the item", function()
            assert.equal(200, r.read.status)
            assert.equal("application/json", r.read.headers["content-type"])
            assert.equal("lamp", cjson.decode(r.read.body).name)
            assert.equal(200, r.replaced.status)
            assert.equal("desk lamp", cjson.decode(r.replaced.body).name)
            assert.equal(1, #cjson.decode(r.listed.body))
            assert.equal(204, r.deleted.status)
            assert.equal("", r.deleted.body)
            assert.equal(404, r.gone.status)
            assert.equal("no item 1", cjson.decode(r.gone.body).error)
        end)
    end)
end

-- The "name=value" lines of interop_echo.lua's summary as a table, with params under .params.
function _M.parse_summary(body)
    local t = { params = {} }
    for line in body:gmatch("[^\n]+") do
        local pname, pvalue = line:match("^param ([^=]+)=(.*)$")
        if pname then
            t.params[pname] = pvalue
        else
            local k, v = line:match("^([%w_]+)=(.*)$")
            if k then
                t[k] = v
            end
        end
    end
    return t
end

return _M
