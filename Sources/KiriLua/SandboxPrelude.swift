/// The Lua chunk that builds the sandbox (security-cases.md, sections A and B). It runs once per
/// state, before any script, with the host's real globals; it returns the environment every script
/// runs in. Libraries that give files, processes or the debugger (io, package, debug, most of os)
/// are never opened in the first place.
let sandboxPrelude = #"""
local api, tensorMethods, tensorMeta, host = ...
local type, error, next, pairs, rawget, select, setmetatable, getmetatable, tostring, format =
    type, error, next, pairs, rawget, select, setmetatable, getmetatable, tostring, string.format

-- Read-only views. A proxy has no fields of its own, refuses writes, hides its metatable, and
-- answers pairs/# for the table behind it. Nested tables come back as proxies too.
local proxies = setmetatable({}, {__mode = "k"})
local function readonly(t, name)
    if proxies[t] then return proxies[t] end
    local nested = false
    for _, v in next, t do if type(v) == "table" then nested = true end end
    local function view(k, v)
        if type(v) == "table" then return readonly(v, name .. "." .. tostring(k)) end
        return v
    end
    local meta = {
        __newindex = function(_, k)
            error(format("attempt to modify read-only table '%s' (field '%s')", name, tostring(k)), 2)
        end,
        __pairs = function()
            return function(_, k) local nk, v = next(t, k); return nk, view(nk, v) end, nil, nil
        end,
        __len = function() return #t end,
        __metatable = false,
    }
    meta.__index = nested and function(_, k) return view(k, t[k]) end or t
    local proxy = setmetatable({}, meta)
    proxies[t] = proxy
    return proxy
end

-- Strings: no bytecode (dump goes from the real table too, since scripts reach it through the
-- string metatable); rep and the pattern functions get caps, because C calls cannot be
-- interrupted by the time limit.
string.dump = nil
local MAX_STRING = 64 * 1024 * 1024
local MAX_MATCH_STEPS = 1e9
local safeString = {}
for k, v in next, string do safeString[k] = v end
local rep, find = string.rep, string.find

function safeString.rep(s, n, sep)
    if type(s) == "string" and type(n) == "number" and n > 0 then
        local total = #s * n + (type(sep) == "string" and #sep * (n - 1) or 0)
        if total > MAX_STRING then
            error(format("bad argument #2 to 'rep' (result of %.0f bytes exceeds the %d-byte cap)", total, MAX_STRING), 2)
        end
    end
    return rep(s, n, sep)
end

-- Backtracking costs up to (subject length)^(quantifiers, +1 when unanchored): refuse patterns
-- whose worst case is beyond MAX_MATCH_STEPS.
local function quantifierCount(pattern)
    local count, i, n = 0, 1, #pattern
    while i <= n do
        local c = pattern:sub(i, i)
        if c == "%" then
            local class = pattern:sub(i + 1, i + 1)
            if class == "b" then i = i + 4 elseif class == "f" then i = i + 2 else i = i + 2 end
        elseif c == "[" then
            i = i + 1
            if pattern:sub(i, i) == "^" then i = i + 1 end
            repeat
                if pattern:sub(i, i) == "%" then i = i + 1 end
                i = i + 1
            until i > n or pattern:sub(i, i) == "]"
            i = i + 1
        else
            i = i + 1
        end
        local q = pattern:sub(i, i)
        if q == "*" or q == "+" or q == "-" then count = count + 1; i = i + 1 elseif q == "?" then i = i + 1 end
    end
    return count
end

local function guardPattern(name, fn)
    return function(s, pattern, init, plain, ...)
        if type(s) == "string" and type(pattern) == "string" and not (name == "find" and plain) then
            local exponent = quantifierCount(pattern) + (pattern:sub(1, 1) == "^" and 0 or 1)
            if exponent > 0 and exponent * math.log(#s + 1, 10) > math.log(MAX_MATCH_STEPS, 10) then
                error(format("bad argument #2 to '%s' (pattern too costly for a %d-byte subject: %d quantifiers)",
                    name, #s, exponent), 2)
            end
        end
        return fn(s, pattern, init, plain, ...)
    end
end
for _, name in next, {"find", "match", "gmatch", "gsub"} do safeString[name] = guardPattern(name, string[name]) end

local stringProxy = readonly(safeString, "string")
local stringMeta = getmetatable("")
stringMeta.__index = stringProxy
stringMeta.__metatable = readonly({__index = stringProxy}, "string metatable")

math.randomseed(0)   -- math.random is seeded at random otherwise: runs must be reproducible

local env = {}
for _, name in next, {"assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
        "tostring", "type", "xpcall", "rawequal", "rawlen", "rawget", "getmetatable", "_VERSION"} do
    env[name] = _G[name]
end
env.print = host.print
env.collectgarbage = host.collectgarbage
env.string = stringProxy
env.table = readonly(table, "table")
env.math = readonly(math, "math")
env.utf8 = readonly(utf8, "utf8")
env.coroutine = readonly(coroutine, "coroutine")
env.os = readonly({clock = os.clock, time = os.time, date = os.date}, "os")

-- Finalizers run with debug hooks off, so the time limit could not stop one: refuse them (as Luau does).
function env.setmetatable(t, meta)
    if type(meta) == "table" and rawget(meta, "__gc") ~= nil then
        error("bad argument #2 to 'setmetatable' (__gc metamethods are not allowed in scripts)", 2)
    end
    return setmetatable(t, meta)
end

-- Text only, and in the sandbox unless told otherwise.
local load = load
function env.load(chunk, chunkName, mode, environment)
    if mode ~= nil and mode ~= "t" then
        error("bad argument #3 to 'load' (only text chunks, mode \"t\", are allowed)", 2)
    end
    return load(chunk, chunkName, "t", environment == nil and env or environment)
end

local kiri = readonly(api, "kiri")
env.kiri = kiri
env._G = env

-- Lua modules from the recipe and plugin search path only; never C modules.
local loaded = {kiri = kiri}
function env.require(name)
    if type(name) ~= "string" then
        error(format("bad argument #1 to 'require' (string expected, got %s)", type(name)), 2)
    end
    local module = loaded[name]
    if module ~= nil then return module end
    local source, chunkName = host.findModule(name)
    local chunk, message = load(source, chunkName, "t", env)
    if not chunk then error(message, 2) end
    module = chunk(name, chunkName)
    if module == nil then module = true end
    loaded[name] = module
    return module
end

return env
"""#
