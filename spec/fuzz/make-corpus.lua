-- Writes the seed corpus of the fuzz targets, from the client side of lua/moonfcgi/proto.lua.
--   LUA_PATH='lua/?.lua;;' luajit spec/fuzz/make-corpus.lua [spec/fuzz/corpus]
--
-- corpus/conn: inputs of fuzz_conn: 4 bytes that split the stream into writes (0: one write,
-- 1..127: that many bytes, 128..255: (b - 127) * 64 bytes), 4 bytes that choose what the
-- handlers do (low 3 bits: 0 echo, 1 finish at once, 2 error, 3 timeout, 4 wait for the
-- close, 5 read the body whole, 6 write more than one record, 7 headers; 0x08 flush, 0x10
-- read DATA, 0x20 end with an error, 0x40 read 3 bytes at a time), 1 byte of flags (1: the
-- client reads nothing until all is sent, 2: the app is a responder only, 4: the client
-- half-closes first), then what a web server sends.
-- corpus/record: inputs of fuzz_record: record streams and name-value pairs.
local proto = require "moonfcgi.proto"

local dir = arg[1] or "spec/fuzz/corpus"
local char, rep = string.char, string.rep
assert(not dir:find("'", 1, true), "no quotes in the corpus path")
os.execute("mkdir -p '" .. dir .. "/conn' '" .. dir .. "/record'")

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local SLOW_CLIENT, RESPONDER_ONLY, HALF_CLOSE = 1, 2, 4

