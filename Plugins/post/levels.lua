-- Levels: input black/white points, gamma and output range (GIMP's and Photoshop's Levels)
-- GIMP app/operations/gimpoperationlevels.c, gimp_operation_levels_map with clamp_input, in which
-- out = out_black + (out_white - out_black) *
-- clamp((x - in_black) / (in_white - in_black), 0, 1) ^ (1 / gamma), per value and channel.
-- kiri.post.levels(image, {in_black = 0, in_white = 1, gamma = 1, out_black = 0, out_white = 1}) -> a new
-- tensor of image's shape; in_white > in_black, gamma > 0; out_black > out_white inverts.
local check = require "lib.check"

return function(image, opts)
    check.tensor(image, 1, "levels")
    opts = check.options(opts, 2, "levels")
    local in_black = check.number(opts, "in_black", 0, 2, "levels")
    local in_white = check.number(opts, "in_white", 1, 2, "levels")
    local gamma = check.number(opts, "gamma", 1, 2, "levels", "a positive number", function(g) return g > 0 end)
    local out_black = check.number(opts, "out_black", 0, 2, "levels")
    local out_white = check.number(opts, "out_white", 1, 2, "levels")
    if in_white <= in_black then   -- both finite numbers (check.number)
        check.fail(2, "levels", string.format("in_white must be greater than in_black (%s), got %s", in_black, in_white), 3)
    end
    local scaled = ((image - in_black) / (in_white - in_black)):clamp_(0, 1)
    if gamma ~= 1 then scaled = scaled:pow(1 / gamma) end
    return scaled * (out_white - out_black) + out_black
end
