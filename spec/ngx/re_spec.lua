-- ngx.re (cosocket.md section 5) against what OpenResty's README documents for ngx.re.match,
-- find, gmatch, sub and gsub: a table of patterns x subjects x options, each row with the
-- documented result, then the behaviours the table cannot show.
local re = require "moonfcgi.ngx.re"
require "moonfcgi.ngx"

-- { subject, regex, options, expected captures (nil: no match) }
local MATCH = {
    -- README examples
    { "hello, 1234", "[0-9]+", nil, { [0] = "1234" } },
    { "hello, 1234", "([0-9])[0-9]+", nil, { [0] = "1234", "1" } },
    { "hello, 1234", "([0-9])(?<remaining>[0-9]+)", nil,
      { [0] = "1234", "1", "234", remaining = "234" } },
    { "hello, world", "(world)|(hello)|(?<named>howdy)", nil,
      { [0] = "hello", false, "hello", false, named = false } },
    { "hello, world", [[(?<named>\w+), (?<named>\w+)]], "D",
      { [0] = "hello, world", "hello", "world", named = { "hello", "world" } } },
    { "hello, world", "no", nil, nil },
    -- i: caseless
    { "HELLO", "hello", "i", { [0] = "HELLO" } },
    { "HELLO", "hello", nil, nil },
    -- x: extended (white space and comments in the pattern are ignored)
    { "hello", "h e l  # letters\n lo", "x", { [0] = "hello" } },
    -- m: ^ and $ at line breaks
    { "one\ntwo", "^two$", "m", { [0] = "two" } },
    { "one\ntwo", "^two$", nil, nil },
    -- s: . matches a newline
    { "a\nb", "a.b", "s", { [0] = "a\nb" } },
    { "a\nb", "a.b", nil, nil },
    -- a: anchored at the start position
    { "hello, 1234", "[0-9]+", "a", nil },
    { "1234, hello", "[0-9]+", "a", { [0] = "1234" } },
    -- u and U: UTF-8 characters, not bytes
    { "h\xc3\xa9llo", "^h.l", "u", { [0] = "h\xc3\xa9l" } },
    { "h\xc3\xa9llo", "^h.l", "U", { [0] = "h\xc3\xa9l" } },
    { "h\xc3\xa9llo", "^h.l", nil, nil },
    -- J: JavaScript escapes
    { "A", [[\u0041]], "J", { [0] = "A" } },
    -- o and j change how, not what
    { "hello, 1234", "([0-9])[0-9]+", "jo", { [0] = "1234", "1" } },
    { "hello, 1234", "([0-9])[0-9]+", "o", { [0] = "1234", "1" } },
    { "hello, 1234", "([0-9])[0-9]+", "j", { [0] = "1234", "1" } },
    { "HELLO, 1234", "hello, ([0-9])", "ijo", { [0] = "HELLO, 1", "1" } },
}

-- { subject, regex, replace, options, newstr, n } for sub (first) and gsub (all)
local SUB = {
    { "hello, 1234", "([0-9])[0-9]", "[$0][$1]", nil, "hello, [12][1]34", 1 },
    { "hello, 1234", "[0-9]", "${0}00", nil, "hello, 100234", 1 },
    { "hello, 1234", "[0-9]", "$$", nil, "hello, $234", 1 },
    { "hello, 1234", "(?<d>[0-9])", "<${d}>", nil, "hello, <1>234", 1 },
    { "b", "(a)?b", "[$1]", nil, "[]", 1 },
    { "hello", "x", "y", nil, "hello", 0 },
}
local GSUB = {
    { "hello, world", "([a-z])[a-z]+", "[$0,$1]", "i", "[hello,h], [world,w]", 2 },
    { "hello, world", "o", "0", "jo", "hell0, w0rld", 2 },
    { "hello", "", "-", nil, "-h-e-l-l-o-", 6 },
    { "baaac", "a*", "-", nil, "-b--c-", 4 },
    { "abc", "x*", "-", nil, "-a-b-c-", 4 },
    { "h\xc3\xa9", "", "-", "u", "-h-\xc3\xa9-", 3 },
    { "", "", "x", nil, "x", 1 },
    { "hello", "x", "y", nil, "hello", 0 },
}

local function options_name(o)
    return o and ('"' .. o .. '"') or "none"
end

