import Foundation
import KiriModels

extension BundledFiles {
    /// CLIP's tokenizer for single-file SD1 and SD2 checkpoints, which carry no tokenizer files: the 48,894 merges
    /// of OpenAI's CLIP BPE (MIT; Sources/Kiri/Resources/clip/README.md) with the vocabulary derived from them.
    /// SD2's tokenizer pads with `!` rather than `<|endoftext|>`, which also makes every `!` in a prompt id 0;
    /// pass `padToken: "!"` for the ids its diffusers folder gives.
    public static func clipTokenizer(padToken: String? = nil) throws(ModelFileError) -> CLIPTokenizer {
        guard let folder = folder("clip", resources: true) else {
            throw ModelFileError("clip/merges.txt", "Kiri's bundled CLIP merges are missing (looked in KIRI_HOME, share/kiri and the resource bundle)")
        }
        let path = folder + "/merges.txt"
        guard let merges = FileManager.default.contents(atPath: path) else { throw ModelFileError(path, "cannot read the file") }
        return try CLIPTokenizer(derivingVocabularyFromMerges: Array(merges), path: path, padToken: padToken)
    }
}
