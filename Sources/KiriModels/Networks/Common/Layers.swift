import KiriTensor

/// Reads a network's parameters by their diffusers keys, from a safetensors file or a mapped single-file
/// checkpoint, each with the exact shape the config implies (security case 31), and counts them.
final class WeightReader {
    let file: any TensorSource
    private(set) var parameterCount = 0

    init(_ file: any TensorSource) { self.file = file }

    func callAsFunction(_ key: String, _ shape: [Int]) throws -> Tensor {
        let tensor = try file.requireTensor(key, shape: shape)
        parameterCount += tensor.count
        return tensor
    }

    /// Weight `key` of `shape` [O, …] as a matrix [O, rest] in the format the source gives it (the file's dtype):
    /// the file's bytes copied when they are in that format already, else converted through float32.
    func matrix(_ key: String, _ shape: [Int]) throws -> WeightMatrix {
        let format = file.format(key) ?? .f32
        guard let actual = file.shape(key), actual == shape else { return try WeightMatrix(self(key, shape), format: format) }
        let rows = shape[0], columns = shape.dropFirst().reduce(1, *)
        guard let copied = try WeightMatrix(rows: rows, columns: columns, format: format, copying: {
            file.copyStored(key, as: format, into: $0)
        }) else { return try WeightMatrix(self(key, shape), format: format) }
        if let cancellation = Cancellation.current, cancellation.isStopped {
            throw ModelFileError(file.path, "tensor '\(key)': \(cancellation.error.message)")
        }
        parameterCount += rows * columns
        return copied
    }

    func contains(_ key: String) -> Bool { file.contains(key) }

    /// An error about the network the config describes, naming the config field at fault.
    func failure(_ message: String) -> ModelFileError { ModelFileError(file.path, message) }
}

/// torch.nn.Conv2d with a square kernel; keys `PREFIX.weight` [O, I, k, k] and `PREFIX.bias` [O]. A 3×3 conv with
/// stride 1 and padding 1 runs as Winograd's F(2×2, 3×3) (WinogradWeight); the rest run by im2col.
struct Conv2d {
    /// [O, I·k·k], in the file's format.
    let weight: WeightMatrix
    let chunks: WeightChunks
    /// The weight as Winograd uses it, for a 3×3 conv with stride 1 and padding 1.
    let winogradWeight: WinogradWeight?
    let bias: Tensor
    let isWinograd: Bool
    let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int, paddingEnd: Int

    /// Whether eligible convs use Winograd (tests compare both paths).
    nonisolated(unsafe) static var winograd = true

    init(_ weights: WeightReader, _ prefix: String, _ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1,
         padding: Int = 0, paddingEnd: Int? = nil) throws {
        weight = try weights.matrix("\(prefix).weight", [outChannels, inChannels, kernel, kernel])
        bias = try weights("\(prefix).bias", [outChannels])
        (self.inChannels, self.outChannels, self.kernel, self.stride) = (inChannels, outChannels, kernel, stride)
        (self.padding, self.paddingEnd) = (padding, paddingEnd ?? padding)
        isWinograd = Conv2d.winograd && kernel == 3 && stride == 1 && padding == 1 && self.paddingEnd == 1
        chunks = WeightChunks(weight)
        winogradWeight = isWinograd ? try WinogradWeight(weight) : nil
    }

    func shape(batch: Int, height: Int, width: Int) -> ConvolutionShape {
        ConvolutionShape(batch: batch, inChannels: inChannels, height: height, width: width, outChannels: outChannels,
                         kernel: kernel, stride: stride, padding: padding, paddingEnd: paddingEnd)
    }

    func shape(_ x: Buffer) -> ConvolutionShape { shape(batch: x.batch, height: x.height, width: x.width) }

