---@meta kiri
-- LuaLS (lua-language-server) declarations of Kiri's Lua API: the global `kiri` table, which `require "kiri"` also
-- returns. These files are read by the editor only, never run; docs/lua-api.md is the reference they follow, and
-- KiriTests/LuaAPIReferenceTests.swift fails when a binding or bundled plugin is missing here, or declared here but
-- gone. Dimensions and indices count from 1; negative dimensions count from the end.

---A shape: a list of sizes, `{2, 3}`.
---@alias Shape integer[]

---@class kiri
---@field data kiri.data datasets for training
---@field image kiri.image PNG files as tensors
---@field models kiri.models model loaders and `models/` plugins
---@field samplers kiri.samplers `samplers/` plugins
---@field schedules kiri.schedules `schedules/` plugins
---@field guidance kiri.guidance `guidance/` plugins
---@field post kiri.post `post/` plugins
---@field noise kiri.noise `noise/` plugins
---@field losses kiri.losses `losses/` plugins: the training loss and its gradient
---@field timesteps kiri.timesteps `timesteps/` plugins: training timestep samplers
---@field lr_schedules kiri.lr_schedules `lr_schedules/` plugins: learning rate per step
---@field optim kiri.optim AdamW, an EMA and gradient clipping for trainable models (training.lua)
kiri = {}

-- Constructors ------------------------------------------------------------------------------------

---A tensor from nested tables of numbers (`{{1, 2}, {3, 4}}`), or a rank-0 tensor from a number.
---@param values number|table
---@return Tensor
function kiri.tensor(values) end

---A tensor of zeros: `kiri.zeros({2, 3})` or `kiri.zeros(2, 3)`.
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function kiri.zeros(shape, ...) end

---A tensor of ones: `kiri.ones({2, 3})` or `kiri.ones(2, 3)`.
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function kiri.ones(shape, ...) end

---A tensor filled with `value`: `kiri.full({2, 3}, 0.5)` or `kiri.full(2, 3, 0.5)`.
---@param shape Shape|integer
---@param ... number sizes, then the value
---@return Tensor
function kiri.full(shape, ...) end

---`start, start + step, ...` below `stop` (0 to n - 1 with one argument), as torch.arange.
---@param start number
---@param stop? number
---@param step? number
---@return Tensor
function kiri.arange(start, stop, step) end

---`count` values evenly spaced from `start` to `stop`, both included.
---@param start number
---@param stop number
---@param count integer
---@return Tensor
function kiri.linspace(start, stop, count) end

---Standard normal draws (Philox4x32-10): the same seed gives the same numbers on any thread count. Without a
---seed (or in the `kiri.randn(2, 3)` form) the run's next seed is used (see kiri.manual_seed).
---@param shape Shape|integer
---@param seed? integer
---@return Tensor
function kiri.randn(shape, seed) end

---Uniform draws in [0, 1), seeded as kiri.randn.
---@param shape Shape|integer
---@param seed? integer
---@return Tensor
function kiri.rand(shape, seed) end

---@param t Tensor
---@return Tensor
function kiri.zeros_like(t) end

---@param t Tensor
---@return Tensor
function kiri.ones_like(t) end

---@param t Tensor
---@param seed? integer
---@return Tensor
function kiri.randn_like(t, seed) end

---@param t Tensor
---@param seed? integer
---@return Tensor
function kiri.rand_like(t, seed) end

---Sets the seed that unseeded random constructors use next (it advances with each such call).
---@param seed integer
function kiri.manual_seed(seed) end

