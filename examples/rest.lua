-- A small REST API over one in-memory resource, "items", with JSON in and out.
--
--   GET    /             a tiny index of the service
--   GET    /items        every item, sorted by id
--   POST   /items        creates an item from {"name": "..."}: 201, Location and the item
--   GET    /items/ID     one item
--   PUT    /items/ID     replaces an item ("name" required): 200 and the item
--   PATCH  /items/ID     changes the fields given: 200 and the item
--   DELETE /items/ID     removes an item: 204, no body
--
-- Errors are JSON too ({"error": "..."}): 404 unknown path or id, 405 wrong method (with an
-- Allow header), 400 malformed JSON or a missing "name", 413 a body past --max-body, 415 a
-- body that is not application/json.
--
--   moonfcgi --listen 127.0.0.1:9000 --workers 1 examples/rest.lua
--
-- The store is a plain Lua table: each worker process has its own, and a restart or a reload
-- starts it empty again. With more than one worker, clients see different lists; a real app
-- keeps its data in a database.
local cjson = require "cjson.safe" -- decode returns nil, err instead of raising

local type, pairs, tonumber, tostring = type, pairs, tonumber, tostring
local sort, concat = table.sort, table.concat
local json_encode, json_decode = cjson.encode, cjson.decode

local items = {} -- id -> item; an item is the client's JSON object plus its "id"
local next_id = 1

local function send_json(req, status, body)
    req:set_status(status)
    req:set_header("Content-Type", "application/json")
    req:write(body, "\n")
end

local function send(req, status, value)
    send_json(req, status, json_encode(value))
end

local function fail(req, status, message, allow)
    if allow then
        req:set_header("Allow", allow)
    end
    send(req, status, { error = message })
end

-- Reads the JSON object in the request body. Returns it, or nil after answering the error.
local function read_object(req)
    local mime = (req:header("Content-Type") or ""):match("^%s*([^;%s]*)"):lower()
    if mime ~= "application/json" then
        return fail(req, 415, "the body must be application/json")
    end
    local body, err = req:body()
    if not body then
        if err == "too large" then
            return fail(req, 413, "the body is too large")
        end
        return fail(req, 400, "cannot read the body: " .. err)
    end
    local doc = json_decode(body)
    if type(doc) ~= "table" then
        return fail(req, 400, "the body must be a JSON object")
    end
    return doc
end

local function valid_name(name)
    return type(name) == "string" and name ~= ""
end

-- The stored item for a client's object: its fields, with the id the server chose.
local function make_item(id, doc)
    local item = {}
    for k, v in pairs(doc) do
        item[k] = v
    end
    item.id = id
    return item
end

local function list_items(req)
    local list = {}
    for _, item in pairs(items) do
        list[#list + 1] = item
    end
    sort(list, function(a, b) return a.id < b.id end)
    -- Encoded one by one: lua-cjson would encode an empty list as {} rather than [].
    for i = 1, #list do
        list[i] = json_encode(list[i])
    end
    send_json(req, 200, "[" .. concat(list, ",") .. "]")
end

local function create_item(req, base)
    local doc = read_object(req)
    if not doc then
        return
    end
    if not valid_name(doc.name) then
        return fail(req, 400, '"name" must be a non-empty string')
    end
    local item = make_item(next_id, doc)
    items[next_id], next_id = item, next_id + 1
    req:set_header("Location", base .. "/items/" .. item.id)
    send(req, 201, item)
end

local function update_item(req, id, patch)
    local doc = read_object(req)
    if not doc then
        return
    end
    if patch then
        local merged = make_item(id, items[id])
        for k, v in pairs(doc) do
            merged[k] = v
        end
        doc = merged
    end
    if not valid_name(doc.name) then
        return fail(req, 400, '"name" must be a non-empty string')
    end
    items[id] = make_item(id, doc)
    send(req, 200, items[id])
end

local function item_route(req, method, id)
    if method ~= "GET" and method ~= "PUT" and method ~= "PATCH" and method ~= "DELETE" then
        return fail(req, 405, "method not allowed", "GET, PUT, PATCH, DELETE")
    end
    if not items[id] then
        return fail(req, 404, "no item " .. id)
    end
    if method == "GET" then
        send(req, 200, items[id])
    elseif method == "DELETE" then
        items[id] = nil
        req:set_status(204)
    else
        update_item(req, id, method == "PATCH")
    end
end

-- The path to route on: REQUEST_URI without its query string, without a trailing slash, and
-- without the mount point when the web server names one in SCRIPT_NAME (as CGI does with
-- SCRIPT_NAME=/api for /api/items). nginx usually sends the whole path as SCRIPT_NAME, which
-- is then no mount point and left alone. Returns the path and the mount point.
local function route_path(req)
    local path = (req.uri or "/"):match("^[^?#]*")
    local base = req:param("SCRIPT_NAME") or ""
    if base ~= "" and path:sub(1, #base + 1) == base .. "/" then
        path = path:sub(#base + 1)
    else
        base = ""
    end
    path = path:gsub("/+$", "")
    return path == "" and "/" or path, base
end

return {
    respond = function(req)
        local method = req.method
        local path, base = route_path(req)
        if path == "/" then
            if method ~= "GET" then
                return fail(req, 405, "method not allowed", "GET")
            end
            return send(req, 200, { service = "moonfcgi rest example", items = base .. "/items" })
        elseif path == "/items" then
            if method == "GET" then
                return list_items(req)
            elseif method == "POST" then
                return create_item(req, base)
            end
            return fail(req, 405, "method not allowed", "GET, POST")
        end
        local id = path:match("^/items/(%d+)$")
        if id then
            return item_route(req, method, tonumber(id))
        end
        fail(req, 404, "no such resource: " .. tostring(path))
    end,
}
