import Foundation
import Hummingbird
import KiriImage
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// `kiri serve`: AUTOMATIC1111's API and Kiri's own recipe jobs over HTTP (Hummingbird), one job at a time from a
/// bounded queue, with a web page at `/`.
public final class KiriServer: Sendable {
    let state: ServerState
    private let group = Mutex<ServiceGroup?>(nil)

    public init(options: ServerOptions) throws {
        try options.validate()
        state = try ServerState(options: options)
    }

    /// Serves until SIGTERM or SIGINT (when `handleSignals`) or `shutdown()`: then takes no new jobs, cancels the
    /// running one and those waiting, finishes the requests in flight and returns. `listening` gets the port.
    public func run(handleSignals: Bool = true, listening: @escaping @Sendable (Int) -> Void) async throws {
        var logger = Logger(label: "kiri.serve")
        logger.logLevel = .warning
        let app = Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(state.options.host, port: state.options.port), serverName: "kiri"),
            onServerRunning: { channel in listening(channel.localAddress?.port ?? 0) },
            logger: logger)
        // Services stop in reverse order: the queue first, so that requests waiting on jobs end before the server.
        var configuration = ServiceGroupConfiguration(
            services: [app, QueueService(queue: state.queue)],
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger)
        // A job stuck in a call that does not check its cancellation must not keep the server from exiting.
        configuration.maximumGracefulShutdownDuration = .seconds(30)
        let serviceGroup = ServiceGroup(configuration: configuration)
        group.withLock { $0 = serviceGroup }
        try await serviceGroup.run()
    }

    public func shutdown() async {
        await group.withLock { $0 }?.triggerGracefulShutdown()
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorMiddleware())
        if let token = state.options.token {
            router.add(middleware: TokenMiddleware(token: token))
        } else {
            router.add(middleware: LoopbackOnlyMiddleware())
        }
        WebPage.addRoutes(to: router)
        A1111Routes(state: state).addRoutes(to: router)
        KiriRoutes(state: state).addRoutes(to: router)
        return router
    }
}

/// Cancels the jobs when the server shuts down.
struct QueueService: Service {
    let queue: JobQueue
    func run() async throws {
        try? await gracefulShutdown()
        await queue.shutdown()
    }
}

/// Every API request carries the token: `Authorization: Bearer TOKEN`, or HTTP Basic with any user name and the token
/// as password, which is what A1111's `--api-auth` clients send (webuiapi's set_auth, SillyTavern, Open WebUI). The
/// page itself and its assets need none: they hold no data, and the page asks for the token.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if WebPage.isPublic(request.uri.path) { return try await next(request, context) }
        // The scheme's name is case-insensitive (RFC 7235), the token is not.
        let header = request.headers[.authorization] ?? ""
        let scheme = header.prefix { $0 != " " }.lowercased(), credentials = String(header.drop { $0 != " " }.dropFirst())
        var given: [UInt8] = []
        if scheme == "bearer" {
            given = Array(credentials.utf8)
        } else if scheme == "basic", let decoded = Data(base64Encoded: credentials), let colon = decoded.firstIndex(of: UInt8(ascii: ":")) {
            given = Array(decoded[decoded.index(after: colon)...])
        }
        let expected = Array(token.utf8)
        // Compared in time independent of where they differ.
        var difference = given.count ^ expected.count
        for index in expected.indices { difference |= Int(expected[index] ^ (index < given.count ? given[index] : 0)) }
        guard difference == 0 else {
            return ApiResponse.error(.unauthorized, "this server needs Authorization: Bearer TOKEN (kiri serve --token)",
                                     headers: [.wwwAuthenticate: "Bearer"])
        }
        return try await next(request, context)
    }
}

/// Without a token the server trusts whoever can reach loopback, so it must not answer a web page elsewhere that
/// makes the browser send requests: a Host that is not loopback (DNS rebinding: a page's own name resolving to
/// 127.0.0.1) and a cross-site Origin (a form posted from another site) are refused.
struct LoopbackOnlyMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let host = request.head.authority ?? ""
        guard ServerOptions.isLoopback(host: host) else {
            return ApiResponse.error(.forbidden, "this server answers loopback names only (Host: \(host.prefix(100))); give --token to serve others")
        }
        if let origin = request.headers[.origin], origin != "null" {
            let originHost = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? ""
            guard ServerOptions.isLoopback(host: originHost) else {
                return ApiResponse.error(.forbidden, "requests from another site's page are refused (Origin: \(origin.prefix(100)))")
            }
        }
        return try await next(request, context)
    }
}

/// Errors as JSON: a field's 422 as FastAPI gives it, Hummingbird's own (404, 413) with their status.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as FieldError {
            return ApiResponse.json(["error": "\(error)", "detail": [["loc": error.location, "msg": error.message, "type": "value_error"]]],
                                    status: .unprocessableContent)
        } catch is QueueFull {
            return ApiResponse.error(.serviceUnavailable, "the queue is full; try again later", headers: [.retryAfter: "5"])
        } catch is QueueClosed {
            return ApiResponse.error(.serviceUnavailable, "the server is shutting down")
        } catch let error as HTTPError {
            return ApiResponse.error(error.status, error.body ?? error.status.reasonPhrase)
        } catch let error as any HTTPResponseError {
            // NIO's too-many-bytes error is a 413 too: the body passed --max-body.
            let message = error.status == .contentTooLarge ? "the request body is larger than the server's --max-body" : error.status.reasonPhrase
            return ApiResponse.error(error.status, message)
        }
    }
}

enum ApiResponse {
    static func json(_ value: Any, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        bytes(Array(ServerState.jsonText(value).utf8), type: "application/json", status: status, headers: headers)
    }

    static func encoded(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        bytes(Array(Job.json(value).utf8), type: "application/json", status: status)
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        json(["error": message], status: status, headers: headers)
    }

    static func bytes(_ bytes: [UInt8], type: String, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = type
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

extension Request {
    /// The body's JSON object, at most the server's body limit (a larger body is a 413).
    func fields(limit: Int) async throws -> RequestFields {
        let buffer = try await body.collect(upTo: limit)
        return try RequestFields(body: Array(buffer.readableBytesView))
    }
}
