import KiriTensor

/// The operations the networks are made of, each on whole activations, and where they run. Layers (Conv2d, Linear,
/// GroupNorm, LayerNorm) and blocks call their workspace's backend and never a kernel, so a backend decides how an
/// operation is done: `CPUBackend` is the optimised kernels (Kernels/, KiriKernels), `ReferenceBackend` the same
/// operations as plain loops in Double, the oracle the optimised ones are tested against (llm.c's "reference
/// first"). A Metal or CUDA backend would conform here; it would keep the activations (`Workspace`'s storage) and
/// the layers' prepared weights (Winograd filters, widened chunks, which the layers hold for the CPU today) on
/// its device.
protocol Backend: AnyObject {
    /// conv2d(input) + bias + extraBias[B, O] into out (added to it with `accumulate`), `shape` being the input as
    /// the conv sees it. With `upsampled`, input holds [B, I, H/2, W/2] and the conv sees its nearest 2× up-sampling
    /// (Upsample2D); with `normalization`, it sees the input normalised by that map (GroupNorm and its activation).
    func conv2d(_ conv: Conv2d, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ shape: ConvolutionShape,
                upsampled: Bool, normalizedBy normalization: InputNormalization?, extraBias: UnsafePointer<Float>?,
                accumulate: Bool, _ workspace: Workspace) throws

    /// The linear layer over input in `layout`, into out (added to it with `accumulate`).
    func linear(_ linear: Linear, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ layout: LinearLayout,
                accumulate: Bool, _ workspace: Workspace) throws

    /// mean[B, C] and scale[B, C] of GroupNorm over input[B, C, S]: the statistics a ChannelNormalization applies.
    func groupNormStatistics(_ norm: GroupNorm, mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>,
                             _ input: UnsafePointer<Float>, batch: Int, spatial: Int)

    /// out[B, C, S] = the map over input[B, C, S]; `out` may be `input`.
    func normalize(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ map: ChannelNormalization, batch: Int,
                   spatial: Int)

    /// out[rows, F] = LayerNorm(input[rows, F]); `out` may be `input`.
    func layerNorm(_ norm: LayerNorm, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int)

    /// out[B, Nq, H·D] (rows `outStride` apart) = softmax(q·kᵀ/√D)·v per batch element and head, over strided q
    /// [B, Nq, ·], k and v [B, Nk, ·]; with `causal` (Nq = Nk), query t sees keys 0...t.
    func attention(into out: UnsafeMutablePointer<Float>, outStride: Int, query: AttentionOperand, key: AttentionOperand,
                   value: AttentionOperand, batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, causal: Bool,
                   _ workspace: Workspace) throws

    /// out[rows, F] = a · GELU(gate) for input[rows, 2F] = [a | gate].
    func geglu(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int, features: Int)

    /// out[count] = activation(input[count]); `out` may be `input`.
    func activation(_ activation: Activation, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, count: Int)

    /// out[N, outHeight, outWidth] = F.interpolate(input[N, H, W], size=(outHeight, outWidth), mode="nearest").
    func upsampleNearest(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                         outHeight: Int, outWidth: Int)

    /// out[N, H/2, W/2] = F.avg_pool2d(input[N, H, W], 2, 2).
    func averagePool(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int)

    /// out[B, Ca + Cb, S] = torch.cat([a, b], dim=1).
    func concatenateChannels(into out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, batch: Int,
                             channelsA: Int, channelsB: Int, spatial: Int)
}

/// Re-sampling and concatenation as the plain copies they are (Kernels/Resampling.swift), for backends whose
/// activations are in host memory.
extension Backend {
    func upsampleNearest(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                         outHeight: Int, outWidth: Int) {
        upsampleNearestForward(out, input, planes: planes, height: height, width: width, outHeight: outHeight, outWidth: outWidth)
    }

    func averagePool(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int) {
        averagePoolForward(out, input, planes: planes, height: height, width: width)
    }

    func concatenateChannels(into out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, batch: Int,
                             channelsA: Int, channelsB: Int, spatial: Int) {
        concatenateChannelsForward(out, a, b, batch: batch, channelsA: channelsA, channelsB: channelsB, spatial: spatial)
    }
}

/// How a linear layer's input and output are laid out.
enum LinearLayout {
    /// out[rows, O] = input[rows, I]·Wᵀ + b.
    case rows(Int)
    /// out[B, T, O] = input[B, I, T]ᵀ·Wᵀ + b: channels-first features in, tokens out (attention's to_q on a feature
    /// map, Transformer2DModel's proj_in).
    case tokensFromChannels(batch: Int, tokens: Int)
    /// out[B, O, T] = W·input[B, T, I]ᵀ + b: tokens in, channels-first features out (to_out, proj_out).
    case channelsFromTokens(batch: Int, tokens: Int)
}

/// The backend new networks run on. Tests set `ReferenceBackend` to run whole networks on the plain loops.
nonisolated(unsafe) var defaultBackend: any Backend = CPUBackend()
