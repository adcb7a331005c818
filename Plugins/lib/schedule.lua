-- Shared maths of the schedule plugins: sigma lists, discrete (DDPM) noise tables, interpolation.
-- Every schedule in Plugins/schedules builds a plain Lua list of numbers in double precision and
-- hands it to `as_sigmas`, which checks it and makes the float32 tensor. Where a reference keeps a
-- table in float32 (diffusers' betas and alphas_cumprod, ComfyUI's sigma buffers), the same table is
-- rounded to float32 here with `f32`, so the results agree to float32 precision, not just roughly.

local schedule = {}

local exp, log, sqrt, floor, abs = math.exp, math.log, math.sqrt, math.floor, math.abs
local format = string.format

-- Numbers and lists ------------------------------------------------------------------------------

-- Round a double to the nearest float32 (ties to even), as a float32 tensor stores it. Each IEEE
-- operation (+ - * / sqrt) done in double and then rounded this way gives the correctly rounded
-- float32 result, so float32 arithmetic of torch and numpy can be mirrored exactly.
function schedule.f32(x)
    return (string.unpack("f", string.pack("f", x)))
end

local function identity(x) return x end

function schedule.is_tensor(value)
    return type(value) == "userdata"
end

-- A copy of a Lua list or a 1-D tensor as a Lua list of numbers.
function schedule.to_list(values, what)
    if schedule.is_tensor(values) then
        if values:dim() ~= 1 then
            error(format("%s: a 1-D tensor expected, got %d dimensions", what or "list", values:dim()), 3)
        end
        return values:totable()
    end
    if type(values) ~= "table" then
        error(format("%s: a list of numbers or a 1-D tensor expected, got %s", what or "list", type(values)), 3)
    end
    local list = {}
    for i = 1, #values do
        local value = values[i]
        if type(value) ~= "number" then
            error(format("%s: entry %d is %s, a number expected", what or "list", i, type(value)), 3)
        end
        list[i] = value
    end
    return list
end

-- A schedule from a user's list (or tensor) of sigmas: at least two, finite, never increasing,
-- the last one 0, the others positive. Returns the 1-D float32 tensor the samplers take. Equal
-- neighbours are allowed, because clamped schedules (laplace) and beta's deduplication can make them.
function schedule.as_sigmas(values)
    local sigmas = schedule.to_list(values, "sigmas")
    local count = #sigmas
    if count < 2 then
        error(format("sigmas: at least 2 values expected (one step), got %d", count), 2)
    end
    for i = 1, count do
        local sigma = sigmas[i]
        if sigma ~= sigma or sigma == math.huge or sigma == -math.huge then
            error(format("sigmas: sigmas[%d] = %s is not finite", i, tostring(sigma)), 2)
        end
        if i < count and sigma <= 0 then
            error(format("sigmas: sigmas[%d] = %.17g, only the last sigma may be 0 and none negative", i, sigma), 2)
        end
        if i > 1 and sigma > sigmas[i - 1] then
            error(format("sigmas: sigmas[%d] = %.17g is larger than sigmas[%d] = %.17g (sigmas must decrease)",
                i, sigma, i - 1, sigmas[i - 1]), 2)
        end
    end
    if sigmas[count] ~= 0 then
        error(format("sigmas: the last sigma must be 0, got %.17g", sigmas[count]), 2)
    end
    return kiri.tensor(sigmas)
end

-- The step count of a schedule's options: opts.n, a positive integer.
function schedule.steps(opts)
    if type(opts) ~= "table" then
        error(format("schedule options: a table like {n=20} expected, got %s", type(opts)), 3)
    end
    local n = opts.n
    if math.type(n) ~= "integer" and not (type(n) == "number" and n == floor(n)) or n < 1 then
        error(format("schedule options: n must be a positive integer, got %s", tostring(n)), 3)
    end
    return floor(n)
end

