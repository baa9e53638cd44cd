-- Loaded by `moonfcgi --check` (spec/ngx/codec_spec.lua): its top level fails unless the
-- binary itself exports what pure-Lua OpenResty libraries call through ffi.C.
local ffi = require "ffi"

ffi.cdef [[
unsigned char *mf_app_hex_dump(unsigned char *dst, const unsigned char *src, size_t len)
    __asm__("ngx_hex_dump");
intptr_t mf_app_atoi(const unsigned char *line, size_t n) __asm__("ngx_atoi");
const void *mf_app_EVP_sha256(void) __asm__("EVP_sha256");
int mf_app_RAND_bytes(unsigned char *buf, int num) __asm__("RAND_bytes");
int mf_app_pcre2_config(uint32_t what, void *where) __asm__("pcre2_config_8");
]]

assert(ffi.C.mf_ffi_version, "not running inside the moonfcgi binary")
local out = ffi.new("unsigned char[4]")
ffi.C.mf_app_hex_dump(out, "\1\255", 2)
assert(ffi.string(out, 4) == "01ff", "ngx_hex_dump")
assert(ffi.C.mf_app_atoi("42", 2) == 42, "ngx_atoi")
assert(ffi.C.mf_app_EVP_sha256() ~= nil, "EVP_sha256")
assert(ffi.C.mf_app_RAND_bytes(out, 4) == 1, "RAND_bytes")
assert(ffi.C.mf_app_pcre2_config(1, out) == 0, "pcre2_config_8")
assert(ngx and ngx.md5("abc") == "900150983cd24fb0d6963f7d28e17f72", "ngx.md5")

return function()
end
