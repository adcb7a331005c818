import Foundation

/// PyTorch's `.ckpt`, `.pt`, `.pth` and `.bin` checkpoints are Python pickles, and unpickling runs whatever code
/// the file names. Kiri never opens them (security case 32); it says how to convert them instead.
enum PickleCheckpoint {
    static let extensions: Set<String> = ["ckpt", "pt", "pth", "bin"]

    static func isPickle(_ path: String) -> Bool {
        extensions.contains(URL(fileURLWithPath: path).pathExtension.lowercased())
    }

    /// Throws for a pickle extension, before the file is opened.
    static func refuse(_ path: String) throws(ModelFileError) {
        guard isPickle(path) else { return }
        throw ModelFileError(path, refusal(path))
    }

    static func refusal(_ path: String) -> String {
        let url = URL(fileURLWithPath: path)
        // The one-liner quotes names in single quotes; a name that holds one gets a placeholder instead.
        let name = url.lastPathComponent.contains("'") ? "model.\(url.pathExtension)" : url.lastPathComponent
        let converted = (name as NSString).deletingPathExtension + ".safetensors"
        return """
            .\(url.pathExtension) files are PyTorch pickles, which can run arbitrary code when loaded, so Kiri does not \
            open them. Convert the file to safetensors once, in a Python environment you trust:
              python -c "import torch; from safetensors.torch import save_file; s = torch.load('\(name)', \
            map_location='cpu', weights_only=True); s = s.get('state_dict', s); \
            save_file({k: v.contiguous() for k, v in s.items()}, '\(converted)')"
            A diffusers folder converts with `<ModelClass>.from_pretrained(folder).save_pretrained(folder, \
            safe_serialization=True)`.
            """
    }

    /// True when the first bytes are a zip archive (torch.save since PyTorch 1.6) or a pickle PROTO 2–5 opcode and
    /// then another opcode (a header length that small would have a zero there); only used to add a hint to an
    /// error that already happened.
    static func looksLikePickle(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        if bytes[0] == 0x50, bytes[1] == 0x4B, bytes[2] == 0x03, bytes[3] == 0x04 { return true }
        return bytes[0] == 0x80 && (2...5).contains(bytes[1]) && bytes[2] >= 0x28
    }
}
