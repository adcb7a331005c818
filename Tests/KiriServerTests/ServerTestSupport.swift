import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KiriImage
@testable import KiriServer
import XCTest

/// A `kiri serve` running in this process on a free loopback port, with its jobs in a temporary folder.
final class RunningServer: @unchecked Sendable {
    let server: KiriServer
    let port: Int
    let output: String
    let token: String?
    private let task: Task<Void, Error>

    static func start(_ configure: (inout ServerOptions) -> Void = { _ in }) async throws -> RunningServer {
        var options = ServerOptions()
        options.port = 0
        options.output = NSTemporaryDirectory() + "kiri-serve-test-" + JobQueue.newID()
        options.limits.wallTimeout = 120
        configure(&options)
        let server = try KiriServer(options: options)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let task = Task { try await server.run(handleSignals: false) { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw XCTSkip("the server did not start listening") }
        return RunningServer(server: server, port: port, output: options.output, token: options.token, task: task)
    }

    private init(server: KiriServer, port: Int, output: String, token: String?, task: Task<Void, Error>) {
        (self.server, self.port, self.output, self.token, self.task) = (server, port, output, token, task)
    }

    /// Shuts the server down and waits for `run` to return.
    func stop() async throws {
        await server.shutdown()
        try await task.value
        try? FileManager.default.removeItem(atPath: output)
    }

    struct Reply {
        var status: Int
        var body: Data
        var headers: [String: String]
        var json: Any? { try? JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) }
        var object: [String: Any] { json as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// One request; `json` is sent as the body. The server's token goes with it unless `authorized` is false.
    func call(_ method: String, _ path: String, json: Any? = nil, body: Data? = nil, headers extra: [String: String] = [:],
              authorized: Bool = true) async throws -> Reply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 300
        if let json { request.httpBody = try JSONSerialization.data(withJSONObject: json) }
        if let body { request.httpBody = body }
        if authorized, let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (key, value) in extra { request.setValue(value, forHTTPHeaderField: key) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var headers: [String: String] = [:]
        for (key, value) in http.allHeaderFields { headers[String(describing: key).lowercased()] = String(describing: value) }
        return Reply(status: http.statusCode, body: data, headers: headers)
    }
}

/// A PNG's pixels and text from base64 (as A1111's API returns images).
func decodePNG(base64 text: String) throws -> PNGImage {
    let data = try XCTUnwrap(Data(base64Encoded: text), "not base64")
    return try ServerState.decodePNG([UInt8](data), name: "image", byteLimit: 1 << 28)
}
