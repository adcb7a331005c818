---@meta
-- LuaLS declarations of Kiri's Tensor (Sources/KiriLua/TensorBindings.swift), in Torch7's manner: methods and
-- operators allocate a new tensor; a `_` suffix changes the tensor in place and returns it.

---A float32 tensor (at most 5 dimensions). `#t` is the size of the first dimension; `t[i]` is a number for a
---1-D tensor, else the i-th sub-tensor along the first dimension; `t[i] = v` writes it; `tostring(t)` prints it;
---`local t <close> = ...` frees its memory at the end of the scope.
---@class Tensor: userdata
---@operator add(Tensor|number): Tensor
---@operator sub(Tensor|number): Tensor
---@operator mul(Tensor|number): Tensor
---@operator div(Tensor|number): Tensor
---@operator pow(Tensor|number): Tensor
---@operator unm: Tensor
---@operator len: integer
---@field [integer] number|Tensor
local Tensor = {}

---self + other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:add(other) end

---In place: self = self + other.
---@param other Tensor|number
---@return Tensor self
function Tensor:add_(other) end

---self - other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:sub(other) end

---In place: self = self - other.
---@param other Tensor|number
---@return Tensor self
function Tensor:sub_(other) end

---self * other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:mul(other) end

---In place: self = self * other.
---@param other Tensor|number
---@return Tensor self
function Tensor:mul_(other) end

---self / other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:div(other) end

---In place: self = self / other.
---@param other Tensor|number
---@return Tensor self
function Tensor:div_(other) end

---self ^ other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:pow(other) end

---In place: self = self ^ other.
---@param other Tensor|number
---@return Tensor self
function Tensor:pow_(other) end

---the smaller of self and other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:minimum(other) end

---In place: self = the smaller of self and other.
---@param other Tensor|number
---@return Tensor self
function Tensor:minimum_(other) end

---the larger of self and other, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:maximum(other) end

---In place: self = the larger of self and other.
---@param other Tensor|number
---@return Tensor self
function Tensor:maximum_(other) end

---1 where self == other, else 0, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:eq(other) end

---In place: self = 1 where self == other, else 0.
---@param other Tensor|number
---@return Tensor self
function Tensor:eq_(other) end

---1 where self < other, else 0, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:lt(other) end

---In place: self = 1 where self < other, else 0.
---@param other Tensor|number
---@return Tensor self
function Tensor:lt_(other) end

---1 where self <= other, else 0, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:le(other) end

---In place: self = 1 where self <= other, else 0.
---@param other Tensor|number
---@return Tensor self
function Tensor:le_(other) end

---1 where self > other, else 0, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:gt(other) end

---In place: self = 1 where self > other, else 0.
---@param other Tensor|number
---@return Tensor self
function Tensor:gt_(other) end

---1 where self >= other, else 0, a new tensor (numpy broadcasting).
---@param other Tensor|number
---@return Tensor
function Tensor:ge(other) end

---In place: self = 1 where self >= other, else 0.
---@param other Tensor|number
---@return Tensor self
function Tensor:ge_(other) end

---@return Tensor
function Tensor:neg() end

---@return Tensor self
function Tensor:neg_() end

---@return Tensor
function Tensor:abs() end

---@return Tensor self
function Tensor:abs_() end

---@return Tensor
function Tensor:sqrt() end

---@return Tensor self
function Tensor:sqrt_() end

---@return Tensor
function Tensor:exp() end

---@return Tensor self
function Tensor:exp_() end

---@return Tensor
function Tensor:log() end

---@return Tensor self
function Tensor:log_() end

---@return Tensor
function Tensor:tanh() end

---@return Tensor self
function Tensor:tanh_() end

---@return Tensor
function Tensor:sigmoid() end

---@return Tensor self
function Tensor:sigmoid_() end

---@return Tensor
function Tensor:silu() end

---@return Tensor self
function Tensor:silu_() end

---@return Tensor
function Tensor:sign() end

---@return Tensor self
function Tensor:sign_() end

---@return Tensor
function Tensor:floor() end

---@return Tensor self
function Tensor:floor_() end

---@return Tensor
function Tensor:ceil() end

---@return Tensor self
function Tensor:ceil_() end

---@return Tensor
function Tensor:round() end

---@return Tensor self
function Tensor:round_() end

---@return Tensor
function Tensor:square() end

---@return Tensor self
function Tensor:square_() end

