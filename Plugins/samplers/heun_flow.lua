-- Heun for flow-matching (rectified-flow) models: sigmas are flow times t from 1 (noise) to 0 (data)
-- Karras et al. (2022), arXiv:2206.00364, Algorithm 1 (Heun's 2nd-order method) on the flow ODE
-- dx/dt = v of Lipman et al. (2023), arXiv:2210.02747: for x_t = (1 - t) x0 + t noise and a flow model
-- wrapped as a denoiser (D(x, t) = x - t v, kiri.models.wrap prediction "flow"), (x - D) / t = v, so
-- k-diffusion's Heun step averages the velocities at t and at the Euler prediction at t_next, and the
-- step to t = 0 is Euler. This is ComfyUI's "heun" on flow (CONST) models and diffusers'
-- FlowMatchHeunDiscreteScheduler; take the times from kiri.schedules.flow. Options are kiri.samplers.heun's.
return function(model, x, sigmas, opts)
    if sigmas[1] > 1 then
        error(("heun_flow: flow times in [0, 1] expected, got sigmas[1] = %g (use heun for sigma schedules)")
            :format(sigmas[1]), 2)
    end
    return kiri.samplers.heun(model, x, sigmas, opts)
end
