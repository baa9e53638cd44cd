-- ngx.re (cosocket.md section 5): OpenResty's regex API over PCRE2 (libpcre2-8) through the
-- FFI. Behaviour follows lua-nginx-module's documentation of ngx.re.match, find, gmatch, sub
-- and gsub; where moonfcgi differs it says so here and in docs/openresty.md.
local ffi = require "ffi"
local bit = require "bit"

local ffi_new, ffi_gc, ffi_string = ffi.new, ffi.gc, ffi.string
local band, bor = bit.band, bit.bor
local byte, sub, find = string.byte, string.sub, string.find
local concat = table.concat
local type, tostring, tonumber, error, pcall = type, tostring, tonumber, error, pcall

-- PCRE2's own names: no other library that runs here declares them. One marker type keeps
-- a second load of this file (busted reloads modules per spec file) from redefining them.
if not pcall(ffi.typeof, "struct mf_re_loaded") then
    ffi.cdef [[
struct mf_re_loaded { int unused; };
typedef struct pcre2_real_code_8 pcre2_code_8;
typedef struct pcre2_real_match_data_8 pcre2_match_data_8;
pcre2_code_8 *pcre2_compile_8(const char *pattern, size_t length, uint32_t options,
                              int *errorcode, size_t *erroroffset, void *ccontext);
void pcre2_code_free_8(pcre2_code_8 *code);
int pcre2_jit_compile_8(pcre2_code_8 *code, uint32_t options);
int pcre2_pattern_info_8(const pcre2_code_8 *code, uint32_t what, void *where);
int pcre2_config_8(uint32_t what, void *where);
pcre2_match_data_8 *pcre2_match_data_create_from_pattern_8(const pcre2_code_8 *code,
                                                           void *gcontext);
void pcre2_match_data_free_8(pcre2_match_data_8 *md);
size_t *pcre2_get_ovector_pointer_8(pcre2_match_data_8 *md);
int pcre2_match_8(const pcre2_code_8 *code, const char *subject, size_t length,
                  size_t startoffset, uint32_t options, pcre2_match_data_8 *md, void *mcontext);
int pcre2_get_error_message_8(int errorcode, char *buffer, size_t bufflen);
]]
end

-- Inside the moonfcgi binary (and under busted, where libmoonfcgi.so is loaded globally)
-- libpcre2-8 is linked in; a plain LuaJIT gets it by name.
local function pcre2_in_process()
    return ffi.C.pcre2_compile_8
end
local P = pcall(pcre2_in_process) and ffi.C or ffi.load("libpcre2-8.so.0")

local ANCHORED, NO_UTF_CHECK = 0x80000000, 0x40000000
local ALT_BSUX, CASELESS, DOTALL, DUPNAMES = 0x2, 0x8, 0x20, 0x40
local EXTENDED, MATCH_UNSET_BACKREF, MULTILINE, UTF = 0x80, 0x200, 0x400, 0x80000
local JIT_COMPLETE = 0x1
local INFO_CAPTURECOUNT, INFO_NAMECOUNT, INFO_NAMEENTRYSIZE, INFO_NAMETABLE = 4, 17, 18, 19
local CONFIG_JIT = 1
local ERROR_NOMATCH = -1

-- Flags of ours, above PCRE2's compile options in the parsed value.
local F_ONCE, F_JIT = 0x1, 0x2

local _M = {
    -- The most patterns the "o" cache keeps per worker (OpenResty's
    -- lua_regex_cache_max_entries default). Past it, new patterns are compiled per call and
    -- not kept, as in OpenResty.
    cache_max = 1024,
}

local jit_available
do
    local v = ffi_new("uint32_t[1]")
    jit_available = P.pcre2_config_8(CONFIG_JIT, v) >= 0 and v[0] == 1
end
_M.jit_available = jit_available

