import Foundation

/// The files that make up one model, found from whatever path a user passes:
/// - a `.safetensors` file with its `config.json` in the same folder;
/// - a diffusers pipeline folder: `unet/diffusion_pytorch_model.safetensors`, `unet/config.json`, and optionally
///   `scheduler/scheduler_config.json`;
/// - a diffusers model folder on its own (the `unet/` folder itself).
/// A scheduler config is looked for beside the weights and then in `../scheduler/`.
public struct ModelFiles: Sendable, Equatable {
    public var weights: String
    public var config: String
    public var schedulerConfig: String?

    public init(weights: String, config: String, schedulerConfig: String?) {
        self.weights = weights
        self.config = config
        self.schedulerConfig = schedulerConfig
    }

    /// diffusers' file name for a model's weights; variants such as `.fp16.safetensors` are taken when alone.
    public static let diffusersWeights = "diffusion_pytorch_model.safetensors"
    /// transformers' (a text encoder's).
    public static let transformersWeights = "model.safetensors"

    public static func locate(_ path: String) throws(ModelFileError) -> ModelFiles {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw ModelFileError(path, "no such file or folder")
        }
        guard isFolder.boolValue else { return try single(path) }
        let unet = join(path, "unet")
        if isDirectory(unet) { return try folder(unet) }
        if FileManager.default.fileExists(atPath: join(path, "config.json")) { return try folder(path) }
        throw ModelFileError(path, "not a model folder: expected unet/ (a diffusers pipeline) or config.json with a .safetensors file")
    }

    private static func single(_ path: String) throws(ModelFileError) -> ModelFiles {
        try PickleCheckpoint.refuse(path)
        guard ["safetensors", "gguf"].contains(URL(fileURLWithPath: path).pathExtension.lowercased()) else {
            throw ModelFileError(path, "not a .safetensors file (Kiri reads safetensors weights with a diffusers config.json)")
        }
        let folder = Self.folder(of: path)
        let config = join(folder, "config.json")
        guard FileManager.default.fileExists(atPath: config) else {
            throw ModelFileError(path, "no config.json beside the weights; Kiri needs the model's diffusers config.json in the same folder to know its architecture")
        }
        return ModelFiles(weights: path, config: config, schedulerConfig: scheduler(near: folder))
    }

    private static func folder(_ folder: String) throws(ModelFileError) -> ModelFiles {
        let config = join(folder, "config.json")
        guard FileManager.default.fileExists(atPath: config) else { throw ModelFileError(folder, "missing config.json") }
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        } catch {
            throw ModelFileError(folder, "cannot list the folder: \(error.localizedDescription)")
        }
        let candidates = entries.filter { $0.lowercased().hasSuffix(".safetensors") }
        let weights: String
        if let preferred = [diffusersWeights, transformersWeights].first(where: candidates.contains) {
            weights = preferred
        } else if candidates.count == 1 {
            weights = candidates[0]
        } else if !candidates.isEmpty {
            throw ModelFileError(folder, "several weight files (\(candidates.joined(separator: ", "))); pass the one to load")
        } else if let index = entries.first(where: { $0.hasSuffix(".safetensors.index.json") }) {
            throw ModelFileError(join(folder, index), "sharded weights are not supported; save the model unsharded")
        } else if let pickle = entries.first(where: PickleCheckpoint.isPickle) {
            throw ModelFileError(join(folder, pickle), PickleCheckpoint.refusal(join(folder, pickle)))
        } else {
            throw ModelFileError(folder, "no .safetensors weights (expected \(diffusersWeights))")
        }
        return ModelFiles(weights: join(folder, weights), config: config, schedulerConfig: scheduler(near: folder))
    }

    private static func scheduler(near folder: String) -> String? {
        let candidates = [join(folder, "scheduler_config.json"), join(join(Self.folder(of: folder), "scheduler"), "scheduler_config.json")]
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    private static func isDirectory(_ path: String) -> Bool {
        var isFolder: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
    }

    private static func join(_ folder: String, _ name: String) -> String { (folder as NSString).appendingPathComponent(name) }

    /// The folder part of `path` ("." for a bare name). Foundation's `deletingLastPathComponent` traps on a
    /// one-character path on Linux (a model folder named `m`).
    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return path[..<slash].isEmpty ? "/" : String(path[..<slash])
    }
}
