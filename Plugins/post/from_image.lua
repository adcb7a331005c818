-- An image in [0, 1] as a sample in the model's [-1, 1] range (diffusers VaeImageProcessor.normalize)
-- diffusers src/diffusers/image_processor.py: normalize is 2 x - 1.
return function(image)
    return image * 2 - 1
end
