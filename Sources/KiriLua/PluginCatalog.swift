import Foundation

/// Where plugins come from: `DOMAIN/NAME.lua` files (domains: samplers, schedules, guidance, post,
/// models, noise, and the training policy: losses, timesteps, lr_schedules) in an ordered list of folders. The first folder that has a name wins, so a user's
/// folder, searched before the bundled `Plugins/`, overrides a bundled plugin by name.
public struct PluginCatalog: Sendable {
    public struct Folder: Sendable {
        public var path: String
        public var isBundled: Bool

        public init(path: String, isBundled: Bool) {
            self.path = path
            self.isBundled = isBundled
        }
    }

    public struct Entry: Sendable, Equatable {
        public var name: String
        /// The first comment line of the file.
        public var description: String
        public var path: String
        public var isBundled: Bool
        /// A user plugin that hides a bundled one of the same name.
        public var overridesBundled: Bool
    }

    public static let domains = ["samplers", "schedules", "guidance", "post", "models", "noise",
                                  "losses", "timesteps", "lr_schedules"]

    public var folders: [Folder]

    public init(folders: [Folder] = []) {
        self.folders = folders
    }

    /// The file of plugin `name` in `domain`, from the first folder that has it.
    public func file(domain: String, name: String) -> String? {
        guard Self.domains.contains(domain), Self.isValidName(name) else { return nil }
        for folder in folders {
            let path = folder.path + "/" + domain + "/" + name + ".lua"
            if FileManager.default.isReadableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Every plugin of `domain`, sorted by name, each from the folder that wins.
    public func entries(domain: String) -> [Entry] {
        var found: [String: Entry] = [:]
        for folder in folders.reversed() {   // later folders first, so earlier ones replace them
            let directory = folder.path + "/" + domain
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            for file in names where file.hasSuffix(".lua") {
                let name = String(file.dropLast(4))
                guard Self.isValidName(name) else { continue }
                let path = directory + "/" + file
                let hidesBundled = !folder.isBundled && (found[name]?.isBundled ?? false)
                found[name] = Entry(name: name, description: Self.description(of: path), path: path,
                                    isBundled: folder.isBundled, overridesBundled: hidesBundled)
            }
        }
        return found.values.sorted { $0.name < $1.name }
    }

    /// Plugin names are Lua identifiers, so a name can never be a path.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !CharacterSet.decimalDigits.contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_") }
    }

    /// The plugin's header: its first `--` comment line.
    static func description(of path: String) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
        for line in text.split(separator: "\n", omittingEmptySubsequences: true).prefix(5) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("--") {
                return trimmed.drop { $0 == "-" }.trimmingCharacters(in: .whitespaces)
            }
        }
        return ""
    }
}