describe("ngx.re.match", function()
    for _, row in ipairs(MATCH) do
        local subj, regex, opts, want = row[1], row[2], row[3], row[4]
        it(("%q =~ /%s/ with options %s"):format(subj, regex, options_name(opts)), function()
            local m, err = re.match(subj, regex, opts)
            assert.is_nil(err)
            assert.same(want, m)
        end)
    end

    it("starts at ctx.pos and sets it past the match (README example)", function()
        local ctx = {}
        local m = re.match("1234, hello", "[0-9]+", "", ctx)
        assert.equal("1234", m[0])
        assert.equal(5, ctx.pos)
        ctx = { pos = 2 }
        m = re.match("1234, hello", "[0-9]+", "", ctx)
        assert.equal("234", m[0])
        assert.equal(5, ctx.pos)
    end)

    it("leaves ctx.pos alone when nothing matches", function()
        local ctx = { pos = 3 }
        assert.is_nil(re.match("1234", "x", nil, ctx))
        assert.equal(3, ctx.pos)
    end)

    it("fills and returns the res table it is given", function()
        local res = {}
        local m = re.match("hello, 1234", "([0-9])[0-9]+", nil, nil, res)
        assert.equal(res, m)
        assert.same({ [0] = "1234", "1" }, res)
    end)

    it("returns nil and the PCRE2 message for a bad pattern, never raising", function()
        local m, err = re.match("x", "(")
        assert.is_nil(m)
        assert.equal('pcre2_compile() failed: missing closing parenthesis in "("', err)
        m, err = re.match("x", "a)b")
        assert.is_nil(m)
        assert.equal('pcre2_compile() failed: unmatched closing parenthesis in "a)b" at ")b"',
            err)
    end)

    it("returns nil, 'unknown flag' for an option it does not know", function()
        for _, o in ipairs({ "d", "z", "iz", "g" }) do
            local m, err = re.match("x", "x", o)
            assert.is_nil(m)
            assert.matches('^unknown flag "."', err)
        end
    end)

    it("returns nil and an error for a subject that is not UTF-8 under u", function()
        local m, err = re.match("\xff", ".", "u")
        assert.is_nil(m)
        assert.matches("^pcre_exec%(%) failed: %-%d+ %(UTF%-8 error", err)
    end)

    it("reports a runaway backtrack as an error, not a hang", function()
        local m, err = re.match(("a"):rep(30) .. "!", [[^(\w+\s?)*$]])
        assert.is_nil(m)
        assert.matches("match limit", err)
    end)

    it("compiles a pattern once with o, keeping a bounded per-worker cache", function()
        re.flush()
        local max = re.cache_max
        re.cache_max = 5
        for i = 1, 3 do
            re.match("x", "x", "o")
        end
        assert.equal(1, re.cache_size())
        for i = 1, 20 do
            assert.equal("x" .. i, re.match("x" .. i, "x" .. i, "o")[0])
        end
        assert.equal(5, re.cache_size())
        re.match("y", "y") -- without o nothing is kept
        assert.equal(5, re.cache_size())
        re.cache_max = max
        re.flush()
    end)

    it("is ngx.re.match in the ngx global", function()
        assert.equal(re.match, ngx.re.match)
    end)
end)

describe("ngx.re.find", function()
    it("returns the 1-based from and to of the match (README example)", function()
        assert.same({ 8, 11 }, { re.find("hello, 1234", "([0-9]+)", "jo") })
    end)

    it("returns a group's bounds with nth (README example)", function()
        assert.same({ 9, 11 }, { re.find("hello, 1234", "([0-9])([0-9]+)", "jo", nil, 2) })
    end)

    it("returns nil for a group that did not take part, and an error past the groups",
       function()
        assert.same({}, { re.find("b", "(a)?b", nil, nil, 1) })
        assert.same({ nil, nil, "nth out of bound" }, { re.find("b", "(a)?b", nil, nil, 2) })
    end)

    it("honours ctx.pos", function()
        local ctx = { pos = 3 }
        assert.same({ 4, 6 }, { re.find("abcabc", "abc", nil, ctx) })
        assert.equal(7, ctx.pos)
    end)

    it("returns nil, nil, err for a bad pattern", function()
        local from, to, err = re.find("x", "[")
        assert.is_nil(from)
        assert.is_nil(to)
        assert.matches("^pcre2_compile%(%) failed: missing terminating %]", err)
    end)
end)

