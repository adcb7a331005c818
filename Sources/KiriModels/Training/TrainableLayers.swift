import KiriTensor

// The layers of a trainable network, in Torch7 nn's manner: `forward` computes the output and keeps what
// `backward` needs (its input); `backward(dOut)` adds the parameters' gradients and returns the input's gradient,
// releasing what forward kept. Activations live in the network's Workspace, so a second step allocates nothing.

/// The input a layer kept for its backward, or an error when backward comes without a training forward first.
private func takeSaved(_ saved: inout Buffer?, _ layer: String) throws -> Buffer {
    guard let buffer = saved else { throw TensorError("\(layer): backward without a training forward before it") }
    saved = nil
    return buffer
}

/// torch.nn.Conv2d with a square kernel: keys `PREFIX.weight` [O, I, k, k] and `PREFIX.bias` [O].
final class TrainableConv2d {
    let weight: Parameter, bias: Parameter
    let chunks: WeightChunks
    let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int, paddingEnd: Int
    private var input: Buffer?

    init(_ parameters: ParameterBuilder, _ prefix: String, _ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1,
         padding: Int = 0, paddingEnd: Int? = nil) throws {
        let fanIn = inChannels * kernel * kernel
        weight = try parameters("\(prefix).weight", [outChannels, inChannels, kernel, kernel], .uniform(fanIn: fanIn))
        bias = try parameters("\(prefix).bias", [outChannels], .uniform(fanIn: fanIn))
        chunks = WeightChunks(WeightMatrix(sharing: weight.value))
        (self.inChannels, self.outChannels, self.kernel, self.stride) = (inChannels, outChannels, kernel, stride)
        (self.padding, self.paddingEnd) = (padding, paddingEnd ?? padding)
    }

    func shape(_ x: Buffer) -> ConvolutionShape {
        ConvolutionShape(batch: x.batch, inChannels: inChannels, height: x.height, width: x.width, outChannels: outChannels,
                         kernel: kernel, stride: stride, padding: padding, paddingEnd: paddingEnd)
    }

    /// A 3×3 conv with stride 1 and padding 1, which runs as Winograd's F(2×2, 3×3) forward and backward: its input's
    /// gradient is the same conv of dOut with the weight flipped and its channels swapped, its weight's gradient the
    /// algorithm transposed (winogradConv2dWeightBackward).
    var isWinograd: Bool { Conv2d.winograd && kernel == 3 && stride == 1 && padding == 1 && paddingEnd == 1 }

    /// Storage kept between steps: the forward's filter transforms, the flipped weight and its transforms.
    private var forwardFilters: Tensor?, flipped: Tensor?, flippedFilters: Tensor?

    /// conv2d(input) by Winograd with `weight` [O, I, 3, 3] as it is now (its transforms made per call, as the
    /// optimiser changes it, into `filters`).
    private func winograd(into out: Buffer, _ input: Buffer, weight: Tensor, filters storage: inout Tensor?,
                          bias: UnsafePointer<Float>?, extraBias: UnsafePointer<Float>?, _ workspace: Workspace) throws {
        if storage == nil { storage = try Tensor(shape: [winogradPoints, weight.shape[0], weight.shape[1]]) }
        let filters = try WinogradWeight(WeightMatrix(sharing: weight), storage: storage)
        let scratch = try workspace.scratch(.columns, filters.scratchCount(WinogradTiling(batch: input.batch, height: input.height,
                                                                                            width: input.width)))
        winogradConv2dForward(out.data, input.data, filters, bias, extraBias: extraBias, scratch: scratch, batch: input.batch,
                              height: input.height, width: input.width)
    }

    /// conv2d(x) + bias + extraBias [B, O] (ResnetBlock2D's projected time embedding).
    func forward(_ x: Buffer, extraBias: UnsafePointer<Float>? = nil, _ workspace: Workspace) throws -> Buffer {
        let shape = shape(x), plan = ConvolutionPlan(shape)
        let out = try workspace.take([x.batch, outChannels, shape.outHeight, shape.outWidth])
        if isWinograd {
            try winograd(into: out, x, weight: weight.value, filters: &forwardFilters, bias: bias.value.data, extraBias: extraBias,
                         workspace)
        } else {
            let count = plan.columnsCount(chunks)
            conv2dForward(out.data, x.data, chunks, bias.value.data, extraBias: extraBias,
                          columns: count > 0 ? try workspace.scratch(.columns, count) : nil, plan)
        }
        input = workspace.kept(x)
        return out
    }

