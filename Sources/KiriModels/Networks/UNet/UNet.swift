import Foundation
import KiriTensor

/// A diffusers UNet2DModel (models/unets/unet_2d.py) or UNet2DConditionModel (unet_2d_condition.py, SD 1.x and
/// 2.x), built from its config with every module at the key diffusers saves it under, so a checkpoint loads
/// without a mapping table:
///   emb = time_embedding(time_proj(t)) [+ class_embedding(class_labels)]
///   h = conv_in(x); down_blocks (keeping skip connections); mid_block; up_blocks (consuming them)
///   out = conv_out(act(conv_norm_out(h)))
/// Parameters are float32 in memory; intermediate storage is pooled and reused by the next call. One forward pass
/// runs at a time (calls from several threads wait for each other).
public final class UNet {
    public let config: UNetConfig
    /// Elements in the parameters the network uses.
    public let parameterCount: Int

    private let convIn: Conv2d
    private let timeLinear1: Linear, timeLinear2: Linear
    private let classEmbedding: Tensor?
    private let downBlocks: [DownBlock]
    private let midBlock: MidBlock?
    private let upBlocks: [UpBlock]
    private let normOut: GroupNorm
    private let convOut: Conv2d
    /// time_embedding's activation and conv_act: SiLU in UNet2DModel, act_fn in UNet2DConditionModel.
    private let outerActivation: UNetConfig.Activation
    private let timeDimension: Int
    /// Width encoder_hidden_states must have, when any block attends to it.
    private let contextDimension: Int?
    private let workspace = Workspace()
    private let lock = NSLock()