-- Out-parameters, reused: nothing below yields between filling and reading them.
local errcode, erroff = ffi_new("int[1]"), ffi_new("size_t[1]")
local info_u32, info_ptr = ffi_new("uint32_t[1]"), ffi_new("const unsigned char *[1]")
local errbuf = ffi_new("char[256]")

local function pcre2_message(code)
    local n = P.pcre2_get_error_message_8(code, errbuf, 256)
    if n < 0 then
        return "error " .. code
    end
    return ffi_string(errbuf, n)
end

-- Options string -> compile options, our flags; cached (a program uses a handful).
local OPTION = {
    i = { CASELESS, 0 }, m = { MULTILINE, 0 }, s = { DOTALL, 0 }, x = { EXTENDED, 0 },
    u = { UTF, 0 }, a = { ANCHORED, 0 }, D = { DUPNAMES, 0 },
    -- OpenResty's "U" skips PCRE's UTF-8 check of the subject; here it checks once per
    -- call, as "u" does: an invalid subject must give an error, not undefined behaviour.
    U = { UTF, 0 },
    J = { bor(ALT_BSUX, MATCH_UNSET_BACKREF), 0 },
    o = { 0, F_ONCE }, j = { 0, F_JIT },
}
local parsed_opts, nparsed = {}, 0

local function parse_opts(opts)
    local p = parsed_opts[opts]
    if p then
        return p[1], p[2]
    end
    local copts, flags = 0, 0
    for i = 1, #opts do
        local o = OPTION[sub(opts, i, i)]
        if not o then
            return nil, 'unknown flag "' .. sub(opts, i, i) .. '" (flags "' .. opts .. '")'
        end
        copts, flags = bor(copts, o[1]), bor(flags, o[2])
    end
    if nparsed >= 64 then
        parsed_opts, nparsed = {}, 0
    end
    parsed_opts[opts], nparsed = { copts, flags }, nparsed + 1
    return copts, flags
end

local cache, ncache = {}, 0

local function free_code(re)
    if re.md ~= nil then
        P.pcre2_match_data_free_8(ffi_gc(re.md, nil))
        re.md = nil
    end
    if re.code ~= nil then
        P.pcre2_code_free_8(ffi_gc(re.code, nil))
        re.code = nil
    end
end