-- Element-wise: a new tensor, or the result tensor given first ----------------------------------------

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.add(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.sub(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.mul(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.div(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.pow(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.minimum(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.maximum(a, b) end

---1 where a == b, else 0.
---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.eq(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.lt(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.le(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.gt(a, b) end

---@param a Tensor|number
---@param b Tensor|number
---@return Tensor
---@overload fun(result: Tensor, a: Tensor|number, b: Tensor|number): Tensor
function kiri.ge(a, b) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.neg(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.abs(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.sqrt(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.exp(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.log(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.tanh(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.sigmoid(t) end

---x * sigmoid(x).
---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.silu(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.sign(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.floor(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.ceil(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.round(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.square(t) end

---@param t Tensor
---@return Tensor
---@overload fun(result: Tensor, t: Tensor): Tensor
function kiri.reciprocal(t) end

---Values clamped to [lo, hi]; either bound may be nil.
---@param t Tensor
---@param lo? number
---@param hi? number
---@return Tensor
---@overload fun(result: Tensor, t: Tensor, lo?: number, hi?: number): Tensor
function kiri.clamp(t, lo, hi) end

---start + weight * (stop - start).
---@param start Tensor
---@param stop Tensor
---@param weight number|Tensor
---@return Tensor
---@overload fun(result: Tensor, start: Tensor, stop: Tensor, weight: number|Tensor): Tensor
function kiri.lerp(start, stop, weight) end

---a where condition is non-zero, else b (all three broadcast).
---@param condition Tensor
---@param a Tensor
---@param b Tensor
---@return Tensor
---@overload fun(result: Tensor, condition: Tensor, a: Tensor, b: Tensor): Tensor
function kiri.where(condition, a, b) end

---Matrix product over the last two dimensions, the batch dimensions broadcast (torch.matmul).
---@param a Tensor
---@param b Tensor
---@return Tensor
---@overload fun(result: Tensor, a: Tensor, b: Tensor): Tensor
function kiri.matmul(a, b) end

-- Reductions: a number over every element, or a tensor over one dimension -----------------------------

---@param t Tensor
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function kiri.sum(t, dim, keepdim) end

---@param t Tensor
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function kiri.mean(t, dim, keepdim) end

---@param t Tensor
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function kiri.min(t, dim, keepdim) end

---@param t Tensor
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function kiri.max(t, dim, keepdim) end

---Variance; argument 3 is both `unbiased` (default true) and `keepdim`.
---@param t Tensor
---@param dim? integer
---@param unbiased? boolean
---@return number|Tensor
function kiri.var(t, dim, unbiased) end

---Standard deviation; argument 3 is both `unbiased` (default true) and `keepdim`.
---@param t Tensor
---@param dim? integer
---@param unbiased? boolean
---@return number|Tensor
function kiri.std(t, dim, unbiased) end

---The p-norm (p = 2 by default; math.huge for the maximum norm).
---@param t Tensor
---@param p? number
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function kiri.norm(t, p, dim, keepdim) end

---The 1-based index of the largest value along `dim`, as a float tensor.
---@param t Tensor
---@param dim integer
---@param keepdim? boolean
---@return Tensor
function kiri.argmax(t, dim, keepdim) end

-- Shapes ------------------------------------------------------------------------------------------

---@param t Tensor
---@return Shape
function kiri.shape(t) end

---@param t Tensor
---@param dim? integer
---@return Shape|integer
function kiri.size(t, dim) end

---@param t Tensor
---@return integer
function kiri.dim(t) end

---@param t Tensor
---@return integer
function kiri.numel(t) end

---@param t Tensor
---@return number
function kiri.item(t) end

---@param t Tensor
---@return number|table
function kiri.totable(t) end

---@param t Tensor
---@return Tensor
function kiri.clone(t) end

---@param t Tensor
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function kiri.reshape(t, shape, ...) end

---@param t Tensor
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function kiri.view(t, shape, ...) end

---@param t Tensor
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function kiri.expand(t, shape, ...) end

---@param t Tensor
---@param counts Shape|integer
---@param ... integer
---@return Tensor
function kiri.repeatTensor(t, counts, ...) end

---@param t Tensor
---@param ... integer
---@return Tensor
function kiri.permute(t, ...) end

---@param t Tensor
---@param dim1 integer
---@param dim2 integer
---@return Tensor
function kiri.transpose(t, dim1, dim2) end

---@param t Tensor
---@param dim integer
---@param start integer
---@param length integer
---@return Tensor
function kiri.narrow(t, dim, start, length) end

---@param t Tensor
---@param dim integer
---@param index integer
---@return Tensor
function kiri.select(t, dim, index) end

---@param t Tensor
---@param dim integer
---@return Tensor
function kiri.unsqueeze(t, dim) end

---@param t Tensor
---@param dim? integer
---@return Tensor
function kiri.squeeze(t, dim) end

---Tensors joined along an existing dimension (default 1).
---@param tensors Tensor[]
---@param dim? integer
---@return Tensor
function kiri.cat(tensors, dim) end

---Tensors of one shape stacked along a new dimension (default 1).
---@param tensors Tensor[]
---@param dim? integer
---@return Tensor
function kiri.stack(tensors, dim) end

-- Files, time, plugins -------------------------------------------------------------------------------

---A UTF-8 text file from a folder the run may read.
---@param path string
---@return string
function kiri.read_text(path) end

---Writes `text` to a relative path under the output folder (`-o`); an existing file is kept and the text goes to
---the next free name (`x-2.txt`) unless the run may overwrite. Returns the path written.
---@param path string
---@param text string
---@return string
function kiri.write_text(path, text) end

---The engine's version, e.g. "0.1.0".
---@return string
function kiri.version() end

---Monotonic wall-clock seconds.
---@return number
function kiri.clock() end

---The engine's progress bar for a recipe's own loop, `note` (the loss, say) after its rate; it ends at
---`step == total`, and `kiri.progress()` ends it sooner, before a printed line.
---@param step? integer
---@param total? integer
---@param note? string
function kiri.progress(step, total, note) end

---Adds a plugin for this run: `kiri.register("sampler", "my_sampler", fn)`.
---@param kind "sampler"|"schedule"|"guidance"|"post"|"loss"|"timesteps"|"lr_schedule"
---@param name string a Lua identifier
---@param fn function|table a function, or a table with __call
function kiri.register(kind, name, fn) end

---@class kiri.image
kiri.image = {}

---A PNG as a [C, H, W] tensor in [0, 1] (C: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) and its text chunks.
---@param path string
---@return Tensor image
---@return table<string, string> text
function kiri.image.load(path) end

---Writes a [C, H, W] or [1, C, H, W] image in [0, 1] as an 8-bit PNG under the output folder, with text chunks.
---@param path string
---@param image Tensor
---@param text? table<string, string>
---@return string path the path written, with the output folder
function kiri.image.save(path, image, text) end
