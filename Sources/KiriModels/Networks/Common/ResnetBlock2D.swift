/// diffusers' ResnetBlock2D (models/resnet.py) with time_embedding_norm "default":
///   h = conv1(resample(act(norm1(x)))) + time_emb_proj(act(temb))[:, :, None, None]
///   out = (shortcut(resample(x)) + conv2(act(norm2(h)))) / output_scale_factor
/// where resample is nearest 2× up-sampling (up=True), 2×2 average pooling (down=True) or nothing, and shortcut a
/// 1×1 conv when the channel count changes. With temb_channels None (the VAE's blocks) there is no time_emb_proj.
final class ResnetBlock2D {
    enum Resampling { case none, up, down }

    let norm1: GroupNorm, conv1: Conv2d, timeProjection: Linear?, norm2: GroupNorm, conv2: Conv2d
    let shortcut: Conv2d?
    let activation: UNetConfig.Activation
    let resampling: Resampling
    let outputScaleFactor: Float

    init(_ weights: WeightReader, _ prefix: String, inChannels: Int, outChannels: Int, timeChannels: Int?, groups: Int, eps: Double,
         activation: UNetConfig.Activation, outputScaleFactor: Double = 1, resampling: Resampling = .none) throws {
        norm1 = try GroupNorm(weights, "\(prefix).norm1", groups: groups, channels: inChannels, eps: eps)
        conv1 = try Conv2d(weights, "\(prefix).conv1", inChannels, outChannels, kernel: 3, padding: 1)
        timeProjection = try timeChannels.map { try Linear(weights, "\(prefix).time_emb_proj", $0, outChannels) }
        norm2 = try GroupNorm(weights, "\(prefix).norm2", groups: groups, channels: outChannels, eps: eps)
        conv2 = try Conv2d(weights, "\(prefix).conv2", outChannels, outChannels, kernel: 3, padding: 1)
        shortcut = inChannels == outChannels ? nil : try Conv2d(weights, "\(prefix).conv_shortcut", inChannels, outChannels, kernel: 1)
        self.activation = activation
        self.resampling = resampling
        self.outputScaleFactor = Float(outputScaleFactor)
    }

    /// `time` is act(temb) [B, T], shared by every block of the network; nil without a time embedding. x is
    /// consumed: once conv1 and the shortcut have read it, the block holds it no longer, so a caller that passes its
    /// last reference (`consume`) lets its storage serve the rest of the block.
    func callAsFunction(_ x: consuming Buffer, time: Buffer?, _ workspace: Workspace) throws -> Buffer {
        var projected: Buffer?
        if let timeProjection, let time {
            let buffer = try workspace.take([x.batch, conv1.outChannels])
            try timeProjection.forward(into: buffer.data, time.data, rows: x.batch, workspace)
            projected = buffer
        }
        let (h, out) = try firstHalf(x, extraBias: projected?.data, workspace)
        _ = consume x
        try conv2.forward(into: out.data, h.data, conv2.shape(h), normalizedBy: try norm2.statistics(h, activation: activation, workspace),
                          accumulate: true, workspace)
        if outputScaleFactor != 1 { scale(out, by: 1 / outputScaleFactor) }
        return out
    }

    /// h = conv1(resample(act(norm1(x)))) + extraBias, with conv1 reading act(norm1(x)) without it being made, and
    /// out = shortcut(resample(x)), to which conv2 adds.
    private func firstHalf(_ x: Buffer, extraBias: UnsafePointer<Float>?, _ workspace: Workspace) throws -> (h: Buffer, out: Buffer) {
        let normalized = try norm1.statistics(x, activation: activation, workspace)
        let input: Buffer, h: Buffer
        switch resampling {
        case .none:
            input = x
            h = try conv1(x, normalizedBy: normalized, extraBias: extraBias, workspace)
        case .up:
            input = try upsampleNearest(x, height: 2 * x.height, width: 2 * x.width, workspace)
            h = try conv1.upsampling(x, normalizedBy: normalized, to: (input.height, input.width), extraBias: extraBias, workspace)
        case .down:
            input = try averagePool(x, workspace)
            let pooled = try averagePool(try normalized.apply(x.data, x.shape, workspace), workspace)
            h = try conv1(pooled, extraBias: extraBias, workspace)
        }
        let out = try workspace.take(h.shape)
        if let shortcut {
            try shortcut.forward(into: out.data, input.data, shortcut.shape(input), workspace)
        } else {
            out.data.update(from: input.data, count: out.count)
        }
        return (h, out)
    }
}

/// F.interpolate(x, size=(height, width), mode="nearest").
func upsampleNearest(_ x: Buffer, height: Int, width: Int, _ workspace: Workspace) throws -> Buffer {
    let out = try workspace.take([x.batch, x.channels, height, width])
    workspace.backend.upsampleNearest(into: out.data, x.data, planes: x.batch * x.channels, height: x.height, width: x.width,
                                      outHeight: height, outWidth: width)
    return out
}

/// F.avg_pool2d(x, 2, 2).
func averagePool(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
    let out = try workspace.take([x.batch, x.channels, x.height / 2, x.width / 2])
    workspace.backend.averagePool(into: out.data, x.data, planes: x.batch * x.channels, height: x.height, width: x.width)
    return out
}

/// x *= factor, in place.
func scale(_ x: Buffer, by factor: Float) {
    let f = Vector(repeating: factor)
    vectorMap(x.data, x.data, x.count) { $0 * f }
}
