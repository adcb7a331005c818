import Foundation

/// Where a script may read and write (security-cases.md, case 7). Scripts never open files
/// themselves; every Kiri API that touches a file resolves its path here first.
/// - Reads: files under a read root (the recipe's folder, the plugin folders, the output folder)
///   or named on the command line.
/// - Writes: relative paths under the output folder only, counted against the run's disk cap.
/// Paths are compared after resolving symlinks, so neither `..` nor a link leads out.
public struct FileAccess: Sendable {
    public var readRoots: [String]
    /// Folders searched by `require`, in order; `a.b` is `a/b.lua` in one of them.
    public var moduleRoots: [String]
    public var outputDirectory: String?
    /// Whether a write may replace an existing file (`--overwrite`); otherwise it takes the next free name.
    public var overwrite: Bool
    /// Files the user named on the command line that do not exist: reading one says "no such file", since the
    /// user asked for it, where any other missing path outside the roots is refused without saying whether it exists.
    public var missingNamedFiles: [String]
    /// Relative paths to read are in the output folder rather than the current one (a server's job reads its
    /// inputs there by name, so no host path reaches its script or its PNGs).
    public var readsFromOutput = false

    public init(readRoots: [String] = [], moduleRoots: [String] = [], outputDirectory: String? = nil,
                overwrite: Bool = false, missingNamedFiles: [String] = []) {
        self.readRoots = readRoots
        self.moduleRoots = moduleRoots
        self.outputDirectory = outputDirectory
        self.overwrite = overwrite
        self.missingNamedFiles = missingNamedFiles
    }

    /// The real path of an existing file or folder (a model folder) the script may read.
    /// Whether a path is outside the roots is decided before whether it exists, so a script cannot
    /// probe for files elsewhere. Never a FIFO or a device: reading one would block or never end.
    public func resolveForReading(_ path: String) throws -> String {
        try Self.checkName(path, "read")
        let located = readsFromOutput && !path.hasPrefix("/") ? (outputDirectory ?? ".") + "/" + path : path
        let real = Self.realPath(located)
        let nearest = real ?? Self.realPath(Self.folder(of: located))
        let roots = readRoots + (outputDirectory.map { [$0] } ?? [])
        if real == nil, missingNamedFiles.contains(path) {
            throw ScriptError("cannot read '\(path)': no such file (it was named on the command line)")
        }
        guard let nearest, roots.contains(where: { root in Self.realPath(root).map { Self.isInside(nearest, $0) } ?? false }) else {
            throw ScriptError("cannot read '\(path)': outside the folders this run may read (the recipe's folder, plugin folders, the output folder, files named on the command line)")
        }
        guard let real else { throw ScriptError("cannot read '\(path)': no such file") }
        guard let kind = Self.fileKind(real), kind == S_IFREG || kind == S_IFDIR else {
            throw ScriptError("cannot read '\(path)': not a regular file or folder")
        }
        return real
    }

    /// The longest path a script may write, in bytes: deep enough for any layout, short enough that walking it
    /// costs nothing.
    public static let maxWritePath = 1024