    /// Writes (or with `accumulate` adds) the convolution of `input` (shaped as `shape`) into `out`; `extraBias`
    /// [B, O] is added with the bias. With `normalization`, the conv is of the input as that map makes it.
    func forward(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ shape: ConvolutionShape,
                 normalizedBy normalization: InputNormalization? = nil, extraBias: UnsafePointer<Float>? = nil,
                 accumulate: Bool = false, _ workspace: Workspace) throws {
        try workspace.backend.conv2d(self, into: out, input, shape, upsampled: false, normalizedBy: normalization, extraBias: extraBias,
                                     accumulate: accumulate, workspace)
    }

    func callAsFunction(_ x: Buffer, normalizedBy normalization: InputNormalization? = nil, extraBias: UnsafePointer<Float>? = nil,
                        _ workspace: Workspace) throws -> Buffer {
        let shape = shape(x)
        let out = try workspace.take([x.batch, outChannels, shape.outHeight, shape.outWidth])
        try forward(into: out.data, x.data, shape, normalizedBy: normalization, extraBias: extraBias, workspace)
        return out
    }

    /// The conv of x (normalised by `normalization`, if given) up-sampled to `size` by nearest neighbour
    /// (Upsample2D, ResnetBlock2D's up=True). At twice x's size the backend reads the up-sampling from x (the CPU's
    /// Winograd conv never makes the image four times x's size); other sizes are up-sampled first.
    func upsampling(_ x: Buffer, normalizedBy normalization: InputNormalization? = nil, to size: (height: Int, width: Int),
                    extraBias: UnsafePointer<Float>? = nil, _ workspace: Workspace) throws -> Buffer {
        guard size == (2 * x.height, 2 * x.width) else {
            let source = try normalization?.apply(x.data, x.shape, workspace) ?? x
            return try self(try upsampleNearest(source, height: size.height, width: size.width, workspace), extraBias: extraBias,
                            workspace)
        }
        let out = try workspace.take([x.batch, outChannels, size.height, size.width])
        try workspace.backend.conv2d(self, into: out.data, x.data, shape(batch: x.batch, height: size.height, width: size.width),
                                     upsampled: true, normalizedBy: normalization, extraBias: extraBias, accumulate: false, workspace)
        return out
    }
}

/// torch.nn.Linear; keys `PREFIX.weight` [O, I] and, when it has one, `PREFIX.bias` [O].
struct Linear {
    let weight: WeightMatrix, bias: Tensor?
    let chunks: WeightChunks
    var inFeatures: Int { weight.columns }
    var outFeatures: Int { weight.rows }

    init(_ weights: WeightReader, _ prefix: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) throws {
        weight = try weights.matrix("\(prefix).weight", [outFeatures, inFeatures])
        self.bias = bias ? try weights("\(prefix).bias", [outFeatures]) : nil
        chunks = WeightChunks(weight)
    }

    /// A 1×1 convolution as the linear layer it is: [O, I, 1, 1] is [O, I] in memory.
    init(pointwise conv: Conv2d) {
        (weight, bias, chunks) = (conv.weight, conv.bias, WeightChunks(conv.weight))
    }

    /// Several linear layers over the same input as one: weights stacked along the output dimension ([q | k | v]),
    /// so one product computes them all.
    init(stacking layers: [Linear]) throws {
        weight = try WeightMatrix(stacking: layers.map(\.weight))
        chunks = WeightChunks(weight)
        if layers.allSatisfy({ $0.bias != nil }) {
            let bias = try Tensor(shape: [weight.rows])
            var offset = 0
            for layer in layers {
                (bias.data + offset).update(from: layer.bias!.data, count: layer.outFeatures)
                offset += layer.outFeatures
            }
            self.bias = bias
        } else {
            bias = nil
        }
    }

    /// out[rows, O] (+)= input[rows, I]·Wᵀ + b.
    func forward(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int, accumulate: Bool = false,
                 _ workspace: Workspace) throws {
        try workspace.backend.linear(self, into: out, input, .rows(rows), accumulate: accumulate, workspace)
    }

