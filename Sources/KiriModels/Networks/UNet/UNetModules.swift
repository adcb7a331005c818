import KiriTensor

/// The modules a UNet config implies, each at the checkpoint key diffusers saves it under (unet_2d.py,
/// unet_2d_condition.py and get_down_block, get_mid_block, get_up_block in unet_2d_blocks.py), as plain data: the
/// inference network (UNet) and the trainable one (TrainableUNet) are both built from it, so they cannot disagree
/// on the architecture.
struct UNetModules {
    /// A ResnetBlock2D at `prefix`.
    struct Resnet {
        let prefix: String
        let inChannels: Int, outChannels: Int
        let outputScaleFactor: Double
        let resampling: ResnetBlock2D.Resampling
    }

    enum Attention {
        /// UNet2DModel's self-attention (AttnDownBlock2D, AttnUpBlock2D, UNetMidBlock2D): heads of `headDimension`
        /// channels, a group norm of `groups` first, the output divided by `rescale`.
        case spatial(prefix: String, channels: Int, headDimension: Int, groups: Int, rescale: Double)
        /// A Transformer2DModel (CrossAttn…Block2D, UNetMidBlock2DCrossAttn) of `heads` heads and `layers`
        /// BasicTransformerBlocks attending to a context `contextDimension` wide.
        case transformer(prefix: String, channels: Int, heads: Int, layers: Int, contextDimension: Int, onlyCrossAttention: Bool)
    }

    enum Resampler {
        /// Downsample2D(use_conv=True) or Upsample2D(use_conv=True): a 3×3 conv at `PREFIX.conv`, stride 2 with
        /// `padding` before and `paddingEnd` after when it down-samples.
        case conv(prefix: String, channels: Int, stride: Int, padding: Int, paddingEnd: Int)
        /// ResnetBlock2D(down=True) or (up=True) (UNet2DModel's downsample_type / upsample_type "resnet").
        case resnet(Resnet)
    }

    struct Block {
        let resnets: [Resnet]
        /// One per ResNet (none for a block without attention); the mid block's may be absent (add_attention false).
        let attentions: [Attention?]
        let resampler: Resampler?
    }

    let timeDimension: Int
    /// time_embedding's activation and conv_act: SiLU in UNet2DModel, act_fn in UNet2DConditionModel.
    let outerActivation: Activation
    let down: [Block]
    let mid: Block?
    let up: [Block]
    /// Width encoder_hidden_states must have, when any block attends to it.
    let contextDimension: Int?
    let config: UNetConfig

