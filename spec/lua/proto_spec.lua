-- moonfcgi.proto: the FastCGI 1.0 record codec the client and the test harness speak.

local proto = require "moonfcgi.proto"

local byte, char, rep, sub = string.byte, string.char, string.rep, string.sub

-- Splits bytes into records with a fresh parser; fails the spec on leftovers or errors.
local function records_of(bytes)
  local p = proto.parser()
  p:feed(bytes)
  local out = {}
  while true do
    local rec, err = p:next()
    assert.is_nil(err)
    if not rec then
      break
    end
    out[#out + 1] = rec
  end
  assert.equal(0, p:buffered())
  return out
end

local function stream_value(recs, rtype)
  local parts = {}
  for _, r in ipairs(recs) do
    if r.type == rtype then
      parts[#parts + 1] = r.content
    end
  end
  return table.concat(parts)
end

local function stdout(id, s)
  return { version = 1, type = proto.STDOUT, id = id, content = s, padding_len = 0 }
end

local function stderr(id, s)
  return { version = 1, type = proto.STDERR, id = id, content = s, padding_len = 0 }
end

local function end_request(id, app_status, protocol_status)
  return records_of(proto.end_request(id, app_status, protocol_status))[1]
end

describe("proto constants", function()
  it("numbers the record types as FastCGI 1.0 does", function()
    assert.equal(1, proto.BEGIN_REQUEST)
    assert.equal(2, proto.ABORT_REQUEST)
    assert.equal(3, proto.END_REQUEST)
    assert.equal(4, proto.PARAMS)
    assert.equal(5, proto.STDIN)
    assert.equal(6, proto.STDOUT)
    assert.equal(7, proto.STDERR)
    assert.equal(8, proto.DATA)
    assert.equal(9, proto.GET_VALUES)
    assert.equal(10, proto.GET_VALUES_RESULT)
    assert.equal(11, proto.UNKNOWN_TYPE)
  end)

  it("names roles and protocol statuses", function()
    assert.same({ responder = 1, authorizer = 2, filter = 3 }, proto.roles)
    assert.equal(1, proto.RESPONDER)
    assert.equal(2, proto.AUTHORIZER)
    assert.equal(3, proto.FILTER)
    assert.same({ [0] = "complete", [1] = "cant_mpx", [2] = "overloaded", [3] = "unknown_role" },
                proto.protocol_status_names)
  end)
end)

describe("proto.record", function()
  it("writes the 8-byte header: version 1, type, id and length big-endian, padding", function()
    local r = proto.record(proto.STDIN, 0x1234, "abc")
    assert.same({ 1, 5, 0x12, 0x34, 0, 3, 5, 0 }, { byte(r, 1, 8) })
    assert.equal("abc", sub(r, 9, 11))
  end)

  it("pads content to a multiple of 8 with zeros", function()
    for len = 0, 24 do
      local r = proto.record(proto.STDOUT, 1, rep("x", len))
      assert.equal(0, #r % 8)
      local pad = byte(r, 7)
      assert.equal((8 - len % 8) % 8, pad)
      assert.equal(rep("\0", pad), sub(r, 9 + len))
    end
  end)

  it("takes an explicit padding length, up to 255", function()
    local r = proto.record(proto.STDOUT, 1, "a", 255)
    assert.equal(8 + 1 + 255, #r)
    assert.equal(255, byte(r, 7))
    assert.equal(8, #proto.record(proto.STDOUT, 1, "", 0))
    assert.has_error(function() proto.record(proto.STDOUT, 1, "a", 256) end)
  end)

  it("treats nil content as empty", function()
    assert.equal(proto.record(proto.STDIN, 1, ""), proto.record(proto.STDIN, 1))
  end)

  it("accepts 65535 content bytes, and content plus padding above 65535", function()
    local r = proto.record(proto.PARAMS, 1, rep("p", 65535))
    assert.same({ 255, 255, 1 }, { byte(r, 5, 7) })
    assert.equal(8 + 65535 + 1, #r)
    assert.equal(8 + 65535 + 255, #proto.record(proto.PARAMS, 1, rep("p", 65535), 255))
  end)

  it("rejects content longer than 65535 bytes", function()
    assert.has_error(function() proto.record(proto.STDIN, 1, rep("x", 65536)) end,
                     "record content longer than 65535 bytes")
  end)

  it("rejects ids outside 0..65535 and types outside 0..255", function()
    assert.has_error(function() proto.record(proto.STDIN, -1, "") end)
    assert.has_error(function() proto.record(proto.STDIN, 65536, "") end)
    assert.has_error(function() proto.record(proto.STDIN, 1.5, "") end)
    assert.has_error(function() proto.record(256, 1, "") end)
    assert.same({ 0xff, 0xff }, { byte(proto.record(proto.STDIN, 65535, ""), 3, 4) })
  end)
end)

describe("proto.stream", function()
  it("is only the empty terminator for nil or empty data", function()
    assert.equal(proto.record(proto.STDIN, 1, ""), proto.stream(proto.STDIN, 1, nil))
    assert.equal(proto.record(proto.STDIN, 1, ""), proto.stream(proto.STDIN, 1, ""))
    assert.equal(proto.record(proto.STDIN, 1, ""), proto.stream(proto.STDIN, 1, {}))
  end)

  it("splits data into records of at most chunk_size bytes and terminates it", function()
    local recs = records_of(proto.stream(proto.STDIN, 3, rep("a", 20), 8))
    assert.equal(4, #recs)
    assert.same({ 8, 8, 4, 0 }, { #recs[1].content, #recs[2].content, #recs[3].content,
                                  #recs[4].content })
    for _, r in ipairs(recs) do
      assert.equal(3, r.id)
      assert.equal(proto.STDIN, r.type)
    end
    assert.equal(rep("a", 20), stream_value(recs, proto.STDIN))
  end)

  it("uses records of 65528 bytes by default, so no padding is needed", function()
    local data = rep("z", 65528 * 2 + 1)
    local recs = records_of(proto.stream(proto.STDIN, 1, data))
    assert.equal(4, #recs)
    assert.equal(65528, #recs[1].content)
    assert.equal(0, recs[1].padding_len)
    assert.equal(1, #recs[3].content)
    assert.equal(data, stream_value(recs, proto.STDIN))
  end)

  it("starts new records for each element of a list and skips empty ones", function()
    local recs = records_of(proto.stream(proto.DATA, 1, { "ab", "", "cde", "" }))
    assert.equal(3, #recs)
    assert.equal("ab", recs[1].content)
    assert.equal("cde", recs[2].content)
    assert.equal("", recs[3].content)
  end)

  it("rejects chunk sizes outside 1..65535 and non-string data", function()
    assert.has_error(function() proto.stream(proto.STDIN, 1, "x", 0) end)
    assert.has_error(function() proto.stream(proto.STDIN, 1, "x", 65536) end)
    assert.has_error(function() proto.stream(proto.STDIN, 1, 42) end)
    assert.has_error(function() proto.stream(proto.STDIN, 1, { "a", 1 }) end)
  end)
end)

describe("proto.begin_request", function()
  it("encodes role and the keep-conn flag", function()
    local rec = records_of(proto.begin_request(7, "authorizer", true))[1]
    assert.equal(proto.BEGIN_REQUEST, rec.type)
    assert.equal(7, rec.id)
    assert.equal(char(0, 2, 1, 0, 0, 0, 0, 0), rec.content)
    local role, flags, keep = proto.decode_begin_request(rec.content)
    assert.same({ 2, 1, true }, { role, flags, keep })
  end)

  it("takes role numbers, even ones no server knows", function()
    local rec = records_of(proto.begin_request(1, 0x0102, false))[1]
    assert.equal(char(1, 2, 0, 0, 0, 0, 0, 0), rec.content)
  end)

  it("rejects unknown role names", function()
    assert.has_error(function() proto.begin_request(1, "gateway") end,
                     "unknown role 'gateway'")
  end)
end)

describe("proto.end_request", function()
  it("round-trips a 32-bit app status and the protocol status", function()
    local rec = end_request(9, 4294967295, proto.OVERLOADED)
    assert.equal(proto.END_REQUEST, rec.type)
    assert.equal(9, rec.id)
    local app, ps = proto.decode_end_request(rec.content)
    assert.equal(4294967295, app)
    assert.equal(2, ps)
  end)
end)

describe("proto.encode_pair", function()
  it("uses one length byte below 128", function()
    local p = proto.encode_pair(rep("n", 127), "v")
    assert.equal(127, byte(p, 1))
    assert.equal(1, byte(p, 2))
    assert.equal(2 + 127 + 1, #p)
  end)

  it("uses four length bytes with the top bit set from 128", function()
    local p = proto.encode_pair(rep("n", 128), "")
    assert.same({ 0x80, 0, 0, 128, 0 }, { byte(p, 1, 5) })
    assert.equal(5 + 128, #p)
  end)

  it("encodes 65535 and 1 MiB value lengths", function()
    local p = proto.encode_pair("N", rep("v", 65535))
    assert.same({ 1, 0x80, 0, 0xff, 0xff }, { byte(p, 1, 5) })
    local big = proto.encode_pair("N", rep("v", 1024 * 1024))
    assert.same({ 1, 0x80, 0x10, 0, 0 }, { byte(big, 1, 5) })
    assert.equal(1 + 4 + 1 + 1024 * 1024, #big)
  end)

  it("turns values into strings", function()
    assert.equal(char(1, 2) .. "n42", proto.encode_pair("n", 42))
  end)
end)

describe("proto.encode_params", function()
  it("emits a map in sorted name order", function()
    local bytes = proto.encode_params({ b = "2", a = "1", c = 3 })
    assert.same({ { "a", "1" }, { "b", "2" }, { "c", "3" } }, proto.decode_params(bytes))
  end)

  it("keeps the order of a list of pairs, repeats included", function()
    local list = { { "Z", "1" }, { "A", "2" }, { "Z", "3" } }
    assert.same(list, proto.decode_params(proto.encode_params(list)))
  end)

  it("is empty for no params", function()
    assert.equal("", proto.encode_params({}))
  end)
end)

describe("proto.decode_params", function()
  local names = { "", "a", rep("n", 127), rep("n", 128), rep("n", 300) }
  local values = { "", "v", rep("v", 127), rep("v", 128), rep("v", 65535),
                   rep("v", 1024 * 1024) }

  it("round-trips pairs across the 127/128 boundary, 65535 and 1 MiB", function()
    for _, n in ipairs(names) do
      for _, v in ipairs(values) do
        local got = proto.decode_params(proto.encode_pair(n, v))
        assert.equal(1, #got)
        assert.equal(n, got[1][1])
        assert.equal(#v, #got[1][2])
        assert.equal(v, got[1][2])
      end
    end
  end)

  it("accepts a four-byte encoding of a small length", function()
    local got = proto.decode_params(char(0x80, 0, 0, 1, 0x80, 0, 0, 2) .. "abc")
    assert.same({ { "a", "bc" } }, got)
  end)

  it("reports a truncated pair at every cut point", function()
    local bytes = proto.encode_params({ { "SHORT", "x" }, { rep("N", 130), rep("V", 200) },
                                        { "LAST", "" } })
    assert.equal(3, #proto.decode_params(bytes))
    local first = #proto.encode_pair("SHORT", "x")
    local second = first + #proto.encode_pair(rep("N", 130), rep("V", 200))
    for cut = 1, #bytes - 1 do
      local got, err = proto.decode_params(sub(bytes, 1, cut))
      if cut == first or cut == second then
        assert.is_table(got)
      else
        assert.is_nil(got)
        assert.equal("truncated pair", err)
      end
    end
  end)

  it("reports lengths near 2^31 as truncated without allocating them", function()
    local got, err = proto.decode_params(char(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
                                           .. "x")
    assert.is_nil(got)
    assert.equal("truncated pair", err)
  end)
end)

describe("proto.request", function()
  it("sends BEGIN_REQUEST, PARAMS and STDIN streams", function()
    local recs = records_of(proto.request({ id = 5, params = { A = "1" }, stdin = "body" }))
    local types = {}
    for i, r in ipairs(recs) do
      types[i] = r.type
      assert.equal(5, r.id)
    end
    assert.same({ 1, 4, 4, 5, 5 }, types)
    local role, _, keep = proto.decode_begin_request(recs[1].content)
    assert.equal(proto.RESPONDER, role)
    assert.is_true(keep)
    assert.same({ { "A", "1" } }, proto.decode_params(stream_value(recs, proto.PARAMS)))
    assert.equal("body", stream_value(recs, proto.STDIN))
  end)

  it("defaults to id 1, the responder role and an empty STDIN", function()
    local recs = records_of(proto.request({}))
    assert.same({ 1, 4, 5 }, { recs[1].type, recs[2].type, recs[3].type })
    assert.equal(1, recs[1].id)
    assert.equal(3, #recs)
  end)

  it("clears keep-conn only when keep_conn is false", function()
    local rec = records_of(proto.request({ keep_conn = false }))[1]
    assert.is_false(select(3, proto.decode_begin_request(rec.content)))
  end)

  it("leaves STDIN out entirely when stdin is false, as Apache's authorizer does", function()
    local recs = records_of(proto.request({ role = "authorizer", params = { A = "1" },
                                            stdin = false }))
    assert.equal(3, #recs)
    assert.equal(proto.PARAMS, recs[3].type)
    assert.equal("", recs[3].content)
  end)

  it("splits params and stdin by their chunk sizes", function()
    local recs = records_of(proto.request({ params = { X = rep("x", 100) }, params_chunk = 16,
                                            stdin = { "abc", "defgh" }, stdin_chunk = 2 }))
    local counts = {}
    for _, r in ipairs(recs) do
      counts[r.type] = (counts[r.type] or 0) + 1
    end
    assert.equal(1 + math.ceil((1 + 1 + 1 + 100) / 16), counts[proto.PARAMS])
    assert.equal(2 + 3 + 1, counts[proto.STDIN])
    assert.equal("abcdefgh", stream_value(recs, proto.STDIN))
  end)

  it("adds FCGI_DATA_LENGTH and FCGI_DATA_LAST_MOD and a DATA stream for filters", function()
    local recs = records_of(proto.request({ role = "filter", params = { A = "1" },
                                            data = { "file ", "body" } }))
    local params = proto.decode_params(stream_value(recs, proto.PARAMS))
    assert.same({ { "A", "1" }, { "FCGI_DATA_LAST_MOD", "0" }, { "FCGI_DATA_LENGTH", "9" } },
                params)
    assert.equal("file body", stream_value(recs, proto.DATA))
    assert.equal(proto.DATA, recs[#recs].type)
    assert.equal("", recs[#recs].content)
  end)

  it("keeps a filter's own FCGI_DATA_LENGTH and does not touch the caller's table", function()
    local params = { { "FCGI_DATA_LENGTH", "99" } }
    local recs = records_of(proto.request({ role = "filter", params = params, data = "x" }))
    assert.same({ { "FCGI_DATA_LENGTH", "99" }, { "FCGI_DATA_LAST_MOD", "0" } },
                proto.decode_params(stream_value(recs, proto.PARAMS)))
    assert.equal(1, #params)
  end)

  -- How fast: bench/timings.sh (a figure to read, not a bound a loaded machine could miss).
  it("generates a thousand distinct requests that each decode to what was asked", function()
    for i = 1, 1000 do
      local recs = records_of(proto.request({ id = i, params = { REQUEST_METHOD = "GET",
                                                                 REQUEST_URI = "/" .. i },
                                              stdin = "" }))
      assert.equal(i, recs[1].id)
      local params = proto.decode_params(stream_value(recs, proto.PARAMS))
      assert.same({ { "REQUEST_METHOD", "GET" }, { "REQUEST_URI", "/" .. i } }, params)
    end
  end)
end)

describe("proto.parser", function()
  local input = table.concat({
    proto.request({ id = 1, params = { A = rep("a", 300) }, stdin = rep("s", 70000) }),
    proto.record(proto.STDOUT, 2, "x", 255),
    proto.record(42, 0, ""),
  })

  it("returns nil until a whole record is buffered", function()
    local p = proto.parser()
    assert.is_nil(p:next())
    p:feed(sub(input, 1, 7))
    assert.is_nil(p:next())
    p:feed(sub(input, 8, 15))
    assert.is_nil(p:next())
    p:feed(sub(input, 16, 16))
    local rec = p:next()
    assert.same({ version = 1, type = proto.BEGIN_REQUEST, id = 1,
                  content = char(0, 1, 1, 0, 0, 0, 0, 0), padding_len = 0 }, rec)
  end)

  it("gives the same records when fed one byte at a time", function()
    local whole = records_of(input)
    local p = proto.parser()
    local got = {}
    for i = 1, #input do
      p:feed(sub(input, i, i))
      while true do
        local rec, err = p:next()
        assert.is_nil(err)
        if not rec then
          break
        end
        got[#got + 1] = rec
      end
    end
    assert.equal(#whole, #got)
    assert.same(whole, got)
    assert.equal(255, got[#got - 1].padding_len)
    assert.equal(42, got[#got].type)
    assert.equal(0, p:buffered())
  end)

  it("gives the same records for any split into two feeds", function()
    local small = proto.request({ id = 3, params = { A = "b" }, stdin = "hello" })
    local whole = records_of(small)
    for cut = 0, #small do
      local p = proto.parser()
      p:feed(sub(small, 1, cut))
      local got = {}
      local rec = p:next()
      while rec do
        got[#got + 1] = rec
        rec = p:next()
      end
      p:feed(sub(small, cut + 1))
      rec = p:next()
      while rec do
        got[#got + 1] = rec
        rec = p:next()
      end
      assert.same(whole, got)
    end
  end)

  it("ignores whatever padding and the reserved byte hold", function()
    local p = proto.parser()
    p:feed(char(1, 6, 0, 1, 0, 2, 3, 0xee) .. "ok" .. "\1\2\3")
    local rec = p:next()
    assert.equal("ok", rec.content)
    assert.equal(3, rec.padding_len)
  end)

  -- Linear: it never holds more than the record it is assembling and one feed, so no byte is
  -- copied over and over (its speed: bench/timings.sh).
  it("holds at most one record and one feed of a big input fed in small pieces", function()
    local big = proto.stream(proto.STDIN, 1, rep("b", 8 * 1024 * 1024))
    local p = proto.parser()
    local n, most = 0, 0
    for i = 1, #big, 1000 do
      p:feed(sub(big, i, i + 999))
      most = math.max(most, p:buffered())
      while p:next() do
        n = n + 1
      end
    end
    assert.equal(math.ceil(8 * 1024 * 1024 / 65528) + 1, n)
    assert.is_true(most <= 8 + 65535 + 255 + 1000, "buffered up to " .. most .. " bytes")
    assert.equal(0, p:buffered())
  end)

  it("reports a bad version and stays broken", function()
    local p = proto.parser()
    p:feed(proto.record(proto.STDOUT, 1, "a") .. char(2, 6, 0, 1, 0, 0, 0, 0))
    assert.equal("a", p:next().content)
    local rec, err = p:next()
    assert.is_nil(rec)
    assert.equal("bad version", err)
    p:feed(proto.record(proto.STDOUT, 1, "b"))
    assert.same({ nil, "bad version" }, { p:next() })
  end)
end)

describe("proto.parse_cgi", function()
  it("splits headers and body at the first blank line", function()
    local status, headers, body = proto.parse_cgi("Content-Type: text/plain\r\n\r\nhi\r\n\r\nthere")
    assert.equal(200, status)
    assert.same({ ["content-type"] = "text/plain" }, headers)
    assert.equal("hi\r\n\r\nthere", body)
  end)

  it("accepts bare LF line ends", function()
    local status, headers, body = proto.parse_cgi("Status: 302 Found\nLocation: /x\n\nmoved")
    assert.equal(302, status)
    assert.equal("/x", headers.location)
    assert.equal("moved", body)
  end)

  it("has no status for empty output or output without a header block", function()
    assert.same({ nil, {}, "" }, { proto.parse_cgi("") })
    assert.same({ nil, {}, "just text" }, { proto.parse_cgi("just text") })
  end)
end)

describe("proto.response", function()
  it("collects STDOUT, STDERR and END_REQUEST into a result", function()
    local c = proto.response()
    assert.is_false(c:add(stdout(1, "Status: 404 Not Found\r\nContent-Type: text/html\r\n")))
    assert.is_false(c:add(stdout(1, "\r\nno such ")))
    assert.is_false(c:add(stderr(1, "warn: ")))
    assert.is_false(c:add(stdout(1, "page")))
    assert.is_false(c:add(stderr(1, "missing")))
    assert.is_false(c:add(stdout(1, "")))
    assert.is_false(c:add(stderr(1, "")))
    assert.is_true(c:add(end_request(1, 3, 0)))
    local r = c:result()
    assert.equal(404, r.status)
    assert.equal("404 Not Found", r.headers.status)
    assert.equal("text/html", r.headers["content-type"])
    assert.equal("no such page", r.body)
    assert.equal("Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\nno such page", r.stdout)
    assert.equal("warn: missing", r.stderr)
    assert.equal(3, r.app_status)
    assert.equal("complete", r.protocol_status)
    assert.equal(8, r.records)
  end)

  it("defaults the status to 200 when the headers have no Status", function()
    local c = proto.response()
    c:add(stdout(1, "Content-Type: text/plain\r\n\r\nok"))
    c:add(end_request(1, 0, 0))
    assert.equal(200, c:result().status)
  end)

  it("turns a repeated header into a list, in order", function()
    local c = proto.response()
    c:add(stdout(1, "Set-Cookie: a=1\r\nset-cookie: b=2\r\nSET-COOKIE: c=3\r\n\r\n"))
    c:add(end_request(1, 0, 0))
    assert.same({ "a=1", "b=2", "c=3" }, c:result().headers["set-cookie"])
  end)

  it("has no status when the application wrote nothing", function()
    local c = proto.response()
    assert.is_true(c:add(end_request(1, 0, proto.OVERLOADED)))
    local r = c:result()
    assert.is_nil(r.status)
    assert.equal("", r.body)
    assert.equal("", r.stdout)
    assert.equal(1, r.records)
  end)

  it("names every protocol status", function()
    for code, name in pairs({ [0] = "complete", [1] = "cant_mpx", [2] = "overloaded",
                              [3] = "unknown_role" }) do
      local c = proto.response()
      c:add(end_request(1, 0, code))
      assert.equal(name, c:result().protocol_status)
    end
  end)
end)

describe("proto.get_values", function()
  it("asks on id 0 with empty values", function()
    local rec = records_of(proto.get_values({ "FCGI_MAX_CONNS", "FCGI_MPXS_CONNS" }))[1]
    assert.equal(proto.GET_VALUES, rec.type)
    assert.equal(0, rec.id)
    assert.same({ { "FCGI_MAX_CONNS", "" }, { "FCGI_MPXS_CONNS", "" } },
                proto.decode_params(rec.content))
  end)

  it("round-trips through a GET_VALUES_RESULT", function()
    local rec = records_of(proto.get_values_result({ FCGI_MAX_CONNS = 100,
                                                     FCGI_MPXS_CONNS = "1" }))[1]
    assert.equal(proto.GET_VALUES_RESULT, rec.type)
    assert.equal(0, rec.id)
    assert.same({ FCGI_MAX_CONNS = "100", FCGI_MPXS_CONNS = "1" },
                proto.decode_get_values_result(rec.content))
  end)

  it("reports a truncated result", function()
    assert.same({ nil, "truncated pair" }, { proto.decode_get_values_result(char(5, 0) .. "AB") })
  end)
end)
