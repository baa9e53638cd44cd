-- lua-resty-lrucache (Debian's package, unmodified): both implementations, with expiry on
-- ngx.now().
local debian = require "spec.ngx.debian"
local moonfcgi = require "moonfcgi"

describe("lua-resty-lrucache from Debian", function()
    local lrucache, pureffi

    setup(function()
        lrucache, pureffi = debian.require("resty.lrucache", "resty.lrucache.pureffi")
    end)

    for _, impl in ipairs({ "resty.lrucache", "resty.lrucache.pureffi" }) do
        describe(impl, function()
            local function new(n)
                local mod = impl == "resty.lrucache" and lrucache or pureffi
                return assert(mod.new(n))
            end

            it("evicts the least recently used item past its size", function()
                local c = new(2)
                c:set("a", 1)
                c:set("b", 2)
                assert.equal(1, c:get("a"))
                c:set("c", 3)
                assert.is_nil(c:get("b"))
                assert.equal(1, c:get("a"))
                assert.equal(3, c:get("c"))
            end)

            it("expires items by ngx.now()", function()
                local c = new(4)
                c:set("k", "v", 0.05)
                assert.equal("v", c:get("k"))
                local deadline = ngx.now() + 2
                while ngx.now() < deadline and c:get("k") do
                    moonfcgi.sleep(0.02)
                    ngx.update_time()
                end
                local v, stale = c:get("k")
                assert.is_nil(v)
                assert.equal("v", stale)
            end)

            it("deletes and flushes", function()
                local c = new(4)
                c:set("a", 1)
                c:set("b", 2)
                c:delete("a")
                assert.is_nil(c:get("a"))
                c:flush_all()
                assert.is_nil(c:get("b"))
            end)
        end)
    end
end)