    /// Writes `data` to `path` under the output folder, charging `disk` first, and returns the path written. Refuses
    /// absolute paths, `..` and folders that are symlinks; creates missing folders. The walk opens one folder at a
    /// time relative to the last (linear in the depth, and no symlink swapped in later can redirect it); the file
    /// is written beside its final name and then moved there, so a failed write never leaves half a file and a
    /// symlink at the final name is never followed. Without `overwrite` an existing file is kept and the data goes
    /// to `NAME-2.EXT`, `NAME-3.EXT`, ...: the first free name, claimed by a hard link, which fails rather than
    /// replace (so two runs writing at once cannot both take one name).
    @discardableResult
    public func write(_ data: some ContiguousBytes, to path: String, disk: DiskBudget) throws -> String {
        let count = data.withUnsafeBytes(\.count)
        guard let outputDirectory else { throw ScriptError("cannot write '\(path)': this run has no output folder") }
        try Self.checkName(path, "write")
        guard path.utf8.count <= Self.maxWritePath else {
            throw ScriptError("cannot write a path of \(path.utf8.count) bytes: give at most \(Self.maxWritePath)")
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }.map(String.init)
        guard !path.hasPrefix("/"), !components.isEmpty, !components.contains("..") else {
            throw ScriptError("cannot write '\(path)': give a relative path inside the output folder, without '..'")
        }
        guard disk.reserve(count) else {
            throw ScriptError("cannot write '\(path)': its \(count) bytes would pass the run's disk cap of "
                + "\(disk.limit) bytes (--disk); \(disk.used) already written")
        }
        func failure(_ what: String) -> ScriptError {
            ScriptError("cannot write '\(path)': \(what): \(String(cString: strerror(errno)))")
        }
        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        var folder = open(outputDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folder >= 0 else { throw failure("cannot open the output folder") }
        defer { Foundation.close(folder) }
        for component in components.dropLast() {
            if mkdirat(folder, component, 0o755) != 0 && errno != EEXIST { throw failure("cannot create folder '\(component)'") }
            let next = openat(folder, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard next >= 0 else {
                guard errno == ELOOP || errno == ENOTDIR else { throw failure("cannot open folder '\(component)'") }
                var status = stat()
                let isLink = fstatat(folder, component, &status, AT_SYMLINK_NOFOLLOW) == 0 && status.st_mode & S_IFMT == S_IFLNK
                throw ScriptError("cannot write '\(path)': "
                    + (isLink ? "it leads out of the output folder ('\(component)' is a symlink)" : "'\(component)' is a file, not a folder"))
            }
            Foundation.close(folder)
            folder = next
        }
        let name = components.last!
        let temporary = ".\(name).\(getpid()).partial"
        let descriptor = openat(folder, temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw failure("cannot create it") }
        var written = 0
        data.withUnsafeBytes { bytes in
            while written < bytes.count {
                let count = Foundation.write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                guard count > 0 else { return }
                written += count
            }
        }
        let writeError = errno
        Foundation.close(descriptor)
        guard written == count else {
            errno = writeError
            let error = failure("write failed")
            unlinkat(folder, temporary, 0)
            throw error
        }
        defer { unlinkat(folder, temporary, 0) }
        if overwrite {
            guard renameat(folder, temporary, folder, name) == 0 else { throw failure("cannot replace it") }
            return path
        }
        for candidate in Self.freeNameCandidates(name) {
            if linkat(folder, temporary, folder, candidate, 0) == 0 {
                return (components.dropLast() + [candidate]).joined(separator: "/")
            }
            // Filesystems without hard links (vfat, exFAT, many network mounts): claim the name with an exclusive
            // create, then move the data over that empty placeholder.
            if [EPERM, ENOTSUP, EOPNOTSUPP, EXDEV, ENOSYS].contains(errno) {
                let placeholder = openat(folder, candidate, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                if placeholder >= 0 {
                    Foundation.close(placeholder)
                    guard renameat(folder, temporary, folder, candidate) == 0 else { throw failure("cannot create it") }
                    return (components.dropLast() + [candidate]).joined(separator: "/")
                }
            }
            guard errno == EEXIST else { throw failure("cannot create it") }
        }
        throw ScriptError("cannot write '\(path)': it and the next 9999 numbered names exist (--overwrite replaces)")
    }

    /// `name`, then `stem-2.ext` ... `stem-10000.ext`.
    static func freeNameCandidates(_ name: String) -> some Sequence<String> {
        let dot = name.lastIndex(of: ".").flatMap { $0 == name.startIndex ? nil : $0 } ?? name.endIndex
        let (stem, ext) = (name[..<dot], name[dot...])
        return [name].lazy + (2...10000).lazy.map { "\(stem)-\($0)\(ext)" }
    }

    /// How a script sees the file it wrote at `path`: with the output folder when that is a relative path (so a
    /// recipe can print where to look), without it when the folder is absolute, a host path the script is not shown.
    public func shownPath(_ path: String) -> String {
        guard let outputDirectory, outputDirectory != ".", !outputDirectory.hasPrefix("/"),
              !outputDirectory.split(separator: "/").contains("..") else { return path }
        return outputDirectory + (outputDirectory.hasSuffix("/") ? "" : "/") + path
    }

    /// The folder part of `path` ("." for a bare name). Foundation's `deletingLastPathComponent` traps on a
    /// one-character path on Linux, so no user-given path goes through it.
    public static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = path[..<slash]
        return folder.isEmpty ? "/" : String(folder)
    }

    /// The last part of `path`, the name a recipe is shown and recorded by.
    public static func name(of path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Source, chunk name and real path of module `name` ("a.b" is "a/b.lua") from the module roots. The
    /// chunk name is the path inside its root, so error messages a script can catch show no host folder.
    public func findModule(_ name: String) throws -> (source: String, chunkName: String, path: String) {
        let valid = !name.isEmpty && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
        }
        guard valid else {
            throw ScriptError("invalid module name '\(name)' (letters, digits, '_' and '-', with '.' between folders)")
        }
        let relative = name.replacingOccurrences(of: ".", with: "/") + ".lua"
        for root in moduleRoots {
            let candidate = root + "/" + relative
            guard let real = Self.realPath(candidate), let realRoot = Self.realPath(root), Self.isInside(real, realRoot),
                  Self.isRegularFile(real) else { continue }
            do {
                return (try String(contentsOfFile: real, encoding: .utf8), relative, real)
            } catch {
                throw ScriptError("module '\(name)': cannot read '\(relative)': \(Self.reason(error))")
            }
        }
        throw ScriptError("module '\(name)' not found: no '\(relative)' in the recipe's folder or the plugin folders")
    }

    /// Names with a NUL byte would be cut short by the C calls below them, so the file touched would not be the
    /// one named.
    static func checkName(_ path: String, _ verb: String) throws {
        guard !path.utf8.contains(0) else {
            throw ScriptError("cannot \(verb) '\(path.replacingOccurrences(of: "\0", with: "\\0"))': the name contains a NUL byte")
        }
    }

    public static func isRegularFile(_ path: String) -> Bool { fileKind(path) == S_IFREG }

    /// S_IFREG, S_IFDIR, ... of what `path` leads to.
    static func fileKind(_ path: String) -> mode_t? {
        var status = stat()
        return stat(path, &status) == 0 ? status.st_mode & S_IFMT : nil
    }

    public static func realPath(_ path: String) -> String? {
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

/// Bytes a run has written, against its cap (`--disk`): every file counts, rewrites included.
public final class DiskBudget {
    public let limit: Int
    public private(set) var used = 0

    public init(limit: Int) {
        self.limit = limit
    }

    /// Charges `bytes`, or returns false and charges nothing if that would pass the limit.
    func reserve(_ bytes: Int) -> Bool {
        guard bytes <= limit - used else { return false }
        used += bytes
        return true
    }
}
