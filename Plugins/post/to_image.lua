-- A sample in the model's [-1, 1] range as an image in [0, 1], clamped (diffusers VaeImageProcessor.denormalize)
-- diffusers src/diffusers/image_processor.py: denormalize is (x / 2 + 0.5).clamp(0, 1).
return function(x)
    return (x * 0.5 + 0.5):clamp_(0, 1)
end
