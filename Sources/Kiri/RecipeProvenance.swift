import Foundation
import KiriImage
import KiriLua

/// What a PNG carries so that `kiri run --from image.png` can make it again: the recipe's name, its
/// whole source and its arguments, beside the A1111 `parameters` text the recipe writes itself.
public struct RecipeProvenance: Equatable, Sendable {
    public static let recipeKey = "kiri-recipe"
    public static let sourceKey = "kiri-recipe-source"
    public static let argumentsKey = "kiri-arguments"
    public static let versionKey = "kiri-version"
    public static let pluginsKey = "kiri-plugins"
    static let maximumPlugins = 256

    /// A plugin file the run loaded, as the PNG records it: `DOMAIN/NAME.lua`, "bundled" or "user", and the
    /// SHA-256 of its source, so `--from` can say which folder to pass and whether the plugin found there is the same.
    public struct Plugin: Codable, Equatable, Sendable {
        public var plugin: String
        public var origin: String
        public var sha256: String

        public init(plugin: String, origin: String, sha256: String) {
            (self.plugin, self.origin, self.sha256) = (plugin, origin, sha256)
        }
    }

    public var recipe: String
    public var source: String
    public var arguments: [String]
    /// The PNG came from AUTOMATIC1111: the recipe is the bundled txt2img.lua, given the PNG's `parameters` text.
    public var fromA1111 = false
    /// The plugins the PNG says made it (none for a PNG from before Kiri recorded them).
    public var plugins: [Plugin] = []

