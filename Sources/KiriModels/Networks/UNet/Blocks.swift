/// What every block sees besides its input: act(temb) for the ResNet blocks and encoder_hidden_states for the
/// cross-attention transformers.
struct Conditioning {
    let time: Buffer
    /// [B, S, cross_attention_dim], or nil for UNet2DModel.
    let context: UnsafePointer<Float>?
    let contextLength: Int
}

/// The attention after each ResNet of an attention block: UNet2DModel's self-attention (AttnDownBlock2D,
/// AttnUpBlock2D, UNetMidBlock2D) or a Transformer2DModel (CrossAttn…Block2D, UNetMidBlock2DCrossAttn).
enum AttentionLayer {
    case spatial(SpatialSelfAttention)
    case transformer(Transformer2D)

    func callAsFunction(_ x: Buffer, _ conditioning: Conditioning, _ workspace: Workspace) throws -> Buffer {
        switch self {
        case .spatial(let attention): return try attention(x, workspace)
        case .transformer(let transformer):
            return try transformer(x, context: conditioning.context!, contextLength: conditioning.contextLength, workspace)
        }
    }
}

/// DownBlock2D, AttnDownBlock2D and CrossAttnDownBlock2D (diffusers unet_2d_blocks.py): ResNets, each followed by
/// its attention when the block has them, then a down-sampler; every ResNet (or attention) output and the
/// down-sampler's output are skip connections for the up path.
final class DownBlock {
    enum Downsampler {
        /// Downsample2D(use_conv=True): a 3×3 stride-2 conv, `downsamplers.0.conv`.
        case conv(Conv2d)
        /// ResnetBlock2D(down=True) at `downsamplers.0` (UNet2DModel's downsample_type "resnet").
        case resnet(ResnetBlock2D)
    }

    let resnets: [ResnetBlock2D]
    let attentions: [AttentionLayer]
    let downsampler: Downsampler?

    init(resnets: [ResnetBlock2D], attentions: [AttentionLayer], downsampler: Downsampler?) {
        (self.resnets, self.attentions, self.downsampler) = (resnets, attentions, downsampler)
    }

    func callAsFunction(_ x: Buffer, _ conditioning: Conditioning, skips: inout [Buffer], _ workspace: Workspace) throws -> Buffer {
        var h = x
        for (index, resnet) in resnets.enumerated() {
            h = try resnet(h, time: conditioning.time, workspace)
            if !attentions.isEmpty { h = try attentions[index](h, conditioning, workspace) }
            skips.append(h)
        }
        switch downsampler {
        case nil: return h
        case .conv(let conv)?: h = try conv(h, workspace)
        case .resnet(let resnet)?: h = try resnet(h, time: conditioning.time, workspace)
        }
        skips.append(h)
        return h
    }
}

/// UNetMidBlock2D and UNetMidBlock2DCrossAttn: a ResNet, then (attention, ResNet) pairs; an attention may be
/// absent (UNet2DModel's add_attention false).
final class MidBlock {
    let resnets: [ResnetBlock2D]
    let attentions: [AttentionLayer?]

    init(resnets: [ResnetBlock2D], attentions: [AttentionLayer?]) {
        (self.resnets, self.attentions) = (resnets, attentions)
    }

    func callAsFunction(_ x: Buffer, _ conditioning: Conditioning, _ workspace: Workspace) throws -> Buffer {
        var h = try resnets[0](x, time: conditioning.time, workspace)
        for (attention, resnet) in zip(attentions, resnets.dropFirst()) {
            if let attention { h = try attention(h, conditioning, workspace) }
            h = try resnet(h, time: conditioning.time, workspace)
        }
        return h
    }
}

/// UpBlock2D, AttnUpBlock2D and CrossAttnUpBlock2D: each ResNet takes the input joined (torch.cat, dim 1) to the
/// last unused skip connection, then its attention; then an up-sampler.
final class UpBlock {
    enum Upsampler {
        /// Upsample2D(use_conv=True): nearest up-sampling, then a 3×3 conv, `upsamplers.0.conv`.
        case conv(Conv2d)
        /// ResnetBlock2D(up=True) at `upsamplers.0` (UNet2DModel's upsample_type "resnet").
        case resnet(ResnetBlock2D)
    }

    let resnets: [ResnetBlock2D]
    let attentions: [AttentionLayer]
    let upsampler: Upsampler?

    init(resnets: [ResnetBlock2D], attentions: [AttentionLayer], upsampler: Upsampler?) {
        (self.resnets, self.attentions, self.upsampler) = (resnets, attentions, upsampler)
    }

    /// `size` is the up-sampler's output [height, width]: twice the input, or the next skip connection's size when
    /// UNet2DConditionModel forwards `upsample_size` for sides that do not halve evenly.
    func callAsFunction(_ x: Buffer, _ conditioning: Conditioning, skips: inout [Buffer], size: (height: Int, width: Int)?,
                        _ workspace: Workspace) throws -> Buffer {
        var h = x
        for (index, resnet) in resnets.enumerated() {
            let skip = skips.removeLast()
            let joined = try workspace.take([h.batch, h.channels + skip.channels, h.height, h.width])
            workspace.backend.concatenateChannels(into: joined.data, h.data, skip.data, batch: h.batch, channelsA: h.channels,
                                                  channelsB: skip.channels, spatial: h.spatial)
            h = try resnet(consume joined, time: conditioning.time, workspace)
            if !attentions.isEmpty { h = try attentions[index](h, conditioning, workspace) }
        }
        switch upsampler {
        case nil: return h
        case .conv(let conv)?:
            return try conv.upsampling(h, to: size ?? (2 * h.height, 2 * h.width), workspace)
        case .resnet(let resnet)?: return try resnet(h, time: conditioning.time, workspace)
        }
    }
}
