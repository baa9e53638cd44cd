-- examples/auth.lua, driven through the real core with real FastCGI records.
local test = require "moonfcgi.test"

local APP = "examples/auth.lua"

-- Credentials of the example's tables, base64-encoded with coreutils' base64.
local ALICE = "YWxpY2U6d29uZGVybGFuZA==" -- alice:wonderland
local BOB = "Ym9iOmJ1aWxkZXI=" -- bob:builder
local ALICE_WRONG = "YWxpY2U6d29uZGVybGFuZQ==" -- alice:wonderlane
local NOBODY = "bm9ib2R5OndvbmRlcmxhbmQ=" -- nobody:wonderland
local ALICE_TOKEN = "7f3c9a1e-alice"

local CHALLENGE = 'Basic realm="moonfcgi"'

describe("the authorizer example", function()
    local app

    setup(function()
        app = test.load(APP)
    end)

    teardown(function()
        app:close()
    end)

    -- An authorizer request as Apache's mod_authnz_fcgi sends it: params and no STDIN at all.
    local function authorize(authorization, uri, stdin)
        local res = assert(app:request{
            role = "authorizer",
            params = {
                REQUEST_METHOD = "GET",
                REQUEST_URI = uri or "/private/report",
                HTTP_AUTHORIZATION = authorization,
            },
            stdin = stdin == nil and false or stdin,
        })
        assert.equal("complete", res.protocol_status)
        assert.equal(0, res.app_status)
        return res
    end

    local function assert_granted(res, user, role)
        assert.equal(200, res.status)
        assert.equal(user, res.headers["variable-user"])
        assert.equal(role, res.headers["variable-role"])
    end

    local function assert_challenged(res)
        assert.equal(401, res.status)
        assert.equal(CHALLENGE, res.headers["www-authenticate"])
        assert.is_nil(res.headers["variable-user"])
        assert.is_nil(res.headers["variable-role"])
        assert.equal("authentication required\n", res.body)
    end

    describe("with a bearer token", function()
        it("grants a known token with 200 and the USER and ROLE variables", function()
            assert_granted(authorize("Bearer " .. ALICE_TOKEN), "alice", "admin")
            assert_granted(authorize("Bearer 0b5d2e84-bob"), "bob", "user")
        end)

        it("takes the scheme name in any case", function()
            assert_granted(authorize("bearer " .. ALICE_TOKEN), "alice", "admin")
            assert_granted(authorize("BEARER " .. ALICE_TOKEN), "alice", "admin")
        end)

        it("denies an unknown token with 401 and a Basic challenge", function()
            assert_challenged(authorize("Bearer 7f3c9a1e-alicf"))
            assert_challenged(authorize("Bearer"))
        end)
    end)

    describe("with HTTP Basic credentials", function()
        it("grants a known user and password with 200 and the USER and ROLE variables", function()
            assert_granted(authorize("Basic " .. ALICE), "alice", "admin")
            assert_granted(authorize("Basic " .. BOB), "bob", "user")
        end)

        it("decodes base64 without its padding too", function()
            assert_granted(authorize("Basic " .. ALICE:gsub("=", "")), "alice", "admin")
            assert_granted(authorize("Basic " .. BOB:gsub("=", "")), "bob", "user")
        end)

        it("denies a wrong password with 401", function()
            assert_challenged(authorize("Basic " .. ALICE_WRONG))
        end)

        it("denies an unknown user with 401", function()
            assert_challenged(authorize("Basic " .. NOBODY))
        end)

        it("denies malformed credentials with 401", function()
            assert_challenged(authorize("Basic !!!!"))
            assert_challenged(authorize("Basic YWxpY2U")) -- "alice", no colon
            assert_challenged(authorize("Basic Y")) -- not base64 at all: 1 character
            assert_challenged(authorize("Basic " .. ALICE .. " extra"))
        end)

        it("denies a token given as Basic and a password given as Bearer", function()
            assert_challenged(authorize("Basic " .. ALICE_TOKEN))
            assert_challenged(authorize("Bearer " .. ALICE))
        end)
    end)

    describe("without usable credentials", function()
        it("denies a request without an Authorization header with 401 and a challenge", function()
            local res = authorize(nil)
            assert_challenged(res)
            assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
        end)

        it("denies another scheme with 401", function()
            assert_challenged(authorize('Digest username="alice"'))
        end)
    end)

    describe("roles", function()
        it("denies a known user without the admin role under /admin with 403", function()
            local res = authorize("Basic " .. BOB, "/admin/users?page=2")
            assert.equal(403, res.status)
            assert.is_nil(res.headers["www-authenticate"])
            assert.is_nil(res.headers["variable-user"])
            assert.equal("forbidden\n", res.body)
            assert.equal(403, authorize("Bearer 0b5d2e84-bob", "/admin").status)
        end)

        it("grants an admin under /admin", function()
            assert_granted(authorize("Basic " .. ALICE, "/admin/users"), "alice", "admin")
        end)

        it("lets any known user into paths that only begin like /admin", function()
            assert_granted(authorize("Basic " .. BOB, "/administration"), "bob", "user")
        end)

        it("asks an unknown user under /admin to authenticate rather than forbidding", function()
            assert_challenged(authorize(nil, "/admin/users"))
        end)
    end)

    describe("STDIN", function()
        it("needs none at all, as Apache's mod_authnz_fcgi sends none", function()
            assert_granted(authorize("Basic " .. ALICE, nil, false), "alice", "admin")
            assert_challenged(authorize(nil, nil, false))
        end)

        it("answers the same to an empty STDIN, as lighttpd sends", function()
            assert_granted(authorize("Basic " .. ALICE, nil, ""), "alice", "admin")
            assert_challenged(authorize("Basic " .. ALICE_WRONG, nil, ""))
        end)
    end)

    it("answers a responder request with FCGI_UNKNOWN_ROLE", function()
        local res = assert(app:request{
            role = "responder",
            params = { REQUEST_METHOD = "GET", REQUEST_URI = "/" },
            stdin = "",
        })
        assert.equal("unknown_role", res.protocol_status)
        assert.equal("", res.stdout)
    end)
end)
