-- The FastCGI 1.0 record codec, client side: what a web server sends and how to read what the
-- application answers. Pure Lua 5.1/LuaJIT, no I/O: moonfcgi.client and the busted harness put
-- the bytes on a socket.
--
-- Section names in brackets refer to the FastCGI 1.0 specification.

local bit = require "bit"

local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local ipairs = ipairs
local error = error
local setmetatable = setmetatable
local math_floor = math.floor
local string_byte = string.byte
local string_char = string.char
local string_sub = string.sub
local string_rep = string.rep
local string_find = string.find
local string_match = string.match
local string_gmatch = string.gmatch
local string_lower = string.lower
local table_concat = table.concat
local table_sort = table.sort
local band = bit.band
local bor = bit.bor
local rshift = bit.rshift

local _M = { _VERSION = "0.1.0" }

-- [8. Types and Constants]
_M.VERSION_1 = 1
_M.BEGIN_REQUEST = 1
_M.ABORT_REQUEST = 2
_M.END_REQUEST = 3
_M.PARAMS = 4
_M.STDIN = 5
_M.STDOUT = 6
_M.STDERR = 7
_M.DATA = 8
_M.GET_VALUES = 9
_M.GET_VALUES_RESULT = 10
_M.UNKNOWN_TYPE = 11

_M.type_names = {
  [1] = "begin_request", [2] = "abort_request", [3] = "end_request", [4] = "params",
  [5] = "stdin", [6] = "stdout", [7] = "stderr", [8] = "data", [9] = "get_values",
  [10] = "get_values_result", [11] = "unknown_type",
}

_M.KEEP_CONN = 1

_M.RESPONDER = 1
_M.AUTHORIZER = 2
_M.FILTER = 3
_M.roles = { responder = 1, authorizer = 2, filter = 3 }

_M.REQUEST_COMPLETE = 0
_M.CANT_MPX_CONN = 1
_M.OVERLOADED = 2
_M.UNKNOWN_ROLE = 3
_M.protocol_status_names = { [0] = "complete", [1] = "cant_mpx", [2] = "overloaded",
                             [3] = "unknown_role" }

_M.HEADER_LEN = 8
_M.MAX_CONTENT = 65535
-- The largest multiple of 8 that fits in contentLength: content of this size needs no padding,
-- so content + padding never exceeds 65535.
_M.DEFAULT_CHUNK = 65528

local BEGIN_REQUEST, END_REQUEST = 1, 3
local PARAMS, STDIN, STDOUT, STDERR, DATA = 4, 5, 6, 7, 8
local GET_VALUES, GET_VALUES_RESULT = 9, 10
local DEFAULT_CHUNK = 65528

local paddings = {}
for i = 0, 7 do
  paddings[i] = string_rep("\0", i)
end

local function is_int(n, lo, hi)
  return type(n) == "number" and n >= lo and n <= hi and n == math_floor(n)
end

-- The header and padding of one record, without argument checks: callers have checked.
local function raw_record(rtype, id, content, padding_len)
  local len = #content
  if padding_len == nil then
    padding_len = band(-len, 7)
  end
  local pad = paddings[padding_len] or string_rep("\0", padding_len)
  return string_char(1, rtype, rshift(id, 8), band(id, 255), rshift(len, 8), band(len, 255),
                     padding_len, 0) .. content .. pad
end

local function check_type_id(rtype, id, level)
  if not is_int(rtype, 0, 255) then
    error("record type must be an integer in 0..255", level + 1)
  end
  if not is_int(id, 0, 65535) then
    error("request id must be an integer in 0..65535", level + 1)
  end
end

-- One record [3.3]: 8-byte header, content, padding (zeros). The default padding aligns the
-- content to 8 bytes.
function _M.record(rtype, id, content, padding_len)
  check_type_id(rtype, id, 2)
  if content == nil then
    content = ""
  elseif type(content) ~= "string" then
    error("record content must be a string", 2)
  end
  if #content > 65535 then
    error("record content longer than 65535 bytes", 2)
  end
  if padding_len ~= nil and not is_int(padding_len, 0, 255) then
    error("padding length must be an integer in 0..255", 2)
  end
  return raw_record(rtype, id, content, padding_len)
end

local function append_chunks(out, n, rtype, id, s, chunk)
  local len = #s
  if len <= chunk then
    n = n + 1
    out[n] = raw_record(rtype, id, s)
    return n
  end
  for off = 1, len, chunk do
    n = n + 1
    out[n] = raw_record(rtype, id, string_sub(s, off, off + chunk - 1))
  end
  return n