    /// Refuses, with `failure(message)`, a config whose attention heads do not fit their channels or whose blocks
    /// want contexts of different widths.
    init(_ config: UNetConfig, failure: (String) -> any Error) throws {
        self.config = config
        let conditional = config.architecture == .unet2DCondition
        let channels = config.blockOutChannels, blocks = channels.count
        timeDimension = channels[0] * 4
        outerActivation = conditional ? config.activation : .silu

        func resnet(_ prefix: String, _ inChannels: Int, _ outChannels: Int, scale: Double = 1,
                    resampling: ResnetBlock2D.Resampling = .none) -> Resnet {
            Resnet(prefix: prefix, inChannels: inChannels, outChannels: outChannels, outputScaleFactor: scale, resampling: resampling)
        }
        /// UNet2DModel's attention_head_dim is the size of a head (null: one head over all channels).
        func spatialAttention(_ prefix: String, _ channels: Int, block: Int, groups: Int = config.normNumGroups,
                              rescale: Double = 1) throws -> Attention {
            let headDimension = config.attentionHeadDim?[block] ?? channels
            guard headDimension > 0, channels / headDimension > 0 else {
                throw failure("attention_head_dim (\(headDimension)) gives no attention head over \(channels) channels in '\(prefix)'")
            }
            return .spatial(prefix: prefix, channels: channels, headDimension: headDimension, groups: groups, rescale: rescale)
        }
        var contextDimensions: Set<Int> = []
        /// Block `block`'s Transformer2D. UNet2DConditionModel's attention_head_dim is the number of heads
        /// (diffusers issue #2011). The mid block's attn1 never attends to the context (`onlyCrossAttention` false).
        func transformer(_ prefix: String, _ channels: Int, block: Int, onlyCrossAttention: Bool) throws -> Attention {
            let context = config.crossAttentionDim![block], heads = config.attentionHeadDim![block]
            guard heads > 0, channels / heads > 0 else {
                throw failure("attention_head_dim (\(heads), the number of heads in a UNet2DConditionModel) does not fit \(channels) channels in '\(prefix)'")
            }
            contextDimensions.insert(context)
            return .transformer(prefix: prefix, channels: channels, heads: heads, layers: config.transformerLayersPerBlock[block],
                                contextDimension: context, onlyCrossAttention: onlyCrossAttention)
        }

        var down: [Block] = []
        var output = channels[0]
        for (i, type) in config.downBlockTypes.enumerated() {
            let input = output, prefix = "down_blocks.\(i)"
            output = channels[i]
            let resnets = (0..<config.layersPerBlock[i]).map { j in resnet("\(prefix).resnets.\(j)", j == 0 ? input : output, output) }
            var attentions: [Attention?] = []
            switch type {
            case .downBlock2D: break
            case .attentionDownBlock2D:
                attentions = try resnets.indices.map { try spatialAttention("\(prefix).attentions.\($0)", output, block: i) }
            case .crossAttentionDownBlock2D:
                attentions = try resnets.indices.map {
                    try transformer("\(prefix).attentions.\($0)", output, block: i, onlyCrossAttention: config.onlyCrossAttention[i])
                }
            }
            var downsampler: Resampler?
            if i < blocks - 1 {
                // Only AttnDownBlock2D of a UNet2DModel takes downsample_type; the others always use the conv.
                if type == .attentionDownBlock2D, !conditional, config.downsampleType == .resnet {
                    downsampler = .resnet(resnet("\(prefix).downsamplers.0", output, output, resampling: .down))
                } else {
                    // Downsample2D with padding 0 pads only the bottom and right, by one.
                    let padding = config.downsamplePadding
                    downsampler = .conv(prefix: "\(prefix).downsamplers.0.conv", channels: output, stride: 2, padding: padding,
                                        paddingEnd: padding == 0 ? 1 : padding)
                }
            }
            down.append(Block(resnets: resnets, attentions: attentions, resampler: downsampler))
        }
        self.down = down

        let last = channels[blocks - 1], midScale = config.midBlockScaleFactor
        switch config.midBlockType {
        case nil:
            mid = nil
        case .midBlock2D?:
            // UNet2DConditionModel builds UNetMidBlock2D with num_layers=0 and no attention (get_mid_block).
            var resnets = [resnet("mid_block.resnets.0", last, last, scale: midScale)]
            var attentions: [Attention?] = []
            if !conditional {
                attentions = [config.addAttention
                    ? try spatialAttention("mid_block.attentions.0", last, block: blocks - 1,
                                           groups: config.attentionNormNumGroups ?? config.normNumGroups, rescale: midScale)
                    : nil]
                resnets.append(resnet("mid_block.resnets.1", last, last, scale: midScale))
            }
            mid = Block(resnets: resnets, attentions: attentions, resampler: nil)
        case .midBlock2DCrossAttention?:
            mid = Block(resnets: [resnet("mid_block.resnets.0", last, last, scale: midScale),
                                  resnet("mid_block.resnets.1", last, last, scale: midScale)],
                        attentions: [try transformer("mid_block.attentions.0", last, block: blocks - 1, onlyCrossAttention: false)],
                        resampler: nil)
        }

        var up: [Block] = []
        let reversed = Array(channels.reversed())
        output = reversed[0]
        for (i, type) in config.upBlockTypes.enumerated() {
            let previous = output, input = reversed[min(i + 1, blocks - 1)], prefix = "up_blocks.\(i)"
            output = reversed[i]
            let block = blocks - 1 - i
            let layers = config.layersPerBlock[block] + 1
            let resnets = (0..<layers).map { j in
                resnet("\(prefix).resnets.\(j)", (j == 0 ? previous : output) + (j == layers - 1 ? input : output), output)
            }
            var attentions: [Attention?] = []
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
            var upsampler: Resampler?
            if i < blocks - 1 {
                if type == .attentionUpBlock2D, !conditional, config.upsampleType == .resnet {
                    upsampler = .resnet(resnet("\(prefix).upsamplers.0", output, output, resampling: .up))
                } else {
                    upsampler = .conv(prefix: "\(prefix).upsamplers.0.conv", channels: output, stride: 1, padding: 1, paddingEnd: 1)
                }
            }
            up.append(Block(resnets: resnets, attentions: attentions, resampler: upsampler))
        }
        self.up = up

        guard contextDimensions.count <= 1 else {
            throw failure("cross_attention_dim differs between blocks (\(contextDimensions.sorted())); one encoder_hidden_states cannot feed them all")
        }
        contextDimension = contextDimensions.first
    }

    /// Refuses inputs the network cannot take, as TensorErrors counting x as argument 1, timesteps 2 and the
    /// conditioning 3, as the Lua call `m:forward(x, t, {...})` numbers them.
    func checkInputs(_ x: Tensor, timesteps: [Float], classLabels: [Int]?, context: Tensor?) throws {
        guard !x.isReleased else { throw TensorError(argument: 1, "tensor has been released") }
        guard x.rank == 4, x.shape[1] == config.inChannels, x.shape[0] > 0, x.shape[2] > 0, x.shape[3] > 0 else {
            throw TensorError(argument: 1, "expected [batch, \(config.inChannels), height, width], got \(shapeString(x.shape))")
        }
        let batch = x.shape[0]
        // Each down-sampler halves (rounding up); the up path must land back on the same sizes. UNet2DConditionModel
        // forwards the skip sizes to its up-samplers, UNet2DModel doubles, so there the sides must halve evenly.
        let halvings = down.count - 1
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
