-- Euler for flow-matching (rectified-flow) models: sigmas are flow times t from 1 (noise) to 0 (data)
-- Lipman et al. (2023), "Flow Matching for Generative Modeling", arXiv:2210.02747; Esser et al. (2024),
-- "Scaling Rectified Flow Transformers" (SD3), arXiv:2403.03206. With x_t = (1 - t) x0 + t noise the model
-- predicts the velocity v = noise - x0; wrapped as a denoiser (kiri.models.wrap, prediction "flow":
-- D(x, t) = x - t v) the Karras derivative (x - D) / t is v, so k-diffusion's Euler step
-- x + (t_next - t) (x - D) / t is the flow Euler step x + (t_next - t) v. This is ComfyUI's "euler" on flow
-- (CONST) models and diffusers' FlowMatchEulerDiscreteScheduler.step; take the times from
-- kiri.schedules.flow. Options are kiri.samplers.euler's.
return function(model, x, sigmas, opts)
    if sigmas[1] > 1 then
        error(("euler_flow: flow times in [0, 1] expected, got sigmas[1] = %g (use euler for sigma schedules)")
            :format(sigmas[1]), 2)
    end
    return kiri.samplers.euler(model, x, sigmas, opts)
end
