-- examples/filter.lua, driven through the real core with real FastCGI records.
local test = require "moonfcgi.test"

local APP = "examples/filter.lua"

local HEAD = "<!DOCTYPE html>\n<title>/notes.txt</title>\n<pre>\n"
local TAIL = "</pre>\n"

describe("the filter example", function()
    local app

    setup(function()
        app = test.load(APP)
    end)

    teardown(function()
        app:close()
    end)

    -- A filter request for /notes.txt; moonfcgi.test adds FCGI_DATA_LENGTH and
    -- FCGI_DATA_LAST_MOD (0) to the params unless they are given.
    local function filter(data, extra, opts)
        local params = { REQUEST_METHOD = "GET", REQUEST_URI = "/notes.txt" }
        for k, v in pairs(extra or {}) do
            params[k] = v
        end
        local req = { role = "filter", params = params, stdin = "", data = data }
        for k, v in pairs(opts or {}) do
            req[k] = v
        end
        local res = assert(app:request(req))
        assert.equal("complete", res.protocol_status)
        assert.equal(0, res.app_status)
        return res
    end

    it("renders data given as one string as an HTML page of numbered lines", function()
        local res = filter("first line\nsecond line\n")
        assert.equal(200, res.status)
        assert.equal("text/html; charset=utf-8", res.headers["content-type"])
        assert.equal(HEAD .. "    1  first line\n    2  second line\n" .. TAIL, res.body)
    end)

    it("escapes HTML in the file and in the path", function()
        local res = filter('<b>"fish" & chips</b>\n', { REQUEST_URI = "/a<b>.txt?x=1" })
        assert.equal("<!DOCTYPE html>\n<title>/a&lt;b&gt;.txt</title>\n<pre>\n"
            .. "    1  &lt;b&gt;&quot;fish&quot; &amp; chips&lt;/b&gt;\n" .. TAIL, res.body)
    end)

    it("gives the same page for data that arrives in chunks cutting lines apart", function()
        local whole = "alpha\nbeta\ngamma\ndelta"
        local expected = HEAD .. "    1  alpha\n    2  beta\n    3  gamma\n    4  delta\n" .. TAIL
        assert.equal(expected, filter(whole).body)
        assert.equal(expected, filter({ "al", "pha\nbe", "", "ta\n", "gamma\nd", "elta" }).body)
        assert.equal(expected, filter(whole, nil, { data_chunk = 3 }).body)
    end)

    it("numbers a last line without a newline, and keeps empty lines", function()
        assert.equal(HEAD .. "    1  a\n    2  \n    3  \n    4  b\n" .. TAIL,
            filter("a\n\n\nb").body)
    end)

    it("takes CRLF line ends as line ends", function()
        assert.equal(HEAD .. "    1  one\n    2  two\n" .. TAIL, filter("one\r\ntwo\r\n").body)
    end)

    it("renders empty data as an empty listing", function()
        local res = filter("")
        assert.equal(200, res.status)
        assert.equal(HEAD .. TAIL, res.body)
        assert.equal("", res.stderr)
        assert.equal(HEAD .. TAIL, filter({}).body)
    end)

    it("streams a large file through in chunks", function()
        local lines = {}
        for i = 1, 20000 do
            lines[i] = ("line %d %s"):format(i, ("x"):rep(i % 50))
        end
        local res = filter(table.concat(lines, "\n") .. "\n", nil, { data_chunk = 4096 })
        assert.equal(200, res.status)
        local n = select(2, res.body:gsub("\n", "\n"))
        assert.equal(20000 + 4, n)
        assert.truthy(res.body:find("\n    1  line 1 x\n", 1, true))
        assert.truthy(res.body:find("\n20000  line 20000 \n" .. TAIL, 1, true))
    end)

    describe("FCGI_DATA_LENGTH", function()
        it("is sent with the data, and the whole file is read", function()
            local res = filter("abc\ndef\n", nil, { data_chunk = 2 })
            assert.equal(HEAD .. "    1  abc\n    2  def\n" .. TAIL, res.body)
        end)

        it("bounds what is read: data past it is ignored", function()
            local res = filter("abc\ndef\n", { FCGI_DATA_LENGTH = "6" })
            assert.equal(HEAD .. "    1  abc\n    2  de\n" .. TAIL, res.body)
            res = filter("abc\ndef\n", { FCGI_DATA_LENGTH = "0" })
            assert.equal(HEAD .. TAIL, res.body)
        end)

        it("logs to FCGI_STDERR when the data ends short of it", function()
            local res = filter("abc\n", { FCGI_DATA_LENGTH = "10" })
            assert.equal(200, res.status)
            assert.equal(HEAD .. "    1  abc\n" .. TAIL, res.body)
            assert.equal("FCGI_DATA ended 6 bytes short of FCGI_DATA_LENGTH\n", res.stderr)
        end)
    end)

    it("sends FCGI_DATA_LAST_MOD as Last-Modified", function()
        local res = filter("x\n", { FCGI_DATA_LAST_MOD = "1700000000" })
        assert.equal("Tue, 14 Nov 2023 22:13:20 GMT", res.headers["last-modified"])
        assert.is_nil(filter("x\n").headers["last-modified"]) -- 0: unknown
    end)

    it("answers a responder request with FCGI_UNKNOWN_ROLE", function()
        local res = assert(app:request{
            role = "responder",
            params = { REQUEST_METHOD = "GET", REQUEST_URI = "/notes.txt" },
            stdin = "",
        })
        assert.equal("unknown_role", res.protocol_status)
    end)
end)
