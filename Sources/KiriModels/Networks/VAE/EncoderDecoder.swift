import KiriTensor

/// DownEncoderBlock2D (diffusers unet_2d_blocks.py): ResNets without time embedding, then, in every block but the
/// last, Downsample2D with padding 0 — F.pad(x, (0, 1, 0, 1)) and a 3×3 stride-2 conv at `downsamplers.0.conv`.
struct DownEncoderBlock2D {
    let resnets: [ResnetBlock2D]
    let downsampler: Conv2d?

    func callAsFunction(_ x: consuming Buffer, _ workspace: Workspace) throws -> Buffer {
        var h = consume x
        for resnet in resnets { h = try resnet(consume h, time: nil, workspace) }
        return try downsampler.map { try $0(h, workspace) } ?? h
    }
}

/// UpDecoderBlock2D: ResNets without time embedding (no skip connections), then, in every block but the last,
/// Upsample2D — nearest 2× up-sampling and a 3×3 conv at `upsamplers.0.conv`.
struct UpDecoderBlock2D {
    let resnets: [ResnetBlock2D]
    let upsampler: Conv2d?

    func callAsFunction(_ x: consuming Buffer, _ workspace: Workspace) throws -> Buffer {
        var h = consume x
        for resnet in resnets { h = try resnet(consume h, time: nil, workspace) }
        guard let upsampler else { return h }
        return try upsampler.upsampling(h, to: (2 * h.height, 2 * h.width), workspace)
    }
}

/// UNetMidBlock2D as the VAE builds it (temb_channels None, eps 1e-6): ResNet, one-head self-attention over all
/// channels (absent with mid_block_add_attention false), ResNet.
struct VAEMidBlock {
    let first: ResnetBlock2D, attention: SpatialSelfAttention?, second: ResnetBlock2D

    init(_ weights: WeightReader, _ prefix: String, channels: Int, config: AutoencoderKLConfig) throws {
        func resnet(_ index: Int) throws -> ResnetBlock2D {
            try ResnetBlock2D(weights, "\(prefix).resnets.\(index)", inChannels: channels, outChannels: channels, timeChannels: nil,
                              groups: config.normNumGroups, eps: vaeNormEps, activation: config.activation)
        }
        first = try resnet(0)
        attention = config.midBlockAddAttention
            ? try SpatialSelfAttention(weights, "\(prefix).attentions.0", channels: channels, headDimension: channels,
                                       groups: config.normNumGroups, eps: vaeNormEps, rescale: 1)
            : nil
        second = try resnet(1)
    }

    func callAsFunction(_ x: consuming Buffer, _ workspace: Workspace) throws -> Buffer {
        var h = try first(consume x, time: nil, workspace)
        if let attention { h = try attention(h, workspace) }
        return try second(consume h, time: nil, workspace)
    }
}

/// The eps of every group norm in vae.py's Encoder and Decoder.
let vaeNormEps = 1e-6

/// diffusers' Encoder (models/autoencoders/vae.py) with double_z, at `encoder.`:
///   h = conv_in(x); down_blocks; mid_block
///   moments = conv_out(SiLU(conv_norm_out(h)))   the posterior's mean and log-variance [B, 2·latent, H/f, W/f]
final class VAEEncoder {
    let convIn: Conv2d
    let downBlocks: [DownEncoderBlock2D]
    let midBlock: VAEMidBlock
    let normOut: GroupNorm
    let convOut: Conv2d

