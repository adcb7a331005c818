-- Argument checks for plugins, raising lauxlib-style errors at the plugin's caller
-- Messages read like luaL_argerror's: "bad argument #2 to 'resize' (width must be a positive integer, got 0)".
--
--   check.tensor(value, position, name)          -> value, a Tensor
--   check.image(value, position, name)           -> value, a Tensor of 2 to 4 dimensions ([H, W], [C, H, W] or
--                                                   [N, C, H, W])
--   check.options(value, position, name)         -> value, a table, or {} for nil
--   check.number(opts, key, default, position, name, [expected, valid])
--                                                -> opts[key] or default; a finite number for which valid(value)
--                                                   holds, else "KEY must be EXPECTED, got VALUE"
--   check.whole(opts, key, default, position, name, least)
--                                                -> opts[key] or default, an integer >= least
--   check.fail(position, name, message, level)   raises "bad argument #POSITION to 'NAME' (MESSAGE)"; level 4
--                                                   from a check here, 3 from a plugin's own test
--   check.kind(value)                            -> "Tensor" for a tensor, else type(value)
--   check.show(value)                            -> a number or boolean as is, a string quoted, else its kind
--   check.shape_text(shape)                      -> "[2,7,9]"
--
-- Each check is called straight from a plugin, which its caller called: the error is raised 3 levels up
-- (check.fail, the check, the plugin). So a plugin must not tail-call a check (`return check.x(...)`).
local check = {}
local format = string.format

function check.kind(value)
    return type(value) == "userdata" and "Tensor" or type(value)
end

function check.shape_text(shape)
    return "[" .. table.concat(shape, ",") .. "]"
end

function check.show(value)
    if type(value) == "number" or type(value) == "boolean" then return tostring(value) end
    if type(value) == "string" then return "'" .. value .. "'" end
    return check.kind(value)
end

function check.fail(position, name, message, level)
    error(format("bad argument #%d to '%s' (%s)", position, name, message), level or 4)
end

function check.tensor(value, position, name)
    if type(value) ~= "userdata" then check.fail(position, name, "Tensor expected, got " .. check.kind(value)) end
    return value
end

function check.image(value, position, name)
    if type(value) ~= "userdata" then check.fail(position, name, "Tensor expected, got " .. check.kind(value)) end
    local shape = value:shape()
    if #shape < 2 or #shape > 4 then
        check.fail(position, name, "image [H,W], [C,H,W] or [N,C,H,W] expected, got shape " .. check.shape_text(shape))
    end
    return value
end

function check.options(value, position, name)
    if value == nil then return {} end
    if type(value) ~= "table" then check.fail(position, name, "table expected, got " .. check.kind(value)) end
    return value
end

function check.number(opts, key, default, position, name, expected, valid)
    local value = opts[key]
    if value == nil then return default end
    local finite = type(value) == "number" and value == value and value > -math.huge and value < math.huge
    if not finite or (valid and not valid(value)) then
        check.fail(position, name, format("%s must be %s, got %s", key, expected or "a number", check.show(value)))
    end
    return value
end

function check.whole(opts, key, default, position, name, least)
    local value = opts[key]
    if value == nil then return default end
    local whole = type(value) == "number" and math.tointeger(value)
    if not whole or whole < least then
        local expected = least == 1 and "a positive integer" or format("an integer >= %d", least)
        check.fail(position, name, format("%s must be %s, got %s", key, expected, check.show(value)))
    end
    return whole
end

return check
