-- moonfcgi --http: plain HTTP/1.1 into the same handlers, driven by curl and by Python's
-- http.client and raw sockets (spec/http/client.py prints what each scenario saw).
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local process = require "process"
local http = require "http_client"
local cjson = require "cjson"

local APP = "spec/http/apps/http.lua"

-- Runs one scenario of client.py against port; returns its output.
local function py(scenario, port)
    local p = io.popen(string.format("env -u LD_PRELOAD timeout -s KILL 90 python3 spec/http/client.py %s %d 2>&1",
        scenario, port))
    local out = p:read("*a")
    p:close()
    return out
end

local function port_of(srv)
    return tonumber(srv.addr:match(":(%d+)$"))
end

local function start(args, app)
    local a = { "--workers", "1" }
    for _, v in ipairs(args or {}) do
        a[#a + 1] = v
    end
    return assert(process.moonfcgi(app or APP, { http = true, args = a }))
end

describe("moonfcgi --http", function()
    local srv, url

    setup(function()
        srv = start()
        url = "http://" .. srv.addr
    end)

    teardown(function()
        srv:cleanup()
        http.cleanup()
    end)

    it("answers curl with a sized response", function()
        local res = http.get(url .. "/raw")
        assert.equal(201, res.status)
        assert.equal("yes", res.headers["x-raw"])
        assert.equal("8", res.headers["content-length"])
        assert.equal("raw body", res.body)
    end)

    it("sends a 204 without a body or a length", function()
        local res = http.get(url .. "/nobody")
        assert.equal(204, res.status)
        assert.is_nil(res.headers["content-length"])
        assert.equal("", res.body)
    end)

    it("answers a handler error with a 500 and keeps serving", function()
        assert.equal(500, http.get(url .. "/fail").status)
        assert.equal(200, http.get(url .. "/written").status)
    end)

    it("goes chunked once a handler flushes", function()
        local res = http.get(url .. "/flushed")
        assert.equal(200, res.status)
        assert.equal("chunked", res.headers["transfer-encoding"])
        assert.equal("first second", res.body)
    end)

    it("keeps a connection alive across requests", function()
        local out = py("keepalive", port_of(srv))
        assert.matches("status 200 query i=4", out)
        assert.matches("connections 1\n", out)
    end)

    it("answers pipelined requests in order", function()
        local out = py("pipeline", port_of(srv))
        assert.matches("^3 1\nordered True\n", out)
    end)

    it("takes a 1 MiB chunked upload", function()
        assert.matches("status 200 same True len 1048576", py("chunked", port_of(srv)))
    end)

    it("sends 100 Continue before reading an expected body", function()
        local out = py("continue", port_of(srv))
        assert.matches("interim True\nfinal True\n", out)
    end)

    it("answers HEAD with the length of the GET and no body", function()
        local out = py("head", port_of(srv))
        assert.matches("status 200 length 5000 body 0\nstatus 200 length 5000 body 5000\n", out)
    end)

    it("sends and receives 1 MiB bodies", function()
        local out = py("big", port_of(srv))
        assert.matches("status 200 len 1048576 chunked True pattern True\nstatus 200 echo True\n", out)
    end)

    it("holds a handler back while the client reads nothing (memory stays bounded)", function()
        local out = py("slow", port_of(srv))
        local written = tonumber(out:match("written (%d+)"))
        assert.matches("stalled True", out)
        -- 64 MiB asked for; the kernel's buffers and the connection's high-water mark hold a
        -- few MiB at most before the handler's write waits.
        assert.is_true(written < 16 * 1024 * 1024, out)
        assert.matches("received_all True", out)
    end)

    it("tells a handler the client went away mid-response", function()
        local out = py("abort", port_of(srv))
        assert.matches("started True\nhandler aborted\n", out)
    end)

    it("answers malformed requests with 400 and a close", function()
        local out = py("malformed", port_of(srv))
        local _, n = out:gsub("HTTP/1.1 400 Bad Request closed", "")
        assert.equal(4, n, out)
    end)

    it("builds the CGI params from the request", function()
        local res = http.get(url .. "/params?a=1&b=%20", { headers = { ["X-Thing"] = "one",
            ["Content-Type"] = "text/plain" } })
        local p = cjson.decode(res.body)
        assert.equal("GET", p.REQUEST_METHOD)
        assert.equal("/params?a=1&b=%20", p.REQUEST_URI)
        assert.equal("a=1&b=%20", p.QUERY_STRING)
        assert.equal("/params", p.SCRIPT_NAME)
        assert.equal("/params", p.DOCUMENT_URI)
        assert.equal("", p.PATH_INFO)
        assert.equal("text/plain", p.CONTENT_TYPE)
        assert.equal("HTTP/1.1", p.SERVER_PROTOCOL)
        assert.equal("127.0.0.1", p.REMOTE_ADDR)
        assert.equal(tostring(port_of(srv)), p.SERVER_PORT)
        assert.equal("one", p.HTTP_X_THING)
        assert.equal("CGI/1.1", p.GATEWAY_INTERFACE)
        assert.is_nil(p.HTTPS)
    end)
end)

describe("moonfcgi --http limits", function()
    local srv, url

    setup(function()
        srv = start({ "--max-params", "4096", "--max-body", "1000", "--read-timeout", "0.5" })
        url = "http://" .. srv.addr
    end)

    teardown(function()
        srv:cleanup()
        http.cleanup()
    end)

    it("answers a head past --max-params with 431", function()
        local res = http.get(url .. "/written", { headers = { ["X-Big"] = ("a"):rep(5000) } })
        assert.equal(431, res.status)
    end)

    it("answers a Content-Length past --max-body with 413", function()
        local res = http.request{ method = "POST", url = url .. "/echo", body = ("b"):rep(2000) }
        assert.equal(413, res.status)
    end)

    it("answers a chunked body past --max-body with 413", function()
        local res = http.request{ method = "POST", url = url .. "/echo", body = ("b"):rep(2000),
            headers = { ["Transfer-Encoding"] = "chunked" } }
        assert.equal(413, res.status)
    end)

    it("answers a head that does not arrive within --read-timeout with 408", function()
        local p = io.popen(string.format("env -u LD_PRELOAD timeout -s KILL 20 python3 -c %s %d",
            http.quote([[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
out = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    out += b
print(out.split(b"\r\n")[0].decode())
]]), port_of(srv)))
        local out = p:read("*a")
        p:close()
        assert.equal("HTTP/1.1 408 Request Timeout\n", out)
    end)
end)

describe("moonfcgi --http-root", function()
    local srv, url, dir

    setup(function()
        dir = os.tmpname()
        os.remove(dir)
        os.execute("mkdir -p " .. dir .. "/sub")
        http.write_file(dir .. "/index.html", "<p>home</p>")
        http.write_file(dir .. "/sub/app.js", "console.log(1)")
        srv = start({ "--http-root", dir })
        url = "http://" .. srv.addr
    end)

    teardown(function()
        srv:cleanup()
        os.execute("rm -rf " .. dir)
        http.cleanup()
    end)

    it("serves files that exist, with their type", function()
        local res = http.get(url .. "/sub/app.js")
        assert.equal(200, res.status)
        assert.equal("console.log(1)", res.body)
        assert.matches("^text/javascript", res.headers["content-type"])
        assert.equal("<p>home</p>", http.get(url .. "/").body)
    end)

    it("passes everything else to the handler", function()
        local res = http.get(url .. "/written")
        assert.equal(200, res.status)
        assert.equal(404, http.get(url .. "/sub/missing.js").status)
    end)

    it("never serves outside the root", function()
        assert.equal(400, http.get(url .. "/sub/%2e%2e/%2e%2e/etc/passwd", { args = { "--path-as-is" } }).status)
    end)
end)

describe("moonfcgi --http-role authorizer", function()
    local srv, url

    setup(function()
        srv = start({ "--http-role", "authorizer" })
        url = "http://" .. srv.addr
    end)

    teardown(function()
        srv:cleanup()
        http.cleanup()
    end)

    it("grants with 200 and the variables as headers", function()
        local res = http.get(url .. "/x", { headers = { Authorization = "Bearer good" } })
        assert.equal(200, res.status)
        assert.equal("alice", res.headers["variable-user"])
        assert.equal("", res.body)
    end)

    it("denies with the handler's answer", function()
        local res = http.get(url .. "/x")
        assert.equal(403, res.status)
        assert.equal("denied", res.body)
    end)
end)

describe("moonfcgi --http beside --listen", function()
    it("serves FastCGI and HTTP from one host", function()
        local fport = process.free_port()
        local srv = start({ "--listen", "127.0.0.1:" .. fport })
        finally(function()
            srv:cleanup()
        end)
        local client = require "moonfcgi.client"
        local c = assert(client.connect("127.0.0.1:" .. fport))
        local res = assert(c:request{ params = { REQUEST_METHOD = "GET", DOCUMENT_URI = "/raw" } })
        c:close()
        assert.equal(201, res.status)
        assert.equal(201, http.get("http://" .. srv.addr .. "/raw").status)
    end)
end)
