-- UniPC with B(h) = e^h - 1 (ComfyUI's uni_pc_bh2): kiri.samplers.unipc with variant "bh2"
-- ComfyUI comfy/extra_samplers/uni_pc.py sample_unipc_bh2; Zhao et al. (2023), arXiv:2302.04867. The other
-- options are unipc's.
return function(model, x, sigmas, opts)
    return kiri.samplers.unipc(model, x, sigmas, setmetatable({variant = "bh2"}, {__index = opts or {}}))
end