---@return Tensor
function Tensor:reciprocal() end

---@return Tensor self
function Tensor:reciprocal_() end

---Values clamped to [lo, hi]; either bound may be nil.
---@param lo? number
---@param hi? number
---@return Tensor
function Tensor:clamp(lo, hi) end

---@param lo? number
---@param hi? number
---@return Tensor self
function Tensor:clamp_(lo, hi) end

---self + weight * (stop - self).
---@param stop Tensor
---@param weight number|Tensor
---@return Tensor
function Tensor:lerp(stop, weight) end

---@param stop Tensor
---@param weight number|Tensor
---@return Tensor self
function Tensor:lerp_(stop, weight) end

---self += alpha * x, with no temporary: a sampler's Euler step.
---@param alpha number
---@param x Tensor
---@return Tensor self
function Tensor:axpy_(alpha, x) end

---Copies `source` (broadcast to self's shape) into self.
---@param source Tensor
---@return Tensor self
function Tensor:copy_(source) end

---@param value number
---@return Tensor self
function Tensor:fill_(value) end

---@return Tensor self
function Tensor:zero_() end

---Matrix product over the last two dimensions (torch.matmul).
---@param other Tensor
---@return Tensor
function Tensor:matmul(other) end

---A number over every element, or a tensor over dimension `dim`.
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function Tensor:sum(dim, keepdim) end

---A number over every element, or a tensor over dimension `dim`.
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function Tensor:mean(dim, keepdim) end

---A number over every element, or a tensor over dimension `dim`.
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function Tensor:min(dim, keepdim) end

---A number over every element, or a tensor over dimension `dim`.
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function Tensor:max(dim, keepdim) end

---Argument 2 (`unbiased`, default true) is also `keepdim`.
---@param dim? integer
---@param unbiased? boolean
---@return number|Tensor
function Tensor:var(dim, unbiased) end

---Argument 2 (`unbiased`, default true) is also `keepdim`.
---@param dim? integer
---@param unbiased? boolean
---@return number|Tensor
function Tensor:std(dim, unbiased) end

---The p-norm (p = 2 by default; math.huge for the maximum norm).
---@param p? number
---@param dim? integer
---@param keepdim? boolean
---@return number|Tensor
function Tensor:norm(p, dim, keepdim) end

---The 1-based index of the largest value along `dim`, as a float tensor.
---@param dim integer
---@param keepdim? boolean
---@return Tensor
function Tensor:argmax(dim, keepdim) end

---@return Shape
function Tensor:shape() end

---The shape, or the size of dimension `dim`.
---@param dim? integer
---@return Shape|integer
function Tensor:size(dim) end

---The number of dimensions.
---@return integer
function Tensor:dim() end

---The number of elements.
---@return integer
function Tensor:numel() end

---The value of a one-element tensor.
---@return number
function Tensor:item() end

---Nested Lua tables of numbers (a number for a rank-0 tensor).
---@return number|table
function Tensor:totable() end

---@return Tensor
function Tensor:clone() end

---The same elements in a new shape, sharing memory (one size may be -1).
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function Tensor:reshape(shape, ...) end

---As reshape: shares memory.
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function Tensor:view(shape, ...) end

---Size-1 dimensions repeated to `shape` (-1 keeps a size).
---@param shape Shape|integer
---@param ... integer
---@return Tensor
function Tensor:expand(shape, ...) end

---Torch7's repeatTensor: the tensor tiled `counts` times along each dimension.
---@param counts Shape|integer
---@param ... integer
---@return Tensor
function Tensor:repeatTensor(counts, ...) end

---@param ... integer the dimensions in their new order
---@return Tensor
function Tensor:permute(...) end

---@param dim1 integer
---@param dim2 integer
---@return Tensor
function Tensor:transpose(dim1, dim2) end

---`length` entries of dimension `dim` from `start`.
---@param dim integer
---@param start integer
---@param length integer
---@return Tensor
function Tensor:narrow(dim, start, length) end

---Entry `index` of dimension `dim`, that dimension removed.
---@param dim integer
---@param index integer
---@return Tensor
function Tensor:select(dim, index) end

---A size-1 dimension inserted at `dim`.
---@param dim integer
---@return Tensor
function Tensor:unsqueeze(dim) end

---Size-1 dimensions removed (only `dim`, when given).
---@param dim? integer
---@return Tensor
function Tensor:squeeze(dim) end
