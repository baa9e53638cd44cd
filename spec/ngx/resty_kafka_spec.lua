-- lua-resty-kafka (Debian's lua-nginx-kafka, unmodified): it loads, and its pure-Lua parts
-- (the wire encoding with ngx.crc32_long, the response decoder, the buffers) work. There is
-- no broker: talking to one is the socket layer's business, tested with the other clients.
local debian = require "spec.ngx.debian"

local function be32(n)
    return string.char(bit.band(bit.rshift(n, 24), 255), bit.band(bit.rshift(n, 16), 255),
        bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end

describe("lua-resty-kafka from Debian", function()
    local producer, request, response, ringbuffer, sendbuffer, errors

    setup(function()
        producer, request, response, ringbuffer, sendbuffer, errors = debian.require(
            "nginx.kafka.producer", "nginx.kafka.request", "nginx.kafka.response",
            "nginx.kafka.ringbuffer", "nginx.kafka.sendbuffer", "nginx.kafka.errors")
    end)

    it("loads its producer and client", function()
        assert.is_function(producer.new)
        assert.is_table(errors)
    end)

    it("encodes a produce request whose message CRC is ngx.crc32_long's", function()
        local req = request:new(request.ProduceRequest, 7, "client", 0)
        req:int16(1)      -- required acks
        req:int32(1000)   -- timeout
        req:int32(1)      -- one topic
        req:string("topic")
        req:int32(1)      -- one partition
        req:int32(0)
        req:message_set({ "key", "value" })
        local wire = table.concat(req:package())
        -- The message: magic 0, attributes 0, key, value; its CRC-32 goes in front of it.
        local msg = "\0\0" .. be32(3) .. "key" .. be32(5) .. "value"
        local crc = ngx.crc32_long(msg)
        assert.is_number(crc)
        assert.truthy(wire:find(be32(crc) .. msg, 1, true))
        assert.equal(#wire - 4, (wire:byte(1) * 2 ^ 24 + wire:byte(2) * 2 ^ 16
            + wire:byte(3) * 2 ^ 8 + wire:byte(4)))
        -- api key 0, api version 0, correlation id 7, the client id
        assert.equal("\0\0\0\0" .. be32(7) .. "\0\6client", wire:sub(5, 20))
    end)

    it("decodes a response", function()
        local resp = response:new(be32(42) .. "\0\5" .. be32(-2 % 2 ^ 32) .. "\0\3abc", 0)
        assert.equal(42, resp.correlation_id)
        assert.equal(5, resp:int16())
        assert.equal(-2, resp:int32())
        assert.equal("abc", resp:string())
    end)

    it("buffers messages in its ring buffer", function()
        local rb = ringbuffer:new(2, 3)
        assert.is_true(rb:add("t", "k1", "m1"))
        assert.is_false(rb:need_send())
        assert.is_true(rb:add("t", "k2", "m2"))
        assert.is_true(rb:need_send())
        assert.same({ "t", "k1", "m1" }, { rb:pop() })
        assert.equal(1, rb:left_num())
    end)

    it("groups messages by topic and partition in its send buffer", function()
        local sb = sendbuffer:new(2, 1024)
        sb:add("t", 0, "k", "v")
        sb:add("t", 1, "k", "v")
        local seen = 0
        for topic, partition, buffer in sb:loop() do
            assert.equal("t", topic)
            assert.is_number(partition)
            assert.is_table(buffer)
            seen = seen + 1
        end
        assert.equal(2, seen)
    end)
end)
