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

    /// `time` is act(temb) [B, T], shared by every block of the network; nil without a time embedding.
    func callAsFunction(_ x: Buffer, time: Buffer?, _ workspace: Workspace) throws -> Buffer {
        var input = x
        var h = try norm1(x, activation: activation, workspace)
        switch resampling {
        case .none: break
        case .up:
            input = try upsampleNearest(x, height: 2 * x.height, width: 2 * x.width, workspace)
            h = try upsampleNearest(h, height: 2 * x.height, width: 2 * x.width, workspace)
        case .down:
            input = try averagePool(x, workspace)
            h = try averagePool(h, workspace)
        }

        var projected: Buffer?
        if let timeProjection, let time {
            let buffer = try workspace.take([x.batch, conv1.outChannels])
            try timeProjection.forward(into: buffer.data, time.data, rows: x.batch, workspace)
            projected = buffer
        }
        h = try conv1(h, extraBias: projected?.data, workspace)
        groupNormForward(h.data, h.data, norm2.weight.data, norm2.bias.data, eps: norm2.eps, activation: activation,
                         batch: h.batch, channels: h.channels, spatial: h.spatial, groups: norm2.groups)

        let out = try workspace.take(h.shape)
        if let shortcut {
            try shortcut.forward(into: out.data, input.data, shortcut.shape(input), workspace)
        } else {
            out.data.update(from: input.data, count: out.count)
        }
        try conv2.forward(into: out.data, h.data, conv2.shape(h), accumulate: true, workspace)
        if outputScaleFactor != 1 { scale(out, by: 1 / outputScaleFactor) }
        return out
    }
}

/// F.interpolate(x, size=(height, width), mode="nearest").
func upsampleNearest(_ x: Buffer, height: Int, width: Int, _ workspace: Workspace) throws -> Buffer {
    let out = try workspace.take([x.batch, x.channels, height, width])
    upsampleNearestForward(out.data, x.data, planes: x.batch * x.channels, height: x.height, width: x.width,
                           outHeight: height, outWidth: width)
    return out
}

/// F.avg_pool2d(x, 2, 2).
func averagePool(_ x: Buffer, _ workspace: Workspace) throws -> Buffer {
    let out = try workspace.take([x.batch, x.channels, x.height / 2, x.width / 2])
    averagePoolForward(out.data, x.data, planes: x.batch * x.channels, height: x.height, width: x.width)
    return out
}

/// x *= factor, in place.
func scale(_ x: Buffer, by factor: Float) {
    let f = Vector(repeating: factor)
    vectorMap(x.data, x.data, x.count) { $0 * f }
}