    init(_ weights: WeightReader, config: AutoencoderKLConfig) throws {
        let channels = config.blockOutChannels, groups = config.normNumGroups
        convIn = try Conv2d(weights, "encoder.conv_in", config.inChannels, channels[0], kernel: 3, padding: 1)
        var output = channels[0]
        downBlocks = try channels.indices.map { i in
            let input = output, prefix = "encoder.down_blocks.\(i)"
            output = channels[i]
            let resnets = try (0..<config.layersPerBlock).map { j in
                try ResnetBlock2D(weights, "\(prefix).resnets.\(j)", inChannels: j == 0 ? input : channels[i], outChannels: channels[i],
                                  timeChannels: nil, groups: groups, eps: vaeNormEps, activation: config.activation)
            }
            let downsampler = i == channels.count - 1 ? nil
                : try Conv2d(weights, "\(prefix).downsamplers.0.conv", channels[i], channels[i], kernel: 3, stride: 2, padding: 0,
                             paddingEnd: 1)
            return DownEncoderBlock2D(resnets: resnets, downsampler: downsampler)
        }
        let last = channels[channels.count - 1]
        midBlock = try VAEMidBlock(weights, "encoder.mid_block", channels: last, config: config)
        normOut = try GroupNorm(weights, "encoder.conv_norm_out", groups: groups, channels: last, eps: vaeNormEps)
        convOut = try Conv2d(weights, "encoder.conv_out", last, 2 * config.latentChannels, kernel: 3, padding: 1)
    }

    /// A stopped run ends at the next block.
    func callAsFunction(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
        let cancellation = Cancellation.current
        var h = try convIn(x, workspace)
        for block in downBlocks {
            try cancellation?.check()
            h = try block(consume h, workspace)
        }
        try cancellation?.check()
        h = try midBlock(consume h, workspace)
        return try convOut(h, normalizedBy: try normOut.statistics(h, activation: .silu, workspace), workspace)
    }
}

/// diffusers' Decoder (vae.py) with norm_type "group", at `decoder.`:
///   h = conv_in(z); mid_block; up_blocks (layers_per_block + 1 ResNets each)
///   image = conv_out(SiLU(conv_norm_out(h)))   [B, out_channels, f·h, f·w]
final class VAEDecoder {
    let convIn: Conv2d
    let midBlock: VAEMidBlock
    let upBlocks: [UpDecoderBlock2D]
    let normOut: GroupNorm
    let convOut: Conv2d

    init(_ weights: WeightReader, config: AutoencoderKLConfig) throws {
        let reversed = Array(config.blockOutChannels.reversed()), groups = config.normNumGroups
        convIn = try Conv2d(weights, "decoder.conv_in", config.latentChannels, reversed[0], kernel: 3, padding: 1)
        midBlock = try VAEMidBlock(weights, "decoder.mid_block", channels: reversed[0], config: config)
        var output = reversed[0]
        upBlocks = try reversed.indices.map { i in
            let previous = output, prefix = "decoder.up_blocks.\(i)"
            output = reversed[i]
            let resnets = try (0...config.layersPerBlock).map { j in
                try ResnetBlock2D(weights, "\(prefix).resnets.\(j)", inChannels: j == 0 ? previous : reversed[i],
                                  outChannels: reversed[i], timeChannels: nil, groups: groups, eps: vaeNormEps,
                                  activation: config.activation)
            }
            let upsampler = i == reversed.count - 1 ? nil
                : try Conv2d(weights, "\(prefix).upsamplers.0.conv", reversed[i], reversed[i], kernel: 3, padding: 1)
            return UpDecoderBlock2D(resnets: resnets, upsampler: upsampler)
        }
        let first = config.blockOutChannels[0]
        normOut = try GroupNorm(weights, "decoder.conv_norm_out", groups: groups, channels: first, eps: vaeNormEps)
        convOut = try Conv2d(weights, "decoder.conv_out", first, config.outChannels, kernel: 3, padding: 1)
    }

    /// Writes the image for latents `z` into `out`; a stopped run ends at the next block.
    func forward(into out: UnsafeMutablePointer<Float>, _ z: Buffer, _ workspace: Workspace) throws {
        let cancellation = Cancellation.current
        var h = try convIn(z, workspace)
        h = try midBlock(consume h, workspace)
        for block in upBlocks {
            try cancellation?.check()
            // Each block's activations are larger than the last's, so the storage it frees is released.
            workspace.releaseFree()
            h = try block(consume h, workspace)
        }
        try convOut.forward(into: out, h.data, convOut.shape(h), normalizedBy: try normOut.statistics(h, activation: .silu, workspace),
                            workspace)
    }
}
