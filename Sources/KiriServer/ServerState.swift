import Foundation
import Kiri
import KiriImage
import KiriLua
import Synchronization

/// How `kiri serve` was started.
public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (tests); the port in use is announced.
    public var port = 7860
    public var models: [String] = []
    public var pluginDirectories: [String] = []
    /// Bearer token every API request must carry; required for a bind beyond loopback.
    public var token: String?
    /// Jobs that may wait behind the running one.
    public var queue = 16
    /// Whether `POST /kiri/v1/jobs` may carry its own recipe source (sandboxed like any shared recipe).
    public var allowRecipes = false
    /// Where job folders go: OUTPUT/jobs/ID.
    public var output = "served"
    /// Each job's sandbox limits.
    public var limits = SandboxLimits(timeout: 60, wallTimeout: 3600, memory: 4 << 30, disk: 1 << 30)
    /// Memory the models kept between jobs may take (least recently used out first).
    public var modelCacheBytes = 8 << 30
    public var maxBodyBytes = 32 << 20
    /// Largest image a request may send (width × height).
    public var maxImagePixels = 4096 * 4096

    public init() {}

    /// Whether `host` names this machine only.
    public var isLoopback: Bool { Self.isLoopback(host: host.contains(":") ? "[\(host)]" : host) }

    /// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
    static func isLoopback(host: String) -> Bool {
        var name = host.lowercased()
        if name.hasPrefix("[") {
            name = String(name.dropFirst().prefix { $0 != "]" })
        } else if let colon = name.lastIndex(of: ":") {
            name = String(name[..<colon])
        }
        let octets = name.split(separator: ".", omittingEmptySubsequences: false)
        let isIPv4Loopback = octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
        return name == "localhost" || name == "::1" || isIPv4Loopback
    }

    /// The option at fault when the server must not start.
    public func validate() throws {
        if !isLoopback, token?.isEmpty ?? true {
            throw ServerSetupError("--host \(host) is reachable from other machines: give --token T too (clients then send Authorization: Bearer T)")
        }
        guard (0...65535).contains(port) else { throw ServerSetupError("--port must be from 0 to 65535, got \(port)") }
        guard queue >= 0 else { throw ServerSetupError("--queue must be at least 0, got \(queue)") }
    }
}

/// What every request handler shares: the options, the catalogue, the queue and A1111's current settings.
final class ServerState: Sendable {
    let options: ServerOptions
    /// The output folder as an absolute path: recipes read their inputs from the job's folder by absolute path.
    let output: String
    let catalog: ServerCatalog
    let queue: JobQueue
    private let settings: Mutex<(model: ServerCatalog.Model, clipSkip: Int)>

    init(options: ServerOptions) throws {
        self.options = options
        output = URL(fileURLWithPath: options.output).standardizedFileURL.path
        catalog = try ServerCatalog(modelPaths: options.models, pluginDirectories: options.pluginDirectories)
        let runner = JobRunner(limits: options.limits, pluginDirectories: options.pluginDirectories,
                               models: ModelCache(limit: options.modelCacheBytes),
                               served: Dictionary(uniqueKeysWithValues: catalog.models.compactMap { model in model.path.map { (model.title, $0) } }))
        queue = JobQueue(capacity: options.queue) { job in runner.run(job) }
        // The first --model is the one A1111 requests use until /sdapi/v1/options changes it.
        settings = Mutex((catalog.models.count > 1 ? catalog.models[1] : catalog.models[0], 1))
    }

    var currentModel: ServerCatalog.Model { settings.withLock { $0.model } }
    var clipSkip: Int { settings.withLock { $0.clipSkip } }
    func setModel(_ model: ServerCatalog.Model) { settings.withLock { $0.model = model } }
    func setClipSkip(_ skip: Int) { settings.withLock { $0.clipSkip = skip } }

    /// A bundled recipe's text.
    func bundledSource(_ name: String) throws -> String {
        guard let path = catalog.recipes[name] else { throw FieldError(field: "recipe", message: "no bundled recipe '\(name)'") }
        return try String(contentsOfFile: path, encoding: .utf8)
    }

    /// Queues a job in a new folder under OUTPUT/jobs.
    func submit(_ spec: JobSpec) throws -> Job {
        try queue.submit { id in Job(id: id, spec: spec, folder: output + "/jobs/" + id) }
    }

    /// Decodes PNG bytes from a request through a private temporary file (libpng reads files here), bounded by
    /// `byteLimit`; messages call it `name`.
    static func decodePNG(_ bytes: [UInt8], name: String, byteLimit: Int) throws -> PNGImage {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-upload-\(JobQueue.newID()).png").path
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw ImageError("cannot keep the upload for reading")
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try PNGImage.read(path: path, byteLimit: byteLimit, name: name)
    }

    /// JSON text of an array or dictionary of JSON values (anything else, NSNull included, is `null`): checked first,
    /// because what Foundation does with a value it cannot write differs between platforms.
    static func jsonText(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject(value),
              let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes]) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}
