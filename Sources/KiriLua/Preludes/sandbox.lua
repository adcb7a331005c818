-- The Lua chunk that builds the sandbox (security-cases.md, sections A and B). It runs once per state, before any
-- script, with the host's real globals; it returns the environment every script runs in. Libraries that give
-- files, processes or the debugger (io, package, debug, most of os) are never opened in the first place.
-- `extensions` are the preludes registered from above (LuaLibrary.prelude), loaded but not run: each runs below
-- with (api, host, resolve) before the API is sealed read-only.
local api, _, _, host, extensions = ...   -- the Tensor methods and metatable are the C side's to fill
local type, error, next, rawget, select, setmetatable, getmetatable, tostring, format =
    type, error, next, rawget, select, setmetatable, getmetatable, tostring, string.format

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

-- The wrappers below call the real C functions, whose errors would point at the wrapper's own line
-- ("sandbox:N:"). They call through `relay(pcall(f, ...))`, as a tail call, so errors point at the
-- script's line instead.
local rawGsub = string.gsub
local function relay(ok, ...)
    if ok then return ... end
    local message = ...
    if type(message) == "string" then message = (rawGsub(message, "^sandbox:%d+: ", "", 1)) end
    error(message, 2)
end

-- Strings: no bytecode (dump goes from the real table too, since scripts reach it through the
-- string metatable); rep and the pattern functions get caps, because C calls cannot be
-- interrupted by the time limit.
string.dump = nil   -- luacheck: ignore 122 (the real table, on purpose)
local MAX_STRING = 64 * 1024 * 1024
local MAX_MATCH_STEPS = 1e9
local safeString = {}
for k, v in next, string do safeString[k] = v end
local rep, find = string.rep, string.find

-- A string or a number, as the string C functions see it (they convert numbers themselves).
local function asText(value)
    if type(value) == "string" then return value end
    if math.type(value) then return tostring(value) end
end

function safeString.rep(s, n, sep)
    local text, separator = asText(s), sep == nil and "" or asText(sep)
    local count = math.type(n) and n or (type(n) == "string" and tonumber(n)) or nil
    if text and separator and count and count > 0 then
        local total = #text * count + #separator * (count - 1)
        if total > MAX_STRING then
            error(format("bad argument #2 to 'rep' (result of %.0f bytes exceeds the %d-byte cap)", total, MAX_STRING), 2)
        end
        -- Lua's rep loops n times even when every piece is empty: ("").rep("", 2^62) would never return.
        if total == 0 and math.tointeger(count) then return "" end
    end
    return relay(pcall(rep, s, n, sep))
end

-- Worst-case work of a backtracking match, as a power of ten. Each '*', '+' or '-' can try every
-- length of the subject, and so can each '%b' and back-reference ('%1') by scanning it; each '?'
-- doubles the paths; an unanchored search tries every start; and every step compares up to the
-- pattern's length. (A '^' anchors find, match and gsub, but is a plain character for gmatch.)
local function patternCost(pattern, subjectLength, anchored)
    local scans, optionals, i, n = 0, 0, 1, #pattern
    while i <= n do
        -- Skip plain characters in C (patterns can be megabytes long): on to the one before the next
        -- '%', '[' or quantifier.
        local special = find(pattern, "[%%%[%*%+%-%?]", i)
        if not special then break end
        if special > i + 1 then i = special - 1 end
        local c = pattern:sub(i, i)
        if c == "%" then
            local class = pattern:sub(i + 1, i + 1)
            if class == "b" then
                scans = scans + 1
                i = i + 4
            else
                if class >= "1" and class <= "9" then scans = scans + 1 end
                i = i + 2
            end
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
        if q == "*" or q == "+" or q == "-" then
            scans = scans + 1
            i = i + 1
        elseif q == "?" then
            optionals = optionals + 1
            i = i + 1
        end
    end
    if not anchored then scans = scans + 1 end
    return math.log(n + 1, 10) + scans * math.log(subjectLength + 1, 10) + optionals * math.log(2, 10)
end

