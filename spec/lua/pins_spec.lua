-- The pins of large writes (lua/moonfcgi/runtime.lua): a string whose bytes a connection's
-- output references stays pinned until libevent has let go of every reference. Tokens are
-- reused slots tagged with a generation, so a release that comes late, or twice, for a string
-- already unpinned never unpins the newer string that took its slot.
local runtime = require "moonfcgi.runtime"
local request = require "moonfcgi.request"

describe("pin tokens", function()
    it("ignore a late release: the newer string in the same slot stays pinned", function()
        local base = runtime.pinned_count()
        local first = request.pin("first")
        request.pinned(first, 1)
        assert.is_true(runtime.release_pin(first))
        assert.equal(base, runtime.pinned_count())
        -- The next pin reuses the slot; the first string's token must not reach it.
        local second = request.pin("second")
        request.pinned(second, 2)
        assert.are_not.equal(first, second)
        assert.is_false(runtime.release_pin(first))
        assert.equal(base + 1, runtime.pinned_count())
        assert.is_true(runtime.release_pin(second))
        assert.equal(base + 1, runtime.pinned_count())
        assert.is_true(runtime.release_pin(second))
        assert.equal(base, runtime.pinned_count())
        -- One release too many, and one for a token never handed out: both ignored.
        assert.is_false(runtime.release_pin(second))
        assert.is_false(runtime.release_pin(second + 4294967296 * 7))
        assert.equal(base, runtime.pinned_count())
    end)

    it("that no reference was made for are unpinned at once, and a release after is ignored",
       function()
        local base = runtime.pinned_count()
        local t = request.pin("unused")
        request.pinned(t, 0)
        assert.equal(base, runtime.pinned_count())
        local other = request.pin("other")
        request.pinned(other, 1)
        assert.is_false(runtime.release_pin(t))
        assert.equal(base + 1, runtime.pinned_count())
        assert.is_true(runtime.release_pin(other))
        assert.equal(base, runtime.pinned_count())
    end)
end)
