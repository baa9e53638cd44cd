-- examples/rest.lua, driven through the real core with real FastCGI records.
local test = require "moonfcgi.test"
local cjson = require "cjson"

local APP = "examples/rest.lua"

-- A request as nginx sends it with its stock fastcgi_params: SCRIPT_NAME is the whole path,
-- CONTENT_TYPE and CONTENT_LENGTH describe the body. extra overrides or adds params.
local function request(app, method, uri, body, extra)
    local params = {
        REQUEST_METHOD = method,
        REQUEST_URI = uri,
        SCRIPT_NAME = uri:match("^[^?]*"),
    }
    if body then
        params.CONTENT_TYPE = "application/json"
        params.CONTENT_LENGTH = tostring(#body)
    end
    for k, v in pairs(extra or {}) do
        params[k] = v
    end
    local res = assert(app:request{ params = params, stdin = body or "" })
    assert.equal("complete", res.protocol_status)
    assert.equal(0, res.app_status)
    return res
end

-- The decoded JSON body; every JSON answer must say it is one.
local function json(res)
    assert.equal("application/json", res.headers["content-type"])
    return cjson.decode(res.body)
end

local function create(app, name)
    local res = request(app, "POST", "/items", cjson.encode({ name = name }))
    assert.equal(201, res.status)
    return json(res)
end

describe("the REST example", function()
    local app

    before_each(function()
        app = test.load(APP)
    end)

    after_each(function()
        app:close()
    end)

    describe("GET /", function()
        it("describes the service", function()
            local res = request(app, "GET", "/")
            assert.equal(200, res.status)
            assert.same({ service = "moonfcgi rest example", items = "/items" }, json(res))
        end)

        it("answers other methods with 405 and Allow: GET", function()
            local res = request(app, "DELETE", "/")
            assert.equal(405, res.status)
            assert.equal("GET", res.headers.allow)
            assert.is_string(json(res).error)
        end)
    end)

    describe("GET /items", function()
        it("lists no items at first, as an empty JSON array", function()
            local res = request(app, "GET", "/items")
            assert.equal(200, res.status)
            assert.equal("[]", res.body:match("^%s*(.-)%s*$"))
            assert.same({}, json(res))
        end)

        it("lists the items sorted by id", function()
            -- Creations and deletions that leave the ids scattered in the store's table, where
            -- pairs() no longer meets them in order.
            local expected = {}
            for round = 0, 2 do
                for id = round * 20 + 1, round * 20 + 20 do
                    create(app, "item " .. id)
                end
                for id = round * 20 + 1, round * 20 + 20 do
                    if id % 7 ~= 0 then
                        assert.equal(204, request(app, "DELETE", "/items/" .. id).status)
                    else
                        expected[#expected + 1] = { id = id, name = "item " .. id }
                    end
                end
            end
            for id = 61, 70 do
                create(app, "item " .. id)
                expected[#expected + 1] = { id = id, name = "item " .. id }
            end
            assert.same(expected, json(request(app, "GET", "/items")))
        end)

        it("ignores the query string and a trailing slash", function()
            create(app, "one")
            assert.same({ { id = 1, name = "one" } }, json(request(app, "GET", "/items?page=2")))
            assert.same({ { id = 1, name = "one" } }, json(request(app, "GET", "/items/")))
        end)

        it("answers PUT with 405 and Allow: GET, POST", function()
            local res = request(app, "PUT", "/items", '{"name":"x"}')
            assert.equal(405, res.status)
            assert.equal("GET, POST", res.headers.allow)
            json(res)
        end)
    end)

    describe("POST /items", function()
        it("creates an item: 201, its Location and the item with its id", function()
            local res = request(app, "POST", "/items", '{"name":"first"}')
            assert.equal(201, res.status)
            assert.equal("/items/1", res.headers.location)
            assert.same({ id = 1, name = "first" }, json(res))

            res = request(app, "POST", "/items", '{"name":"second"}')
            assert.equal("/items/2", res.headers.location)
            assert.same({ id = 2, name = "second" }, json(res))
        end)

        it("keeps the object's other fields and chooses the id itself", function()
            local res = request(app, "POST", "/items", '{"name":"pen","id":99,"tags":["a","b"]}')
            assert.equal(201, res.status)
            assert.same({ id = 1, name = "pen", tags = { "a", "b" } }, json(res))
            assert.equal(200, request(app, "GET", "/items/1").status)
            assert.equal(404, request(app, "GET", "/items/99").status)
        end)

        it("accepts a JSON content type with parameters", function()
            local res = request(app, "POST", "/items", '{"name":"x"}',
                { CONTENT_TYPE = "Application/JSON; charset=utf-8" })
            assert.equal(201, res.status)
        end)

        it("answers malformed JSON with 400", function()
            local res = request(app, "POST", "/items", '{"name": "unfinished')
            assert.equal(400, res.status)
            assert.is_string(json(res).error)
            assert.same({}, json(request(app, "GET", "/items")))
        end)

        it("answers 400 when the name is missing, empty or not a string", function()
            for _, body in ipairs{ "{}", '{"title":"x"}', '{"name":""}', '{"name":42}',
                                   '{"name":null}', '["name"]', '"name"', "7" } do
                local res = request(app, "POST", "/items", body)
                assert.equal(400, res.status, body)
                assert.is_string(json(res).error)
            end
            assert.same({}, json(request(app, "GET", "/items")))
        end)

        it("answers a body that is not application/json with 415", function()
            local res = request(app, "POST", "/items", '{"name":"x"}',
                { CONTENT_TYPE = "text/plain" })
            assert.equal(415, res.status)
            assert.is_string(json(res).error)
            res = request(app, "POST", "/items", "name=x",
                { CONTENT_TYPE = "application/x-www-form-urlencoded" })
            assert.equal(415, res.status)
            assert.same({}, json(request(app, "GET", "/items")))
        end)

        it("answers a body without a content type with 415", function()
            local res = app:request{
                params = { REQUEST_METHOD = "POST", REQUEST_URI = "/items", CONTENT_LENGTH = "12" },
                stdin = '{"name":"x"}',
            }
            assert.equal(415, res.status)
            json(res)
        end)
    end)

    describe("with a small --max-body", function()
        local small

        before_each(function()
            small = test.load(APP, { max_body = 16 })
        end)

        after_each(function()
            small:close()
        end)

        it("accepts a body of exactly max_body bytes", function()
            local body = '{"name":"abcde"}'
            assert.equal(16, #body)
            local res = request(small, "POST", "/items", body)
            assert.equal(201, res.status)
            assert.same({ id = 1, name = "abcde" }, json(res))
        end)

        it("answers a body one byte past max_body with 413 and stores nothing", function()
            local body = '{"name":"abcdef"}'
            assert.equal(17, #body)
            local res = request(small, "POST", "/items", body)
            assert.equal(413, res.status)
            assert.is_string(json(res).error)
            res = request(small, "PUT", "/items/1", body)
            assert.equal(404, res.status) -- nothing was created
            assert.same({}, json(request(small, "GET", "/items")))
        end)

        it("answers a PUT past max_body with 413", function()
            request(small, "POST", "/items", '{"name":"a"}')
            local res = request(small, "PUT", "/items/1", '{"name":"abcdefgh"}')
            assert.equal(413, res.status)
            assert.same({ id = 1, name = "a" }, json(request(small, "GET", "/items/1")))
        end)
    end)

    describe("/items/ID", function()
        it("GET answers the item", function()
            create(app, "one")
            create(app, "two")
            local res = request(app, "GET", "/items/2")
            assert.equal(200, res.status)
            assert.same({ id = 2, name = "two" }, json(res))
        end)

        it("answers an unknown id with 404 for every method", function()
            create(app, "one")
            for _, method in ipairs{ "GET", "PUT", "PATCH", "DELETE" } do
                local body = (method == "PUT" or method == "PATCH") and '{"name":"x"}' or nil
                local res = request(app, method, "/items/42", body)
                assert.equal(404, res.status, method)
                assert.is_string(json(res).error)
            end
        end)

        it("PUT replaces the item: 200 and the new item", function()
            request(app, "POST", "/items", '{"name":"old","colour":"red"}')
            local res = request(app, "PUT", "/items/1", '{"name":"new","size":3}')
            assert.equal(200, res.status)
            assert.same({ id = 1, name = "new", size = 3 }, json(res))
            assert.same({ id = 1, name = "new", size = 3 }, json(request(app, "GET", "/items/1")))
        end)

        it("PUT answers 400 without a name, 400 to malformed JSON and 415 to text", function()
            create(app, "keep")
            assert.equal(400, request(app, "PUT", "/items/1", '{"size":3}').status)
            assert.equal(400, request(app, "PUT", "/items/1", "{").status)
            local res = request(app, "PUT", "/items/1", '{"name":"x"}',
                { CONTENT_TYPE = "text/plain" })
            assert.equal(415, res.status)
            assert.same({ id = 1, name = "keep" }, json(request(app, "GET", "/items/1")))
        end)

        it("PATCH changes only the fields given", function()
            request(app, "POST", "/items", '{"name":"pen","colour":"red"}')
            local res = request(app, "PATCH", "/items/1", '{"colour":"blue"}')
            assert.equal(200, res.status)
            assert.same({ id = 1, name = "pen", colour = "blue" }, json(res))
            res = request(app, "PATCH", "/items/1", '{"name":""}')
            assert.equal(400, res.status)
            assert.same({ id = 1, name = "pen", colour = "blue" },
                json(request(app, "GET", "/items/1")))
        end)

        it("DELETE removes the item: 204 and no body", function()
            create(app, "gone")
            local res = request(app, "DELETE", "/items/1")
            assert.equal(204, res.status)
            assert.equal("", res.body)
            assert.equal(404, request(app, "GET", "/items/1").status)
            assert.equal(404, request(app, "DELETE", "/items/1").status)
        end)

        it("answers POST with 405 and the methods it allows", function()
            create(app, "one")
            local res = request(app, "POST", "/items/1", '{"name":"x"}')
            assert.equal(405, res.status)
            assert.equal("GET, PUT, PATCH, DELETE", res.headers.allow)
            json(res)
        end)
    end)

    describe("unknown paths", function()
        it("are answered with 404 and a JSON error", function()
            create(app, "one")
            for _, uri in ipairs{ "/nothing", "/items/abc", "/items/1/more", "/itemsx",
                                  "/api/items" } do
                local res = request(app, "GET", uri)
                assert.equal(404, res.status, uri)
                assert.is_string(json(res).error)
            end
        end)
    end)

    describe("mounted under a prefix named by SCRIPT_NAME", function()
        local mount = { SCRIPT_NAME = "/api" }

        it("routes the path below the prefix and names it in links", function()
            assert.same({ service = "moonfcgi rest example", items = "/api/items" },
                json(request(app, "GET", "/api/", nil, mount)))
            local res = request(app, "POST", "/api/items", '{"name":"x"}', mount)
            assert.equal(201, res.status)
            assert.equal("/api/items/1", res.headers.location)
            res = request(app, "GET", "/api/items/1", nil, mount)
            assert.same({ id = 1, name = "x" }, json(res))
        end)
    end)

    it("goes through a whole create, read, update, delete cycle", function()
        local res = request(app, "POST", "/items", '{"name":"apple"}')
        assert.equal(201, res.status)
        local location = res.headers.location
        assert.equal("/items/1", location)
        create(app, "pear")

        assert.same({ id = 1, name = "apple" }, json(request(app, "GET", location)))
        res = request(app, "PUT", location, '{"name":"green apple"}')
        assert.equal(200, res.status)
        res = request(app, "PATCH", location, '{"ripe":true}')
        assert.same({ id = 1, name = "green apple", ripe = true }, json(res))
        assert.same({ { id = 1, name = "green apple", ripe = true }, { id = 2, name = "pear" } },
            json(request(app, "GET", "/items")))

        assert.equal(204, request(app, "DELETE", location).status)
        assert.equal(204, request(app, "DELETE", "/items/2").status)
        assert.same({}, json(request(app, "GET", "/items")))
        assert.equal(404, request(app, "GET", location).status)
        assert.equal(3, create(app, "cherry").id) -- ids are not reused
    end)
end)
