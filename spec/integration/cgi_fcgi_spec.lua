-- moonfcgi behind libfcgi's own client, `cgi-fcgi -bind -connect ADDR` (Debian's libfcgi-bin):
-- it turns its environment into the request's params and its stdin into the body, then prints
-- the CGI response (Status line, headers, blank line, body). One request per connection,
-- no FCGI_KEEP_CONN: the other way web servers talk to us.
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local needs = require "needs"
local process = require "process"
local http = require "http_client"
local cjson = require "cjson"

local q = http.quote

local function have_cgi_fcgi()
    return os.execute("command -v cgi-fcgi >/dev/null 2>&1") == 0
end

-- Runs cgi-fcgi against addr (host:port or a socket path) with exactly the variables in env
-- and stdin as the body; bounded by `timeout`. Returns { status, reason, headers, body, exit }.
local function cgi_fcgi(addr, env, stdin)
    local infile, outfile, rcfile = http.scratch("cgi.in"), http.scratch("cgi.out"), http.scratch("cgi.rc")
    http.write_file(infile, stdin or "")
    if stdin then
        env.CONTENT_LENGTH = env.CONTENT_LENGTH or tostring(#stdin)
    end
    local words = { "env", "-i" }
    for k, v in pairs(env) do
        words[#words + 1] = q(k .. "=" .. v)
    end
    local cmd = table.concat(words, " ") .. " timeout -s KILL 10 cgi-fcgi -bind -connect " .. q(addr)
        .. " <" .. q(infile) .. " >" .. q(outfile) .. " 2>&1; echo $? >" .. q(rcfile)
    os.execute(cmd)
    local out = http.read_file(outfile) or ""
    local res = { exit = tonumber(http.read_file(rcfile)), raw = out, headers = {} }
    local head, body = out:match("^(.-)\r\n\r\n(.*)$")
    if head then
        res.body = body
        for name, value in (head .. "\r\n"):gmatch("([^:\r\n]+):%s*([^\r\n]*)\r\n") do
            res.headers[name:lower()] = value
        end
        local status = res.headers["status"] or ""
        res.status = tonumber(status:match("^(%d+)"))
        res.reason = status:match("^%d+ (.*)$")
    end
    return res
end

describe("cgi-fcgi -bind -connect", function()
    if not have_cgi_fcgi() then
        pending(needs.missing("cgi-fcgi not installed (apt-get install libfcgi-bin); these specs need it"))
        return
    end

    local mk = io.popen("mktemp -d /tmp/moonfcgi-cgi.XXXXXX")
    local dir = assert(mk:read("*l"))
    mk:close()

    teardown(function()
        os.execute("rm -rf " .. q(dir))
        http.cleanup()
    end)

    for _, transport in ipairs({ "tcp", "unix" }) do
        describe("over " .. (transport == "tcp" and "TCP" or "a unix socket"), function()
            local procs = {}

            -- Starts app on a fresh address of this transport; returns the address cgi-fcgi takes.
            local function serve(app, name)
                local opts = { args = { "--workers", "1" } }
                local target
                if transport == "unix" then
                    target = dir .. "/" .. name .. ".sock"
                    opts.listen = "unix:" .. target
                end
                local p = assert(process.moonfcgi(app, opts))
                procs[#procs + 1] = p
                return target or p.addr
            end

            local hello, rest, probe

            setup(function()
                hello = serve("examples/hello.lua", "hello")
                rest = serve("examples/rest.lua", "rest")
                probe = serve("spec/integration/apps/probe.lua", "probe")
            end)

            teardown(function()
                -- Each stops gracefully; under the ASan suite, also without a leak (status 23).
                local bad = {}
                for _, p in ipairs(procs) do
                    local st = p:stop()
                    if st ~= 0 then
                        bad[#bad + 1] = "moonfcgi exited with status " .. tostring(st) .. ":\n"
                            .. p:output()
                    end
                    p:cleanup()
                end
                assert.equal("", table.concat(bad, "\n"))
            end)

            it("answers a GET with a Status line and the body", function()
                local res = cgi_fcgi(hello, { REQUEST_METHOD = "GET", REQUEST_URI = "/" })
                assert.equal(0, res.exit, res.raw)
                assert.equal(200, res.status, res.raw)
                assert.equal("OK", res.reason)
                assert.equal("text/plain", res.headers["content-type"])
                assert.equal("Hello, world!\n", res.body)
            end)

            it("creates an item from the JSON body on stdin (examples/rest.lua)", function()
                local res = cgi_fcgi(rest, { REQUEST_METHOD = "POST", REQUEST_URI = "/items",
                                             CONTENT_TYPE = "application/json" },
                    cjson.encode({ name = "from cgi-fcgi" }))
                assert.equal(0, res.exit, res.raw)
                assert.equal(201, res.status, res.raw)
                local item = cjson.decode(res.body)
                assert.equal("from cgi-fcgi", item.name)
                assert.equal("/items/" .. item.id, res.headers["location"])

                res = cgi_fcgi(rest, { REQUEST_METHOD = "GET", REQUEST_URI = "/items/" .. item.id })
                assert.equal(200, res.status, res.raw)
                assert.same(item, cjson.decode(res.body))

                res = cgi_fcgi(rest, { REQUEST_METHOD = "GET", REQUEST_URI = "/nowhere" })
                assert.equal(404, res.status, res.raw)
            end)

            it("passes environment variables as params", function()
                local res = cgi_fcgi(probe, { REQUEST_METHOD = "GET", REQUEST_URI = "/param",
                                              QUERY_STRING = "name=HTTP_X_GREETING",
                                              HTTP_X_GREETING = "hello from the environment" })
                assert.equal(200, res.status, res.raw)
                assert.equal("hello from the environment", res.body)
            end)

            it("passes stdin as the body, empty to 1 MiB", function()
                for _, n in ipairs({ 0, 1, 65535, 65536, 1024 * 1024 }) do
                    local body = ("0123456789abcdef"):rep(math.ceil(n / 16)):sub(1, n)
                    local res = cgi_fcgi(probe, { REQUEST_METHOD = "POST", REQUEST_URI = "/echo",
                                                  CONTENT_TYPE = "application/octet-stream" }, body)
                    assert.equal(0, res.exit, res.raw:sub(1, 200))
                    assert.equal(200, res.status, res.raw:sub(1, 200))
                    assert.equal(tostring(n), res.headers["x-body-length"])
                    assert.is_true(res.body == body, "the echo of " .. n .. " bytes differs")
                end
            end)
        end)
    end
end)
