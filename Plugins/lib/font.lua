-- A 5x7 pixel monospace bitmap font for labels: every printable ASCII character, drawn for Kiri
-- The glyphs below were drawn for Kiri (so they carry no one else's licence), in the manner of the 5x7
-- character ROMs of text-mode displays. A character is 5 x 7 pixels and advances 6 (1 pixel of spacing
-- between characters, none after the last); render draws one line, wrap splits text into lines.
-- Lowercase letters are real lowercase glyphs, their descenders (g j p q y) fitted inside the 7 rows. A
-- character outside the sheet (one UTF-8 sequence counts as one) is drawn as a hollow box.
--
--   font.height, font.advance   7 and 6 pixels
--   font.width(text)            the rendered width in pixels: 6 * characters - 1 (0 for "")
--   font.render(text)           -> [7, font.width(text)] tensor, 1 for ink and 0 elsewhere
--   font.wrap(text, width)      -> a list of lines, each at most `width` pixels wide (but at least one
--                                  character): text's own lines ("\n"), each filled word by word
--
-- `text` is a string or a number. The sheet: bands of a header line, naming the characters, over their
-- 7 rows of pixels ("#" ink), one glyph every 6 columns.
local font = { height = 7, advance = 6 }

local sheet = [==[
A     B     C     D     E     F     G     H     I     J     K     L     M
.###. ####. .###. ###.. ##### ##### .###. #...# .###. ..### #...# #.... #...#
#...# #...# #...# #..#. #.... #.... #...# #...# ..#.. ...#. #..#. #.... ##.##
#...# #...# #.... #...# #.... #.... #.... #...# ..#.. ...#. #.#.. #.... #.#.#
##### ####. #.... #...# ####. ####. #.### ##### ..#.. ...#. ##... #.... #.#.#
#...# #...# #.... #...# #.... #.... #...# #...# ..#.. ...#. #.#.. #.... #...#
#...# #...# #...# #..#. #.... #.... #...# #...# ..#.. #..#. #..#. #.... #...#
#...# ####. .###. ###.. ##### #.... .#### #...# .###. .##.. #...# ##### #...#

N     O     P     Q     R     S     T     U     V     W     X     Y     Z
#...# .###. ####. .###. ####. .#### ##### #...# #...# #...# #...# #...# #####
#...# #...# #...# #...# #...# #.... ..#.. #...# #...# #...# #...# #...# ....#
##..# #...# #...# #...# #...# #.... ..#.. #...# #...# #...# .#.#. .#.#. ...#.
#.#.# #...# ####. #...# ####. .###. ..#.. #...# #...# #.#.# ..#.. ..#.. ..#..
#..## #...# #.... #.#.# #.#.. ....# ..#.. #...# #...# #.#.# .#.#. ..#.. .#...
#...# #...# #.... #..#. #..#. ....# ..#.. #...# .#.#. #.#.# #...# ..#.. #....
#...# .###. #.... .##.# #...# ####. ..#.. .###. ..#.. .#.#. #...# ..#.. #####

a     b     c     d     e     f     g     h     i     j     k     l     m
..... #.... ..... ....# ..... ..##. ..... #.... ..#.. ...#. #.... .##.. .....
..... #.... ..... ....# ..... .#..# ..... #.... ..... ..... #.... ..#.. .....
.###. #.##. .###. .##.# .###. .#... .#### #.##. .##.. ..##. #..#. ..#.. ##.#.
....# ##..# #.... #..## #...# ###.. #...# ##..# ..#.. ...#. #.#.. ..#.. #.#.#
.#### #...# #.... #...# ##### .#... .#### #...# ..#.. ...#. ##... ..#.. #.#.#
#...# #...# #...# #...# #.... .#... ....# #...# ..#.. #..#. #.#.. ..#.. #...#
.#### ####. .###. .#### .###. .#... .###. #...# .###. .##.. #..#. .###. #...#

n     o     p     q     r     s     t     u     v     w     x     y     z
..... ..... ..... ..... ..... ..... .#... ..... ..... ..... ..... ..... .....
..... ..... ..... ..... ..... ..... .#... ..... ..... ..... ..... ..... .....
#.##. .###. ####. .##.# #.##. .###. ###.. #...# #...# #...# #...# #...# #####
##..# #...# #...# #..## ##..# #.... .#... #...# #...# #...# .#.#. #...# ...#.
#...# #...# ####. .#### #.... .###. .#... #...# #...# #.#.# ..#.. .#### ..#..
#...# #...# #.... ....# #.... ....# .#..# #..## .#.#. #.#.# .#.#. ....# .#...
#...# .###. #.... ....# #.... ####. ..##. .##.# ..#.. .#.#. #...# .###. #####

0     1     2     3     4     5     6     7     8     9     -     +     =
.###. ..#.. .###. ##### ...#. ##### ..##. ##### .###. .###. ..... ..... .....
#...# .##.. #...# ...#. ..##. #.... .#... ....# #...# #...# ..... ..#.. .....
#..## ..#.. ....# ..#.. .#.#. ####. #.... ...#. #...# #...# ..... ..#.. #####
#.#.# ..#.. ...#. ...#. #..#. ....# ####. ..#.. .###. .#### ##### ##### .....
##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....# ..... ..#.. #####
#...# ..#.. .#... #...# ...#. #...# #...# .#... #...# ...#. ..... ..#.. .....
.###. .###. ##### .###. ...#. .###. .###. .#... .###. .##.. ..... ..... .....

.     ,     :     ;     !     ?     '     "     `     _     /     \     |
..... ..... ..... ..... ..#.. .###. ..#.. .#.#. .#... ..... ..... ..... ..#..
..... ..... .##.. .##.. ..#.. #...# ..#.. .#.#. ..#.. ..... ....# #.... ..#..
..... ..... .##.. .##.. ..#.. ....# ..... ..... ...#. ..... ...#. .#... ..#..
..... ..... ..... ..... ..#.. ...#. ..... ..... ..... ..... ..#.. ..#.. ..#..
..... .##.. .##.. .##.. ..#.. ..#.. ..... ..... ..... ..... .#... ...#. ..#..
.##.. ..#.. .##.. ..#.. ..... ..... ..... ..... ..... ..... #.... ....# ..#..
.##.. .#... ..... .#... ..#.. ..#.. ..... ..... ..... ##### ..... ..... ..#..

(     )     [     ]     {     }     <     >     #     %     &     *     @
...#. .#... .###. .###. ...#. .#... ...#. .#... .#.#. ##... .##.. ..... .###.
..#.. ..#.. .#... ...#. ..#.. ..#.. ..#.. ..#.. .#.#. ##..# #..#. ..#.. #...#
.#... ...#. .#... ...#. ..#.. ..#.. .#... ...#. ##### ...#. #.#.. #.#.# ....#
.#... ...#. .#... ...#. .#... ...#. #.... ....# .#.#. ..#.. .#... .###. .##.#
.#... ...#. .#... ...#. ..#.. ..#.. .#... ...#. ##### .#... #.#.# #.#.# #.#.#
..#.. ..#.. .#... ...#. ..#.. ..#.. ..#.. ..#.. .#.#. #..## #..#. ..#.. #.#.#
...#. .#... .###. .###. ...#. .#... ...#. .#... .#.#. ...## .##.# ..... .###.

$     ^     ~
..#.. ..#.. .....
.#### .#.#. .....
#.#.. #...# .#...
.###. ..... #.#.#
..#.# ..... ...#.
####. ..... .....
..#.. ..... .....
]==]

-- A glyph as 7 rows of 5 numbers, 1 for ink.
local function bitmap(rows)
    local glyph = {}
    for r, pixels in ipairs(rows) do
        glyph[r] = {}
        for x = 1, 5 do glyph[r][x] = pixels:sub(x, x) == "#" and 1 or 0 end
    end
    return glyph
end

local glyphs = { [" "] = bitmap { ".....", ".....", ".....", ".....", ".....", ".....", "....." } }
local box = bitmap { "#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####" }

local lines = {}
for line in sheet:gmatch("[^\n]+") do lines[#lines + 1] = line end
for band = 1, #lines, font.height + 1 do
    local header = lines[band]
    for column = 1, #header, font.advance do
        local rows = {}
        for r = 1, font.height do rows[r] = lines[band + r]:sub(column, column + 4) end
        glyphs[header:sub(column, column)] = bitmap(rows)
    end
end

-- The UTF-8 characters of text, a lead byte and its continuation bytes (0x80-0xBF) each. By bytes, not
-- gmatch: the sandbox refuses a pattern on a label of a few thousand characters.
local function characters(text)
    local position = 1
    return function()
        if position > #text then return nil end
        local first = position
        repeat position = position + 1 until position > #text or (text:byte(position) & 0xC0) ~= 0x80
        return text:sub(first, position - 1)
    end
end

local function check(text, name)
    if type(text) == "number" then return tostring(text) end
    if type(text) ~= "string" then
        error(string.format("bad argument #1 to '%s' (string expected, got %s)", name, type(text)), 3)
    end
    return text
end

function font.width(text)
    local count = 0
    for _ in characters(check(text, "width")) do count = count + 1 end
    return math.max(0, count * font.advance - 1)
end

function font.render(text)
    local rows = {}
    for r = 1, font.height do rows[r] = {} end
    for character in characters(check(text, "render")) do
        local glyph = glyphs[character] or box
        for r, row in ipairs(rows) do
            if #row > 0 then row[#row + 1] = 0 end
            for _, pixel in ipairs(glyph[r]) do row[#row + 1] = pixel end
        end
    end
    return kiri.tensor(rows)
end

-- Where a word too long for a line may break, after the character: so that "dpmpp_2m_sde" becomes
-- "dpmpp_2m_" and "sde" rather than a cut at the width.
local breaks = { ["_"] = true, ["-"] = true, ["/"] = true, ["."] = true, [","] = true, [":"] = true }

-- The words of a line: its runs between spaces, as Python's str.split, which A1111's wrap uses.
local function words(line)
    local list, position = {}, 1
    while position <= #line do
        local stop = line:find(" ", position, true) or #line + 1
        if stop > position then list[#list + 1] = line:sub(position, stop - 1) end
        position = stop + 1
    end
    return list
end

-- Greedy filling, as AUTOMATIC1111 modules/images.py draw_grid_annotations (its `wrap`), by characters since
-- the font is monospace; a word longer than a line, which A1111 lets overflow into the next column, is broken
-- after its last break character in the line's second half, else at the width.
function font.wrap(text, width)
    text = check(text, "wrap")
    if type(width) ~= "number" then
        error(string.format("bad argument #2 to 'wrap' (number expected, got %s)", type(width)), 2)
    end
    local most = math.max(1, (math.floor(width) + 1) // font.advance)   -- characters a line holds
    local wrapped, position = {}, 1
    repeat
        local stop = text:find("\n", position, true) or #text + 1
        local line = {}   -- the characters of the line being filled
        for _, word in ipairs(words(text:sub(position, stop - 1))) do
            local rest = {}
            for character in characters(word) do rest[#rest + 1] = character end
            if #line > 0 and #line + 1 + #rest <= most then
                line[#line + 1] = " "
                table.move(rest, 1, #rest, #line + 1, line)
            else
                if #line > 0 then wrapped[#wrapped + 1] = table.concat(line) end
                while #rest > most do
                    local cut = most
                    for k = most, most // 2 + 1, -1 do
                        if breaks[rest[k]] then cut = k; break end
                    end
                    wrapped[#wrapped + 1] = table.concat(rest, "", 1, cut)
                    rest = table.move(rest, cut + 1, #rest, 1, {})
                end
                line = rest
            end
        end
        wrapped[#wrapped + 1] = table.concat(line)
        position = stop + 1
    until position > #text + 1
    return wrapped
end

return font