    /// out[B, T, O] = input[B, I, T]ᵀ·Wᵀ + b: channels-first features in, tokens out.
    func forward(tokensFrom input: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, batch: Int, tokens: Int,
                 _ workspace: Workspace) throws {
        try workspace.backend.linear(self, into: out, input, .tokensFromChannels(batch: batch, tokens: tokens), accumulate: false,
                                     workspace)
    }

    /// out[B, O, T] (+)= W·input[B, T, I]ᵀ + b: tokens in, channels-first features out.
    func forward(channelsFrom input: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                 batch: Int, tokens: Int, _ workspace: Workspace) throws {
        try workspace.backend.linear(self, into: out, input, .channelsFromTokens(batch: batch, tokens: tokens),
                                     accumulate: accumulate, workspace)
    }
}

/// torch.nn.GroupNorm with affine parameters; keys `PREFIX.weight` and `PREFIX.bias` [C].
struct GroupNorm {
    let weight: Tensor, bias: Tensor
    let groups: Int, channels: Int, eps: Float

    init(_ weights: WeightReader, _ prefix: String, groups: Int, channels: Int, eps: Double) throws {
        guard groups > 0, channels % groups == 0 else {
            throw weights.failure("group norm '\(prefix)': \(groups) groups do not divide \(channels) channels")
        }
        weight = try weights("\(prefix).weight", [channels])
        bias = try weights("\(prefix).bias", [channels])
        (self.groups, self.channels, self.eps) = (groups, channels, Float(eps))
    }

    /// GroupNorm(x), then `activation` if given, into a new buffer.
    func callAsFunction(_ x: Buffer, activation: Activation? = nil, _ workspace: Workspace) throws -> Buffer {
        try statistics(x, activation: activation, workspace).apply(x.data, x.shape, workspace)
    }

    /// GroupNorm's statistics of x, for a conv to apply as it reads x (Conv2d's `normalizedBy`).
    func statistics(_ x: Buffer, activation: Activation?, _ workspace: Workspace) throws -> InputNormalization {
        let statistics = try workspace.take([2, x.batch, channels])
        let mean = statistics.data, scale = mean + x.batch * channels
        workspace.backend.groupNormStatistics(self, mean: mean, scale: scale, x.data, batch: x.batch,
                                              spatial: x.count / (x.batch * channels))
        let map = ChannelNormalization(mean: mean, scale: scale, shift: bias.data, channels: channels, activation: activation)
        return InputNormalization(statistics: statistics, map: map)
    }
}

/// GroupNorm's statistics of an input, with the activation after the norm: what a kernel needs to read that input
/// normalised, so that the normalised copy (as large as the input) is made only where a kernel cannot.
struct InputNormalization {
    /// mean [B, C] then scale [B, C], which `map` points at.
    let statistics: Buffer
    let map: ChannelNormalization

    /// The normalised copy of input [B, C, …].
    func apply(_ input: UnsafePointer<Float>, _ shape: [Int], _ workspace: Workspace) throws -> Buffer {
        let out = try workspace.take(shape)
        workspace.backend.normalize(into: out.data, input, map, batch: shape[0], spatial: out.count / (shape[0] * map.channels))
        return out
    }
}

/// torch.nn.LayerNorm over the last dimension with affine parameters; keys `PREFIX.weight` and `PREFIX.bias`.
struct LayerNorm {
    let weight: Tensor, bias: Tensor
    let features: Int, eps: Float

    init(_ weights: WeightReader, _ prefix: String, features: Int, eps: Float = 1e-5) throws {
        weight = try weights("\(prefix).weight", [features])
        bias = try weights("\(prefix).bias", [features])
        (self.features, self.eps) = (features, eps)
    }

    func forward(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int, _ workspace: Workspace) {
        workspace.backend.layerNorm(self, into: out, input, rows: rows)
    }
}