-- numpy.linspace(start, stop, count, endpoint): start + i * step, and the last value exactly stop.
function schedule.linspace(start, stop, count, endpoint)
    if endpoint == nil then endpoint = true end
    local divisions = endpoint and count - 1 or count
    local step = divisions > 0 and (stop - start) / divisions or 0
    local values = {}
    for i = 0, count - 1 do values[i + 1] = i * step + start end
    if endpoint and count > 1 then values[count] = stop end
    return values
end

-- torch.linspace(start, stop, count) as ATen's CPU kernel computes it: the first half from start,
-- the second from stop, each value start + step * i rounded once (the kernel's fused multiply-add),
-- in `round`'s precision. With f32 this gives diffusers' float32 betas bit for bit.
function schedule.torch_linspace(start, stop, count, round)
    start, stop = round(start), round(stop)
    local step = count > 1 and round(round(stop - start) / (count - 1)) or 0
    local values = {}
    for i = 0, count - 1 do
        values[i + 1] = i < count // 2 and round(start + step * i) or round(stop - step * (count - 1 - i))
    end
    return values
end

-- numpy.rint: round half to even.
function schedule.round_half_even(x)
    local lower = floor(x)
    local fraction = x - lower
    if fraction > 0.5 or (fraction == 0.5 and lower % 2 == 1) then return lower + 1 end
    return lower
end

-- numpy.interp(x, xs, ys) for increasing xs: clamped at both ends, exact at the nodes.
function schedule.interp(x, xs, ys)
    local count = #xs
    if x <= xs[1] then return ys[1] end
    if x >= xs[count] then return ys[count] end
    local low, high = 1, count
    while high - low > 1 do
        local middle = (low + high) // 2
        if xs[middle] <= x then low = middle else high = middle end
    end
    if x == xs[low] then return ys[low] end
    local slope = (ys[low + 1] - ys[low]) / (xs[low + 1] - xs[low])
    return slope * (x - xs[low]) + ys[low]
end

-- Log-linear interpolation of a decreasing list to `count` values, as ComfyUI
-- comfy_extras/nodes_align_your_steps.py loglinear_interp (from NVIDIA's Align Your Steps how-to).
function schedule.loglinear_interp(values, count)
    local xs = schedule.linspace(0, 1, #values)
    local logs = {}
    for i = 1, #values do logs[i] = log(values[#values + 1 - i]) end
    local result = {}
    for i, x in ipairs(schedule.linspace(0, 1, count)) do
        result[count + 1 - i] = exp(schedule.interp(x, xs, logs))
    end
    return result
end

-- Discrete (DDPM) noise tables -------------------------------------------------------------------

-- diffusers betas_for_alpha_bar (scheduling_ddpm.py), the Glide cosine schedule "squaredcos_cap_v2".
local function cosine_betas(count)
    local function alpha_bar(t) return math.cos((t + 0.008) / 1.008 * math.pi / 2) ^ 2 end
    local betas = {}
    for i = 0, count - 1 do
        betas[i + 1] = math.min(1 - alpha_bar((i + 1) / count) / alpha_bar(i / count), 0.999)
    end
    return betas
end

-- Betas of opts.beta_schedule, named as diffusers names them: "linear" (linspace of betas),
-- "scaled_linear" (linspace of sqrt(beta), squared: Stable Diffusion's, which CompVis and ComfyUI
-- call "linear") and "squaredcos_cap_v2". `round` is f32 to mirror diffusers (torch.float32) or
-- identity to mirror ComfyUI's make_beta_schedule (float64).
function schedule.betas(opts, round)
    local kind = opts.beta_schedule or "scaled_linear"
    local count = opts.num_train_timesteps or 1000
    local first, last = opts.beta_start or 0.00085, opts.beta_end or 0.012
    local betas
    if kind == "linear" then
        betas = schedule.torch_linspace(first, last, count, round)
    elseif kind == "scaled_linear" then
        betas = schedule.torch_linspace(first ^ 0.5, last ^ 0.5, count, round)
        for i, root in ipairs(betas) do betas[i] = round(root * root) end
    elseif kind == "squaredcos_cap_v2" then
        betas = cosine_betas(count)
        for i, beta in ipairs(betas) do betas[i] = round(beta) end
    else
        error(format("unknown beta_schedule '%s' (linear, scaled_linear or squaredcos_cap_v2)", tostring(kind)), 3)
    end
    return betas
end

-- torch.cumprod of 1 - beta. On the CPU torch accumulates a float32 cumprod in double and rounds
-- each output (ATen cumprod_cpu_kernel, acc_type<float> = double), which `round` mirrors.
local function cumulative_alphas(betas, round)
    local alphas_cumprod, product = {}, 1
    for i, beta in ipairs(betas) do
        product = product * round(1 - beta)
        alphas_cumprod[i] = round(product)
    end
    return alphas_cumprod
end

-- diffusers rescale_zero_terminal_snr (scheduling_ddim.py; Lin et al. 2023, "Common Diffusion Noise
-- Schedules and Sample Steps are Flawed", Algorithm 1): shift and scale sqrt(alphas_cumprod) so the
-- last timestep has zero SNR and the first keeps its value, then convert back to betas.
local function rescale_zero_terminal_snr(betas, round)
    local roots = {}
    for i, alpha_bar in ipairs(cumulative_alphas(betas, round)) do roots[i] = round(sqrt(alpha_bar)) end
    local first, last = roots[1], roots[#roots]
    local scale = round(first / round(first - last))
    local alpha_bars = {}
    for i, root in ipairs(roots) do
        root = round(round(root - last) * scale)
        alpha_bars[i] = round(root * root)
    end
    local rescaled = {round(1 - alpha_bars[1])}
    for i = 2, #alpha_bars do rescaled[i] = round(1 - round(alpha_bars[i] / alpha_bars[i - 1])) end
    return rescaled
end

-- alphas_cumprod of a discrete model: opts.alphas_cumprod as given, or from the beta schedule.
-- With opts.rescale_zero_snr the betas are rescaled first and, as diffusers' EulerDiscreteScheduler
-- does, the last alphas_cumprod (exactly 0 after rescaling) becomes 2^-24 "so the first sigma is not
-- inf": that sigma is then sqrt(2^24 - 1), about 4096, instead of infinity.
function schedule.alphas_cumprod(opts, round)
    round = round or identity
    if opts.alphas_cumprod ~= nil then return schedule.to_list(opts.alphas_cumprod, "alphas_cumprod") end
    local betas = schedule.betas(opts, round)
    if opts.rescale_zero_snr then betas = rescale_zero_terminal_snr(betas, round) end
    local alphas_cumprod = cumulative_alphas(betas, round)
    if opts.rescale_zero_snr then alphas_cumprod[#alphas_cumprod] = 2 ^ -24 end
    return alphas_cumprod
end

-- sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod) for each entry, in `round`'s precision.
function schedule.sigmas_from_alphas_cumprod(alphas_cumprod, round)
    round = round or identity
    local sigmas = {}
    for i, alpha_bar in ipairs(alphas_cumprod) do
        sigmas[i] = round(sqrt(round(round(1 - alpha_bar) / alpha_bar)))
    end
    return sigmas
end

-- k-diffusion external.py DiscreteSchedule.sigma_to_t: the fractional timestep (0-based) of
-- `sigma`, by linear interpolation of log sigma between the two neighbouring entries of the
-- increasing `log_sigmas`, clamped to [0, #log_sigmas - 1]; with `quantize`, the nearest timestep.
function schedule.sigma_to_t(log_sigmas, sigma, quantize)
    local log_sigma = log(sigma)
    local count = #log_sigmas
    if quantize then
        local best, distance = 1, math.huge
        for i = 1, count do
            local d = abs(log_sigma - log_sigmas[i])
            if d < distance then best, distance = i, d end
        end
        return best - 1
    end
    local low = 1
    for i = 1, count do
        if log_sigmas[i] <= log_sigma then low = i end
    end
    low = math.min(low, count - 1)
    local high = low + 1
    local weight = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])
    weight = math.max(0, math.min(1, weight))
    return (1 - weight) * (low - 1) + weight * (high - 1)
end

-- k-diffusion DiscreteSchedule.t_to_sigma (and ComfyUI ModelSamplingDiscrete.sigma, which also
-- clamps t): interpolate log sigma linearly at the fractional 0-based timestep t.
function schedule.t_to_sigma(log_sigmas, t)
    t = math.max(0, math.min(#log_sigmas - 1, t))
    local low = floor(t)
    local high = math.ceil(t)
    local weight = t - low
    return exp((1 - weight) * log_sigmas[low + 1] + weight * log_sigmas[high + 1])
end

-- The noise table of a discrete model, as ComfyUI's ModelSamplingDiscrete keeps it: the increasing
-- sigmas of timesteps 0..N-1 and their logs, as float32 buffers computed in float64 from
-- make_beta_schedule (comfy/model_sampling.py). From opts.sigmas (the model's own table, either
-- order), opts.alphas_cumprod, or the beta schedule options; the default is Stable Diffusion's
-- scaled_linear 0.00085..0.012 over 1000 steps.
function schedule.model(opts)
    local sigmas
    if opts.sigmas ~= nil then
        sigmas = schedule.to_list(opts.sigmas, "sigmas")
        if #sigmas > 1 and sigmas[1] > sigmas[#sigmas] then
            local reversed = {}
            for i = 1, #sigmas do reversed[i] = sigmas[#sigmas + 1 - i] end
            sigmas = reversed
        end
    else
        sigmas = schedule.sigmas_from_alphas_cumprod(schedule.alphas_cumprod(opts))
    end
    if #sigmas < 2 then error("a discrete model needs at least 2 sigmas", 3) end
    local model = {sigmas = {}, log_sigmas = {}}
    for i, sigma in ipairs(sigmas) do
        model.sigmas[i] = schedule.f32(sigma)
        model.log_sigmas[i] = schedule.f32(log(sigma))
    end
    model.sigma_min, model.sigma_max = model.sigmas[1], model.sigmas[#sigmas]
    -- ComfyUI ModelSamplingDiscrete.timestep: the nearest timestep; .sigma: interpolated in log sigma.
    function model.timestep(sigma) return schedule.sigma_to_t(model.log_sigmas, sigma, true) end
    function model.sigma(t) return schedule.t_to_sigma(model.log_sigmas, t) end
    return model
end

-- sigma_min and sigma_max of a continuous schedule: opts.sigma_min / opts.sigma_max, else those of
-- the discrete model of `opts` (ComfyUI passes model_sampling.sigma_min/max the same way).
function schedule.sigma_range(opts)
    local sigma_min, sigma_max = opts.sigma_min, opts.sigma_max
    if sigma_min == nil or sigma_max == nil then
        local model = schedule.model(opts)
        sigma_min = sigma_min or model.sigma_min
        sigma_max = sigma_max or model.sigma_max
    end
    if not (sigma_min > 0 and sigma_max >= sigma_min) then
        error(format("need 0 < sigma_min <= sigma_max, got sigma_min = %s, sigma_max = %s",
            tostring(sigma_min), tostring(sigma_max)), 3)
    end
    return sigma_min, sigma_max
end

-- ComfyUI comfy/samplers.py normal_scheduler (and sgm_uniform, which is normal_scheduler with
-- sgm=True): timesteps evenly spaced from the model's sigma_max to its sigma_min, each turned into a
-- sigma by log-linear interpolation of the model's table. sgm drops the last of n + 1 timesteps
-- instead of spacing n (as Stability's sgm code does). When the model's smallest sigma is 0 (a
-- zero-SNR table), ComfyUI spaces n + 1 timesteps and appends no 0; here that sigma is then made
-- exactly 0, the end every schedule has.
function schedule.uniform_in_timestep(opts, sgm)
    local n = schedule.steps(opts)
    local model = schedule.model(opts)
    local start, stop = model.timestep(model.sigma_max), model.timestep(model.sigma_min)
    local ends_at_zero = not sgm and abs(model.sigma(stop)) <= 1e-5
    local times = schedule.linspace(start, stop, (sgm or ends_at_zero) and n + 1 or n)
    if sgm then times[n + 1] = nil end
    local sigmas = {}
    for i, t in ipairs(times) do sigmas[i] = model.sigma(t) end
    if ends_at_zero then sigmas[#sigmas] = 0 else sigmas[#sigmas + 1] = 0 end
    return schedule.as_sigmas(sigmas)
end

-- Special functions for the beta schedule ---------------------------------------------------------

-- log Gamma(x) for x > 0 by the Lanczos approximation (g = 7, 9 terms; relative error ~1e-15),
-- with the reflection formula below 1/2.
local lanczos = {0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
    1.5056327351493116e-7}

function schedule.log_gamma(x)
    if x < 0.5 then
        return log(math.pi / abs(math.sin(math.pi * x))) - schedule.log_gamma(1 - x)
    end
    x = x - 1
    local sum = lanczos[1]
    for i = 2, #lanczos do sum = sum + lanczos[i] / (x + i - 1) end
    local t = x + 7.5
    return 0.5 * log(2 * math.pi) + (x + 0.5) * log(t) - t + log(sum)
end

-- The continued fraction of the incomplete beta function by the modified Lentz method (Numerical
-- Recipes, betacf); converges fast for x < (a + 1) / (a + b + 2).
local function beta_fraction(x, a, b)
    local tiny = 1e-300
    local c, d = 1, 1 - (a + b) * x / (a + 1)
    if abs(d) < tiny then d = tiny end
    d = 1 / d
    local result = d
    for m = 1, 1000 do
        local m2 = 2 * m
        local numerator = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1 + numerator * d; if abs(d) < tiny then d = tiny end
        c = 1 + numerator / c; if abs(c) < tiny then c = tiny end
        d = 1 / d
        result = result * d * c
        numerator = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1 + numerator * d; if abs(d) < tiny then d = tiny end
        c = 1 + numerator / c; if abs(c) < tiny then c = tiny end
        d = 1 / d
        local delta = d * c
        result = result * delta
        if abs(delta - 1) < 1e-16 then break end
    end
    return result
end

-- The regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b).
function schedule.beta_cdf(x, a, b)
    if x <= 0 then return 0 end
    if x >= 1 then return 1 end
    local log_front = a * log(x) + b * log(1 - x)
        - (schedule.log_gamma(a) + schedule.log_gamma(b) - schedule.log_gamma(a + b))
    if x < (a + 1) / (a + b + 2) then
        return exp(log_front) * beta_fraction(x, a, b) / a
    end
    return 1 - exp(log_front) * beta_fraction(1 - x, b, a) / b
end

-- scipy.stats.beta.ppf(q, a, b): the inverse of the CDF, by bisection down to adjacent doubles.
-- The CDF is monotone, so bisection cannot miss; its error is the CDF's (~1e-15) over the density.
function schedule.beta_ppf(q, a, b)
    if q <= 0 then return 0 end
    if q >= 1 then return 1 end
    local low, high = 0, 1
    for _ = 1, 1100 do
        local middle = (low + high) / 2
        if middle <= low or middle >= high then break end
        if schedule.beta_cdf(middle, a, b) < q then low = middle else high = middle end
    end
    return (low + high) / 2
end

return schedule
