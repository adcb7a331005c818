import Foundation

/// Where each component of a model lives, found from the path a user passes:
/// - a diffusers pipeline folder: `model_index.json` naming the components' classes, and `unet/`, `vae/`,
///   `text_encoder/`, `tokenizer/`, `scheduler/`;
/// - a folder with `unet/` and no `model_index.json`, or a model folder on its own, or a `.safetensors` file with its
///   `config.json` beside it: a denoising network alone (ModelFiles);
/// - a `.safetensors` file without a `config.json`: a single-file checkpoint in the original (CompVis/A1111) layout.
public struct PipelineFiles: Sendable, Equatable {
    /// A network's weights and config.
    public struct Component: Sendable, Equatable {
        public var weights: String
        public var config: String
    }

    public enum Layout: Sendable, Equatable {
        /// One network and its scheduler config (ModelFiles), as Kiri has always loaded.
        case network(ModelFiles)
        /// A diffusers pipeline folder.
        case diffusers(unet: ModelFiles, vae: Component?, textEncoder: Component?, tokenizer: String?, modelIndex: String)
        /// A single-file checkpoint.
        case singleFile(String)
    }

    public var layout: Layout

    public init(layout: Layout) { self.layout = layout }

    /// Every file loading reads, so that a sandbox can check each against its read roots.
    public var files: [String] {
        switch layout {
        case .network(let files):
            return [files.weights, files.config] + (files.schedulerConfig.map { [$0] } ?? [])
        case .diffusers(let unet, let vae, let textEncoder, let tokenizer, let modelIndex):
            let tokenizerFiles = tokenizer.map { folder in
                CLIPTokenizer.fileNames.map { join(folder, $0) }.filter { FileManager.default.fileExists(atPath: $0) }
            } ?? []
            return [modelIndex, unet.weights, unet.config] + (unet.schedulerConfig.map { [$0] } ?? [])
                + [vae, textEncoder].compactMap { $0 }.flatMap { [$0.weights, $0.config] } + tokenizerFiles
        case .singleFile(let path):
            return [path]
        }
    }

    /// diffusers' model classes Kiri has networks for, by component (`model_index.json` names them).
    static let supportedClasses = [
        "unet": ["UNet2DConditionModel", "UNet2DModel"], "vae": ["AutoencoderKL"],
        "text_encoder": ["CLIPTextModel", "CLIPTextModelWithProjection"], "tokenizer": ["CLIPTokenizer", "CLIPTokenizerFast"],
    ]

    public static func locate(_ path: String) throws(ModelFileError) -> PipelineFiles {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw ModelFileError(path, "no such file or folder")
        }
        if !isFolder.boolValue {
            try PickleCheckpoint.refuse(path)
            let beside = join(ModelFiles.folder(of: path), "config.json")
            let isCheckpoint = ["safetensors", "gguf"].contains(URL(fileURLWithPath: path).pathExtension.lowercased())
            if isCheckpoint && !FileManager.default.fileExists(atPath: beside) {
                return PipelineFiles(layout: .singleFile(path))
            }
            return PipelineFiles(layout: .network(try ModelFiles.locate(path)))
        }
        let modelIndex = join(path, "model_index.json")
        guard FileManager.default.fileExists(atPath: modelIndex) else {
            return PipelineFiles(layout: .network(try ModelFiles.locate(path)))
        }
        let classes = try componentClasses(modelIndex)
        for (component, className) in classes.sorted(by: { $0.key < $1.key }) {
            if let supported = supportedClasses[component], !supported.contains(className) {
                throw ModelFileError(modelIndex, "component '\(component)' is a \(className); Kiri loads \(supported.joined(separator: " or ")) there")
            }
        }
        if let extra = classes.keys.sorted().first(where: { ["text_encoder_2", "tokenizer_2", "unet_2", "prior"].contains($0) }) {
            throw ModelFileError(modelIndex, "component '\(extra)': this pipeline's family (SDXL or later) is not supported yet; Kiri loads SD 1.x and 2.x")
        }
        guard classes["unet"] != nil else { throw ModelFileError(modelIndex, "names no 'unet' component") }
        let unet = try ModelFiles.locate(join(path, "unet"))
        func component(_ name: String) throws(ModelFileError) -> Component? {
            guard classes[name] != nil else { return nil }
            let folder = join(path, name)
            let files = try ModelFiles.locate(folder)
            return Component(weights: files.weights, config: files.config)
        }
        let tokenizer = classes["tokenizer"] != nil ? join(path, "tokenizer") : nil
        return PipelineFiles(layout: .diffusers(unet: unet, vae: try component("vae"), textEncoder: try component("text_encoder"),
                                                tokenizer: tokenizer, modelIndex: modelIndex))
    }

    /// `model_index.json`'s components: `"unet": ["diffusers", "UNet2DConditionModel"]`; `[null, null]` (a component
    /// left out) and the `_`-prefixed fields are skipped.
    static func componentClasses(_ path: String) throws(ModelFileError) -> [String: String] {
        let fields = try ConfigFields(path: path)
        var classes: [String: String] = [:]
        guard case .object(let members) = fields.object else { return [:] }
        for member in members where !member.key.hasPrefix("_") {
            guard case .array(let pair) = member.value else { continue }
            guard pair.count == 2 else { throw fields.failure(member.key, "must be [library, class]") }
            if case .null = pair[1] { continue }
            guard case .string(let className) = pair[1] else { throw fields.failure(member.key, "must be [library, class]") }
            classes[member.key] = className
        }
        return classes
    }
}

private func join(_ folder: String, _ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