    /// dInput, or nil with `inputGradient` false (conv_in's input needs none unless asked).
    func backward(_ dOut: Buffer, inputGradient: Bool = true, _ workspace: Workspace) throws -> Buffer? {
        let x = try takeSaved(&input, "conv2d")
        let shape = shape(x)
        var dInput = inputGradient ? try workspace.take(x.shape) : nil
        guard isWinograd else {
            let threads = Parallel.threads
            let scratch = try workspace.scratch(.columns, conv2dBackwardScratch(shape, threads: threads))
            conv2dBackward(dInput: dInput?.data, dWeight: weight.grad.data, dBias: bias.grad.data, dOut: dOut.data, input: x.data,
                           weight: weight.value.data, shape, scratch: scratch, threads: threads)
            return dInput
        }
        let tiling = WinogradTiling(batch: x.batch, height: x.height, width: x.width)
        let scratch = try workspace.scratch(.columns, winogradWeightBackwardScratch(inChannels: inChannels, outChannels: outChannels,
                                                                                   tiling))
        winogradConv2dWeightBackward(weight.grad.data, dBias: bias.grad.data, dOut: dOut.data, input: x.data, scratch: scratch,
                                     batch: x.batch, inChannels: inChannels, outChannels: outChannels, height: x.height,
                                     width: x.width)
        if let gradient = dInput {
            // flipped[i, o, 2 − ky, 2 − kx] = weight[o, i, ky, kx]: conv_transpose2d as a conv.
            let flipped = try self.flipped ?? Tensor(shape: [inChannels, outChannels, 3, 3])
            self.flipped = flipped
            let (source, target) = (weight.value.data, flipped.data)
            for o in 0..<outChannels {
                for i in 0..<inChannels {
                    for tap in 0..<9 { target[(i * outChannels + o) * 9 + 8 - tap] = source[(o * inChannels + i) * 9 + tap] }
                }
            }
            try winograd(into: gradient, dOut, weight: flipped, filters: &flippedFilters, bias: nil, extraBias: nil, workspace)
            dInput = gradient
        }
        return dInput
    }
}

/// torch.nn.Linear over the last dimension: keys `PREFIX.weight` [O, I] (or [O, I, 1, 1] for a 1×1 conv used as
/// one, Transformer2DModel's conv proj_in) and, when it has one, `PREFIX.bias` [O].
final class TrainableLinear {
    let weight: Parameter, bias: Parameter?
    let chunks: WeightChunks
    let inFeatures: Int, outFeatures: Int
    private var input: Buffer?

    init(_ parameters: ParameterBuilder, _ prefix: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true,
         pointwiseConv: Bool = false) throws {
        weight = try parameters("\(prefix).weight", [outFeatures, inFeatures] + (pointwiseConv ? [1, 1] : []), .uniform(fanIn: inFeatures))
        self.bias = bias ? try parameters("\(prefix).bias", [outFeatures], .uniform(fanIn: inFeatures)) : nil
        chunks = WeightChunks(WeightMatrix(sharing: weight.value))
        (self.inFeatures, self.outFeatures) = (inFeatures, outFeatures)
    }

    /// x [..., I] → [..., O].
    func forward(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let out = try workspace.take(Array(x.shape.dropLast()) + [outFeatures])
        linearForward(out.data, x.data, chunks, bias?.value.data, rows: x.count / inFeatures, scratch: nil)
        input = workspace.kept(x)
        return out
    }

    func backward(_ dOut: Buffer, _ workspace: Workspace) throws -> Buffer {
        let x = try takeSaved(&input, "linear")
        let dInput = try workspace.take(x.shape)
        linearBackward(dInput: dInput.data, dWeight: weight.grad.data, dBias: bias?.grad.data, dOut: dOut.data, input: x.data,
                       weight: weight.value.data, rows: x.count / inFeatures, inFeatures: inFeatures, outFeatures: outFeatures)
        return dInput
    }
}

/// torch.nn.GroupNorm with affine parameters (`PREFIX.weight`, `PREFIX.bias` [C]) over [B, C, …], followed by
/// `activation` when given (the norm-then-SiLU every ResNet block starts with).
final class TrainableGroupNorm {
    let weight: Parameter, bias: Parameter
    let groups: Int, channels: Int, eps: Float
    let activation: Activation?
    private var input: Buffer?

    init(_ parameters: ParameterBuilder, _ prefix: String, groups: Int, channels: Int, eps: Double, activation: Activation? = nil) throws {
        guard groups > 0, channels % groups == 0 else {
            throw parameters.failure("group norm '\(prefix)': \(groups) groups do not divide \(channels) channels")
        }
        weight = try parameters("\(prefix).weight", [channels], .ones)
        bias = try parameters("\(prefix).bias", [channels], .zeros)
        (self.groups, self.channels, self.eps, self.activation) = (groups, channels, Float(eps), activation)
    }

