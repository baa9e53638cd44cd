-- The codecs and digests of the ngx layer (cosocket.md section 5): base64, URI escaping,
-- query arguments, md5/sha1/hmac-sha1 through OpenSSL's libcrypto, crc32, quote_sql_str.
-- The byte codecs are C (src/ngx.c); arguments are coerced as OpenResty does (nil is "",
-- other values go through tostring).
local ffi = require "ffi"
local core = require "moonfcgi.core"

local ffi_new, ffi_string = ffi.new, ffi.string
local type, tostring, tonumber, pairs, error, pcall = type, tostring, tonumber, pairs, error, pcall
local floor = math.floor
local concat = table.concat
local find, sub = string.find, string.sub

local _M = {}

-- Kept verbatim in step with the CDEF part of src/ngx.h (spec/lua/cdef_spec.lua checks it).
_M.cdef = [[
size_t mf_ffi_ngx_base64_encode(unsigned char *dst, const unsigned char *src, size_t len,
                                int no_padding);
int64_t mf_ffi_ngx_base64_decode(unsigned char *dst, const unsigned char *src, size_t len);
size_t mf_ffi_ngx_escape_uri_len(const unsigned char *src, size_t len, int type);
size_t mf_ffi_ngx_escape_uri(unsigned char *dst, const unsigned char *src, size_t len, int type);
size_t mf_ffi_ngx_unescape_uri(unsigned char *dst, const unsigned char *src, size_t len);
size_t mf_ffi_ngx_quote_sql_len(const unsigned char *src, size_t len);
size_t mf_ffi_ngx_quote_sql(unsigned char *dst, const unsigned char *src, size_t len);
uint32_t mf_ffi_ngx_crc32(const unsigned char *src, size_t len);
]]

-- libcrypto, and src/ngx.c's ngx_hex_dump, under names of our own (asm labels):
-- lua-resty-string declares EVP_md5, ngx_hex_dump and friends itself, and LuaJIT refuses a
-- second declaration of the same name.
local crypto_cdef = [[
struct mf_codec_loaded { int unused; };
const void *mf_codec_EVP_md5(void) __asm__("EVP_md5");
const void *mf_codec_EVP_sha1(void) __asm__("EVP_sha1");
int mf_codec_EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
                        const void *type, void *impl) __asm__("EVP_Digest");
unsigned char *mf_codec_HMAC(const void *evp_md, const void *key, int key_len,
                             const unsigned char *d, size_t n, unsigned char *md,
                             unsigned int *md_len) __asm__("HMAC");
unsigned char *mf_codec_hex_dump(unsigned char *dst, const unsigned char *src, size_t len)
    __asm__("ngx_hex_dump");
]]

-- A second load of this file (busted reloads modules per spec file) must not redefine.
if not pcall(ffi.typeof, "struct mf_codec_loaded") then
    ffi.cdef(_M.cdef)
    ffi.cdef(crypto_cdef)
end

local C = core.C

local function crypto_in_process()
    return ffi.C.mf_codec_EVP_Digest
end
local CRYPTO = pcall(crypto_in_process) and ffi.C or ffi.load("libcrypto.so.3")

-- One scratch buffer, grown on demand: nothing here yields between filling and reading it.
local buf_size = 4096
local buf = ffi_new("unsigned char[?]", buf_size)

local function scratch(n)
    if n > buf_size then
        buf_size = n
        buf = ffi_new("unsigned char[?]", n)
    end
    return buf
end

local function str(s)
    if type(s) == "string" then
        return s
    end
    if s == nil then
        return ""
    end
    return tostring(s)
end

function _M.encode_base64(s, no_padding)
    s = str(s)
    local n = #s
    local b = scratch(4 * floor((n + 2) / 3) + 4)
    local len = C.mf_ffi_ngx_base64_encode(b, s, n, no_padding and 1 or 0)
    return ffi_string(b, len)
end

function _M.decode_base64(s)
    if type(s) ~= "string" then
        error("string argument only", 2)
    end
    local n = #s
    local b = scratch(3 * floor(n / 4) + 3)
    local len = C.mf_ffi_ngx_base64_decode(b, s, n)
    if len < 0 then
        return nil
    end
    return ffi_string(b, len)
end

local URI, URI_COMPONENT = 0, 2

local function escape(s, kind)
    local n = #s
    local need = tonumber(C.mf_ffi_ngx_escape_uri_len(s, n, kind))
    if need == n then
        return s
    end
    local b = scratch(need)
    return ffi_string(b, C.mf_ffi_ngx_escape_uri(b, s, n, kind))
end

