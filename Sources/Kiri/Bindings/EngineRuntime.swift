import Foundation
import KiriLua

extension LuaRuntime {
    /// A runtime with the engine's libraries registered: `kiri.models` (knowing `bundledModels` as `bundled:NAME`
    /// and `servedModels` as `served:NAME`, taking models from `modelCache` when given), `kiri.image` (adding
    /// `imageText` to every PNG it writes, after the script's own chunks), training (`kiri.models.create`,
    /// `kiri.optim`) and `kiri.data`.
    public static func engine(limits: SandboxLimits = SandboxLimits(), files: FileAccess = FileAccess(),
                              plugins: PluginCatalog = PluginCatalog(), bundledModels: [String: String] = [:],
                              servedModels: [String: String] = [:], imageText: [(key: String, value: String)] = [],
                              modelCache: ModelCache? = nil,
                              output: @escaping (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }) throws -> LuaRuntime {
        try LuaRuntime(limits: limits, files: files, plugins: plugins,
                       libraries: [ModelLibrary(bundled: bundledModels, served: servedModels, cache: modelCache), ImageLibrary(imageText: imageText), TrainingLibrary(),
                                   DataLibrary()],
                       output: output)
    }
}
