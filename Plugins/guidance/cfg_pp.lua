-- CFG++ (Chung et al. 2024): the samplers that renoise along the unconditional prediction, by base sampler name
-- Chung et al. (2024), "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models",
-- arXiv:2406.08070. CFG++ changes the sampler's update, not the guider's sum, so its samplers live in
-- samplers/: kiri.guidance.cfg_pp("euler") is kiri.samplers.euler_cfg_pp (also "dpmpp_2m"). Use them
-- with a guider (kiri.guidance.cfg) at a small scale (about 0.5 to 2), e.g. sampler=euler_cfg_pp cfg=1.
return function(sampler)
    if type(sampler) == "table" or sampler == nil then
        error("cfg_pp is not a patch but samplers: choose sampler=euler_cfg_pp or sampler=dpmpp_2m_cfg_pp", 2)
    end
    if type(sampler) ~= "string" then
        error(string.format("bad argument #1 to 'cfg_pp' (sampler name expected, got %s)", type(sampler)), 2)
    end
    return kiri.samplers[sampler .. "_cfg_pp"]
end
