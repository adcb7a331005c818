import KiriTensor

extension UNetConfig {
    /// The parameters of the network this config describes, as diffusers counts them (`sum(p.numel() for p in
    /// model.parameters())`), from its modules (UNetModules) without reading or allocating weights, so that a
    /// full-size config is checked without its 3.5 GB: SD 1.5 has 859 520 964, SD 2.x 865 910 724. Nil when the
    /// config makes no network (attention heads that do not fit their channels).
    public var parameterCount: Int? {
        guard let modules = try? UNetModules(self, failure: { TensorError($0) }) else { return nil }
        let channels = blockOutChannels, time = modules.timeDimension
        func linear(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) -> Int { (inFeatures + (bias ? 1 : 0)) * outFeatures }
        func conv(_ inChannels: Int, _ outChannels: Int, kernel: Int) -> Int { (inChannels * kernel * kernel + 1) * outChannels }
        func norm(_ channels: Int) -> Int { 2 * channels }
        func resnet(_ resnet: UNetModules.Resnet) -> Int {
            let (inChannels, outChannels) = (resnet.inChannels, resnet.outChannels)
            return norm(inChannels) + conv(inChannels, outChannels, kernel: 3) + linear(time, outChannels) + norm(outChannels)
                + conv(outChannels, outChannels, kernel: 3) + (inChannels == outChannels ? 0 : conv(inChannels, outChannels, kernel: 1))
        }
        func attention(_ attention: UNetModules.Attention) -> Int {
            switch attention {
            case let .spatial(_, channels, headDimension, _, _):
                let inner = channels / headDimension * headDimension
                return norm(channels) + 3 * linear(channels, inner) + linear(inner, channels)
            case let .transformer(_, channels, heads, layers, context, onlyCrossAttention):
                let inner = channels / heads * heads
                func attention(keyValueFeatures: Int) -> Int {
                    linear(inner, inner, bias: false) + 2 * linear(keyValueFeatures, inner, bias: false) + linear(inner, inner)
                }
                let layer = 3 * norm(inner) + attention(keyValueFeatures: onlyCrossAttention ? context : inner)
                    + attention(keyValueFeatures: context) + linear(inner, 8 * inner) + linear(4 * inner, inner)
                return norm(channels) + linear(channels, inner) + layers * layer + linear(inner, channels)
            }
        }
        func block(_ block: UNetModules.Block) -> Int {
            var total = block.resnets.map(resnet).reduce(0, +) + block.attentions.compactMap { $0.map(attention) }.reduce(0, +)
            switch block.resampler {
            case nil: break
            case let .conv(_, channels, _, _, _)?: total += conv(channels, channels, kernel: 3)
            case .resnet(let layer)?: total += resnet(layer)
            }
            return total
        }
        let blocks: [UNetModules.Block] = modules.down + [modules.mid].compactMap { $0 } + modules.up
        let outer = conv(inChannels, channels[0], kernel: 3) + linear(channels[0], time) + linear(time, time)
            + (numClassEmbeds ?? 0) * time + norm(channels[0]) + conv(channels[0], outChannels, kernel: 3)
        return blocks.map(block).reduce(outer, +)
    }
}
