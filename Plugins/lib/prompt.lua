-- AUTOMATIC1111's prompt syntax: prompt editing [from:to:when], alternation [a|b], composable AND parts
-- Follows stable-diffusion-webui modules/prompt_parser.py: get_learned_conditioning_prompt_schedules (its
-- current scheduling, not use_old_scheduling, and no hires pass) and get_multicond_prompt_list. Where
-- A1111 falls back to the literal prompt on a parse error, this module raises an error. It knows nothing
-- of models: the texts it makes go to the caller's `encode`.
--
-- Syntax
--   [from:to:when]  `from` while step <= when, then `to` (steps count from 1); [to:when] has nothing
--                   before, [from::when] nothing after. `when` with a '.' is a fraction of the steps,
--                   else a step: when = min(steps, int(when * steps)) or min(steps, int(when)). So a
--                   `when` below 1 (0, negative, or a fraction under 1/steps) gives `to` from step 1,
--                   and one of `steps` or more gives `from` throughout.
--   [a|b|c]         step s uses alternative (s - 1) % n + 1; alternatives may be empty ([fe|]male)
--   nesting         any of these inside another: [[a|b]:c:0.5], [a:[b|c]:3]
--   \[ \] \: \| \( \) \\
--                   a backslash makes the next character literal (before a bracket or backslash it stays in
--                   the text, for the model's emphasis parser)
--   (text) (text:1.2) [text]
--                   A1111's emphasis: passed on in the text, for a model's encode to weigh (m:encode does);
--                   edits and alternations inside work
--   a :0.7 AND b    composable parts, split on the word AND; each may end in a weight ":NUMBER"
--                   (default 1). A part with no text is an error, unless it is the whole prompt:
--                   "" is the unconditional prompt.
--   Brackets nest at most 64 deep.
-- A parse error names the column (1-based, in characters of the whole prompt) and what is wrong:
--   prompt: column 9: '[' at column 1 is never closed
--
-- API
--   parse(text)                -> parsed: {text = text, parts = {part, ...}}
--   parts(parsed or text)      -> the AND parts, each {weight = w, text = its source without the weight,
--                                column = where it starts, nodes = its parse tree}
--   text_at(part, step, steps) -> the plain text of a part at step 1..steps, white space as written
--                                (callers normalise it)
--   schedule(text, steps, encode)
--                              -> cond(step [, steps]): for every step, the list of
--                                {extra = encode(text_at(part, step, steps)), weight = part.weight}, one
--                                entry per part (the same list on every call: do not modify it). encode
--                                runs up front, once per distinct text, so an unknown word fails here and
--                                not halfway through sampling. cond errors for a step outside 1..steps, or
--                                a `steps` other than its own (guiders call cond(step, steps)).
--   changes(parsed or text, steps)
--                              -> the sorted steps after which a part's text may change: each `when`
--                                that is >= 1, every step if there is an alternation, and `steps` itself
--                                (A1111's collect_steps, the end_at_step of each stretch of its schedule)
local trim = require("lib.strings").trim

local prompt = {}

local format = string.format

-- Columns count characters, so a message points at the right place in a UTF-8 prompt.
local function column(text, position)
    return (utf8.len(text, 1, position - 1) or position - 1) + 1
end

local function fail(text, position, message, ...)
    error(format("prompt: column %d: " .. message, column(text, position), ...), 0)
end

-- No number is longer, and the patterns below would be refused on a long subject (the sandbox's cost guard).
local MAX_NUMBER = 100

-- lark's SIGNED_NUMBER, the `when` of A1111's grammar: 3, -2, .5, 0.25, 1e1.
local function signed_number(written)
    if #written > MAX_NUMBER then return nil end
    local rest = written:match("^[-+]?%d+%.?%d*(.*)$") or written:match("^[-+]?%.%d+(.*)$")
    if rest == "" or (rest and rest:match("^[eE][-+]?%d+$")) then return tonumber(written) end
end

-- The number of A1111's re_weight: [-+]?(?:\d+\.?|\d*\.\d+).
local function weight_number(written)
    if #written > MAX_NUMBER then return nil end
    if written:match("^[-+]?%d+%.?$") or written:match("^[-+]?%d*%.%d+$") then return tonumber(written) * 1.0 end
end

-- Parsing: recursive descent over one AND part, text:sub(reader.position, reader.last). A part's nodes
-- are strings (literal text), edits {from = nodes, to = nodes, when = number, fraction = boolean} and
-- alternations {options = {nodes, ...}}.

local SPECIAL = "[\\%[%]():|]"

local group, emphasis

-- Literal text and [...] groups, up to an unescaped ':', '|' or ']', or the end of the part.
local function sequence(reader)
    local text, nodes, literal = reader.text, {}, {}
    local function flush()
        if #literal > 0 then nodes[#nodes + 1] = table.concat(literal) end
        literal = {}
    end
    while reader.position <= reader.last do
        local special = text:find(SPECIAL, reader.position)
        if special == nil or special > reader.last then special = reader.last + 1 end
        literal[#literal + 1] = text:sub(reader.position, special - 1)
        reader.position = special
        if special > reader.last then break end
        local character = text:sub(special, special)
        if character == "\\" then
            if special == reader.last then fail(text, special, "'\\' at the end escapes nothing") end
            local escaped = text:sub(special + 1, special + 1)
            literal[#literal + 1] = escaped:find("^[%[%]()\\]") and "\\" .. escaped or escaped
            reader.position = special + 2
        elseif character == "[" then
            flush()
            nodes[#nodes + 1] = group(reader)
        elseif character == "(" then
            flush()
            nodes[#nodes + 1] = emphasis(reader)
        else
            break
        end
    end
    flush()
    return nodes
end

-- The edit, alternation or emphasis ([text]) a [...] holds, from its segments (split at its separators).
local function bracketed(text, segments, separators)
    if #separators == 0 then return {open = "[", nodes = segments[1].nodes, close = "]"} end
    local kind = separators[1].character
    for _, separator in ipairs(separators) do
        if separator.character ~= kind then
            fail(text, separator.position, "'%s' in a [...] that has '%s'; nest brackets to combine editing "
                .. "and alternation", separator.character, kind)
        end
    end
    if kind == "|" then
        local options = {}
        for i, segment in ipairs(segments) do options[i] = segment.nodes end
        return {options = options}
    end
    if #segments > 3 then fail(text, separators[3].position, "too many ':' in [from:to:when]") end
    local when = segments[#segments]
    local start = when.first + #text:match("^%s*", when.first)
    local written = trim(text:sub(when.first, when.last))
    local value = signed_number(written)
    if value == nil then
        fail(text, start, "the step or fraction in [from:to:when] must be a number, got '%s'", written)
    end
    return {
        from = #segments == 3 and segments[1].nodes or {},
        to = segments[#segments - 1].nodes,
        when = value,
        fraction = written:find(".", 1, true) ~= nil,
    }
end

-- A [...] at reader.position.
-- Deeper nesting than any prompt needs; it also keeps the parser's recursion bounded.
local MAX_DEPTH = 64

function group(reader)
    local text, open = reader.text, reader.position
    local segments, separators = {}, {}
    reader.depth = (reader.depth or 0) + 1
    if reader.depth > MAX_DEPTH then fail(text, open, "brackets nested more than %d deep", MAX_DEPTH) end
    repeat
        reader.position = reader.position + 1
        local first = reader.position
        local nodes = sequence(reader)
        segments[#segments + 1] = {nodes = nodes, first = first, last = reader.position - 1}
        if reader.position > reader.last then
            fail(text, reader.position, "'[' at column %d is never closed%s", column(text, open),
                reader.before_and and " before AND" or "")
        end
        local character = text:sub(reader.position, reader.position)
        if character == ")" then fail(text, reader.position, "unexpected ')'") end
        if character ~= "]" then separators[#separators + 1] = {character = character, position = reader.position} end
    until character == "]"
    reader.position = reader.position + 1
    reader.depth = reader.depth - 1
    return bracketed(text, segments, separators)
end

-- A (...) at reader.position: A1111's emphasis, (text) or (text:weight), kept for the model's encode.
function emphasis(reader)
    local text, open = reader.text, reader.position
    reader.depth = (reader.depth or 0) + 1
    if reader.depth > MAX_DEPTH then fail(text, open, "brackets nested more than %d deep", MAX_DEPTH) end
    reader.position = reader.position + 1
    local nodes = sequence(reader)
    local close = ")"
    local character = text:sub(reader.position, reader.position)
    if reader.position <= reader.last and character == ":" then
        local stop = text:find(")", reader.position, true)
        local written = stop and stop <= reader.last and trim(text:sub(reader.position + 1, stop - 1))
        if not written or weight_number(written) == nil then
            fail(text, reader.position + 1, "the weight in (text:weight) must be a number followed by ')', got '%s'",
                text:sub(reader.position + 1, (stop and stop <= reader.last) and stop - 1 or reader.last))
        end
        close = text:sub(reader.position, stop)
        reader.position = stop
        character = ")"
    end
    if reader.position > reader.last then
        fail(text, reader.position, "'(' at column %d is never closed%s", column(text, open),
            reader.before_and and " before AND" or "")
    end
    if character ~= ")" then fail(text, reader.position, "'%s' inside (...) at column %d", character, column(text, open)) end
    reader.position = reader.position + 1
    reader.depth = reader.depth - 1
    return {open = "(", nodes = nodes, close = close}
end

-- AND part `index` of `count`: text:sub(first, last), with its weight.
local function parse_part(text, first, last, index, count)
    local reader = {text = text, position = first, last = last, before_and = index < count}
    local nodes = sequence(reader)
    local weight, body = 1.0, last
    if reader.position <= last then
        local character = text:sub(reader.position, reader.position)
        if character == "]" or character == ")" then fail(text, reader.position, "unexpected '%s'", character) end
        if character == "|" then
            fail(text, reader.position, "'|' outside [...]; write \\| for a literal '|'")
        end
        body = reader.position - 1
        local start = reader.position + 1
        local written = trim(text:sub(start, last))
        weight = weight_number(written)
        if weight == nil then
            fail(text, start + #text:match("^%s*", start), "the weight after ':' must be a number, got '%s' "
                .. "(write \\: for a literal ':')", written)
        end
    end
    if count > 1 and not text:sub(first, body):find("%S") then fail(text, first, "AND part %d is empty", index) end
    return {weight = weight, text = text:sub(first, body), column = column(text, first), nodes = nodes}
end

-- A1111 splits on \bAND\b; bytes of non-ASCII characters count as word characters here.
local function is_word(text, position)
    return text:find("^[%w_\128-\255]", position) ~= nil
end

local function parse(text)
    local bounds, first, search = {}, 1, 1
    while true do
        local found = text:find("AND", search, true)
        if found == nil then break end
        if (found == 1 or not is_word(text, found - 1)) and not is_word(text, found + 3) then
            bounds[#bounds + 1] = {first, found - 1}
            first = found + 3
        end
        search = found + 1
    end
    bounds[#bounds + 1] = {first, #text}
    local parts = {}
    for i, bound in ipairs(bounds) do parts[i] = parse_part(text, bound[1], bound[2], i, #bounds) end
    return {text = text, parts = parts}
end

-- Argument checks, reported at the caller of the API function `name`.

local function parsed_of(value, name)
    if type(value) == "table" and value.parts then return value end
    if type(value) ~= "string" then
        error(format("bad argument #1 to '%s' (string expected, got %s)", name, type(value)), 3)
    end
    return parse(value)
end

local function describe(value)
    return type(value) == "number" and tostring(value) or type(value)
end

local function integer_in(value, low, high)
    local integer = type(value) == "number" and math.tointeger(value)
    return integer and low <= integer and integer <= high and integer
end

local function check_steps(steps, argument, name)
    local integer = integer_in(steps, 1, math.maxinteger)
    if not integer then
        error(format("bad argument #%d to '%s' (positive integer expected, got %s)", argument, name, describe(steps)), 3)
    end
    return integer
end

function prompt.parse(text)
    return parsed_of(text, "parse")
end

function prompt.parts(value)
    return parsed_of(value, "parts").parts
end

-- Scheduling.

-- A1111's int() truncates toward zero; floor differs only below 0, where no step is <= either.
local function edit_step(edit, steps)
    return math.min(steps, math.floor(edit.fraction and edit.when * steps or edit.when))
end

local function render(nodes, step, steps, out)
    for _, node in ipairs(nodes) do
        if type(node) == "string" then
            out[#out + 1] = node
        elseif node.options then
            render(node.options[(step - 1) % #node.options + 1], step, steps, out)
        elseif node.open then
            out[#out + 1] = node.open
            render(node.nodes, step, steps, out)
            out[#out + 1] = node.close
        else
            render(step <= edit_step(node, steps) and node.from or node.to, step, steps, out)
        end
    end
    return out
end

local function text_of(part, step, steps)
    return table.concat(render(part.nodes, step, steps, {}))
end

function prompt.text_at(part, step, steps)
    if type(part) ~= "table" or part.nodes == nil then
        error(format("bad argument #1 to 'text_at' (a part of prompt.parts expected, got %s)", type(part)), 2)
    end
    steps = check_steps(steps, 3, "text_at")
    if not integer_in(step, 1, steps) then
        error(format("bad argument #2 to 'text_at' (step in 1..%d expected, got %s)", steps, describe(step)), 2)
    end
    return text_of(part, step, steps)
end

-- The steps where the edits and alternations among `nodes` switch text, into the set `found`.
local function collect(nodes, steps, found)
    for _, node in ipairs(nodes) do
        if type(node) == "table" and node.options then
            for step = 1, steps do found[step] = true end
            for _, option in ipairs(node.options) do collect(option, steps, found) end
        elseif type(node) == "table" and node.open then
            collect(node.nodes, steps, found)
        elseif type(node) == "table" then
            local step = edit_step(node, steps)
            if step >= 1 then found[step] = true end
            collect(node.from, steps, found)
            collect(node.to, steps, found)
        end
    end
end

function prompt.changes(value, steps)
    steps = check_steps(steps, 2, "changes")
    local found = {[steps] = true}
    for _, part in ipairs(parsed_of(value, "changes").parts) do collect(part.nodes, steps, found) end
    local list = {}
    for step in pairs(found) do list[#list + 1] = step end
    table.sort(list)
    return list
end

function prompt.schedule(value, steps, encode)
    local parsed = parsed_of(value, "schedule")
    steps = check_steps(steps, 2, "schedule")
    if type(encode) ~= "function" then
        error(format("bad argument #3 to 'schedule' (function expected, got %s)", type(encode)), 2)
    end
    local extras, conds = {}, {}
    for step = 1, steps do
        local list = {}
        for i, part in ipairs(parsed.parts) do
            local text = text_of(part, step, steps)
            if extras[text] == nil then extras[text] = encode(text) end
            list[i] = {extra = extras[text], weight = part.weight}
        end
        conds[step] = list
    end
    return function(step, called_steps)
        if called_steps ~= nil and called_steps ~= steps then
            error(format("prompt schedule: made for %d steps, called for %s", steps, describe(called_steps)), 2)
        end
        if step == nil then
            error("prompt schedule: no step given (a guider knows it only from its sigmas: kiri.guidance.cfg{sigmas = ...})", 2)
        end
        if not integer_in(step, 1, steps) then
            error(format("prompt schedule: the step must be an integer in 1..%d, got %s", steps, describe(step)), 2)
        end
        return conds[step]
    end
end

return prompt
