import Foundation
import KiriTensor

/// A UNet2DModel or UNet2DConditionModel for training: the network UNet runs (the same UNetModules, the same
/// checkpoint keys), with float32 parameters the optimiser updates in place, a forward pass that keeps what the
/// backward pass needs, and a backward pass that adds every parameter's gradient (PyTorch's autograd of diffusers'
/// forward). One pass runs at a time; a forward's activations are held until the backward that follows it, and their
/// storage stays in the workspace for the next step, which allocates nothing (new storage every step was page faults,
/// 5% of a step).
public final class TrainableUNet {
    public let config: UNetConfig
    /// Every parameter, in the order the modules ask for them (diffusers' `named_parameters()` order).
    public let parameters: [Parameter]

    private let layout: UNetModules
    private let convIn: TrainableConv2d
    private let timeLinear1: TrainableLinear, timeActivation: TrainableActivation, timeLinear2: TrainableLinear
    private let classEmbedding: Parameter?
    /// act(temb), which every ResNet block reads.
    private let embeddingActivation: TrainableActivation
    private let down: [Block], mid: Block?, up: [Block]
    private let normOut: TrainableGroupNorm, convOut: TrainableConv2d
    private let workspace = Workspace()
    private let lock = NSLock()
    private var pass: Pass?
    private var checkpointing = false
    /// The shapes of the last forward's input and context: storage kept for the next step serves the same shapes,
    /// and is returned to the system when they change (a new batch size would otherwise add storage beside it).
    private var inputShapes: [[Int]] = []

    /// A checkpointed block: its input, and its forward to run again before its backward.
    private struct Unit {
        let input: Buffer
        let forward: (Buffer) throws -> Buffer
    }

    /// What a training forward leaves for its backward besides what the layers keep.
    private struct Pass {
        let outputShape: [Int], inputShape: [Int]
        let classLabels: [Int]?
        let context: Buffer?
        let skipCount: Int
        /// Channels of the input and of the skip connection each up-block ResNet joined, in forward order.
        let joins: [(input: Int, skip: Int)]
        /// The shape a conv up-sampler up-sampled from, per up block (nil without one).
        let upsampledFrom: [[Int]?]
        /// With gradient checkpointing, every ResNet (with its attention) and resampler, in forward order.
        let units: [Unit]
    }

    final class Block {
        enum Resampler {
            case conv(TrainableConv2d)
            case resnet(TrainableResnetBlock2D)
        }
        enum Attention {
            case spatial(TrainableSpatialSelfAttention)
            case transformer(TrainableTransformer2D)

            func forward(_ x: Buffer, context: Buffer?, _ workspace: Workspace) throws -> Buffer {
                switch self {
                case .spatial(let attention): return try attention.forward(x, workspace)
                case .transformer(let transformer): return try transformer.forward(x, context: context!, workspace)
                }
            }

            func backward(_ dOut: Buffer, dContext: Buffer?, _ workspace: Workspace) throws -> Buffer {
                switch self {
                case .spatial(let attention): return try attention.backward(dOut, workspace)
                case .transformer(let transformer): return try transformer.backward(dOut, dContext: dContext!, workspace)
                }
            }
        }

        let resnets: [TrainableResnetBlock2D]
        let attentions: [Attention?]
        let resampler: Resampler?

        init(resnets: [TrainableResnetBlock2D], attentions: [Attention?], resampler: Resampler?) {
            (self.resnets, self.attentions, self.resampler) = (resnets, attentions, resampler)
        }

        func attention(_ index: Int) -> Attention? { index < attentions.count ? attentions[index] : nil }
    }

    /// The network of `config` with its parameters read from `weights` by checkpoint key and exact shape.
    public convenience init(config: UNetConfig, weights file: any TensorSource) throws {
        try reserveLoading(loadingBytes(file), of: "the network", from: file)
        try self.init(config: config, parameters: ParameterBuilder(.checkpoint(WeightReader(file))))
    }

    /// A new network of `config`, its parameters drawn from `seed` as torch.nn initialises them.
    public convenience init(config: UNetConfig, seed: UInt64) throws {
        try self.init(config: config, parameters: ParameterBuilder(.initialized(seed: seed)))
    }

