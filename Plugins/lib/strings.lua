-- Text helpers whose patterns stay linear on any length of text. The sandbox refuses a pattern whose
-- backtracking could blow up on its subject, and the usual trim "^%s*(.-)%s*$" is one of those on a
-- few hundred bytes: a long path, prompt fragment or list item would fail with "pattern too costly".
--
--   strings.trim(s)          -> s without leading and trailing whitespace
--   strings.last_colon(s)    -> the position of the last ':' in s, or nil
--   strings.split(s, sep)    -> the non-empty pieces of s between the one-byte separators sep, in order
local strings = {}

function strings.trim(s)
    local first = s:find("%S")
    if first == nil then return "" end
    return s:sub(first, s:match("^.*()%S"))
end

function strings.last_colon(s)
    return s:match("^.*():")
end

function strings.split(s, sep)
    local pieces, position = {}, 1
    while position <= #s do
        local stop = s:find(sep, position, true) or #s + 1
        if stop > position then pieces[#pieces + 1] = s:sub(position, stop - 1) end
        position = stop + 1
    end
    return pieces
end

return strings