    /// Reads every tensor the config implies from `weights` with its exact shape (security case 31); a missing or
    /// misshapen tensor is a ModelFileError naming its key. A network too large for the run's memory cap is refused
    /// before anything is converted (security case 36).
    public init(config: UNetConfig, weights file: any TensorSource) throws {
        try reserveLoading(loadingBytes(file), of: "the network", from: file)
        self.config = config
        let weights = WeightReader(file)
        let conditional = config.architecture == .unet2DCondition
        let channels = config.blockOutChannels, blocks = channels.count
        let (groups, eps, activation) = (config.normNumGroups, config.normEps, config.activation)
        let timeDimension = channels[0] * 4
        self.timeDimension = timeDimension
        outerActivation = conditional ? activation : .silu

        func resnet(_ prefix: String, _ inChannels: Int, _ outChannels: Int, scale: Double = 1,
                    resampling: ResnetBlock2D.Resampling = .none) throws -> ResnetBlock2D {
            try ResnetBlock2D(weights, prefix, inChannels: inChannels, outChannels: outChannels, timeChannels: timeDimension,
                              groups: groups, eps: eps, activation: activation, outputScaleFactor: scale, resampling: resampling)
        }
        /// UNet2DModel's attention_head_dim is the size of a head (null: one head over all channels).
        func spatialAttention(_ prefix: String, _ channels: Int, block: Int, groups: Int = groups, rescale: Double = 1) throws -> AttentionLayer {
            .spatial(try SpatialSelfAttention(weights, prefix, channels: channels,
                                              headDimension: config.attentionHeadDim?[block] ?? channels, groups: groups,
                                              eps: eps, rescale: rescale, field: "attention_head_dim"))
        }
        var contextDimensions: Set<Int> = []
        /// Block `block`'s Transformer2D. UNet2DConditionModel's attention_head_dim is the number of heads
        /// (diffusers issue #2011). The mid block's attn1 never attends to the context (`onlyCrossAttention` false).
        func transformer(_ prefix: String, _ channels: Int, block: Int, onlyCrossAttention: Bool) throws -> AttentionLayer {
            let context = config.crossAttentionDim![block]
            contextDimensions.insert(context)
            return .transformer(try Transformer2D(weights, prefix, channels: channels, heads: config.attentionHeadDim![block],
                                                  layers: config.transformerLayersPerBlock[block], contextDimension: context,
                                                  groups: groups, linearProjection: config.useLinearProjection,
                                                  onlyCrossAttention: onlyCrossAttention))
        }

        convIn = try Conv2d(weights, "conv_in", config.inChannels, channels[0], kernel: 3, padding: 1)
        timeLinear1 = try Linear(weights, "time_embedding.linear_1", channels[0], timeDimension)
        timeLinear2 = try Linear(weights, "time_embedding.linear_2", timeDimension, timeDimension)
        classEmbedding = try config.numClassEmbeds.map { try weights("class_embedding.weight", [$0, timeDimension]) }

        var downBlocks: [DownBlock] = []
        var output = channels[0]
        for (i, type) in config.downBlockTypes.enumerated() {
            let input = output, prefix = "down_blocks.\(i)"
            output = channels[i]
            let resnets = try (0..<config.layersPerBlock[i]).map { j in
                try resnet("\(prefix).resnets.\(j)", j == 0 ? input : output, output)
            }
            var attentions: [AttentionLayer] = []
            switch type {
            case .downBlock2D: break
            case .attentionDownBlock2D:
                attentions = try resnets.indices.map { try spatialAttention("\(prefix).attentions.\($0)", output, block: i) }
            case .crossAttentionDownBlock2D:
                attentions = try resnets.indices.map {
                    try transformer("\(prefix).attentions.\($0)", output, block: i, onlyCrossAttention: config.onlyCrossAttention[i])
                }
            }
            var downsampler: DownBlock.Downsampler?
            if i < blocks - 1 {
                // Only AttnDownBlock2D of a UNet2DModel takes downsample_type; the others always use the conv.
                if type == .attentionDownBlock2D, !conditional, config.downsampleType == .resnet {
                    downsampler = .resnet(try resnet("\(prefix).downsamplers.0", output, output, resampling: .down))
                } else {
                    // Downsample2D with padding 0 pads only the bottom and right, by one.
                    let padding = config.downsamplePadding
                    downsampler = .conv(try Conv2d(weights, "\(prefix).downsamplers.0.conv", output, output, kernel: 3,
                                                   stride: 2, padding: padding, paddingEnd: padding == 0 ? 1 : padding))
                }
            }
            downBlocks.append(DownBlock(resnets: resnets, attentions: attentions, downsampler: downsampler))
        }
        self.downBlocks = downBlocks

        let last = channels[blocks - 1], midScale = config.midBlockScaleFactor
        switch config.midBlockType {
        case nil:
            midBlock = nil
        case .midBlock2D?:
            // UNet2DConditionModel builds UNetMidBlock2D with num_layers=0 and no attention (get_mid_block).
            var resnets = [try resnet("mid_block.resnets.0", last, last, scale: midScale)]
            var attentions: [AttentionLayer?] = []
            if !conditional {
                attentions = [config.addAttention
                    ? try spatialAttention("mid_block.attentions.0", last, block: blocks - 1,
                                           groups: config.attentionNormNumGroups ?? groups, rescale: midScale)
                    : nil]
                resnets.append(try resnet("mid_block.resnets.1", last, last, scale: midScale))
            }
            midBlock = MidBlock(resnets: resnets, attentions: attentions)
        case .midBlock2DCrossAttention?:
            midBlock = MidBlock(
                resnets: [try resnet("mid_block.resnets.0", last, last, scale: midScale),
                          try resnet("mid_block.resnets.1", last, last, scale: midScale)],
                attentions: [try transformer("mid_block.attentions.0", last, block: blocks - 1, onlyCrossAttention: false)])
        }

        var upBlocks: [UpBlock] = []
        let reversed = Array(channels.reversed())
        output = reversed[0]
        for (i, type) in config.upBlockTypes.enumerated() {
            let previous = output, input = reversed[min(i + 1, blocks - 1)], prefix = "up_blocks.\(i)"
            output = reversed[i]
            let block = blocks - 1 - i
            let layers = config.layersPerBlock[block] + 1
            let resnets = try (0..<layers).map { j in
                try resnet("\(prefix).resnets.\(j)", (j == 0 ? previous : output) + (j == layers - 1 ? input : output), output)
            }
            var attentions: [AttentionLayer] = []
            switch type {
            case .upBlock2D: break
            case .attentionUpBlock2D:
                // diffusers passes attention_head_dim[i] here, not reversed.
                attentions = try resnets.indices.map { try spatialAttention("\(prefix).attentions.\($0)", output, block: i) }
            case .crossAttentionUpBlock2D:
                attentions = try resnets.indices.map {
                    try transformer("\(prefix).attentions.\($0)", output, block: block, onlyCrossAttention: config.onlyCrossAttention[block])
                }
            }
            var upsampler: UpBlock.Upsampler?
            if i < blocks - 1 {
                if type == .attentionUpBlock2D, !conditional, config.upsampleType == .resnet {
                    upsampler = .resnet(try resnet("\(prefix).upsamplers.0", output, output, resampling: .up))
                } else {
                    upsampler = .conv(try Conv2d(weights, "\(prefix).upsamplers.0.conv", output, output, kernel: 3, padding: 1))
                }
            }
            upBlocks.append(UpBlock(resnets: resnets, attentions: attentions, upsampler: upsampler))
        }
        self.upBlocks = upBlocks

        normOut = try GroupNorm(weights, "conv_norm_out", groups: groups, channels: channels[0], eps: eps)
        convOut = try Conv2d(weights, "conv_out", channels[0], config.outChannels, kernel: 3, padding: 1)

        guard contextDimensions.count <= 1 else {
            throw weights.failure("cross_attention_dim differs between blocks (\(contextDimensions.sorted())); one encoder_hidden_states cannot feed them all")
        }
        contextDimension = contextDimensions.first
        parameterCount = weights.parameterCount
    }