    private init(config: UNetConfig, parameters: ParameterBuilder) throws {
        self.config = config
        let layout = try UNetModules(config, failure: parameters.failure)
        self.layout = layout
        let channels = config.blockOutChannels, timeDimension = layout.timeDimension
        let (groups, eps, activation) = (config.normNumGroups, config.normEps, config.activation)

        func resnet(_ resnet: UNetModules.Resnet) throws -> TrainableResnetBlock2D {
            try TrainableResnetBlock2D(parameters, resnet, timeChannels: timeDimension, groups: groups, eps: eps, activation: activation)
        }
        func attention(_ attention: UNetModules.Attention?) throws -> Block.Attention? {
            switch attention {
            case nil: return nil
            case let .spatial(prefix, channels, headDimension, groups, rescale)?:
                return .spatial(try TrainableSpatialSelfAttention(parameters, prefix, channels: channels, headDimension: headDimension,
                                                                  groups: groups, eps: eps, rescale: rescale))
            case let .transformer(prefix, channels, heads, layers, contextDimension, onlyCrossAttention)?:
                return .transformer(try TrainableTransformer2D(parameters, prefix, channels: channels, heads: heads, layers: layers,
                                                               contextDimension: contextDimension, groups: groups,
                                                               linearProjection: config.useLinearProjection,
                                                               onlyCrossAttention: onlyCrossAttention))
            }
        }
        func block(_ block: UNetModules.Block) throws -> Block {
            var resampler: Block.Resampler?
            switch block.resampler {
            case nil: break
            case let .conv(prefix, channels, stride, padding, paddingEnd)?:
                resampler = .conv(try TrainableConv2d(parameters, prefix, channels, channels, kernel: 3, stride: stride, padding: padding,
                                                      paddingEnd: paddingEnd))
            case .resnet(let layer)?: resampler = .resnet(try resnet(layer))
            }
            return Block(resnets: try block.resnets.map(resnet), attentions: try block.attentions.map(attention), resampler: resampler)
        }

        convIn = try TrainableConv2d(parameters, "conv_in", config.inChannels, channels[0], kernel: 3, padding: 1)
        timeLinear1 = try TrainableLinear(parameters, "time_embedding.linear_1", channels[0], timeDimension)
        timeActivation = TrainableActivation(layout.outerActivation)
        timeLinear2 = try TrainableLinear(parameters, "time_embedding.linear_2", timeDimension, timeDimension)
        classEmbedding = try config.numClassEmbeds.map { try parameters("class_embedding.weight", [$0, timeDimension], .normal) }
        embeddingActivation = TrainableActivation(activation)
        down = try layout.down.map(block)
        mid = try layout.mid.map(block)
        up = try layout.up.map(block)
        normOut = try TrainableGroupNorm(parameters, "conv_norm_out", groups: groups, channels: channels[0], eps: eps,
                                         activation: layout.outerActivation)
        convOut = try TrainableConv2d(parameters, "conv_out", channels[0], config.outChannels, kernel: 3, padding: 1)
        self.parameters = parameters.parameters
    }

    /// Gradient checkpointing (diffusers' `enable_gradient_checkpointing`): a training forward keeps only the input
    /// of each ResNet with its attention, and of each resampler, and the backward pass runs that block's forward again
    /// just before its backward. Activation memory falls to a fraction for about a third more time per step; the
    /// gradients are the same to the bit.
    public var gradientCheckpointing: Bool {
        get { lock.withLock { checkpointing } }
        set { lock.withLock { checkpointing = newValue } }
    }

    /// The most bytes of activations held at once since the last `resetActivationPeak` (a pass's memory, which
    /// gradient checkpointing lowers).
    public var activationPeakBytes: Int { lock.withLock { workspace.peakBytes } }

    public func resetActivationPeak() { lock.withLock { workspace.resetPeak() } }

    /// Storage the workspace has allocated (a test checks that a second step allocates none).
    var workspaceAllocations: Int { lock.withLock { workspace.allocations } }

