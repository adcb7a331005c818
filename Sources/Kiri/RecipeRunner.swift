import Foundation
import KiriLua
import KiriTensor

/// What `kiri run` needs to run one recipe in the sandbox.
public struct RunRequest {
    public var script: String
    public var arguments: [String]
    public var limits: SandboxLimits
    public var outputDirectory: String
    /// User plugin folders, searched before the bundled ones.
    public var pluginDirectories: [String]
    /// The recipe's text, when it comes from somewhere other than `script` (a PNG's metadata); `script`
    /// then only names it, and the run gets no read or module root from it or from its arguments.
    public var source: String?
    /// Files the user named for this run to read (`--allow`), besides those among its arguments.
    public var allowedFiles: [String]
    /// Where the samplers' progress goes (nil: nowhere).
    public var progress: KiriProgress?
    /// Whether the run may replace files in the output folder (`--overwrite`); else it writes the next free name.
    public var overwrite: Bool
    /// Called with the run's cancellation once its sandbox exists, so that another thread can stop it (a server's
    /// job being cancelled).
    public var started: ((Cancellation) -> Void)?
    /// Models kept between runs (a server's), nil to load each anew.
    public var modelCache: ModelCache?
    /// Models a server offers, by name: the script loads them as `served:NAME` and never sees their paths.
    public var servedModels: [String: String] = [:]
    /// Whether relative paths the script reads are in the output folder (a server's job reads its inputs there by
    /// name), rather than in the current folder.
    public var readsFromOutput = false

    public init(script: String, arguments: [String] = [], limits: SandboxLimits = SandboxLimits(),
                outputDirectory: String = "out", pluginDirectories: [String] = [], source: String? = nil,
                allowedFiles: [String] = [], progress: KiriProgress? = nil, overwrite: Bool = false) {
        self.script = script
        self.arguments = arguments
        self.limits = limits
        self.outputDirectory = outputDirectory
        self.pluginDirectories = pluginDirectories
        self.source = source
        self.allowedFiles = allowedFiles
        self.progress = progress
        self.overwrite = overwrite
    }
}

/// Runs recipes: each run gets a fresh Lua state, so nothing leaks from one to the next.
public enum RecipeRunner {
    /// Runs the request; throws ScriptFailure with `file:line: message` and a traceback. Returns the
    /// files the run loaded (the recipe, its modules and plugins).
    @discardableResult
    public static func run(_ request: RunRequest, output: @escaping (String) -> Void = Self.standardOutput) throws -> [String] {
        let source: String
        if let embedded = request.source {
            source = embedded
        } else {
            do {
                source = try String(contentsOfFile: request.script, encoding: .utf8)
            } catch {
                throw ScriptFailure(kind: .setup, message: "cannot read '\(request.script)': \(FileAccess.reason(error))")
            }
        }
        // An embedded source is someone else's: it gets the plugin folders, the bundled models and the system's
        // datasets, and only the files this command line names. A recipe file also gets its folder and the files
        // among its arguments.
        let embedded = request.source != nil
        let recipeFolder = embedded ? [] : [FileAccess.folder(of: request.script)]
        let plugins = PluginPath.catalog(user: request.pluginDirectories)
        let pluginFolders = plugins.folders.map(\.path)
        let models = BundledFiles.models
        let named = request.allowedFiles + (embedded ? [] : filesIn(request.arguments))
        let namedFiles = regularFiles(named) + modelFolders(named) + (embedded ? [] : namedFolders(request.arguments))
        var files = FileAccess(
            readRoots: recipeFolder + pluginFolders + Array(models.values) + Array(request.servedModels.values)
                + BundledFiles.datasets + namedFiles,
            moduleRoots: recipeFolder + pluginFolders,
            outputDirectory: request.outputDirectory, overwrite: request.overwrite,
            missingNamedFiles: embedded ? [] : missingFiles(request.arguments))
        files.readsFromOutput = request.readsFromOutput
        // Scripts and the PNGs they write see the recipe by its file name: no host folder is shown or shared.
        let name = FileAccess.name(of: request.script)
        let provenance = RecipeProvenance(recipe: name, source: source, arguments: request.arguments).text
        let runtime = try LuaRuntime.engine(limits: request.limits, files: files, plugins: plugins,
                                            bundledModels: models, servedModels: request.servedModels, imageText: provenance,
                                            modelCache: request.modelCache, output: output)
        defer { runtime.close() }
        runtime.progress = request.progress
        request.started?(runtime.cancellation)
        defer { request.progress?.end() }   // a failed run's bar ends its line before the error is printed
        do {
            try runtime.run(source: source, name: name, arguments: request.arguments)
        } catch var failure as ScriptFailure {
            failure.loadedFiles = [request.script] + runtime.loadedFiles
            throw failure
        }
        return [request.script] + runtime.loadedFiles
    }

    /// Files named on the command line may be read, wherever they are: an argument that names one, or the value
    /// of a `key=value` argument that does (`init=photo.png`), or an item of a list value with a weight
    /// (`lora=a.safetensors:0.8,b.safetensors`).
    static func filesIn(_ arguments: [String]) -> [String] {
        arguments.flatMap { argument -> [String] in
            guard let value = argument.split(separator: "=", maxSplits: 1).dropFirst().first.map(String.init) else {
                return [argument]
            }
            let items = value.split(separator: ",").map(weightedPath)
            return [argument, value] + items
        }
    }