end

local function check_stream_args(rtype, id, data, chunk_size, level)
  check_type_id(rtype, id, level + 1)
  if chunk_size ~= nil and not is_int(chunk_size, 1, 65535) then
    error("chunk size must be an integer in 1..65535", level + 1)
  end
  local t = type(data)
  if t == "table" then
    for i = 1, #data do
      if type(data[i]) ~= "string" then
        error("stream data list element " .. i .. " is not a string", level + 1)
      end
    end
  elseif data ~= nil and t ~= "string" then
    error("stream data must be nil, a string or a list of strings", level + 1)
  end
end

local function append_stream(out, n, rtype, id, data, chunk)
  if type(data) == "string" then
    if #data > 0 then
      n = append_chunks(out, n, rtype, id, data, chunk)
    end
  elseif data ~= nil then
    -- Empty elements are skipped: an empty record would end the stream early [3.3].
    for i = 1, #data do
      local s = data[i]
      if #s > 0 then
        n = append_chunks(out, n, rtype, id, s, chunk)
      end
    end
  end
  n = n + 1
  out[n] = raw_record(rtype, id, "")
  return n
end

-- A stream [3.3]: the data in records of at most chunk_size content bytes, then the empty
-- record that ends it. data: nil or "" (only the terminator), a string, or a list of strings
-- (each non-empty element starts its own record).
function _M.stream(rtype, id, data, chunk_size)
  check_stream_args(rtype, id, data, chunk_size, 2)
  local out = {}
  append_stream(out, 0, rtype, id, data, chunk_size or DEFAULT_CHUNK)
  return table_concat(out)
end

local function role_number(role, level)
  if role == nil then
    return 1
  end
  if type(role) == "string" then
    local r = _M.roles[role]
    if not r then
      error("unknown role '" .. role .. "'", level + 1)
    end
    return r
  end
  if not is_int(role, 0, 65535) then
    error("role must be a role name or an integer in 0..65535", level + 1)
  end
  return role
end

-- FCGI_BEGIN_REQUEST [5.1]: role (16 bits), flags, 5 reserved bytes.
function _M.begin_request(id, role, keep_conn)
  check_type_id(BEGIN_REQUEST, id, 2)
  local r = role_number(role, 2)
  return raw_record(BEGIN_REQUEST, id, string_char(rshift(r, 8), band(r, 255),
                                                   keep_conn and 1 or 0, 0, 0, 0, 0, 0))
end

-- Returns role, flags, keep_conn of a BEGIN_REQUEST body, or nil, err.
function _M.decode_begin_request(content)
  if type(content) ~= "string" or #content < 8 then
    return nil, "short begin_request"
  end
  local r1, r2, flags = string_byte(content, 1, 3)
  return r1 * 256 + r2, flags, band(flags, 1) == 1
end

-- FCGI_END_REQUEST [5.5]: app status (32 bits), protocol status, 3 reserved bytes.
function _M.end_request(id, app_status, protocol_status)
  check_type_id(END_REQUEST, id, 2)
  app_status = app_status or 0
  protocol_status = protocol_status or 0
  if not is_int(app_status, 0, 4294967295) then
    error("app status must be an integer in 0..2^32-1", 2)
  end
  if not is_int(protocol_status, 0, 255) then
    error("protocol status must be an integer in 0..255", 2)
  end
  local hi = math_floor(app_status / 65536)
  local lo = app_status % 65536
  return raw_record(END_REQUEST, id, string_char(rshift(hi, 8), band(hi, 255), rshift(lo, 8),
                                                 band(lo, 255), protocol_status, 0, 0, 0))
end

-- Returns app_status, protocol_status (numbers) of an END_REQUEST body, or nil, err.
function _M.decode_end_request(content)
  if type(content) ~= "string" or #content < 8 then
    return nil, "short end_request"
  end
  local a, b, c, d, ps = string_byte(content, 1, 5)
  return ((a * 256 + b) * 256 + c) * 256 + d, ps
end

-- FCGI_ABORT_REQUEST [5.4]: an empty record.
function _M.abort_request(id)
  check_type_id(2, id, 2)
  return raw_record(2, id, "")
end

local function encode_length(n)
  if n < 128 then
    return string_char(n)
  end
  return string_char(bor(rshift(n, 24), 0x80), band(rshift(n, 16), 255),
                     band(rshift(n, 8), 255), band(n, 255))
