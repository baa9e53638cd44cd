-- lua-resty-string (Debian's lua-nginx-string, unmodified): its digests, random bytes and AES
-- reach libcrypto, and its to_hex/atoi reach ngx_hex_dump/ngx_atoi, through ffi.C.
local debian = require "spec.ngx.debian"

describe("lua-resty-string from Debian", function()
    local str, md5, sha1, sha224, sha256, sha384, sha512, random, aes

    setup(function()
        str, md5, sha1, sha224, sha256, sha384, sha512, random, aes = debian.require(
            "nginx.string", "nginx.md5", "nginx.sha1", "nginx.sha224", "nginx.sha256",
            "nginx.sha384", "nginx.sha512", "nginx.random", "nginx.aes")
    end)

    local function digest(mod, ...)
        local d = mod:new()
        for _, part in ipairs({ ... }) do
            assert.is_true(d:update(part))
        end
        return str.to_hex(d:final())
    end

    it("computes the FIPS 180 and RFC 1321 vectors for 'abc', fed in pieces", function()
        assert.equal("900150983cd24fb0d6963f7d28e17f72", digest(md5, "a", "bc"))
        assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", digest(sha1, "ab", "c"))
        assert.equal("23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
            digest(sha224, "abc"))
        assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            digest(sha256, "abc"))
        assert.equal("cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
            .. "8086072ba1e7cc2358baeca134c825a7", digest(sha384, "abc"))
        assert.equal("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            .. "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            digest(sha512, "a", "b", "c"))
    end)

    it("agrees with ngx.md5 and ngx.sha1_bin", function()
        local data = ("moonfcgi"):rep(1000)
        assert.equal(ngx.md5(data), digest(md5, data))
        assert.equal(str.to_hex(ngx.sha1_bin(data)), digest(sha1, data))
    end)

    it("to_hex and atoi run on the binary's ngx_hex_dump and ngx_atoi", function()
        assert.equal("00ff10", str.to_hex("\0\255\16"))
        assert.equal(12345, str.atoi("12345"))
        assert.equal(-1, str.atoi("12x"))
    end)

    it("draws random bytes, strong or not", function()
        local a, b = random.bytes(32), random.bytes(32, true)
        assert.equal(32, #a)
        assert.equal(32, #b)
        assert.are_not.equal(a, random.bytes(32))
    end)

    it("encrypts and decrypts with AES-256-CBC and a derived key", function()
        local a = assert(aes:new("secret", "salt1234", aes.cipher(256, "cbc"), aes.hash.sha512, 5))
        local enc = a:encrypt("hello, world")
        assert.equal(16, #enc)
        assert.equal("hello, world", a:decrypt(enc))
        local other = assert(aes:new("other", "salt1234", aes.cipher(256, "cbc"),
            aes.hash.sha512, 5))
        assert.are_not.equal("hello, world", other:decrypt(enc))
    end)

    it("encrypts with AES-128-CBC and an explicit key and iv, as openssl does", function()
        local key, iv = ("k"):rep(16), ("i"):rep(16)
        local a = assert(aes:new(key, nil, aes.cipher(128, "cbc"), { iv = iv }))
        local enc = a:encrypt("hello")
        local f = assert(io.popen("printf hello | openssl enc -aes-128-cbc -K "
            .. str.to_hex(key) .. " -iv " .. str.to_hex(iv) .. " | od -An -tx1 | tr -d ' \\n'"))
        local want = f:read("*a")
        f:close()
        assert.equal(want, str.to_hex(enc))
    end)
end)
