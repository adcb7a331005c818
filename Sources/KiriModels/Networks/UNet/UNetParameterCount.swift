extension UNetConfig {
    /// The parameters of the network this config describes, as diffusers counts them (`sum(p.numel() for p in
    /// model.parameters())`), from the config alone: SD 1.5 has 859 520 964, SD 2.x 865 910 724. It follows
    /// UNet.init module by module without reading or allocating weights, so a full-size config can be checked
    /// without its 3.5 GB; the parity tests check that the two agree on every fixture.
    public var parameterCount: Int {
        let conditional = architecture == .unet2DCondition
        let channels = blockOutChannels, blocks = channels.count, time = 4 * channels[0]
        func linear(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) -> Int { (inFeatures + (bias ? 1 : 0)) * outFeatures }
        func conv(_ inChannels: Int, _ outChannels: Int, kernel: Int) -> Int { (inChannels * kernel * kernel + 1) * outChannels }
        func norm(_ channels: Int) -> Int { 2 * channels }
        func resnet(_ inChannels: Int, _ outChannels: Int) -> Int {
            norm(inChannels) + conv(inChannels, outChannels, kernel: 3) + linear(time, outChannels) + norm(outChannels)
                + conv(outChannels, outChannels, kernel: 3) + (inChannels == outChannels ? 0 : conv(inChannels, outChannels, kernel: 1))
        }
        /// UNet2DModel's attention: heads of attention_head_dim channels (nil: one head over all).
        func spatialAttention(_ channels: Int, block: Int) -> Int {
            let headDimension = attentionHeadDim?[block] ?? channels, inner = channels / headDimension * headDimension
            return norm(channels) + 3 * linear(channels, inner) + linear(inner, channels)
        }
        /// Transformer2DModel: attention_head_dim heads; attn1 projects the context when only cross-attending.
        func transformer(_ channels: Int, block: Int, onlyCrossAttention: Bool) -> Int {
            let heads = attentionHeadDim![block], context = crossAttentionDim![block], inner = channels / heads * heads
            func attention(keyValueFeatures: Int) -> Int {
                linear(inner, inner, bias: false) + 2 * linear(keyValueFeatures, inner, bias: false) + linear(inner, inner)
            }
            let layer = 3 * norm(inner) + attention(keyValueFeatures: onlyCrossAttention ? context : inner)
                + attention(keyValueFeatures: context) + linear(inner, 8 * inner) + linear(4 * inner, inner)
            return norm(channels) + linear(channels, inner) + transformerLayersPerBlock[block] * layer + linear(inner, channels)
        }

        var total = conv(inChannels, channels[0], kernel: 3) + linear(channels[0], time) + linear(time, time)
            + (numClassEmbeds ?? 0) * time + norm(channels[0]) + conv(channels[0], outChannels, kernel: 3)
        var output = channels[0]
        for (i, type) in downBlockTypes.enumerated() {
            let input = output
            output = channels[i]
            for j in 0..<layersPerBlock[i] {
                total += resnet(j == 0 ? input : output, output)
                switch type {
                case .downBlock2D: break
                case .attentionDownBlock2D: total += spatialAttention(output, block: i)
                case .crossAttentionDownBlock2D: total += transformer(output, block: i, onlyCrossAttention: onlyCrossAttention[i])
                }
            }
            guard i < blocks - 1 else { continue }
            let resampling = type == .attentionDownBlock2D && !conditional && downsampleType == .resnet
            total += resampling ? resnet(output, output) : conv(output, output, kernel: 3)
        }

        let last = channels[blocks - 1]
        switch midBlockType {
        case nil: break
        case .midBlock2D?:
            total += resnet(last, last)
            if !conditional { total += resnet(last, last) + (addAttention ? spatialAttention(last, block: blocks - 1) : 0) }
        case .midBlock2DCrossAttention?:
            total += 2 * resnet(last, last) + transformer(last, block: blocks - 1, onlyCrossAttention: false)
        }

        let reversed = Array(channels.reversed())
        output = reversed[0]
        for (i, type) in upBlockTypes.enumerated() {
            let previous = output, input = reversed[min(i + 1, blocks - 1)], block = blocks - 1 - i
            output = reversed[i]
            let layers = layersPerBlock[block] + 1
            for j in 0..<layers {
                total += resnet((j == 0 ? previous : output) + (j == layers - 1 ? input : output), output)
                switch type {
                case .upBlock2D: break
                case .attentionUpBlock2D: total += spatialAttention(output, block: i)
                case .crossAttentionUpBlock2D: total += transformer(output, block: block, onlyCrossAttention: onlyCrossAttention[block])
                }
            }
            guard i < blocks - 1 else { continue }
            let resampling = type == .attentionUpBlock2D && !conditional && upsampleType == .resnet
            total += resampling ? resnet(output, output) : conv(output, output, kernel: 3)
        }
        return total
    }
}