local function conn(name, split, behaviour, stream, flags)
  assert(#split == 4 and #behaviour == 4)
  write(dir .. "/conn/" .. name, split .. behaviour .. char(flags or 0) .. stream)
end

local ONE_WRITE = "\0\0\0\0"
local ECHO = "\0\0\0\0"

local nginx_params = {
  { "SCRIPT_FILENAME", "/srv/app/index.lua" }, { "QUERY_STRING", "a=1&b=2" },
  { "REQUEST_METHOD", "GET" }, { "CONTENT_TYPE", "" }, { "CONTENT_LENGTH", "" },
  { "SCRIPT_NAME", "/index" }, { "REQUEST_URI", "/index?a=1&b=2" },
  { "DOCUMENT_URI", "/index" }, { "SERVER_PROTOCOL", "HTTP/1.1" },
  { "GATEWAY_INTERFACE", "CGI/1.1" }, { "REMOTE_ADDR", "127.0.0.1" },
  { "REMOTE_PORT", "51234" }, { "SERVER_PORT", "80" }, { "SERVER_NAME", "localhost" },
  { "HTTP_HOST", "localhost" }, { "HTTP_USER_AGENT", "curl/8.0" }, { "HTTP_ACCEPT", "*/*" },
}

-- nginx: id 1, one params record padded to 8, an empty STDIN, no KEEP_CONN.
conn("nginx-get", ONE_WRITE, ECHO,
  proto.request { id = 1, keep_conn = false, params = nginx_params })

-- nginx with fastcgi_keep_conn: two requests on one connection, written a byte at a time.
conn("nginx-keepalive-bytewise", "\1\1\1\1", "\0\8\0\8",
  proto.request { id = 1, params = nginx_params } ..
  proto.request { id = 1, params = { { "REQUEST_URI", "/second" } } })

-- Apache proxy_fcgi: a POST whose body comes in 8 KiB-style records (small here), the final
-- empty STDIN written separately; the handler reads the body whole.
local post_params = { { "REQUEST_METHOD", "POST" }, { "CONTENT_LENGTH", "300" },
                      { "CONTENT_TYPE", "application/x-www-form-urlencoded" },
                      { "REQUEST_URI", "/form" } }
conn("apache-post", "\129\3\0\0", "\5\5\5\5",
  proto.request { id = 1, params = post_params, stdin = rep("k=v&", 75), stdin_chunk = 64,
                  params_chunk = 40 })

-- HAProxy: ids 1, 3, 5 multiplexed on one kept connection, records interleaved.
do
  local reqs = {}
  for _, id in ipairs { 1, 3, 5 } do
    reqs[#reqs + 1] = {
      proto.begin_request(id, "responder", true),
      proto.stream(proto.PARAMS, id, proto.encode_params { REQUEST_URI = "/m" .. id }),
      proto.stream(proto.STDIN, id, "body" .. id, 3),
    }
  end
  local out = {}
  for k = 1, 3 do
    for i = 1, 3 do
      out[#out + 1] = reqs[i][k]
    end
  end
  conn("haproxy-multiplexed", "\17\0\3\0", "\0\6\7\8", table.concat(out))
end

-- GET_VALUES with a repeated known name and an unknown one, then a request.
conn("get-values", ONE_WRITE, ECHO,
  proto.get_values { "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS", "FCGI_MAX_REQS",
                     "UNKNOWN" } ..
  proto.request { id = 1, params = { { "REQUEST_URI", "/" } } })

-- HAProxy's client went away: ABORT_REQUEST before the params end, and one after the handler
-- started (which waits for the connection to close).
conn("abort", "\40\0\0\0", "\4\4\4\4",
  proto.begin_request(1, "responder", true) ..
  proto.record(proto.PARAMS, 1, proto.encode_params { A = "1" }) ..
  proto.abort_request(1) ..
  proto.request { id = 2, params = { { "REQUEST_URI", "/x" } }, stdin = "" } ..
  proto.abort_request(2))

-- A filter: PARAMS with FCGI_DATA_LENGTH, STDIN, then the file on DATA.
conn("filter-data", "\10\0\0\0", "\16\16\16\16",
  proto.request { id = 1, role = "filter", params = { { "REQUEST_URI", "/f" } },
                  stdin = "in", data = rep("file ", 40), data_chunk = 50 })

-- Apache mod_authnz_fcgi: an authorizer with no STDIN at all; and lighttpd's empty one.
conn("authorizer", ONE_WRITE, "\7\0\7\0",
  proto.request { id = 1, role = "authorizer", stdin = false,
                  params = { { "REMOTE_USER", "bob" }, { "REQUEST_URI", "/private" } } } ..
  proto.request { id = 2, role = "authorizer", stdin = "",
                  params = { { "REMOTE_USER", "eve" } } })

-- Malformed: a truncated pair (400), a pair with a length near 2^31, then a BEGIN_REQUEST
-- with 7 content bytes, which closes the connection.
conn("malformed-lengths", ONE_WRITE, ECHO,
  proto.begin_request(1, "responder", true) ..
  proto.stream(proto.PARAMS, 1, "\5\3ab") .. proto.stream(proto.STDIN, 1, "") ..
  proto.begin_request(2, "responder", true) ..
  proto.stream(proto.PARAMS, 2, "\255\255\255\255\0x") .. proto.stream(proto.STDIN, 2, "") ..
  proto.record(proto.BEGIN_REQUEST, 3, "\0\1\1\0\0\0\0"))

-- Unknown management type, unknown role, garbage padding and reserved bytes, a late empty
-- STDIN for an id that is not active.
do
  local function garbage(rtype, id, content, pad)
    local r = proto.record(rtype, id, content, 0)
    return r:sub(1, 6) .. char(pad) .. "\255" .. r:sub(9) .. rep("\170", pad)
  end
  conn("unknown-and-garbage", "\0\0\0\0", "\1\2\3\4",
    proto.record(42, 0, "abc") ..
    proto.begin_request(7, 9, true) ..
    garbage(proto.BEGIN_REQUEST, 1, "\0\1\1\255\255\255\255\255", 13) ..
    garbage(proto.PARAMS, 1, proto.encode_params { REQUEST_URI = "/g" }, 255) ..
    garbage(proto.PARAMS, 1, "", 16) ..
    garbage(proto.STDIN, 1, "", 1) ..
    proto.record(proto.STDIN, 9, ""))
end

-- A request answered, then a record with version 2 in a later write: that closes.
conn("bad-version-later", "\56\0\0\0", ECHO,
  proto.request { id = 1, params = { { "REQUEST_URI", "/v" } } } .. rep("\2", 8))

-- nginx long URL: a params record of 2000 bytes padded with 255 (the real one is 65535).
conn("long-params-padded", "\255\0\0\0", "\6\6\6\6",
  proto.begin_request(1, "responder", false) ..
  proto.record(proto.PARAMS, 1,
    proto.encode_params { { "REQUEST_URI", "/" .. rep("a", 1980) } }, 255) ..
  proto.stream(proto.PARAMS, 1, "") .. proto.stream(proto.STDIN, 1, ""))

-- More BEGINs than --max-reqs (64 in fuzz_conn): the last ones are OVERLOADED.
do
  local out = {}
  for id = 1, 70 do
    out[#out + 1] = proto.begin_request(id, "responder", true)
  end
  conn("overloaded", ONE_WRITE, "\4\4\4\4", table.concat(out))
end

-- A web server that does not read: six answers of more than one record each pile up in the
-- worker past its high-water mark (256 KiB) before the client reads.
do
  local out = {}
  for id = 1, 6 do
    out[#out + 1] = proto.request { id = id, params = { { "REQUEST_URI", "/big" } } }
  end
  conn("slow-reader", ONE_WRITE, "\6\14\6\14", table.concat(out), SLOW_CLIENT)
end

-- The client half-closes while a handler waits for the connection to go away.
conn("half-close", ONE_WRITE, "\4\0\0\0",
  proto.request { id = 1, params = { { "REQUEST_URI", "/wait" } } }, HALF_CLOSE)

-- An app with only a responder: an authorizer request gets UNKNOWN_ROLE.
conn("responder-only", ONE_WRITE, ECHO,
  proto.request { id = 1, role = "authorizer", stdin = false } ..
  proto.request { id = 2, params = { { "REQUEST_URI", "/r" } } }, RESPONDER_ONLY)

-- Stream order (docs/protocol.md): a filter whose handler waits for DATA, multiplexed with a
-- responder whose STDIN comes before the end of its PARAMS: the connection closes.
conn("stream-order", ONE_WRITE, "\5\21\0\0",
  proto.begin_request(3, "filter", true) ..
  proto.stream(proto.PARAMS, 3, proto.encode_params({ { "FCGI_DATA_LENGTH", "4" } })) ..
  proto.stream(proto.STDIN, 3, "in") .. proto.record(proto.DATA, 3, "da") ..
  proto.begin_request(1, "responder", true) ..
  proto.record(proto.PARAMS, 1, proto.encode_pair("A", "b")) ..
  proto.record(proto.STDIN, 1, "early") .. proto.record(proto.DATA, 3, "ta"))

-- Params that go on past --max-params (4 KiB in fuzz_conn) and never end: a 431 at the
-- crossing record, then the rest is dropped; the next request on the connection is served.
do
  local piece = proto.record(proto.PARAMS, 1, proto.encode_pair("P", rep("p", 1000)))
  conn("params-flood", "\136\0\0\0", ECHO,
    proto.begin_request(1, "responder", true) .. rep(piece, 12) ..
    proto.request { id = 2, params = { { "REQUEST_URI", "/after" } }, stdin = "x" })
end

-- fuzz_record: record streams and pair encodings.
local function record(name, bytes)
  write(dir .. "/record/" .. name, bytes)
end

record("params-stream", proto.stream(proto.PARAMS, 1, proto.encode_params(nginx_params), 100))
record("whole-request", proto.request { id = 1, params = { { "A", "1" } }, stdin = "x" })
record("pairs-4-byte-lengths",
  proto.encode_pair(rep("n", 130), "v") .. "\128\0\0\3\128\0\0\1abcd" ..
  proto.encode_pair("", rep("v", 200)))
record("pairs-near-2-31", "\1\1ab" .. "\255\255\255\255\255\255\255\255" .. "xy")
record("pairs-wrap-32-bit", "\255\255\255\252\255\255\255\252" .. rep("z", 16))
record("truncated-pair", "\5\3ab")
record("max-padding", proto.record(proto.PARAMS, 1, proto.encode_pair("Q", rep("q", 200)), 255))
record("bad-version", proto.record(proto.STDIN, 1, "ok") .. "\2\5\0\1\0\0\0\0")
record("management", proto.get_values { "FCGI_MAX_CONNS", "FCGI_MPXS_CONNS" } ..
  proto.record(11, 0, "\42\0\0\0\0\0\0\0") .. proto.end_request(1, 0, 3))
record("empty-records", proto.record(proto.STDIN, 1, "") .. proto.record(proto.STDIN, 1, "", 7))