    /// The path of a list item `PATH` or `PATH:WEIGHT`, as lib/generate.lua reads `lora=`: trimmed, and cut at
    /// the last ':' when only a number's characters follow it.
    static func weightedPath(_ item: Substring) -> String {
        let trimmed = item.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let colon = trimmed.lastIndex(of: ":"), colon != trimmed.index(before: trimmed.endIndex),
              trimmed[trimmed.index(after: colon)...].allSatisfy({ $0.isWhitespace || "0123456789.+-".contains($0) })
        else { return trimmed }
        return trimmed[..<colon].trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The values of `key=value` arguments that look like a file's name (a known file extension) but name nothing:
    /// `init=nonexistent.png` is then "no such file", not a sandbox refusal.
    static func missingFiles(_ arguments: [String]) -> [String] {
        let extensions = ["png", "safetensors", "gguf", "ckpt", "pt", "bin", "json", "lua", "txt"]
        return filesIn(arguments).filter { path in
            guard !path.utf8.contains(0), !path.contains("="), let dot = path.lastIndex(of: ".") else { return false }
            return extensions.contains(path[path.index(after: dot)...].lowercased()) && !FileManager.default.fileExists(atPath: path)
        }
    }

    /// Only regular files are granted: a folder would open everything under it, a FIFO or device would block.
    static func regularFiles(_ paths: [String]) -> [String] {
        paths.filter { !$0.utf8.contains(0) && FileAccess.isRegularFile($0) }
    }

    /// A model folder the user named (`model=sd15/`, `--allow sd15/`, `init=checkpoint/model`) is granted whole: a
    /// model is a folder of files. Only folders that are one (a `model_index.json`, or `unet/config.json`, or a
    /// `config.json` beside diffusers' weights file) qualify, so naming `/` or a home folder grants nothing.
    static func modelFolders(_ paths: [String]) -> [String] {
        let markers = ["model_index.json", "unet/config.json", "diffusion_pytorch_model.safetensors"]
        return paths.filter { path in
            guard !path.utf8.contains(0), !FileAccess.isRegularFile(path) else { return false }
            return markers.contains { FileAccess.isRegularFile(path + "/" + $0) }
        }
    }

    /// The folders that `lora_dir=FOLDER` (where the prompt's <lora:NAME> files are), `data=FOLDER` (a training set of
    /// images) and `resume=FOLDER` (a training checkpoint) name on this command line.
    static func namedFolders(_ arguments: [String]) -> [String] {
        arguments.compactMap { argument in
            guard let key = ["lora_dir=", "data=", "resume="].first(where: argument.hasPrefix), !argument.utf8.contains(0) else { return nil }
            let folder = String(argument.dropFirst(key.count))
            return folder.isEmpty || FileAccess.isRegularFile(folder) ? nil : folder
        }
    }

    public static func standardOutput(_ text: String) { TerminalText.write(text, to: .standardOutput) }
}

/// Where plugins are found: the user's folders (`--plugins`, then `KIRI_PLUGIN_PATH`), then the
/// bundled `Plugins/`.
public enum PluginPath {
    public static func catalog(user: [String]) -> PluginCatalog {
        let environment = ProcessInfo.processInfo.environment["KIRI_PLUGIN_PATH"]?
            .split(separator: ":").map(String.init) ?? []
        // The bundled folder named again as a user folder is still the bundled one: its plugins override nothing.
        let bundledReal = BundledFiles.plugins.flatMap(FileAccess.realPath)
        let userFolders = (user + environment).filter { bundledReal == nil || FileAccess.realPath($0) != bundledReal }
            .map { PluginCatalog.Folder(path: $0, isBundled: false) }
        let bundled = BundledFiles.plugins.map { [PluginCatalog.Folder(path: $0, isBundled: true)] } ?? []
        return PluginCatalog(folders: userFolders + bundled)
    }
}

/// What ships with Kiri: plugins, recipes and models.
public enum BundledFiles {
    public static let plugins = folder("Plugins")
    public static let scripts = folder("Scripts")

    /// Bundled models by name: the package resources of this target (Sources/Kiri/Resources/models).
    public static let models: [String: String] = {
        guard let root = folder("models", resources: true) else { return [:] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let folders = names.sorted().map { ($0, root + "/" + $0) }.filter { isFolder($0.1) }
        return Dictionary(uniqueKeysWithValues: folders)
    }()

    /// Datasets installed with the system that `kiri.data` reads (Debian's dataset-fashion-mnist, which setup.sh
    /// installs): read roots of every run, as the bundled models are.
    public static let datasets = [DataLibrary.debianFashionMNIST].filter(isFolder)

    /// `$KIRI_HOME/NAME`, then `share/kiri/NAME` beside an installed binary's `bin/`, then (for
    /// resources) the resource bundle SwiftPM copies beside the binary, then the checkout this binary
    /// was built from. Bundle.module is not used because it stops the process when the bundle is missing.
    static func folder(_ name: String, resources: Bool = false) -> String? {
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let candidates: [String?] = [
            ProcessInfo.processInfo.environment["KIRI_HOME"].map { $0 + "/" + name },
            executable.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("share/kiri/\(name)").path,
            resources ? executable.deletingLastPathComponent().appendingPathComponent("Kiri_Kiri.resources/\(name)").path : nil,
            resources ? checkout.appendingPathComponent("Resources/\(name)").path
                : checkout.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(name).path,
        ]
        return candidates.compactMap { $0 }.first(where: isFolder)
    }

    /// Whether `path` is an existing folder (following symlinks).
    public static func isFolder(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}
