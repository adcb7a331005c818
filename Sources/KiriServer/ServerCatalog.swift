import Foundation
import Kiri
import KiriLua
import Synchronization

/// What a server offers: Kiri's default model and each `--model`, the bundled recipes, and the sampler and schedule
/// plugins with AUTOMATIC1111's names for those it shares (lib/recipe.lua's `display_names`, read through Lua so
/// that the one table serves PNGs and the API alike).
struct ServerCatalog: Sendable {
    struct Model: Sendable {
        /// A1111's title and name: the file's or folder's name.
        var title: String
        var name: String
        /// nil for Kiri's default model (the recipes' own default).
        var path: String?
    }

    var models: [Model]
    /// Bundled recipes by name (`txt2img`), their files' paths.
    var recipes: [String: String]
    var samplers: [String]
    var schedules: [String]
    /// Plugin name → A1111 display name, for those A1111 has.
    var samplerNames: [String: String]
    var scheduleNames: [String: String]

    init(modelPaths: [String], pluginDirectories: [String]) throws {
        models = [Model(title: "fashion-mnist", name: "fashion-mnist", path: nil)]
        for path in modelPaths {
            let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
            let file = FileAccess.name(of: trimmed)
            var name = file
            for suffix in [".safetensors", ".gguf", ".ckpt"] where name.hasSuffix(suffix) { name = String(name.dropLast(suffix.count)) }
            guard !models.contains(where: { $0.title == file }) else {
                throw ServerSetupError("--model '\(path)': a model named '\(file)' is served already")
            }
            models.append(Model(title: file, name: name, path: path))
        }
        var recipes: [String: String] = [:]
        if let scripts = BundledFiles.scripts {
            for file in (try? FileManager.default.contentsOfDirectory(atPath: scripts)) ?? [] where file.hasSuffix(".lua") {
                recipes[String(file.dropLast(4))] = scripts + "/" + file
            }
        }
        self.recipes = recipes
        let catalog = PluginPath.catalog(user: pluginDirectories)
        samplers = catalog.entries(domain: "samplers").map(\.name)
        schedules = catalog.entries(domain: "schedules").map(\.name)
        (samplerNames, scheduleNames) = try Self.displayNames(pluginDirectories: pluginDirectories)
    }

    /// Runs lib/recipe.lua once to read its `display_names`.
    private static func displayNames(pluginDirectories: [String]) throws -> ([String: String], [String: String]) {
        let source = """
            for kind, names in pairs(require("lib.recipe").display_names) do
                for plugin, display in pairs(names) do print(kind .. "\\t" .. plugin .. "\\t" .. display) end
            end
            """
        let printed = Mutex("")
        do {
            try RecipeRunner.run(RunRequest(script: "names.lua", pluginDirectories: pluginDirectories, source: source)) { text in
                printed.withLock { $0 += text }
            }
        } catch {
            throw ServerSetupError("cannot read A1111's sampler names from lib/recipe.lua: \(error)")
        }
        var names: [String: [String: String]] = [:]
        for line in printed.withLock({ $0 }).split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            if fields.count == 3 { names[fields[0], default: [:]][fields[1]] = fields[2] }
        }
        return (names["sampler"] ?? [:], names["schedule"] ?? [:])
    }

    func model(titled title: String) -> Model? {
        models.first { $0.title == title || $0.name == title || title.hasPrefix($0.title + " [") }
    }

    /// A1111's name for a sampler plugin (its own name when A1111 has none).
    func samplerTitle(_ plugin: String) -> String { samplerNames[plugin] ?? plugin }

    /// The sampler and, for A1111's older combined names ("DPM++ 2M Karras"), the schedule that `name` means: an A1111
    /// display name, a plugin name, or A1111's `k_` alias of one.
    func sampler(named name: String) -> (sampler: String, schedule: String?)? {
        if let plugin = plugin(name, in: samplers, names: samplerNames) { return (plugin, nil) }
        for (schedule, display) in scheduleNames where name.hasSuffix(" " + display) {
            if let plugin = plugin(String(name.dropLast(display.count + 1)), in: samplers, names: samplerNames) {
                return (plugin, schedule)
            }
        }
        return nil
    }

    /// The schedule plugin that A1111's scheduler `name` or label means.
    func schedule(named name: String) -> String? {
        plugin(name, in: schedules, names: scheduleNames)
            ?? scheduleNames.first { $0.value.lowercased().replacingOccurrences(of: " ", with: "_") == name }?.key
    }

    private func plugin(_ name: String, in plugins: [String], names: [String: String]) -> String? {
        if plugins.contains(name) { return name }
        if name.hasPrefix("k_"), plugins.contains(String(name.dropFirst(2))) { return String(name.dropFirst(2)) }
        return names.first { $0.value == name && plugins.contains($0.key) }?.key
    }
}

/// The server cannot start: a message naming the option at fault.
struct ServerSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
