import Foundation
import KiriLua

/// What `kiri run` needs to run one recipe in the sandbox.
public struct RunRequest: Sendable {
    public var script: String
    public var arguments: [String]
    public var limits: SandboxLimits
    public var outputDirectory: String
    /// User plugin folders, searched before the bundled ones.
    public var pluginDirectories: [String]

    public init(script: String, arguments: [String] = [], limits: SandboxLimits = SandboxLimits(),
                outputDirectory: String = "out", pluginDirectories: [String] = []) {
        self.script = script
        self.arguments = arguments
        self.limits = limits
        self.outputDirectory = outputDirectory
        self.pluginDirectories = pluginDirectories
    }
}

/// Runs recipes: each run gets a fresh Lua state, so nothing leaks from one to the next.
public enum RecipeRunner {
    /// Runs the request; throws ScriptFailure with `file:line: message` and a traceback. Returns the
    /// files the run loaded (the recipe, its modules and plugins).
    @discardableResult
    public static func run(_ request: RunRequest, output: @escaping (String) -> Void = Self.standardOutput) throws -> [String] {
        guard FileManager.default.isReadableFile(atPath: request.script) else {
            let reason = FileManager.default.fileExists(atPath: request.script) ? "permission denied" : "no such file"
            throw ScriptFailure(kind: .setup, message: "cannot read '\(request.script)': \(reason)")
        }
        let recipeFolder = (request.script as NSString).deletingLastPathComponent
        let recipeRoot = recipeFolder.isEmpty ? "." : recipeFolder
        let plugins = PluginPath.catalog(user: request.pluginDirectories)
        let pluginFolders = plugins.folders.map(\.path)
        // Files named on the command line may be read, wherever they are.
        let namedFiles = request.arguments.filter { FileManager.default.fileExists(atPath: $0) }
        let files = FileAccess(
            readRoots: [recipeRoot] + pluginFolders + namedFiles,
            moduleRoots: [recipeRoot] + pluginFolders,
            outputDirectory: request.outputDirectory)
        let runtime = try LuaRuntime(limits: request.limits, files: files, plugins: plugins, output: output)
        defer { runtime.close() }
        do {
            try runtime.run(file: request.script, arguments: request.arguments)
        } catch var failure as ScriptFailure {
            failure.loadedFiles = [request.script] + runtime.loadedFiles
            throw failure
        }
        return [request.script] + runtime.loadedFiles
    }

    public static func standardOutput(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }
}

/// Where plugins are found: the user's folders (`--plugins`, then `KIRI_PLUGIN_PATH`), then the
/// bundled `Plugins/`.
public enum PluginPath {
    public static func catalog(user: [String]) -> PluginCatalog {
        let environment = ProcessInfo.processInfo.environment["KIRI_PLUGIN_PATH"]?
            .split(separator: ":").map(String.init) ?? []
        let userFolders = (user + environment).map { PluginCatalog.Folder(path: $0, isBundled: false) }
        return PluginCatalog(folders: userFolders + (bundled.map { [PluginCatalog.Folder(path: $0, isBundled: true)] } ?? []))
    }

    /// The bundled plugins: `$KIRI_HOME/Plugins`, then `share/kiri/Plugins` beside an installed
    /// binary's `bin/`, then the checkout this binary was built from.
    public static let bundled: String? = {
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        let candidates: [String?] = [
            ProcessInfo.processInfo.environment["KIRI_HOME"].map { $0 + "/Plugins" },
            executable.deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("share/kiri/Plugins").path,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("Plugins").path,
        ]
        return candidates.compactMap { $0 }.first { path in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
        }
    }()
}