    /// act(GroupNorm(x)) into `out`, or without the activation when `activation` is nil.
    private func normalize(into out: Buffer, _ x: Buffer, activation: Activation?, _ workspace: Workspace) throws {
        let statistics = try workspace.take([2, x.batch, channels])
        let mean = statistics.data, scale = mean + x.batch * channels, spatial = x.count / (x.batch * channels)
        groupNormStatistics(mean: mean, scale: scale, x.data, weight.value.data, eps: eps, batch: x.batch, channels: channels,
                            spatial: spatial, groups: groups)
        let map = ChannelNormalization(mean: mean, scale: scale, shift: bias.value.data, channels: channels, activation: activation)
        channelNormalizationForward(out.data, x.data, map, batch: x.batch, spatial: spatial)
    }

    func forward(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let out = try workspace.take(x.shape)
        try normalize(into: out, x, activation: activation, workspace)
        input = workspace.kept(x)
        return out
    }

    func backward(_ dOut: Buffer, _ workspace: Workspace) throws -> Buffer {
        let x = try takeSaved(&input, "group norm")
        var gradient = dOut
        if let activation {
            // The norm's output again, for the activation's derivative at it.
            let normalized = try workspace.take(x.shape)
            try normalize(into: normalized, x, activation: nil, workspace)
            gradient = try workspace.take(x.shape)
            activationBackward(gradient.data, dOut: dOut.data, input: normalized.data, activation, count: x.count)
        }
        let dInput = try workspace.take(x.shape)
        groupNormBackward(dInput: dInput.data, dWeight: weight.grad.data, dBias: bias.grad.data, dOut: gradient.data, input: x.data,
                          weight: weight.value.data, eps: eps, batch: x.batch, channels: channels,
                          spatial: x.count / (x.batch * channels), groups: groups)
        return dInput
    }
}

/// torch.nn.LayerNorm over the last dimension with affine parameters; keys `PREFIX.weight` and `PREFIX.bias`.
final class TrainableLayerNorm {
    let weight: Parameter, bias: Parameter
    let features: Int, eps: Float
    private var input: Buffer?

    init(_ parameters: ParameterBuilder, _ prefix: String, features: Int, eps: Float = 1e-5) throws {
        weight = try parameters("\(prefix).weight", [features], .ones)
        bias = try parameters("\(prefix).bias", [features], .zeros)
        (self.features, self.eps) = (features, eps)
    }

    func forward(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let out = try workspace.take(x.shape)
        layerNormForward(out.data, x.data, weight.value.data, bias.value.data, eps: eps, rows: x.count / features, features: features)
        input = workspace.kept(x)
        return out
    }

    func backward(_ dOut: Buffer, _ workspace: Workspace) throws -> Buffer {
        let x = try takeSaved(&input, "layer norm")
        let dInput = try workspace.take(x.shape)
        layerNormBackward(dInput: dInput.data, dWeight: weight.grad.data, dBias: bias.grad.data, dOut: dOut.data, input: x.data,
                          weight: weight.value.data, eps: eps, rows: x.count / features, features: features)
        return dInput
    }
}

/// An activation between layers (time_embedding's act), keeping its input.
final class TrainableActivation {
    let activation: Activation
    private var input: Buffer?

    init(_ activation: Activation) { self.activation = activation }

    func forward(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let out = try workspace.take(x.shape)
        activationForward(out.data, x.data, activation, count: x.count)
        input = workspace.kept(x)
        return out
    }

    func backward(_ dOut: Buffer, _ workspace: Workspace) throws -> Buffer {
        let x = try takeSaved(&input, "activation")
        let dInput = try workspace.take(x.shape)
        activationBackward(dInput.data, dOut: dOut.data, input: x.data, activation, count: x.count)
        return dInput
    }
}

/// a += b, elementwise: a residual branch's gradient joining the main path's.
func accumulate(_ a: Buffer, _ b: Buffer) {
    let (x, y) = (a.data, b.data)
    for i in 0..<a.count { x[i] += y[i] }
}

/// input [B, M, N] transposed in its last two dimensions, as `shape` (B·N·M elements): channels-first feature maps
/// [B, C, H, W] to tokens [B, H·W, C] and back, the views diffusers' attention takes with `.view(...).transpose(1, 2)`.
func transposeLastTwo(_ input: Buffer, rows: Int, columns: Int, as shape: [Int], _ workspace: Workspace) throws -> Buffer {
    let batch = input.count / (rows * columns)
    let out = try workspace.take(shape)
    for b in 0..<batch {
        let source = input.data + b * rows * columns, target = out.data + b * rows * columns
        for r in 0..<rows {
            for c in 0..<columns { target[c * rows + r] = source[r * columns + c] }
        }
    }
    return out
}