end

local function pair(name, value, level)
  name = tostring(name)
  value = tostring(value)
  if #name > 0x7fffffff or #value > 0x7fffffff then
    error("name-value pair length above 2^31-1", level + 1)
  end
  return encode_length(#name) .. encode_length(#value) .. name .. value
end

-- One name-value pair [3.4]: each length in 1 byte below 128, else in 4 bytes with the top
-- bit set.
function _M.encode_pair(name, value)
  if name == nil or value == nil then
    error("encode_pair needs a name and a value", 2)
  end
  return pair(name, value, 2)
end

local function encode_params(params, level)
  if type(params) ~= "table" then
    error("params must be a table", level + 1)
  end
  local out = {}
  if params[1] ~= nil then
    for i, p in ipairs(params) do
      if type(p) ~= "table" or p[1] == nil or p[2] == nil then
        error("params list element " .. i .. " is not a {name, value} pair", level + 1)
      end
      out[i] = pair(p[1], p[2], level + 1)
    end
    return table_concat(out)
  end
  local names = {}
  local by_name = {}
  for k, v in pairs(params) do
    local name = tostring(k)
    names[#names + 1] = name
    by_name[name] = v
  end
  table_sort(names)
  for i = 1, #names do
    local name = names[i]
    out[i] = pair(name, by_name[name], level + 1)
  end
  return table_concat(out)
end

-- The bytes of a PARAMS stream's value. params: a map name -> value (emitted in sorted name
-- order so the output is deterministic) or a list of {name, value} (kept in order).
function _M.encode_params(params)
  return encode_params(params, 2)
end

local function read_length(s, pos, len)
  local b = string_byte(s, pos)
  if b == nil then
    return nil
  end
  if b < 128 then
    return b, pos + 1
  end
  if pos + 3 > len then
    return nil
  end
  local b1, b2, b3 = string_byte(s, pos + 1, pos + 3)
  return ((b - 128) * 256 + b1) * 65536 + b2 * 256 + b3, pos + 4
end

-- The list of {name, value} pairs in bytes, or nil, "truncated pair" when a length or a name
-- or value runs past the end.
function _M.decode_params(bytes)
  if type(bytes) ~= "string" then
    error("decode_params needs a string", 2)
  end
  local len = #bytes
  local pos = 1
  local out = {}
  local n = 0
  while pos <= len do
    local nlen, vlen
    nlen, pos = read_length(bytes, pos, len)
    if not nlen then
      return nil, "truncated pair"
    end
    vlen, pos = read_length(bytes, pos, len)
    if not vlen then
      return nil, "truncated pair"
    end
    -- Lengths are compared before anything is cut out of the string.
    if nlen > len - pos + 1 or vlen > len - pos + 1 - nlen then
      return nil, "truncated pair"
    end
    n = n + 1
    out[n] = { string_sub(bytes, pos, pos + nlen - 1),
               string_sub(bytes, pos + nlen, pos + nlen + vlen - 1) }
    pos = pos + nlen + vlen
  end
  return out
end

local function data_length(data)
  if type(data) == "string" then
    return #data
  end
  local total = 0
  if data ~= nil then
    for i = 1, #data do
      total = total + #data[i]
    end
  end
  return total
end

-- Adds FCGI_DATA_LENGTH and FCGI_DATA_LAST_MOD to a filter's params unless already present,
-- without touching the caller's table [6.4].
local function filter_params(params, data)
  local has_len, has_mod = false, false
  local list = params[1] ~= nil
  if list then
    for _, p in ipairs(params) do
      local name = type(p) == "table" and p[1]
      if name == "FCGI_DATA_LENGTH" then
        has_len = true
      elseif name == "FCGI_DATA_LAST_MOD" then
        has_mod = true
      end
    end
  else
    has_len = params.FCGI_DATA_LENGTH ~= nil
    has_mod = params.FCGI_DATA_LAST_MOD ~= nil
  end
  if has_len and has_mod then
    return params
  end
  local copy = {}
  for k, v in pairs(params) do
    copy[k] = v
  end
  local len = tostring(data_length(data))
  if list then
    if not has_len then
      copy[#copy + 1] = { "FCGI_DATA_LENGTH", len }
    end
    if not has_mod then
      copy[#copy + 1] = { "FCGI_DATA_LAST_MOD", "0" }
    end
  else
    if not has_len then
      copy.FCGI_DATA_LENGTH = len
    end
    if not has_mod then
      copy.FCGI_DATA_LAST_MOD = "0"
    end
  end
  return copy
end

-- A whole request as a web server sends it: BEGIN_REQUEST, the PARAMS stream, the STDIN
-- stream (left out when stdin is false, as Apache's mod_authnz_fcgi does), and for the filter
-- role the DATA stream.
-- opts: id (1), role ("responder"), keep_conn (true unless false), params (map or list),
-- stdin (string, list of strings, nil for an empty stream, false for none), data (filter),
-- params_chunk, stdin_chunk, data_chunk (record content sizes, default 65528).
function _M.request(opts)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    error("request options must be a table", 2)
  end
  local id = opts.id or 1
  check_type_id(BEGIN_REQUEST, id, 2)
  local role = role_number(opts.role, 2)
  local params = opts.params or {}
  if type(params) ~= "table" then
    error("params must be a table", 2)
  end
  local stdin = opts.stdin
  if stdin ~= false then
    check_stream_args(STDIN, id, stdin, opts.stdin_chunk, 2)
  end
  local is_filter = role == 3
  if is_filter then
    check_stream_args(DATA, id, opts.data, opts.data_chunk, 2)
    params = filter_params(params, opts.data)
  end
  check_stream_args(PARAMS, id, nil, opts.params_chunk, 2)

  local out = { _M.begin_request(id, role, opts.keep_conn ~= false) }
  local n = append_stream(out, 1, PARAMS, id, encode_params(params, 2),
                          opts.params_chunk or DEFAULT_CHUNK)
  if stdin ~= false then
    n = append_stream(out, n, STDIN, id, stdin, opts.stdin_chunk or DEFAULT_CHUNK)
  end
  if is_filter then
    append_stream(out, n, DATA, id, opts.data, opts.data_chunk or DEFAULT_CHUNK)
  end
  return table_concat(out)
end

-- FCGI_GET_VALUES [4.1]: a management record (id 0) asking for names with empty values.
function _M.get_values(names)
  if type(names) ~= "table" then
    error("get_values needs a list of names", 2)
  end
  local out = {}
  for i = 1, #names do
    out[i] = pair(names[i], "", 2)
  end
  local content = table_concat(out)
  if #content > 65535 then
    error("get_values content longer than 65535 bytes", 2)
  end
  return raw_record(GET_VALUES, 0, content)
end

-- FCGI_GET_VALUES_RESULT as an application sends it; values is a map or a list of pairs.
function _M.get_values_result(values)
  local content = encode_params(values, 2)
  if #content > 65535 then
    error("get_values_result content longer than 65535 bytes", 2)
  end
  return raw_record(GET_VALUES_RESULT, 0, content)
end

-- A GET_VALUES_RESULT body as a map name -> value, or nil, err.
function _M.decode_get_values_result(content)
  local list, err = _M.decode_params(content)
  if not list then
    return nil, err
  end
  local map = {}
  for i = 1, #list do
    map[list[i][1]] = list[i][2]
  end
  return map
end

-- The incremental record parser. Fed bytes are queued as they come; they are joined only when
-- the current record is complete, and what remains of the joined buffer is then shorter than
-- one record, so every byte is copied a bounded number of times whatever the split.
local Parser = {}
Parser.__index = Parser

function _M.parser()
  return setmetatable({ buf = "", pos = 1, chunks = {}, nchunks = 0, avail = 0 }, Parser)
end

function Parser:feed(bytes)
  if type(bytes) ~= "string" then
    error("feed needs a string", 2)
  end
  local len = #bytes
  if len > 0 then
    local n = self.nchunks + 1
    self.chunks[n] = bytes
    self.nchunks = n
    self.avail = self.avail + len
  end
end

-- Makes `need` bytes contiguous from self.pos, if that many are buffered.
local function ensure(self, need)
  if #self.buf - self.pos + 1 >= need then
    return true
  end
  if self.avail < need then
    return false
  end
  local chunks = self.chunks
  local n = self.nchunks
  if self.pos <= #self.buf then
    chunks[0] = string_sub(self.buf, self.pos)
    self.buf = table_concat(chunks, "", 0, n)
    chunks[0] = nil
  else
    self.buf = table_concat(chunks, "", 1, n)
  end
  for i = 1, n do
    chunks[i] = nil
  end
  self.nchunks = 0
  self.pos = 1
  return true
end

-- The next whole record as { version, type, id, content, padding_len }, nil when more bytes
-- are needed, or nil, "bad version". A bad version sticks: a broken stream is never
-- resynchronised.
function Parser:next()
  if self.err then
    return nil, self.err
  end
  if not ensure(self, 8) then
    return nil
  end
  local buf, pos = self.buf, self.pos
  local version, rtype, id1, id0, len1, len0, padding_len = string_byte(buf, pos, pos + 6)
  if version ~= 1 then
    self.err = "bad version"
    return nil, "bad version"
  end
  local len = len1 * 256 + len0
  local total = 8 + len + padding_len
  if not ensure(self, total) then
    return nil
  end
  buf, pos = self.buf, self.pos
  local content = len > 0 and string_sub(buf, pos + 8, pos + 7 + len) or ""
  pos = pos + total
  self.avail = self.avail - total
  if pos > #buf then
    self.buf = ""
    pos = 1
  end
  self.pos = pos
  return { version = version, type = rtype, id = id1 * 256 + id0, content = content,
           padding_len = padding_len }
end

-- Bytes fed and not yet returned as records.
function Parser:buffered()
  return self.avail
end

-- The CGI response in STDOUT [6.2]: the header block ends at the first blank line. Returns
-- status, headers, body. Headers are keyed by lower-case name; a repeated header becomes a
-- list. Status comes from the Status header, 200 when a header block has none; nil for empty
-- output or output without a header block (then all of it is the body).
function _M.parse_cgi(stdout)
  local headers = {}
  if stdout == nil or stdout == "" then
    return nil, headers, ""
  end
  local head, body
  if string_sub(stdout, 1, 2) == "\r\n" then
    head, body = "", string_sub(stdout, 3)
  elseif string_sub(stdout, 1, 1) == "\n" then
    head, body = "", string_sub(stdout, 2)
  else
    local crlf = string_find(stdout, "\r\n\r\n", 1, true)
    local lf = string_find(stdout, "\n\n", 1, true)
    if crlf and (not lf or crlf < lf) then
      head, body = string_sub(stdout, 1, crlf - 1), string_sub(stdout, crlf + 4)
    elseif lf then
      head, body = string_sub(stdout, 1, lf - 1), string_sub(stdout, lf + 2)
    else
      return nil, headers, stdout
    end
  end
  for line in string_gmatch(head .. "\n", "([^\n]*)\n") do
    local name, value = string_match(line, "^([^:]+):[ \t]*(.-)[ \t\r]*$")
    if name then
      name = string_lower(name)
      local old = headers[name]
      if old == nil then
        headers[name] = value
      elseif type(old) == "table" then
        old[#old + 1] = value
      else
        headers[name] = { old, value }
      end
    end
  end
  local status = 200
  local s = headers.status
  if s ~= nil then
    if type(s) == "table" then
      s = s[1]
    end
    status = tonumber(string_match(s, "^(%d%d%d)"))
  end
  return status, headers, body
end

-- The collector of one request's output records (STDOUT, STDERR, END_REQUEST).
local Response = {}
Response.__index = Response

function _M.response()
  return setmetatable({ out = {}, nout = 0, err = {}, nerr = 0, records = 0, done = false },
                      Response)
end

-- Returns true once END_REQUEST was seen.
function Response:add(record)
  if type(record) ~= "table" then
    error("add needs a record table", 2)
  end
  self.records = self.records + 1
  local rtype, content = record.type, record.content
  if rtype == STDOUT then
    if #content > 0 then
      self.nout = self.nout + 1
      self.out[self.nout] = content
    end
  elseif rtype == STDERR then
    if #content > 0 then
      self.nerr = self.nerr + 1
      self.err[self.nerr] = content
    end
  elseif rtype == END_REQUEST then
    if not self.done then
      self.app_status, self.protocol_status = _M.decode_end_request(content)
    end
    self.done = true
  end
  return self.done
end

-- { status, headers, body, stdout, stderr, app_status, protocol_status, records }. A
-- protocol status without a name is given as its number.
function Response:result()
  local stdout = table_concat(self.out, "", 1, self.nout)
  local status, headers, body = _M.parse_cgi(stdout)
  local ps = self.protocol_status
  return {
    status = status,
    headers = headers,
    body = body,
    stdout = stdout,
    stderr = table_concat(self.err, "", 1, self.nerr),
    app_status = self.app_status,
    protocol_status = ps and (_M.protocol_status_names[ps] or ps),
    records = self.records,
  }
end

return _M