describe("ngx.re.gmatch", function()
    local function all(it)
        local out = {}
        while true do
            local m, err = it()
            assert.is_nil(err)
            if not m then
                return out
            end
            out[#out + 1] = m[0]
        end
    end

    it("iterates over every match (README example)", function()
        local it = assert(re.gmatch("hello, world!", "([a-z]+)", "i"))
        local m = it()
        assert.same({ [0] = "hello", "hello" }, m)
        m = it()
        assert.same({ [0] = "world", "world" }, m)
        assert.is_nil(it())
        assert.is_nil(it())
    end)

    it("returns empty matches once per position", function()
        assert.same({ "", "", "", "", "", "" }, all(re.gmatch("hello", "a*")))
        assert.same({ "", "aaa", "", "" }, all(re.gmatch("baaac", "a*")))
    end)

    it("works as a for-in iterator with named captures", function()
        local got = {}
        for m in re.gmatch("a=1, b=2", [[(?<k>\w)=(?<v>\d)]]) do
            got[#got + 1] = m.k .. m.v
        end
        assert.same({ "a1", "b2" }, got)
    end)

    it("returns nil, err for a bad pattern", function()
        local it, err = re.gmatch("x", "(?<")
        assert.is_nil(it)
        assert.matches("^pcre2_compile%(%) failed", err)
    end)
end)

describe("ngx.re.sub", function()
    for _, row in ipairs(SUB) do
        it(("%q: /%s/ -> %q"):format(row[1], row[2], row[3]), function()
            assert.same({ row[5], row[6] }, { re.sub(row[1], row[2], row[3], row[4]) })
        end)
    end

    it("calls a function replacement with the captures (README example)", function()
        local s, n = re.sub("hello, 1234", "([0-9])[0-9]", function(m)
            return "[" .. m[0] .. "][" .. m[1] .. "]"
        end)
        assert.equal("hello, [12][1]34", s)
        assert.equal(1, n)
    end)

    it("refuses a template with a bare $", function()
        assert.same({ nil, nil, "failed to compile the replacement template" },
            { re.sub("hello, 1234", "[0-9]", "$") })
        assert.same({ nil, nil, "failed to compile the replacement template" },
            { re.sub("hello", "l", "${") })
    end)

    it("returns nil, nil, err for a bad pattern or flag", function()
        local s, n, err = re.sub("x", "(", "y")
        assert.is_nil(s)
        assert.is_nil(n)
        assert.matches("^pcre2_compile%(%) failed", err)
        s, n, err = re.sub("x", "x", "y", "q")
        assert.is_nil(s)
        assert.equal('unknown flag "q" (flags "q")', err)
    end)
end)

describe("ngx.re.gsub", function()
    for _, row in ipairs(GSUB) do
        it(("%q: /%s/g -> %q with options %s"):format(row[1], row[2], row[3],
            options_name(row[4])), function()
            assert.same({ row[5], row[6] }, { re.gsub(row[1], row[2], row[3], row[4]) })
        end)
    end

    it("calls a function replacement for every match (README example)", function()
        local s, n = re.gsub("hello, world", "([a-z])[a-z]+", function(m)
            return "[" .. m[0] .. "," .. m[1] .. "]"
        end, "i")
        assert.equal("[hello,h], [world,w]", s)
        assert.equal(2, n)
    end)

    it("lets the replace function use the same cached pattern", function()
        local s = re.gsub("ab ab", "a(b)", function(m)
            return re.gsub(m[0], "a(b)", "<$1>", "o") .. m[1]
        end, "o")
        assert.equal("<b>b <b>b", s)
    end)

    it("replaces 10^5 matches in a 1 MiB subject", function()
        local unit = "abcdefghi,"
        local count = math.ceil(1024 * 1024 / #unit)
        local subj = unit:rep(count)
        local s, n = re.gsub(subj, ",", ";", "jo")
        assert.equal(count, n)
        assert.equal(#subj, #s)
        assert.equal(unit:gsub(",", ";"):rep(count), s)
        s, n = re.gsub(subj, "(?<c>,)", function(m)
            return m.c .. m.c
        end)
        assert.equal(count, n)
        assert.equal(#subj + count, #s)
    end)
end)
