-- The codecs and digests of the ngx global (cosocket.md section 5), with OpenResty's
-- documented results and the standard test vectors of each digest; and the C symbols that
-- lua-resty-string reaches through ffi.C.
local ffi = require "ffi"
local process = require "spec.support.process"
require "moonfcgi.ngx"

local function hex(s)
    return (s:gsub(".", function(c)
        return ("%02x"):format(c:byte())
    end))
end

describe("ngx.encode_base64 and ngx.decode_base64", function()
    it("encode with padding, or without it on request", function()
        assert.equal("aGVsbG8=", ngx.encode_base64("hello"))
        assert.equal("aGVsbG8", ngx.encode_base64("hello", true))
        assert.equal("aGk=", ngx.encode_base64("hi"))
        assert.equal("aGk", ngx.encode_base64("hi", true))
        assert.equal("", ngx.encode_base64(""))
        assert.equal("", ngx.encode_base64(nil))
        assert.equal("MTIz", ngx.encode_base64(123))
    end)

    it("decode with or without padding, and refuse what is not base64", function()
        assert.equal("hello", ngx.decode_base64("aGVsbG8="))
        assert.equal("hello", ngx.decode_base64("aGVsbG8"))
        assert.equal("", ngx.decode_base64(""))
        assert.is_nil(ngx.decode_base64("a"))
        assert.is_nil(ngx.decode_base64("aGVs!G8="))
        local bytes = {}
        for i = 0, 255 do
            bytes[#bytes + 1] = string.char(i)
        end
        local all = table.concat(bytes)
        assert.equal(all, ngx.decode_base64(ngx.encode_base64(all)))
    end)

    it("raise for a decode argument that is not a string", function()
        assert.has_error(function()
            ngx.decode_base64(nil)
        end, "string argument only")
    end)
end)

describe("ngx.escape_uri and ngx.unescape_uri", function()
    it("escape a URI component by default: all but letters, digits and -._~", function()
        assert.equal("a%20b%2Fc%3Fd%23e%25f~g-h_i.j%2Bk%26%3D", ngx.escape_uri("a b/c?d#e%f~g-h_i.j+k&="))
        assert.equal("%C3%A9%00%FF", ngx.escape_uri("\xc3\xa9\0\xff"))
        assert.equal("", ngx.escape_uri(nil))
    end)

    it("escape a whole URI with type 0: space, #, %, ?, controls and bytes above 0x7e", function()
        assert.equal("/a%20b/c%3Fd%23e%25f~g&h=i+j", ngx.escape_uri("/a b/c?d#e%f~g&h=i+j", 0))
        assert.equal("%0A%7F%80", ngx.escape_uri("\n\x7f\x80", 0))
    end)

    it("unescape %XX and + (README example), keeping a broken escape as it is", function()
        assert.equal("b r56 7", ngx.unescape_uri("b%20r56+7"))
        assert.equal("%zz%4", ngx.unescape_uri("%zz%4"))
        assert.equal("\xc3\xa9", ngx.unescape_uri("%c3%A9"))
        assert.equal("plain", ngx.unescape_uri("plain"))
    end)

    it("refuse an escape type other than 0 and 2", function()
        assert.has_error(function()
            ngx.escape_uri("x", 1)
        end)
    end)
end)

describe("ngx.encode_args and ngx.decode_args", function()
    it("encode a table as a query string (README examples)", function()
        local s = ngx.encode_args({ foo = 3, ["b r"] = "d" })
        assert.is_true(s == "foo=3&b%20r=d" or s == "b%20r=d&foo=3", s)
        assert.equal("baz=32&baz=hello", ngx.encode_args({ baz = { 32, "hello" } }))
        assert.equal("foo", ngx.encode_args({ foo = true }))
        assert.equal("", ngx.encode_args({ foo = false }))
        assert.equal("a&a=1", ngx.encode_args({ a = { true, false, 1 } }))
    end)

    it("raise for a value that cannot be a query arg", function()
        assert.has_error(function()
            ngx.encode_args({ a = function() end })
        end)
    end)

    it("decode a query string into a table", function()
        assert.same({ foo = "3", ["b r"] = "d" }, ngx.decode_args("foo=3&b%20r=d"))
        assert.same({ a = { "1", "2" }, b = true, c = "", ["x y"] = "z w" },
            ngx.decode_args("a=1&b&c=&a=2&&x%20y=z+w"))
    end)

    it("stop at max_args (default 100; 0 for no limit) and say so", function()
        local t, err = ngx.decode_args("a&b&c", 2)
        assert.same({ a = true, b = true }, t)
        assert.equal("truncated", err)
        local many = ("k=v&"):rep(150)
        local _, e100 = ngx.decode_args(many)
        assert.equal("truncated", e100)
        local all, e0 = ngx.decode_args(many, 0)
        assert.is_nil(e0)
        assert.equal(150, #all.k)
    end)
end)

describe("the digests", function()
    it("ngx.md5 and ngx.md5_bin (RFC 1321 vectors)", function()
        assert.equal("d41d8cd98f00b204e9800998ecf8427e", ngx.md5(""))
        assert.equal("900150983cd24fb0d6963f7d28e17f72", ngx.md5("abc"))
        assert.equal("5d41402abc4b2a76b9719d911017c592", ngx.md5("hello"))
        assert.equal("900150983cd24fb0d6963f7d28e17f72", hex(ngx.md5_bin("abc")))
        assert.equal(16, #ngx.md5_bin("x"))
    end)

    it("ngx.sha1_bin (FIPS 180 vector)", function()
        assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", hex(ngx.sha1_bin("abc")))
    end)

    it("ngx.hmac_sha1 (RFC 2202 test case 2)", function()
        assert.equal("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            hex(ngx.hmac_sha1("Jefe", "what do ya want for nothing?")))
    end)

    it("ngx.crc32_short and ngx.crc32_long agree with zlib's CRC-32", function()
        assert.equal(0x414fa339, ngx.crc32_long("The quick brown fox jumps over the lazy dog"))
        assert.equal(0x414fa339, ngx.crc32_short("The quick brown fox jumps over the lazy dog"))
        assert.equal(0, ngx.crc32_short(""))
        assert.equal(907060870, ngx.crc32_short("hello"))
    end)
end)

describe("ngx.quote_sql_str", function()
    it("quotes as MySQL does", function()
        assert.equal([['a\'b\"c\\d\n\r\t\0\Z\b']], ngx.quote_sql_str("a'b\"c\\d\n\r\t\0\26\b"))
        assert.equal("''", ngx.quote_sql_str(""))
    end)
end)

describe("the C symbols of lua-resty-string", function()
    -- Our own names for them (asm labels), so that the package's own declarations, made by
    -- the resty.string specs in this same process, do not clash with these.
    pcall(ffi.cdef, [[
unsigned char *mf_spec_hex_dump(unsigned char *dst, const unsigned char *src, size_t len)
    __asm__("ngx_hex_dump");
intptr_t mf_spec_atoi(const unsigned char *line, size_t n) __asm__("ngx_atoi");
const void *mf_spec_EVP_sha256(void) __asm__("EVP_sha256");
int mf_spec_RAND_bytes(unsigned char *buf, int num) __asm__("RAND_bytes");
]])

    it("ngx_hex_dump and ngx_atoi are reachable through ffi.C, as nginx defines them", function()
        local out = ffi.new("unsigned char[8]")
        local p = ffi.C.mf_spec_hex_dump(out, "\1\171\255", 3)
        assert.equal(6, p - out)
        assert.equal("01abff", ffi.string(out, 6))
        assert.equal(1234, tonumber(ffi.C.mf_spec_atoi("1234", 4)))
        assert.equal(-1, tonumber(ffi.C.mf_spec_atoi("12a", 3)))
        assert.equal(-1, tonumber(ffi.C.mf_spec_atoi("", 0)))
        assert.equal(-1, tonumber(ffi.C.mf_spec_atoi("99999999999999999999", 20)))
    end)

    it("libcrypto's functions are reachable through ffi.C", function()
        assert.is_not_nil(ffi.C.mf_spec_EVP_sha256())
        local buf = ffi.new("unsigned char[16]")
        assert.equal(1, ffi.C.mf_spec_RAND_bytes(buf, 16))
    end)

    it("are exported by the moonfcgi binary too", function()
        local p = assert(process.spawn({ process.bin, "--check", "spec/ngx/apps/symbols.lua" }))
        local status = p:wait(10)
        local out = p:output()
        p:cleanup()
        assert.equal(0, status, out)
    end)
end)