local function guardPattern(name, fn)
    return function(s, pattern, init, plain, ...)
        local text, patternText = asText(s), asText(pattern)
        if text and patternText then
            local cost
            if name == "find" and plain then   -- a plain search compares the pattern at every start
                cost = math.log(#patternText + 1, 10) + math.log(#text + 1, 10)
            else
                cost = patternCost(patternText, #text, name ~= "gmatch" and patternText:sub(1, 1) == "^")
            end
            if cost > math.log(MAX_MATCH_STEPS, 10) then
                error(format("bad argument #2 to '%s' (pattern too costly for a %d-byte subject: about 10^%.0f steps)",
                    name, #text, cost), 2)
            end
        end
        return relay(pcall(fn, s, pattern, init, plain, ...))
    end
end
for _, name in next, {"find", "match", "gmatch", "gsub"} do safeString[name] = guardPattern(name, string[name]) end

local stringProxy = readonly(safeString, "string")
local stringMeta = getmetatable("")
stringMeta.__index = stringProxy
stringMeta.__metatable = readonly({__index = stringProxy}, "string metatable")

-- Tables: insert, remove and move shift elements in a C loop the time limit cannot interrupt, over
-- a length that __len, or the border of a sparse table, can make astronomically large (a table
-- holding only the keys 1, 2, 4, ..., 2^50 can have #t == 2^50). Bound the shifts.
local MAX_SHIFT = 1 << 24
local safeTable = {}
for k, v in next, table do safeTable[k] = v end
local insert, remove, move = table.insert, table.remove, table.move

local function toInteger(value)
    if value ~= nil then return math.tointeger(value) end
end

-- `t` and its length; with a metatable, a stand-in that forwards reads and writes to `t` but keeps
-- this length, so a __len cannot answer differently when the C function asks again.
local function measured(t)
    local n = #t
    if getmetatable(t) == nil then return t, n end
    return setmetatable({}, {__len = function() return n end, __index = t, __newindex = t}), n
end

local function checkShift(name, argument, count)
    if count > MAX_SHIFT then
        error(format("bad argument #%d to '%s' (it would shift %.0f elements; the limit is %d)",
            argument, name, count, MAX_SHIFT), 3)
    end
end

function safeTable.insert(t, ...)
    if select("#", ...) ~= 2 or (type(t) ~= "table" and type(t) ~= "userdata") then return relay(pcall(insert, t, ...)) end
    local target, length = measured(t)
    local position, n = toInteger((...)), toInteger(length)
    if position and n and position >= 1 and position <= n then
        checkShift("insert", 2, (n + 0.0) - position + 1)
    end
    return relay(pcall(insert, target, ...))
end

function safeTable.remove(t, ...)
    if type(t) ~= "table" and type(t) ~= "userdata" then return relay(pcall(remove, t, ...)) end
    local target, length = measured(t)
    local position, n = toInteger((...)), toInteger(length)
    if position and n and position >= 1 and position < n then
        checkShift("remove", 2, (n + 0.0) - position)
    end
    return relay(pcall(remove, target, ...))
end

function safeTable.move(a1, f, e, t, a2)
    local first, last = toInteger(f), toInteger(e)
    if first and last and last >= first then checkShift("move", 3, (last + 0.0) - first + 1) end
    return relay(pcall(move, a1, f, e, t, a2))
end

-- Lua 5.4.4 closes a coroutine without counting C levels, so __close handlers that each close
-- another coroutine nest until the C stack overflows (fixed upstream in 5.4.6): bound the nesting.
local MAX_CLOSE_NESTING = 100
local safeCoroutine = {}
for k, v in next, coroutine do safeCoroutine[k] = v end
local close, closing = coroutine.close, 0
local closingGuard = setmetatable({}, {__close = function() closing = closing - 1 end})
-- A coroutine the time limit stopped is left with hooks off (see time_hook in bridge.c): its __close
-- handlers would run out of the limit's reach, so once it has tripped nothing more is closed.
function safeCoroutine.close(co)
    local stop = host.stopped()
    if stop then error(stop, 0) end
    if closing >= MAX_CLOSE_NESTING then
        error(format("coroutine.close nested more than %d deep", MAX_CLOSE_NESTING), 2)
    end
    closing = closing + 1
    local guard <close> = closingGuard   -- luacheck: ignore 211 (its close is the point)
    return close(co)
end

-- coroutine.wrap through the guarded close (the C wrap closes a failed coroutine itself).
local create, resume, status = coroutine.create, coroutine.resume, coroutine.status
local function finishWrapped(co, ok, ...)
    if ok then return ... end
    local message = ...
    if status(co) == "dead" then
        local closed, closeMessage = safeCoroutine.close(co)   -- run its pending __close handlers
        if not closed then message = closeMessage end
    end
    error(message, type(message) == "string" and 2 or 0)     -- at the caller's line, as the C wrap does
end
function safeCoroutine.wrap(f)
    if type(f) ~= "function" then
        error(format("bad argument #1 to 'wrap' (function expected, got %s)", type(f)), 2)
    end
    local co = create(f)
    return function(...) return finishWrapped(co, resume(co, ...)) end
end

math.randomseed(0)   -- math.random is seeded at random otherwise: runs must be reproducible

local env = {}
for _, name in next, {"assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
        "tostring", "type", "rawequal", "rawlen", "rawget", "getmetatable", "_VERSION"} do
    env[name] = _G[name]
end
env.print = host.print
env.collectgarbage = host.collectgarbage
env.string = stringProxy
env.table = readonly(safeTable, "table")
env.math = readonly(math, "math")
env.utf8 = readonly(utf8, "utf8")
env.coroutine = readonly(safeCoroutine, "coroutine")
env.os = readonly({clock = os.clock, time = os.time, date = os.date}, "os")

-- Finalizers run with debug hooks off, so the time limit could not stop one: refuse them (as Luau does).
-- Errors name the script's line, not this chunk's.
function env.setmetatable(t, meta)
    if type(t) ~= "table" then
        error(format("bad argument #1 to 'setmetatable' (table expected, got %s)", type(t)), 2)
    end
    if meta ~= nil and type(meta) ~= "table" then
        error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
    end
    if type(meta) == "table" and rawget(meta, "__gc") ~= nil then
        error("bad argument #2 to 'setmetatable' (__gc metamethods are not allowed in scripts)", 2)
    end
    local ok, result = pcall(setmetatable, t, meta)   -- "cannot change a protected metatable"
    if not ok then error(result, 2) end
    return result
end

-- Once the time limit has tripped, a message handler runs with hooks off (see time_hook in bridge.c),
-- out of the limit's reach: the script's handler is then skipped and the message passed on.
local xpcall = xpcall
function env.xpcall(f, handler, ...)
    if type(handler) ~= "function" then return xpcall(f, handler, ...) end
    return xpcall(f, function(...)
        if host.stopped() then return ... end
        return handler(...)
    end, ...)
end

-- Text only, and in the sandbox unless told otherwise. A string is parsed in pieces (host.loadText), so the
-- time limit reaches a big one; a reader function is script code, which the hook reaches anyway.
local load, loadText = load, host.loadText
local function loadChunk(chunk, chunkName, environment)
    if type(chunk) == "string" and (chunkName == nil or type(chunkName) == "string") then
        return loadText(chunk, chunkName, environment)
    end
    return load(chunk, chunkName, "t", environment)
end
function env.load(chunk, chunkName, mode, environment)
    if mode ~= nil and mode ~= "t" then
        error("bad argument #3 to 'load' (only text chunks, mode \"t\", are allowed)", 2)
    end
    return loadChunk(chunk, chunkName, environment == nil and env or environment)
end

-- Plugins. kiri.samplers.NAME (and the other domains) resolve lazily, by file name, from the plugin
-- search path (PluginCatalog: user folders first, then the bundled Plugins/), once per run; a
-- plugin file runs in the sandbox and returns its function. kiri.register adds one from a script,
-- and is the only way to change a domain table.
local kinds = {sampler = "samplers", schedule = "schedules", guidance = "guidance", post = "post",
    loss = "losses", timesteps = "timesteps", lr_schedule = "lr_schedules"}
local singular = {samplers = "sampler", schedules = "schedule", guidance = "guidance", post = "post",
    models = "model", noise = "noise function",
    losses = "loss", timesteps = "timestep sampler", lr_schedules = "learning-rate schedule"}
local resolved = {}
for domain in next, singular do
    if rawget(api, domain) == nil then api[domain] = {} end
    resolved[domain] = {}
end

local function callable(value)
    if type(value) == "function" then return true end
    local meta = getmetatable(value)
    return type(meta) == "table" and type(rawget(meta, "__call")) == "function"
end

-- Every sampler reports its steps to the engine's progress bar (with sigma and the denoised estimate, which a
-- server previews). Only the outermost call does, since some samplers run others inside; the to-be-closed guard
-- ends the bar when the sampler returns or fails. The caller's callback gets info.steps too, and stops the run by
-- returning "stop", as the engine does when its progress says so (a server's interrupt): the sampler then
-- returns that step's denoised estimate (as A1111's interrupt keeps the last x0). The stop unwinds the
-- sampler as an error only this wrapper catches; any other error passes through unchanged.
local progress, progressEnd, samplerProgress = host.progress, host.progressEnd, host.samplerProgress
local samplerDepth = 0
local samplerExit = setmetatable({}, {__close = function()
    samplerDepth = samplerDepth - 1
    if samplerDepth == 0 then progressEnd() end
end})

local function with_progress(sampler)
    return function(model, x, sigmas, opts)
        if samplerDepth > 0 or (type(sigmas) ~= "userdata" and type(sigmas) ~= "table") or
            (opts ~= nil and type(opts) ~= "table") then
            return sampler(model, x, sigmas, opts)
        end
        local total = #sigmas - 1
        local callback = opts and opts.callback
        local stop, stopped = {}, nil
        -- Inherits rather than copies, so options the caller's table inherits (its __index) still reach the sampler.
        local reporting = setmetatable({callback = function(info)
            local sigma = type(info.sigma) == "number" and info.sigma or nil
            local engineStop = samplerProgress(info.i, total, sigma, info.denoised)
            if callback then info.steps = total end
            if engineStop or (callback and callback(info) == "stop") then
                stopped = info.denoised or info.x   -- a sampler whose callback lacks the estimate keeps its sample
                error(stop, 0)
            end
        end}, {__index = opts})
        samplerDepth = samplerDepth + 1
        local exit <close> = samplerExit   -- luacheck: ignore 211 (its close is the point)
        local stopNow, stoppable = samplerProgress(0, total)
        if stopNow then return x end
        if not (callback or stoppable) then return sampler(model, x, sigmas, reporting) end
        local ok, result = pcall(sampler, model, x, sigmas, reporting)
        if ok then return result end
        if result == stop then return stopped end
        error(result, 0)
    end
end

-- A schedule's sigmas are checked where it returns them, so that a wrong one is blamed by its file, not in the
-- sampler or the recipe that called it: a 1-D list of at least two finite sigmas, never negative or increasing.
local function checked_schedule(schedule, file)
    local function fail(problem) error(format("%s: the schedule's sigmas %s", file, problem), 0) end
    return function(...)
        local sigmas = schedule(...)
        if type(sigmas) ~= "userdata" or sigmas:dim() ~= 1 then
            fail(format("must be a 1-D Tensor, got %s", type(sigmas) == "userdata" and sigmas:dim() .. "-D" or type(sigmas)))
        end
        local values = sigmas:totable()
        if #values < 2 then fail(format("must be at least 2 (one step), got %d", #values)) end
        for i, sigma in ipairs(values) do
            if sigma ~= sigma or sigma == math.huge or sigma < 0 then
                fail(format("must be finite and not negative, got sigmas[%d] = %s", i, tostring(sigma)))
            end
            if i > 1 and sigma > values[i - 1] then
                fail(format("must not increase, got sigmas[%d] = %.9g after sigmas[%d] = %.9g", i, sigma, i - 1, values[i - 1]))
            end
        end
        return sigmas
    end
end

local function resolve(domain, name)
    local value = resolved[domain][name]
    if value ~= nil then return value end
    value = rawget(api[domain], name)                -- built into the engine
    if value == nil and type(name) == "string" then
        local source, chunkName = host.findPlugin(domain, name)
        if source then
            local chunk, message = loadChunk(source, chunkName, env)
            if not chunk then error(message, 0) end
            value = chunk(name)
            if not callable(value) then
                error(format("%s: a %s plugin must return a function, got %s", chunkName:sub(2), singular[domain],
                    type(value)), 0)
            end
            if domain == "schedules" then value = checked_schedule(value, chunkName:sub(2)) end
        end
    end
    if value ~= nil and domain == "samplers" then value = with_progress(value) end
    if value == nil then
        local names, listed = {}, {}
        for line in host.listPlugins(domain):gmatch("[^\n]+") do names[#names + 1] = line; listed[line] = true end
        for registered in next, resolved[domain] do
            if not listed[registered] then names[#names + 1] = registered end
        end
        error(format("unknown %s '%s' (available: %s)", singular[domain], tostring(name), table.concat(names, ", ")), 3)
    end
    resolved[domain][name] = value
    return value
end

for domain in next, singular do
    proxies[api[domain]] = setmetatable({}, {
        __index = function(_, name)
            local value = resolve(domain, name)   -- not a tail call: errors point at the script's line
            return value
        end,
        __newindex = function(_, name)
            error(format("attempt to modify kiri.%s.%s (use kiri.register)", domain, tostring(name)), 2)
        end,
        __pairs = function()
            local names, seen = {}, {}
            local function add(name) if not seen[name] then seen[name] = true; names[#names + 1] = name end end
            for name in next, api[domain] do add(name) end
            for line in host.listPlugins(domain):gmatch("[^\n]+") do add(line) end
            for name in next, resolved[domain] do add(name) end
            table.sort(names)
            local i = 0
            return function()
                i = i + 1
                if names[i] then return names[i], resolve(domain, names[i]) end
            end, nil, nil
        end,
        __metatable = false,
    })
end

-- kiri.progress(step, total [, note]): the engine's progress bar for a recipe's own loop (a training run), `note`
-- (the loss, say) after its rate; the bar ends at step == total, and kiri.progress() ends it sooner, so that a line
-- the recipe prints does not run into it.
function api.progress(step, total, note)
    if step == nil and total == nil then return progressEnd() end
    if math.type(step) ~= "integer" or step < 0 then
        error(format("bad argument #1 to 'progress' (a step from 0 expected, got %s)", tostring(step)), 2)
    end
    if math.type(total) ~= "integer" or total < step then
        error(format("bad argument #2 to 'progress' (a total of at least the step expected, got %s)", tostring(total)), 2)
    end
    if note ~= nil and type(note) ~= "string" then
        error(format("bad argument #3 to 'progress' (string or nil expected, got %s)", type(note)), 2)
    end
    progress(step, total, note and note:sub(1, 200))
    if step == total then progressEnd() end
end

function api.register(kind, name, fn)
    local domain = kinds[kind]
    if not domain then
        error(format("bad argument #1 to 'register' (\"sampler\", \"schedule\", \"guidance\", \"post\", \"loss\", " ..
            "\"timesteps\" or \"lr_schedule\" expected, got %s)",
            tostring(kind)), 2)
    end
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
        error(format("bad argument #2 to 'register' (a name like \"my_sampler\" expected, got %s)", tostring(name)), 2)
    end
    if not callable(fn) then
        error(format("bad argument #3 to 'register' (function expected, got %s)", type(fn)), 2)
    end
    if domain == "samplers" then fn = with_progress(fn) end
    if domain == "schedules" then fn = checked_schedule(fn, format("kiri.register(\"schedule\", \"%s\")", name)) end
    resolved[domain][name] = fn
end

for _, extension in ipairs(extensions) do extension(api, host, resolve) end

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
    local found, source, chunkName = pcall(host.findModule, name)
    if not found then error(source, 2) end   -- at the script's line
    local chunk, message = loadChunk(source, chunkName, env)
    if not chunk then error(message, 2) end
    module = chunk(name, chunkName)
    if module == nil then module = true end
    loaded[name] = module
    return module
end

return env
