import Foundation

/// Where a script may read and write (security-cases.md, case 7). Scripts never open files
/// themselves; every Kiri API that touches a file resolves its path here first.
/// - Reads: files under a read root (the recipe's folder, the plugin folders, the output folder)
///   or named on the command line.
/// - Writes: relative paths under the output folder only.
/// Paths are compared after resolving symlinks, so neither `..` nor a link leads out.
public struct FileAccess: Sendable {
    public var readRoots: [String]
    /// Folders searched by `require`, in order; `a.b` is `a/b.lua` in one of them.
    public var moduleRoots: [String]
    public var outputDirectory: String?

    public init(readRoots: [String] = [], moduleRoots: [String] = [], outputDirectory: String? = nil) {
        self.readRoots = readRoots
        self.moduleRoots = moduleRoots
        self.outputDirectory = outputDirectory
    }

    /// The real path of an existing file the script may read.
    /// Whether a path is outside the roots is decided before whether it exists, so a script cannot
    /// probe for files elsewhere.
    public func resolveForReading(_ path: String) throws -> String {
        let real = Self.realPath(path)
        let nearest = real ?? Self.realPath((path as NSString).deletingLastPathComponent.isEmpty
            ? "." : (path as NSString).deletingLastPathComponent)
        let roots = readRoots + (outputDirectory.map { [$0] } ?? [])
        guard let nearest, roots.contains(where: { root in Self.realPath(root).map { Self.isInside(nearest, $0) } ?? false }) else {
            throw ScriptError("cannot read '\(path)': outside the folders this run may read (the recipe's folder, plugin folders, the output folder, files named on the command line)")
        }
        guard let real else { throw ScriptError("cannot read '\(path)': no such file") }
        return real
    }

    /// A path under the output folder for a new or replaced file. Refuses absolute paths, `..`,
    /// and parents that are symlinks out of the folder; creates missing parent folders.
    public func resolveForWriting(_ path: String) throws -> String {
        guard let outputDirectory else { throw ScriptError("cannot write '\(path)': this run has no output folder") }
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !path.hasPrefix("/"), !components.isEmpty, !components.contains("..") else {
            throw ScriptError("cannot write '\(path)': give a relative path inside the output folder, without '..'")
        }
        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        guard let root = Self.realPath(outputDirectory) else { throw ScriptError("cannot write '\(path)': no output folder") }
        // One folder at a time, each checked before the next is made in it, so a symlinked folder
        // cannot lead mkdir out of the output folder either.
        var parent = root
        for component in components.dropLast() {
            let next = parent + "/" + component
            if mkdir(next, 0o755) != 0 && errno != EEXIST {
                throw ScriptError("cannot write '\(path)': cannot create folder '\(component)': \(String(cString: strerror(errno)))")
            }
            guard let real = Self.realPath(next), Self.isInside(real, root) else {
                throw ScriptError("cannot write '\(path)': it leads out of the output folder")
            }
            parent = real
        }
        return parent + "/" + components.last!
    }

    /// Writes bytes without following a symlink at the final component.
    public func write(_ data: Data, to path: String) throws {
        let target = try resolveForWriting(path)
        let descriptor = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw ScriptError("cannot write '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { Foundation.close(descriptor) }
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                guard written > 0 else { throw ScriptError("cannot write '\(path)': \(String(cString: strerror(errno)))") }
                offset += written
            }
        }
    }

    /// Source and chunk name of module `name` ("a.b" is "a/b.lua") from the module roots.
    public func findModule(_ name: String) throws -> (source: String, path: String) {
        let valid = !name.isEmpty && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
        }
        guard valid else {
            throw ScriptError("invalid module name '\(name)' (letters, digits, '_' and '-', with '.' between folders)")
        }
        let relative = name.replacingOccurrences(of: ".", with: "/") + ".lua"
        var tried: [String] = []
        for root in moduleRoots {
            let candidate = root + "/" + relative
            tried.append(candidate)
            guard let real = Self.realPath(candidate), let realRoot = Self.realPath(root), Self.isInside(real, realRoot) else { continue }
            do {
                return (try String(contentsOfFile: real, encoding: .utf8), candidate)
            } catch {
                throw ScriptError("module '\(name)': cannot read '\(candidate)': \(Self.reason(error))")
            }
        }
        throw ScriptError("module '\(name)' not found; tried:\n\t" + tried.joined(separator: "\n\t"))
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func isInside(_ path: String, _ root: String) -> Bool {
        path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/")
    }

    /// A short reason for a file error, without Foundation's long wording.
    public static func reason(_ error: Error) -> String {
        let code = (error as NSError).code
        switch code {
        case NSFileReadNoSuchFileError, NSFileNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError: return "permission denied"
        case NSFileReadInapplicableStringEncodingError: return "not valid UTF-8 text"
        default: return error.localizedDescription
        }
    }
}
