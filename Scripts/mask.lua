-- A mask for inpaint.lua: white (1: repaint) inside a box, black (0: keep) elsewhere, as A1111's inpaint masks.
-- Usage: kiri run Scripts/mask.lua [size=28x28] [box=LEFT,TOP,RIGHT,BOTTOM] [invert=true] [out=mask.png]
-- The box is in pixels from the top-left corner, right and bottom excluded; the default is the left half of the
-- default model's 28x28 images. invert=true keeps the box and repaints the rest.
local recipe = require "lib.recipe"

local p = recipe.params(arg, {size = "28x28", box = "0,0,14,28", invert = false, out = "mask.png"})
local width, height = p.size:match("^(%d+)x(%d+)$")
width, height = tonumber(width), tonumber(height)
if not width or width < 1 or height < 1 or width > 16384 or height > 16384 then
    recipe.input_error(string.format("size=%s: give WIDTHxHEIGHT, e.g. 512x512", p.size))
end
local box = recipe.values("box", p.box, 0)
local left, top, right, bottom = table.unpack(box)
if #box ~= 4 or left < 0 or top < 0 or right > width or bottom > height or left >= right or top >= bottom then
    recipe.input_error(string.format("box=%s: give LEFT,TOP,RIGHT,BOTTOM inside the %dx%d image, left < right and "
        .. "top < bottom", p.box, width, height))
end

-- 1 on the box's rows times 1 on its columns, broadcast to the whole image.
local function inside(count, first, last)
    local values = {}
    for i = 1, count do values[i] = (i > first and i <= last) and 1 or 0 end
    return kiri.tensor(values)
end
local mask = inside(height, top, bottom):reshape({1, height, 1}) * inside(width, left, right):reshape({1, 1, width})
if p.invert then mask = 1 - mask end
print("wrote " .. kiri.image.save(p.out, mask))
