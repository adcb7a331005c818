-- Nearest-neighbour upscaling by a whole factor: every pixel becomes a factor x factor block
-- torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest") for an integer factor.
-- kiri.post.upscale_nearest(image, factor): image [..., H, W] (an [H, W] mask, a [C, H, W] image or an
-- [N, C, H, W] batch) -> [..., H * factor, W * factor].
return function(image, factor)
    if type(image) ~= "userdata" then
        error(string.format("bad argument #1 to 'upscale_nearest' (Tensor expected, got %s)", type(image)), 2)
    end
    local whole = type(factor) == "number" and math.tointeger(factor)
    if not whole or whole < 1 then
        error(string.format("bad argument #2 to 'upscale_nearest' (positive integer expected, got %s)", tostring(factor)), 2)
    end
    local shape = image:shape()
    if #shape < 2 then
        error(string.format("bad argument #1 to 'upscale_nearest' (Tensor of 2 or more dimensions expected, got %d)", #shape), 2)
    end
    local height, width = shape[#shape - 1], shape[#shape]
    local planes = 1   -- the dimensions before H and W, flattened (a tensor has at most 5)
    for d = 1, #shape - 2 do planes = planes * shape[d] end
    factor = whole
    shape[#shape - 1], shape[#shape] = height * factor, width * factor
    -- [planes, H, 1, W, 1] expanded to [planes, H, factor, W, factor]: each pixel repeated down and across
    return image:reshape({ planes, height, 1, width, 1 }):expand({ planes, height, factor, width, factor })
        :reshape(shape)
end