    /// The `kiri-plugins` text for what a run has loaded: each plugin once, in the order it was loaded.
    public static func pluginText(_ loaded: [LoadedPlugin]) -> String {
        var seen = Set<String>(), records: [Plugin] = []
        for plugin in loaded where seen.insert(plugin.domain + "/" + plugin.name).inserted {
            records.append(Plugin(plugin: "\(plugin.domain)/\(plugin.name).lua", origin: plugin.isBundled ? "bundled" : "user",
                                  sha256: SHA256.hex(plugin.source.utf8)))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]   // the same bytes in every process
        return (try? encoder.encode(records)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
    }

    public init(recipe: String, source: String, arguments: [String]) {
        self.recipe = recipe
        self.source = source
        self.arguments = arguments
    }

    /// The text chunks, in the order they are written.
    public var text: [(key: String, value: String)] {
        let encoded = (try? JSONEncoder().encode(arguments)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        return [(Self.recipeKey, recipe), (Self.argumentsKey, encoded), (Self.versionKey, KiriVersion.string),
                (Self.sourceKey, source)]
    }

    /// Reads them back from a PNG Kiri wrote: its text chunks only, never its pixels, within what a PNG Kiri
    /// writes may carry (inflating can take twice the text).
    public init(image path: String) throws {
        let text: [PNGImage.TextChunk]
        do {
            text = try PNGImage.readText(path: path, byteLimit: 4 * PNGImage.maxTextBytes)
        } catch {
            throw ProvenanceError(message: "\(error)")
        }
        try self.init(text: text.map { ($0.key, $0.value) }, file: path)
    }

    /// Reads them back from a PNG's text chunks; `file` names the image in errors. A PNG from AUTOMATIC1111 (a
    /// `parameters` chunk and no recipe) runs the bundled txt2img.lua with that text as `parameters=`, which reads
    /// the settings it can honour and says which it cannot.
    public init(text: [(key: String, value: String)], file: String) throws(ProvenanceError) {
        if !text.contains(where: { $0.key == Self.recipeKey }), let parameters = text.first(where: { $0.key == "parameters" }),
           let scripts = BundledFiles.scripts,
           let bundled = try? String(contentsOfFile: scripts + "/txt2img.lua", encoding: .utf8) {
            (recipe, source, arguments) = ("txt2img.lua", bundled, ["parameters=" + parameters.value])
            fromA1111 = true
            return
        }
        func value(_ key: String) throws(ProvenanceError) -> String {
            guard let found = text.first(where: { $0.key == key }) else {
                throw ProvenanceError(message: "'\(file)' has no '\(key)' text chunk, so it does not say which recipe made it "
                    + "(only PNGs written by Kiri recipes do)")
            }
            return found.value
        }
        recipe = try value(Self.recipeKey)
        source = try value(Self.sourceKey)
        guard let arguments = try? JSONDecoder().decode([String].self, from: Data(try value(Self.argumentsKey).utf8)) else {
            throw ProvenanceError(message: "'\(file)': its '\(Self.argumentsKey)' text chunk is not a JSON list of strings")
        }
        self.arguments = arguments
        if let recorded = text.first(where: { $0.key == Self.pluginsKey }) {
            // Someone else's text: at most what a run can load, each entry of the form Kiri writes, or none at all.
            let hex = Set("0123456789abcdef")
            guard let plugins = try? JSONDecoder().decode([Plugin].self, from: Data(recorded.value.utf8)),
                  plugins.count <= Self.maximumPlugins,
                  plugins.allSatisfy({ ["bundled", "user"].contains($0.origin) && $0.sha256.count == 64
                      && $0.sha256.allSatisfy(hex.contains) && $0.plugin.utf8.count <= 128 }) else {
                throw ProvenanceError(message: "'\(file)': its '\(Self.pluginsKey)' text chunk is not a list of at most "
                    + "\(Self.maximumPlugins) plugins as Kiri writes them")
            }
            self.plugins = plugins
        }
    }
}

extension RecipeProvenance {
    /// The name the recipe runs and is shown by: the last part of the recorded path, so a PNG cannot point a run
    /// at a folder.
    public var recipeName: String {
        let name = FileAccess.name(of: recipe)
        return name.isEmpty || name == "." || name == ".." ? "recipe.lua" : name
    }

    /// What `kiri run --from` says before running: the recipe's name, where its source comes from and the source's
    /// SHA-256 (as `sha256sum` prints it), and whether it differs from the bundled recipe of the same name.
    public func announcement(image: String, catalog: PluginCatalog? = nil) -> String {
        let hash = SHA256.hex(source.utf8)
        var text: String
        if fromA1111 {
            return "\(image) has A1111's parameters and no Kiri recipe: running the bundled txt2img.lua (sha256 \(hash)) "
                + "with the settings it can honour"
        }
        if let scripts = BundledFiles.scripts, let bundled = try? String(contentsOfFile: scripts + "/" + recipeName, encoding: .utf8) {
            text = bundled == source
                ? "running the bundled recipe \(recipeName) (sha256 \(hash), the source embedded in \(image))"
                : "running \(recipeName) from the source embedded in \(image) (sha256 \(hash)); it DIFFERS from the "
                    + "bundled \(recipeName) (sha256 \(SHA256.hex(bundled.utf8)))"
        } else {
            text = "running \(recipeName) from the source embedded in \(image) (sha256 \(hash)); no bundled recipe has its name"
        }
        if !arguments.isEmpty { text += "\n  with the arguments stored there: " + arguments.joined(separator: " ") }
        if let catalog { text += pluginNotes(catalog).map { "\n  " + $0 }.joined() }
        return text
    }

    /// What differs between the plugins the PNG records and the ones this run would load: a user plugin that no
    /// folder here has (pass its folder with --plugins), or one, user or bundled, whose source is not the same.
    func pluginNotes(_ catalog: PluginCatalog) -> [String] {
        plugins.compactMap { recorded in
            let parts = recorded.plugin.dropLast(".lua".count).split(separator: "/").map(String.init)
            guard parts.count == 2, recorded.plugin.hasSuffix(".lua") else { return nil }
            guard let path = catalog.file(domain: parts[0], name: parts[1]),
                  let source = try? String(contentsOfFile: path, encoding: .utf8) else {
                return "it used the \(recorded.origin) plugin \(recorded.plugin) (sha256 \(recorded.sha256)), which no plugin "
                    + "folder here has: pass the folder that holds it with --plugins"
            }
            let hash = SHA256.hex(source.utf8)
            guard hash != recorded.sha256 else { return nil }
            return "its \(recorded.origin) plugin \(recorded.plugin) (sha256 \(recorded.sha256)) DIFFERS from \(path) "
                + "(sha256 \(hash)), which this run uses"
        }
    }
}

public struct ProvenanceError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