-- type 2 (the default) escapes a URI component, type 0 a whole URI (OpenResty's two types).
function _M.escape_uri(s, kind)
    s = str(s)
    if kind == nil then
        kind = URI_COMPONENT
    elseif kind ~= URI and kind ~= URI_COMPONENT then
        error("bad argument #2 to 'escape_uri' (0 or 2 expected, got " .. tostring(kind) .. ")", 2)
    end
    return escape(s, kind)
end

local function unescape(s)
    if not find(s, "[%%+]") then
        return s
    end
    local n = #s
    local b = scratch(n)
    return ffi_string(b, C.mf_ffi_ngx_unescape_uri(b, s, n))
end

function _M.unescape_uri(s)
    return unescape(str(s))
end

function _M.quote_sql_str(s)
    s = str(s)
    local n = #s
    local b = scratch(tonumber(C.mf_ffi_ngx_quote_sql_len(s, n)))
    return ffi_string(b, C.mf_ffi_ngx_quote_sql(b, s, n))
end

function _M.crc32_short(s)
    s = str(s)
    return tonumber(C.mf_ffi_ngx_crc32(s, #s))
end
_M.crc32_long = _M.crc32_short

local md_len = ffi_new("unsigned int[1]")
local EVP_md5, EVP_sha1 = CRYPTO.mf_codec_EVP_md5(), CRYPTO.mf_codec_EVP_sha1()

local function digest(md, s)
    local b = scratch(64)
    if CRYPTO.mf_codec_EVP_Digest(s, #s, b, md_len, md, nil) ~= 1 then
        error("EVP_Digest() failed", 3)
    end
    return ffi_string(b, md_len[0])
end

local hex = ffi_new("unsigned char[128]")
local function to_hex(bin)
    C.mf_codec_hex_dump(hex, bin, #bin)
    return ffi_string(hex, 2 * #bin)
end

function _M.md5_bin(s)
    return digest(EVP_md5, str(s))
end

function _M.md5(s)
    return to_hex(digest(EVP_md5, str(s)))
end

function _M.sha1_bin(s)
    return digest(EVP_sha1, str(s))
end

function _M.hmac_sha1(key, s)
    key, s = str(key), str(s)
    local b = scratch(64)
    if CRYPTO.mf_codec_HMAC(EVP_sha1, key, #key, s, #s, b, md_len) == nil then
        error("HMAC() failed", 2)
    end
    return ffi_string(b, md_len[0])
end

-- Query arguments. encode_args takes a table: a true value gives a bare key, false leaves
-- the key out, a list repeats the key; keys and values are escaped as URI components.
local function arg_value(v, k)
    local tv = type(v)
    if tv == "string" then
        return escape(v, URI_COMPONENT)
    elseif tv == "number" then
        return escape(tostring(v), URI_COMPONENT)
    end
    error("attempt to use " .. tv .. " as query arg value (key " .. tostring(k) .. ")", 4)
end

function _M.encode_args(t)
    if type(t) ~= "table" then
        error("bad argument #1 to 'encode_args' (table expected, got " .. type(t) .. ")", 2)
    end
    local parts, n = {}, 0
    for k, v in pairs(t) do
        local tk = type(k)
        if tk ~= "string" and tk ~= "number" then
            error("attempt to use " .. tk .. " as query arg key", 2)
        end
        local key = escape(tostring(k), URI_COMPONENT)
        if type(v) == "table" then
            for i = 1, #v do
                local e = v[i]
                if e == true then
                    n = n + 1
                    parts[n] = key
                elseif e ~= false then
                    n = n + 1
                    parts[n] = key .. "=" .. arg_value(e, k)
                end
            end
        elseif v == true then
            n = n + 1
            parts[n] = key
        elseif v ~= false then
            n = n + 1
            parts[n] = key .. "=" .. arg_value(v, k)
        end
    end
    return concat(parts, "&", 1, n)
end

-- args, err = decode_args(str, max_args?): "a=1&b&c=" is { a = "1", b = true, c = "" };
-- a repeated key gives a list. At most max_args arguments (default 100, 0: no limit); past
-- it the table holds the first ones and err is "truncated".
function _M.decode_args(s, max_args)
    s = str(s)
    max_args = tonumber(max_args) or 100
    local t, count = {}, 0
    local i, n = 1, #s
    while i <= n do
        local amp = find(s, "&", i, true) or n + 1
        if amp > i then
            if max_args > 0 and count >= max_args then
                return t, "truncated"
            end
            local eq = find(s, "=", i, true)
            local k, v
            if eq and eq < amp then
                k, v = unescape(sub(s, i, eq - 1)), unescape(sub(s, eq + 1, amp - 1))
            else
                k, v = unescape(sub(s, i, amp - 1)), true
            end
            if k ~= "" then
                count = count + 1
                local old = t[k]
                if old == nil then
                    t[k] = v
                elseif type(old) == "table" then
                    old[#old + 1] = v
                else
                    t[k] = { old, v }
                end
            end
        end
        i = amp + 1
    end
    return t
end

return _M