    /// Elements in all the parameters.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Refuses to go on once a script has released a parameter or its gradient (`<close>` on a tensor that
    /// m:parameters() gave it): the kernels must never read freed storage.
    public func checkParameters() throws {
        if let released = parameters.first(where: { $0.value.isReleased || $0.grad.isReleased }) {
            throw TensorError("parameter '\(released.name)' (or its gradient) has been closed: the network cannot run without it")
        }
    }

    /// Sets every gradient to zero (Torch7's zeroGradParameters).
    public func zeroGrad() {
        for parameter in parameters { parameter.grad.data.update(repeating: 0, count: parameter.grad.count) }
    }

    /// The network's output for `x` at `timesteps`, as UNet.forward takes them, keeping the activations for
    /// `backward`.
    public func forward(_ x: Tensor, timesteps: [Float], classLabels: [Int]? = nil, context: Tensor? = nil) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        try checkParameters()
        try layout.checkInputs(x, timesteps: timesteps, classLabels: classLabels, context: context)
        pass = nil
        let shapes = [x.shape, context?.shape ?? []]
        if shapes != inputShapes {
            workspace.releaseFree()
            inputShapes = shapes
        }
        do {
            // The kernels split their work over the cores themselves, each calling a one-thread sgemm.
            return try SingleThreadedBLAS.run { try run(x, timesteps: timesteps, classLabels: classLabels, context: context) }
        } catch {
            pass = nil
            workspace.trim()
            throw error
        }
    }

    /// The gradients of Σ output · dOutput: every parameter's added to its `grad`, and returned, x's and (for a
    /// network attending to one) the context's. Needs the training forward just before it, and consumes it.
    public func backward(_ dOutput: Tensor) throws -> (input: Tensor, context: Tensor?) {
        lock.lock()
        defer { lock.unlock() }
        try checkParameters()
        guard let pass else { throw TensorError(argument: 1, "backward needs a forward pass before it (each forward serves one backward)") }
        guard dOutput.shape == pass.outputShape else {
            throw TensorError(argument: 1, "the gradient must have the output's shape \(shapeString(pass.outputShape)), got \(shapeString(dOutput.shape))")
        }
        self.pass = nil
        do {
            return try SingleThreadedBLAS.run { try runBackward(dOutput, pass) }
        } catch {
            workspace.trim()
            throw error
        }
    }

    private func copy(_ tensor: Tensor) throws -> Buffer {
        let buffer = try workspace.take(tensor.shape)
        buffer.data.update(from: tensor.data, count: tensor.count)
        return buffer
    }

    private func tensor(_ buffer: Buffer) throws -> Tensor {
        let tensor = try Tensor(shape: buffer.shape)
        tensor.data.update(from: buffer.data, count: buffer.count)
        return tensor
    }

    private func run(_ x: Tensor, timesteps: [Float], classLabels: [Int]?, context: Tensor?) throws -> Tensor {
        let batch = x.shape[0]
        let times = timesteps.count == batch ? timesteps : Array(repeating: timesteps[0], count: batch)
        let cancellation = Cancellation.current
        let workspace = workspace   // the checkpointed units hold it, not the network

        // 1. time (and class) embedding, then act(emb) once for every ResNet.
        let projected = try workspace.take([batch, convIn.outChannels])
        timestepEmbeddingForward(projected.data, times, dimension: convIn.outChannels, flipSinToCos: config.flipSinToCos,
                                 frequencyShift: config.freqShift)
        let embedding = try timeLinear2.forward(try timeActivation.forward(try timeLinear1.forward(projected, workspace), workspace),
                                                workspace)
        if let classEmbedding, let classLabels {
            let width = layout.timeDimension
            for (b, label) in classLabels.enumerated() {
                let row = embedding.data + b * width, table = classEmbedding.value.data + label * width
                for i in 0..<width { row[i] += table[i] }
            }
        }
        let time = try embeddingActivation.forward(embedding, workspace)
        let contextBuffer = try context.map(copy)

        // 2. conv_in, on 2x - 1 with center_input_sample.
        let input = try copy(x)
        if config.centerInputSample { vectorMap(input.data, input.data, input.count) { $0 * 2 - 1 } }
        var h = try convIn.forward(input, workspace)

        // 3. down, 4. mid, 5. up, each ResNet with its attention and each resampler a unit of checkpointing.
        var units: [Unit] = []
        func unit(_ input: Buffer, _ forward: @escaping (Buffer) throws -> Buffer) throws -> Buffer {
            guard checkpointing else { return try forward(input) }
            units.append(Unit(input: input, forward: forward))
            workspace.keepsActivations = false
            defer { workspace.keepsActivations = true }
            return try forward(input)
        }
        func resnetThenAttention(_ resnet: TrainableResnetBlock2D, _ attention: Block.Attention?) -> (Buffer) throws -> Buffer {
            { x in
                let h = try resnet.forward(x, time: time, workspace)
                return try attention?.forward(h, context: contextBuffer, workspace) ?? h
            }
        }
        var skips = [h]
        for block in down {
            try cancellation?.check()
            for (index, resnet) in block.resnets.enumerated() {
                h = try unit(h, resnetThenAttention(resnet, block.attention(index)))
                skips.append(h)
            }
            switch block.resampler {
            case nil: continue
            case .conv(let conv)?: h = try unit(h) { try conv.forward($0, workspace) }
            case .resnet(let resnet)?: h = try unit(h) { try resnet.forward($0, time: time, workspace) }
            }
            skips.append(h)
        }
        let skipCount = skips.count
        if let mid {
            h = try unit(h) { try mid.resnets[0].forward($0, time: time, workspace) }
            for (index, resnet) in mid.resnets.dropFirst().enumerated() {
                let attention = mid.attention(index)
                h = try unit(h) { x in
                    try resnet.forward(try attention?.forward(x, context: contextBuffer, workspace) ?? x, time: time, workspace)
                }
            }
        }
        var joins: [(input: Int, skip: Int)] = [], upsampledFrom: [[Int]?] = []
        for block in up {
            try cancellation?.check()
            for (index, resnet) in block.resnets.enumerated() {
                // The join is part of the unit: a checkpoint keeps h, not a copy of the skip connection kept anyway.
                let skip = skips.removeLast(), resnetAndAttention = resnetThenAttention(resnet, block.attention(index))
                joins.append((h.channels, skip.channels))
                h = try unit(h) { h in
                    let joined = try workspace.take([h.batch, h.channels + skip.channels, h.height, h.width])
                    concatenateChannelsForward(joined.data, h.data, skip.data, batch: h.batch, channelsA: h.channels,
                                               channelsB: skip.channels, spatial: h.spatial)
                    return try resnetAndAttention(joined)
                }
            }
            switch block.resampler {
            case nil:
                upsampledFrom.append(nil)
            case .conv(let conv)?:
                // UNet2DConditionModel up-samples to the next skip connection's size (upsample_size).
                let size = skips.last.map { ($0.height, $0.width) } ?? (2 * h.height, 2 * h.width)
                upsampledFrom.append(h.shape)
                h = try unit(h) { try conv.forward(try upsampleNearest($0, height: size.0, width: size.1, workspace), workspace) }
            case .resnet(let resnet)?:
                upsampledFrom.append(nil)
                h = try unit(h) { try resnet.forward($0, time: time, workspace) }
            }
        }

        // 6. conv_out(act(conv_norm_out(h))).
        let out = try convOut.forward(try normOut.forward(h, workspace), workspace)
        try cancellation?.check()
        pass = Pass(outputShape: out.shape, inputShape: x.shape, classLabels: classLabels, context: contextBuffer,
                    skipCount: skipCount, joins: joins, upsampledFrom: upsampledFrom, units: units)
        return try tensor(out)
    }

    private func runBackward(_ dOutput: Tensor, _ pass: Pass) throws -> (input: Tensor, context: Tensor?) {
        let cancellation = Cancellation.current
        let batch = pass.outputShape[0]
        let dTime = try workspace.take([batch, layout.timeDimension])
        dTime.data.update(repeating: 0, count: dTime.count)
        let dContext = try pass.context.map { context in
            let buffer = try workspace.take(context.shape)
            buffer.data.update(repeating: 0, count: buffer.count)
            return buffer
        }
        var dH = try normOut.backward(try convOut.backward(try copy(dOutput), workspace)!, workspace)
        // A checkpointed pass runs each unit's forward again, last first, just before that unit's backward.
        var units = pass.units
        func recompute() throws {
            guard let unit = units.popLast() else { return }
            _ = try unit.forward(unit.input)
        }

        // 5. up, consuming the joins in reverse: the k-th up ResNet took skip connection skipCount − 1 − k.
        var skipGradients = [Buffer?](repeating: nil, count: pass.skipCount)
        var join = pass.joins.count - 1
        for (index, block) in up.enumerated().reversed() {
            try cancellation?.check()
            if block.resampler != nil { try recompute() }
            switch block.resampler {
            case nil: break
            case .conv(let conv)?:
                let dUpsampled = try conv.backward(dH, workspace)!
                let shape = pass.upsampledFrom[index]!
                dH = try workspace.take(shape)
                upsampleNearestBackward(dH.data, dOut: dUpsampled.data, planes: shape[0] * shape[1], height: shape[2], width: shape[3],
                                        outHeight: dUpsampled.height, outWidth: dUpsampled.width)
            case .resnet(let resnet)?: dH = try resnet.backward(dH, dTime: dTime, workspace)
            }
            for (position, resnet) in block.resnets.enumerated().reversed() {
                try recompute()
                if let attention = block.attention(position) { dH = try attention.backward(dH, dContext: dContext, workspace) }
                let dJoined = try resnet.backward(dH, dTime: dTime, workspace)
                let (inputChannels, skipChannels) = pass.joins[join]
                let dInput = try workspace.take([dJoined.batch, inputChannels, dJoined.height, dJoined.width])
                let dSkip = try workspace.take([dJoined.batch, skipChannels, dJoined.height, dJoined.width])
                concatenateChannelsBackward(dA: dInput.data, dB: dSkip.data, dOut: dJoined.data, batch: dJoined.batch,
                                            channelsA: inputChannels, channelsB: skipChannels, spatial: dJoined.spatial)
                skipGradients[pass.skipCount - 1 - join] = dSkip
                join -= 1
                dH = dInput
            }
        }

        // 4. mid.
        if let mid {
            for (index, resnet) in mid.resnets.dropFirst().enumerated().reversed() {
                try recompute()
                dH = try resnet.backward(dH, dTime: dTime, workspace)
                if let attention = mid.attention(index) { dH = try attention.backward(dH, dContext: dContext, workspace) }
            }
            try recompute()
            dH = try mid.resnets[0].backward(dH, dTime: dTime, workspace)
        }

        // 3. down: each skip connection's gradient joins the path's where the forward pass kept it.
        var skip = pass.skipCount - 1
        func joinSkip() {
            if let gradient = skipGradients[skip] { accumulate(dH, gradient) }
            skip -= 1
        }
        for block in down.reversed() {
            try cancellation?.check()
            if let resampler = block.resampler {
                joinSkip()
                try recompute()
                switch resampler {
                case .conv(let conv): dH = try conv.backward(dH, workspace)!
                case .resnet(let resnet): dH = try resnet.backward(dH, dTime: dTime, workspace)
                }
            }
            for (index, resnet) in block.resnets.enumerated().reversed() {
                joinSkip()
                try recompute()
                if let attention = block.attention(index) { dH = try attention.backward(dH, dContext: dContext, workspace) }
                dH = try resnet.backward(dH, dTime: dTime, workspace)
            }
        }
        joinSkip()

        // 2. conv_in.
        let dInput = try convIn.backward(dH, workspace)!
        if config.centerInputSample { vectorMap(dInput.data, dInput.data, dInput.count) { $0 * 2 } }

        // 1. the embedding: the class table's rows, then the time MLP.
        let dEmbedding = try embeddingActivation.backward(dTime, workspace)
        if let classEmbedding, let labels = pass.classLabels {
            let width = layout.timeDimension
            for (b, label) in labels.enumerated() {
                let row = classEmbedding.grad.data + label * width, source = dEmbedding.data + b * width
                for i in 0..<width { row[i] += source[i] }
            }
        }
        _ = try timeLinear1.backward(try timeActivation.backward(try timeLinear2.backward(dEmbedding, workspace), workspace), workspace)
        try cancellation?.check()
        return (try tensor(dInput), try dContext.map(tensor))
    }
}