-- A compiled pattern: { code, md (match data), ov (its ovector), ncap, names (list of
-- { group, name }) or nil, utf, once }. Returns it, or nil and OpenResty's error text.
local function compile(regex, opts)
    if type(regex) ~= "string" then
        error("bad argument #2 (the regex must be a string, got " .. type(regex) .. ")", 3)
    end
    local copts, flags = 0, 0
    if opts ~= nil then
        if type(opts) ~= "string" then
            error("bad argument #3 (the options must be a string, got " .. type(opts) .. ")", 3)
        end
        copts, flags = parse_opts(opts)
        if not copts then
            return nil, flags
        end
    end
    local once = band(flags, F_ONCE) ~= 0
    local key
    if once then
        key = copts .. ":" .. band(flags, F_JIT) .. ":" .. regex
        local re = cache[key]
        if re then
            return re
        end
    end
    local code = P.pcre2_compile_8(regex, #regex, copts, errcode, erroff, nil)
    if code == nil then
        local msg = pcre2_message(errcode[0])
        local off = tonumber(erroff[0])
        if off >= #regex then
            return nil, 'pcre2_compile() failed: ' .. msg .. ' in "' .. regex .. '"'
        end
        return nil, 'pcre2_compile() failed: ' .. msg .. ' in "' .. regex .. '" at "'
            .. sub(regex, off + 1) .. '"'
    end
    code = ffi_gc(code, P.pcre2_code_free_8)
    if band(flags, F_JIT) ~= 0 and jit_available then
        -- A pattern the JIT cannot take still matches through the interpreter.
        P.pcre2_jit_compile_8(code, JIT_COMPLETE)
    end
    local md = P.pcre2_match_data_create_from_pattern_8(code, nil)
    if md == nil then
        P.pcre2_code_free_8(ffi_gc(code, nil))
        return nil, "pcre2_match_data_create() failed: out of memory"
    end
    md = ffi_gc(md, P.pcre2_match_data_free_8)
    P.pcre2_pattern_info_8(code, INFO_CAPTURECOUNT, info_u32)
    local re = {
        code = code, md = md, ov = P.pcre2_get_ovector_pointer_8(md),
        ncap = tonumber(info_u32[0]), utf = band(copts, UTF) ~= 0,
        dupnames = band(copts, DUPNAMES) ~= 0, once = false,
    }
    P.pcre2_pattern_info_8(code, INFO_NAMECOUNT, info_u32)
    local count = tonumber(info_u32[0])
    if count > 0 then
        P.pcre2_pattern_info_8(code, INFO_NAMEENTRYSIZE, info_u32)
        local size = tonumber(info_u32[0])
        P.pcre2_pattern_info_8(code, INFO_NAMETABLE, info_ptr)
        local t = info_ptr[0]
        local names = {}
        for i = 0, count - 1 do
            local e = t + i * size
            names[i + 1] = { e[0] * 256 + e[1], ffi_string(e + 2) }
        end
        re.names = names
    end
    if once and ncache < _M.cache_max then
        re.once = true
        cache[key], ncache = re, ncache + 1
    end
    return re
end

-- Compiled patterns not kept in the cache are freed as soon as the call is done with them.
local function done(re)
    if not re.once then
        free_code(re)
    end
end

local UNSET_MIN = 2 ^ 62 -- PCRE2_UNSET is SIZE_MAX; any offset this large is unset

-- Runs the pattern at byte offset pos (0-based). checked: the subject's UTF-8 was already
-- validated in this call. Returns rc (> 0 on a match, ERROR_NOMATCH, or another error).
local function exec(re, subj, pos, checked)
    local mopts = 0
    if checked then
        mopts = NO_UTF_CHECK
    end
    return P.pcre2_match_8(re.code, subj, #subj, pos, mopts, re.md, nil)
end

local function exec_error(rc)
    return "pcre_exec() failed: " .. rc .. " (" .. pcre2_message(rc) .. ")"
end

-- The captures table of a match: [0] the whole match, [1..ncap] the groups (false when a
-- group did not take part), and the named groups by name (a list of the matched values of
-- the groups sharing a name under "D").
local function collect(re, subj, res)
    res = res or {}
    local ov = re.ov
    for i = 0, re.ncap do
        local from = tonumber(ov[2 * i])
        if from < UNSET_MIN then
            res[i] = sub(subj, from + 1, tonumber(ov[2 * i + 1]))
        else
            res[i] = false
        end
    end
    local names = re.names
    if names then
        if re.dupnames then
            for i = 1, #names do
                res[names[i][2]] = nil
            end
            for i = 1, #names do
                local name, v = names[i][2], res[names[i][1]]
                if v then
                    local list = res[name]
                    if list then
                        list[#list + 1] = v
                    else
                        res[name] = { v }
                    end
                end
            end
            for i = 1, #names do
                if res[names[i][2]] == nil then
                    res[names[i][2]] = false
                end
            end
        else
            for i = 1, #names do
                res[names[i][2]] = res[names[i][1]]
            end
        end
    end
    return res
end

local function start_pos(ctx)
    if ctx == nil then
        return 0
    end
    if type(ctx) ~= "table" then
        error("bad argument #4 (the ctx must be a table, got " .. type(ctx) .. ")", 3)
    end
    local pos = tonumber(ctx.pos)
    if not pos or pos <= 0 then
        return 0
    end
    return pos - 1
end

-- captures, err = ngx.re.match(subject, regex, options?, ctx?, res_table?)
function _M.match(subj, regex, opts, ctx, res)
    subj = tostring(subj)
    local re, err = compile(regex, opts)
    if not re then
        return nil, err
    end
    local rc = exec(re, subj, start_pos(ctx), false)
    if rc < 0 then
        done(re)
        if rc == ERROR_NOMATCH then
            return nil
        end
        return nil, exec_error(rc)
    end
    if ctx then
        ctx.pos = tonumber(re.ov[1]) + 1
    end
    if res ~= nil and type(res) ~= "table" then
        done(re)
        error("bad argument #5 (the res_table must be a table, got " .. type(res) .. ")", 2)
    end
    res = collect(re, subj, res)
    done(re)
    return res
end

-- from, to, err = ngx.re.find(subject, regex, options?, ctx?, nth?)
function _M.find(subj, regex, opts, ctx, nth)
    subj = tostring(subj)
    local re, err = compile(regex, opts)
    if not re then
        return nil, nil, err
    end
    local rc = exec(re, subj, start_pos(ctx), false)
    if rc < 0 then
        done(re)
        if rc == ERROR_NOMATCH then
            return nil
        end
        return nil, nil, exec_error(rc)
    end
    local ov = re.ov
    if ctx then
        ctx.pos = tonumber(ov[1]) + 1
    end
    nth = tonumber(nth) or 0
    if nth < 0 then
        nth = 0
    end
    if nth > re.ncap then
        done(re)
        return nil, nil, "nth out of bound"
    end
    local from, to = tonumber(ov[2 * nth]), tonumber(ov[2 * nth + 1])
    done(re)
    if from >= UNSET_MIN then
        return nil, nil
    end
    return from + 1, to
end

-- Where the search goes on after a match that ended at `to` and began at `from`: after an
-- empty match, one character further (a whole UTF-8 character under "u"), so that every
-- position is tried once. Returns nil past the end of the subject.
local function next_pos(re, subj, from, to)
    if to ~= from then
        return to
    end
    local pos = to + 1
    if re.utf then
        local len = #subj
        while pos < len do
            local b = byte(subj, pos + 1)
            if b < 0x80 or b >= 0xc0 then
                break
            end
            pos = pos + 1
        end
    end
    if pos > #subj then
        return nil
    end
    return pos
end

-- iterator, err = ngx.re.gmatch(subject, regex, options?); iterator() returns the next
-- captures table, nil when there are no more, or nil, err.
function _M.gmatch(subj, regex, opts)
    subj = tostring(subj)
    local re, err = compile(regex, opts)
    if not re then
        return nil, err
    end
    local pos, checked = 0, false
    return function()
        if not pos then
            return nil
        end
        local rc = exec(re, subj, pos, checked)
        checked = true
        if rc < 0 then
            pos = nil
            done(re)
            if rc == ERROR_NOMATCH then
                return nil
            end
            return nil, exec_error(rc)
        end
        local from, to = tonumber(re.ov[0]), tonumber(re.ov[1])
        local res = collect(re, subj)
        pos = next_pos(re, subj, from, to)
        if not pos then
            done(re)
        end
        return res
    end
end

-- A replacement template as a list: strings, and numbers (a group) or { name } (a named
-- group). "$0", "$1".., "${1}", "${name}" name groups; "$$" is a dollar sign; any other
-- "$" is an error, as in OpenResty.
local templates, ntemplates = {}, 0

local function parse_template(s)
    local t = templates[s]
    if t then
        return t
    end
    t = {}
    local i, n = 1, #s
    while i <= n do
        local d = find(s, "$", i, true)
        if not d then
            t[#t + 1] = sub(s, i)
            break
        end
        if d > i then
            t[#t + 1] = sub(s, i, d - 1)
        end
        local c = sub(s, d + 1, d + 1)
        if c == "$" then
            t[#t + 1] = "$"
            i = d + 2
        elseif find(c, "^%d") then
            local digits = s:match("^%d+", d + 1)
            t[#t + 1] = tonumber(digits)
            i = d + 1 + #digits
        elseif c == "{" then
            local name, close = s:match("^([%w_]+)}()", d + 2)
            if not name then
                return nil
            end
            t[#t + 1] = tonumber(name) or { name }
            i = close
        else
            return nil
        end
    end
    if ntemplates >= 256 then
        templates, ntemplates = {}, 0
    end
    templates[s], ntemplates = t, ntemplates + 1
    return t
end

-- The text that replaces one match under template t.
local function expand(re, subj, t, parts, np)
    local ov = re.ov
    for i = 1, #t do
        local p = t[i]
        local tp = type(p)
        if tp == "string" then
            np = np + 1
            parts[np] = p
        else
            local g = p
            if tp == "table" then
                g = nil
                local names = re.names
                if names then
                    -- The first group of that name that took part (all of them under "D").
                    for k = 1, #names do
                        if names[k][2] == p[1] and tonumber(ov[2 * names[k][1]]) < UNSET_MIN then
                            g = names[k][1]
                            break
                        end
                    end
                end
            end
            if g and g <= re.ncap then
                local from = tonumber(ov[2 * g])
                if from < UNSET_MIN then
                    np = np + 1
                    parts[np] = sub(subj, from + 1, tonumber(ov[2 * g + 1]))
                end
            end
        end
    end
    return np
end

local function substitute(subj, regex, replace, opts, global, fname)
    subj = tostring(subj)
    local func, tmpl
    if type(replace) == "function" then
        func = replace
    else
        tmpl = parse_template(tostring(replace))
        if not tmpl then
            if type(regex) ~= "string" then
                compile(regex, opts) -- raises the argument error
            end
            return nil, nil, "failed to compile the replacement template"
        end
    end
    local re, err = compile(regex, opts)
    if not re then
        return nil, nil, err
    end
    local parts, np = {}, 0
    local pos, copied, count, checked = 0, 0, 0, false
    local len = #subj
    while true do
        local rc = exec(re, subj, pos, checked)
        checked = true
        if rc < 0 then
            if rc == ERROR_NOMATCH then
                break
            end
            done(re)
            return nil, nil, exec_error(rc)
        end
        count = count + 1
        -- Read before the replace function runs: it may use this very pattern.
        local from, to = tonumber(re.ov[0]), tonumber(re.ov[1])
        if from > copied then
            np = np + 1
            parts[np] = sub(subj, copied + 1, from)
        end
        if func then
            local v = func(collect(re, subj))
            local tv = type(v)
            if tv ~= "string" and tv ~= "number" then
                done(re)
                error("bad argument #3 to '" .. fname .. "' (the replace function returned a "
                    .. tv .. ", string expected)", 3)
            end
            np = np + 1
            parts[np] = tostring(v)
        else
            np = expand(re, subj, tmpl, parts, np)
        end
        copied = to
        if not global then
            break
        end
        pos = next_pos(re, subj, from, to)
        if not pos then
            break
        end
    end
    done(re)
    if count == 0 then
        return subj, 0
    end
    if copied < len then
        np = np + 1
        parts[np] = sub(subj, copied + 1)
    end
    return concat(parts, "", 1, np), count
end

-- newstr, n, err = ngx.re.sub(subject, regex, replace, options?)
function _M.sub(subj, regex, replace, opts)
    return substitute(subj, regex, replace, opts, false, "sub")
end

-- newstr, n, err = ngx.re.gsub(subject, regex, replace, options?)
function _M.gsub(subj, regex, replace, opts)
    return substitute(subj, regex, replace, opts, true, "gsub")
end

-- For specs: how many patterns the "o" cache holds; flush() empties it.
function _M.cache_size()
    return ncache
end

function _M.flush()
    -- Dropped, not freed: a gmatch iterator may still use one; the GC frees them.
    cache, ncache = {}, 0
end

return _M