    /// The UNet's output for noisy input `x` [B, C, H, W] at `timesteps` (one per batch element, or one for all;
    /// fractional values are used as they are, as diffusers does with a float tensor). `classLabels` [B] are indices
    /// into the class embedding (UNet2DModel with num_class_embeds); `context` is encoder_hidden_states
    /// [B, S, cross_attention_dim] (UNet2DConditionModel). Errors are TensorErrors counting x as argument 1,
    /// timesteps 2 and the conditioning 3, as the Lua call `m:forward(x, t, {...})` numbers them.
    ///
    /// An input whose activations do not fit in the run's memory cap is refused before any work, and one that runs
    /// out of it midway fails naming its shape; a stopped run (`Cancellation.current`) fails with the cancellation's
    /// error within milliseconds. Either way the pooled storage is freed.
    public func forward(_ x: Tensor, timesteps: [Float], classLabels: [Int]? = nil, context: Tensor? = nil) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        try checkInputs(x, timesteps: timesteps, classLabels: classLabels, context: context)
        let (batch, height, width) = (x.shape[0], x.shape[2], x.shape[3])
        let skips = skipBytes(batch: batch, height: height, width: width)
        if let left = memoryLeft(ifShortOf: skips, reusable: workspace.freeBytes) {
            throw TensorError(argument: 1, "x of shape \(shapeString(x.shape)) needs at least \(describeBytes(skips)) for the "
                + "network's activations, but the run has \(left)")
        }
        do {
            // The kernels split their work over the cores themselves, each thread calling a one-thread sgemm:
            // OpenBLAS's own threads would spin (sched_yield) against them between calls.
            return try SingleThreadedBLAS.run { try run(x, timesteps: timesteps, classLabels: classLabels, context: context) }
        } catch {
            workspace.trim()
            guard error as? TensorError == .outOfMemory else { throw error }
            throw TensorError(argument: 1, "x of shape \(shapeString(x.shape)) needs more memory for the network's activations "
                + "than the run has: \(memoryLeft(ifShortOf: Int.max) ?? "the system refused it")")
        }
    }

    /// Bytes of the activations a forward pass holds all at once, at least (Int.max if they overflow): the skip
    /// connections the down path keeps for the up path, and the output.
    func skipBytes(batch: Int, height: Int, width: Int) -> Int {
        var shapes = [[batch, config.outChannels, height, width], [batch, convIn.outChannels, height, width]]
        var (height, width) = (height, width)
        for block in downBlocks {
            let channels = block.resnets[0].conv2.outChannels
            shapes += Array(repeating: [batch, channels, height, width], count: block.resnets.count)
            switch block.downsampler {
            case nil: continue
            case .conv(let conv)?:
                let shape = conv.shape(batch: batch, height: height, width: width)
                (height, width) = (shape.outHeight, shape.outWidth)
            case .resnet?: (height, width) = (height / 2, width / 2)
            }
            shapes.append([batch, channels, height, width])
        }
        var total = 0
        for shape in shapes {
            guard let count = elementCount(shape + [MemoryLayout<Float>.stride]) else { return Int.max }
            let (sum, overflow) = total.addingReportingOverflow(count)
            guard !overflow else { return Int.max }
            total = sum
        }
        return total
    }

    private func run(_ x: Tensor, timesteps: [Float], classLabels: [Int]?, context: Tensor?) throws -> Tensor {
        let (batch, height, width) = (x.shape[0], x.shape[2], x.shape[3])
        let times = timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch)

        // 1. time (and class) embedding, then act(emb) once for every ResNet.
        let projected = try workspace.take([batch, convIn.outChannels])
        timestepEmbeddingForward(projected.data, times, dimension: convIn.outChannels, flipSinToCos: config.flipSinToCos,
                                 frequencyShift: config.freqShift)
        let hidden = try workspace.take([batch, timeDimension])
        try timeLinear1.forward(into: hidden.data, projected.data, rows: batch, workspace)
        workspace.backend.activation(outerActivation, into: hidden.data, hidden.data, count: hidden.count)
        let embedding = try workspace.take([batch, timeDimension])
        try timeLinear2.forward(into: embedding.data, hidden.data, rows: batch, workspace)
        if let classEmbedding, let classLabels {
            for (b, label) in classLabels.enumerated() {
                let row = embedding.data + b * timeDimension, table = classEmbedding.data + label * timeDimension
                for i in 0..<timeDimension { row[i] += table[i] }
            }
        }
        let time = try workspace.take([batch, timeDimension])
        workspace.backend.activation(config.activation, into: time.data, embedding.data, count: time.count)
        let conditioning = Conditioning(time: time, context: context.map { UnsafePointer($0.data) },
                                        contextLength: context?.shape[1] ?? 0)

        // 2. conv_in, on 2x - 1 with center_input_sample.
        var h = try workspace.take([batch, convIn.outChannels, height, width])
        let centered = config.centerInputSample ? try workspace.take(x.shape) : nil
        if let centered { vectorMap(centered.data, x.data, x.count) { $0 * 2 - 1 } }
        try convIn.forward(into: h.data, UnsafePointer(centered?.data ?? x.data), convIn.shape(batch: batch, height: height, width: width),
                           workspace)

        // 3. down, 4. mid, 5. up; a stopped run's kernels skip their work, and it ends at the next block.
        let cancellation = Cancellation.current
        var skips = [h]
        for block in downBlocks {
            try cancellation?.check()
            h = try block(h, conditioning, skips: &skips, workspace)
        }
        try cancellation?.check()
        if let midBlock { h = try midBlock(h, conditioning, workspace) }
        for block in upBlocks {
            try cancellation?.check()
            let remaining = skips.count - block.resnets.count
            let size = remaining > 0 ? (skips[remaining - 1].height, skips[remaining - 1].width) : nil
            h = try block(h, conditioning, skips: &skips, size: size, workspace)
        }

        // 6. conv_out(act(conv_norm_out(h))), written straight into the result.
        let result = try Tensor(shape: [batch, config.outChannels, height, width])
        try convOut.forward(into: result.data, h.data, convOut.shape(h),
                            normalizedBy: try normOut.statistics(h, activation: outerActivation, workspace), workspace)
        try cancellation?.check()
        return result
    }

    /// Frees the pooled intermediate storage (the next call allocates it again).
    public func releaseBuffers() {
        lock.lock()
        defer { lock.unlock() }
        workspace.trim()
    }

    /// How many storage blocks the pool has allocated so far: constant once a run of same-shaped calls is warm.
    var workspaceAllocations: Int { workspace.allocations }

    private func checkInputs(_ x: Tensor, timesteps: [Float], classLabels: [Int]?, context: Tensor?) throws {
        guard !x.isReleased else { throw TensorError(argument: 1, "tensor has been released") }
        guard x.rank == 4, x.shape[1] == config.inChannels, x.shape[0] > 0, x.shape[2] > 0, x.shape[3] > 0 else {
            throw TensorError(argument: 1, "expected [batch, \(config.inChannels), height, width], got \(shapeString(x.shape))")
        }
        let batch = x.shape[0]
        // Each down-sampler halves (rounding up); the up path must land back on the same sizes. UNet2DConditionModel
        // forwards the skip sizes to its up-samplers, UNet2DModel doubles, so there the sides must halve evenly.
        let halvings = downBlocks.count - 1
        if config.architecture == .unet2D, x.shape[2] % (1 << halvings) != 0 || x.shape[3] % (1 << halvings) != 0 {
            throw TensorError(argument: 1, "height and width must be multiples of \(1 << halvings) for this UNet2DModel, got \(shapeString(x.shape))")
        }
        guard timesteps.count == batch || timesteps.count == 1 else {
            throw TensorError(argument: 2, "expected 1 or \(batch) timesteps (one per batch element), got \(timesteps.count)")
        }
        if let index = timesteps.firstIndex(where: { !$0.isFinite }) {
            throw TensorError(argument: 2, "timestep \(index + 1) is \(timesteps[index])")
        }
        if let classes = config.numClassEmbeds {
            guard let classLabels else {
                throw TensorError(argument: 3, "this model is class-conditional (num_class_embeds \(classes)): class labels are required")
            }
            guard classLabels.count == batch else {
                throw TensorError(argument: 3, "expected \(batch) class labels, got \(classLabels.count)")
            }
            if let label = classLabels.first(where: { $0 < 0 || $0 >= classes }) {
                throw TensorError(argument: 3, "class label \(label) is outside 0..<\(classes)")
            }
        } else if classLabels != nil {
            throw TensorError(argument: 3, "this model has no class embedding (num_class_embeds is null), but class labels were given")
        }
        switch (contextDimension, context) {
        case (nil, nil): break
        case (nil, _?):
            // A UNet2DConditionModel without cross-attention blocks takes encoder_hidden_states and ignores it.
            if config.architecture == .unet2D {
                throw TensorError(argument: 3, "UNet2DModel takes no context (encoder_hidden_states), but one was given")
            }
        case (let width?, nil):
            throw TensorError(argument: 3, "this model attends to encoder_hidden_states: a context [\(batch), length, \(width)] is required")
        case (let width?, let context?):
            guard !context.isReleased else { throw TensorError(argument: 3, "context tensor has been released") }
            guard context.rank == 3, context.shape[0] == batch, context.shape[1] > 0, context.shape[2] == width else {
                throw TensorError(argument: 3, "context must be [\(batch), length, \(width)], got \(shapeString(context.shape))")
            }
        }
    }
}
