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
    private let layout: UNetModules
    private let workspace = Workspace()
    private let lock = NSLock()

    /// Reads every tensor the config implies from `weights` with its exact shape (security case 31); a missing or
    /// misshapen tensor is a ModelFileError naming its key. A network too large for the run's memory cap is refused
    /// before anything is converted (security case 36).
    public init(config: UNetConfig, weights file: any TensorSource) throws {
        try reserveLoading(loadingBytes(file), of: "the network", from: file)
        self.config = config
        let weights = WeightReader(file)
        let layout = try UNetModules(config, failure: weights.failure)
        self.layout = layout
        let channels = config.blockOutChannels
        let (groups, eps, activation) = (config.normNumGroups, config.normEps, config.activation)
        (timeDimension, outerActivation, contextDimension) = (layout.timeDimension, layout.outerActivation, layout.contextDimension)

        func resnet(_ resnet: UNetModules.Resnet) throws -> ResnetBlock2D {
            try ResnetBlock2D(weights, resnet.prefix, inChannels: resnet.inChannels, outChannels: resnet.outChannels,
                              timeChannels: layout.timeDimension, groups: groups, eps: eps, activation: activation,
                              outputScaleFactor: resnet.outputScaleFactor, resampling: resnet.resampling)
        }
        func attention(_ attention: UNetModules.Attention) throws -> AttentionLayer {
            switch attention {
            case let .spatial(prefix, channels, headDimension, groups, rescale):
                return .spatial(try SpatialSelfAttention(weights, prefix, channels: channels, headDimension: headDimension, groups: groups,
                                                         eps: eps, rescale: rescale))
            case let .transformer(prefix, channels, heads, layers, contextDimension, onlyCrossAttention):
                return .transformer(try Transformer2D(weights, prefix, channels: channels, heads: heads, layers: layers,
                                                      contextDimension: contextDimension, groups: groups,
                                                      linearProjection: config.useLinearProjection, onlyCrossAttention: onlyCrossAttention))
            }
        }

        convIn = try Conv2d(weights, "conv_in", config.inChannels, channels[0], kernel: 3, padding: 1)
        timeLinear1 = try Linear(weights, "time_embedding.linear_1", channels[0], layout.timeDimension)
        timeLinear2 = try Linear(weights, "time_embedding.linear_2", layout.timeDimension, layout.timeDimension)
        classEmbedding = try config.numClassEmbeds.map { try weights("class_embedding.weight", [$0, layout.timeDimension]) }
        /// A block's down- or up-sampler: a 3×3 conv or a resampling ResNet, as `conv` and `block` wrap them.
        func resampler<T>(_ layer: UNetModules.Resampler?, _ conv: (Conv2d) -> T, _ block: (ResnetBlock2D) -> T) throws -> T? {
            switch layer {
            case nil: return nil
            case let .conv(prefix, channels, stride, padding, paddingEnd)?:
                return conv(try Conv2d(weights, prefix, channels, channels, kernel: 3, stride: stride, padding: padding,
                                       paddingEnd: paddingEnd))
            case .resnet(let layer)?: return block(try resnet(layer))
            }
        }
        downBlocks = try layout.down.map { block in
            DownBlock(resnets: try block.resnets.map(resnet), attentions: try block.attentions.map { try attention($0!) },
                      downsampler: try resampler(block.resampler, DownBlock.Downsampler.conv, DownBlock.Downsampler.resnet))
        }
        midBlock = try layout.mid.map { MidBlock(resnets: try $0.resnets.map(resnet), attentions: try $0.attentions.map { try $0.map(attention) }) }
        upBlocks = try layout.up.map { block in
            UpBlock(resnets: try block.resnets.map(resnet), attentions: try block.attentions.map { try attention($0!) },
                    upsampler: try resampler(block.resampler, UpBlock.Upsampler.conv, UpBlock.Upsampler.resnet))
        }
        normOut = try GroupNorm(weights, "conv_norm_out", groups: groups, channels: channels[0], eps: eps)
        convOut = try Conv2d(weights, "conv_out", channels[0], config.outChannels, kernel: 3, padding: 1)
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
        try layout.checkInputs(x, timesteps: timesteps, classLabels: classLabels, context: context)
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
}
