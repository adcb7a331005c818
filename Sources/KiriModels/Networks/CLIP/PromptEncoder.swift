import Foundation
import KiriTensor

/// Weighted prompts of any length to the context a UNet attends to, as AUTOMATIC1111 encodes them with its
/// default emphasis "Original": `FrozenCLIPEmbedderWithCustomWordsBase.forward` and `process_tokens` in
/// modules/sd_hijack_clip.py, with `EmphasisOriginal` in modules/sd_emphasis.py. Each 77-token chunk
/// (`PromptWeighting.chunks`) goes through the text encoder on its own; its hidden states z are scaled per token by
/// the chunk's weights and then by mean(z before) / mean(z after), and the chunks are joined along the tokens.
public final class PromptEncoder {
    public let tokenizer: CLIPTokenizer
    public let textModel: CLIPTextModel
    /// A1111's "Clip skip", passed to `CLIPTextModel.forward`.
    public let clipSkip: Int
    /// A1111's `comma_padding_backtrack`.
    public let commaBacktrack: Int

    /// A text encoder with fewer than 77 positions cannot take A1111's chunks; that is a TensorError for argument 2.
    public init(tokenizer: CLIPTokenizer, textModel: CLIPTextModel, clipSkip: Int = 1,
                commaBacktrack: Int = PromptWeighting.commaBacktrack) throws {
        guard textModel.config.maxPositionEmbeddings >= PromptWeighting.windowLength else {
            throw TensorError(argument: 2, "the text encoder has \(textModel.config.maxPositionEmbeddings) positions "
                + "(max_position_embeddings); weighted prompts are encoded in chunks of \(PromptWeighting.windowLength)")
        }
        (self.tokenizer, self.textModel, self.clipSkip, self.commaBacktrack) = (tokenizer, textModel, clipSkip, commaBacktrack)
    }

    /// The chunks `prompt` is encoded in.
    public func chunks(_ prompt: String) throws(PromptError) -> [PromptChunk] {
        try PromptWeighting.chunks(prompt, tokenizer: tokenizer, commaBacktrack: commaBacktrack)
    }

    /// [1, 77·k, hidden_size] for a prompt of k chunks.
    public func encode(prompt: String) throws -> Tensor { try encode(prompts: [prompt]) }

    /// [B, 77·k, hidden_size], k the most chunks of any prompt; a prompt with fewer ends in encodings of the empty
    /// chunk, so cond and uncond stack. That is what A1111's forward does within one batch (`empty_chunk`), and what
    /// its "pad prompt/negative prompt" option does between cond and uncond (`pad_cond_uncond` in
    /// modules/sd_samplers_cfg_denoiser.py, with the empty prompt's encoding, which is the empty chunk's).
    ///
    /// The mean that emphasis restores is each prompt's own chunk's: A1111 takes it over every text of one forward
    /// call, which for a single prompt is the same, but couples the prompts of a batch (and a prompt-editing
    /// schedule's texts), so their encodings would depend on each other.
    public func encode(prompts: [String]) throws -> Tensor {
        guard !prompts.isEmpty else { throw TensorError(argument: 1, "expected at least one prompt") }
        let chunkLists = try prompts.map { prompt throws(PromptError) in try chunks(prompt) }
        let empty = PromptWeighting.chunks([PromptPiece("", 1)], tokenizer: tokenizer)[0]
        let count = chunkLists.map(\.count).max()!
        let (window, width) = (PromptWeighting.windowLength, textModel.config.hiddenSize)
        let output = try Tensor(shape: [prompts.count, count * window, width])
        for position in 0..<count {
            let batch = chunkLists.map { position < $0.count ? $0[position] : empty }
            let hiddenStates = try textModel.forward(batch.map(\.tokens), clipSkip: clipSkip).hiddenStates
            for (index, chunk) in batch.enumerated() {
                let z = hiddenStates.data + index * window * width
                Self.emphasize(z, weights: chunk.weights, width: width)
                (output.data + (index * count + position) * window * width).update(from: z, count: window * width)
            }
        }
        return output
    }

    /// EmphasisOriginal.after_transformers on one chunk's z [77, width], in place. With every weight 1 it changes
    /// nothing: z·1 is z, so the two means are the same sum and their ratio is exactly 1.
    static func emphasize(_ z: UnsafeMutablePointer<Float>, weights: [Double], width: Int) {
        let count = weights.count * width
        let originalMean = mean(z, count: count)
        for (token, weight) in weights.enumerated() {
            let row = z + token * width, weight = Float(weight)
            for feature in 0..<width { row[feature] *= weight }
        }
        let scale = Float(originalMean / mean(z, count: count))
        for index in 0..<count { z[index] *= scale }
    }

    /// In Double, so the ratio of two means of tens of thousands of values keeps float32's precision.
    static func mean(_ values: UnsafeMutablePointer<Float>, count: Int) -> Double {
        var sum = 0.0
        for index in 0..<count { sum += Double(values[index]) }
        return sum / Double(count)
    }
}
