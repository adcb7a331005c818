import Foundation
import Hummingbird
import Kiri
import KiriLua
import NIOCore

/// Kiri's own API: recipe jobs (a bundled recipe by name, or the request's own source with `--allow-recipes`), their
/// state, live events and outputs, and the plugins on offer.
struct KiriRoutes {
    let state: ServerState
    /// Arguments a job may carry.
    static let maxArguments = 256

    func addRoutes(to router: Router<BasicRequestContext>) {
        let state = self.state
        router.post("/kiri/v1/jobs") { request, _ in
            let job = try state.submit(try spec(try await request.fields(limit: state.options.maxBodyBytes)))
            return ApiResponse.encoded(job.snapshot, status: .accepted)
        }
        router.get("/kiri/v1/jobs") { _, _ in
            ApiResponse.encoded(state.queue.recent(limit: 100).map(\.snapshot))
        }
        router.get("/kiri/v1/jobs/:id") { _, context in
            ApiResponse.encoded(try job(context).snapshot)
        }
        router.delete("/kiri/v1/jobs/:id") { _, context in
            let job = try job(context)
            state.queue.cancel(job)
            return ApiResponse.encoded(job.snapshot)
        }
        router.get("/kiri/v1/jobs/:id/events") { _, context in
            guard let events = try job(context).events() else {
                return ApiResponse.error(.serviceUnavailable, "too many readers of this job's events", headers: [.retryAfter: "5"])
            }
            let body = ResponseBody { writer in
                for await event in events {
                    try await writer.write(ByteBuffer(string: "event: \(event.name)\ndata: \(event.json)\n\n"))
                }
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
        }
        router.get("/kiri/v1/jobs/:id/outputs/:name") { _, context in
            let job = try job(context)
            let name = try context.parameters.require("name")
            // Only a file the job wrote, by its name: nothing in the request becomes a path. Streamed in chunks: a
            // job may write up to its --disk.
            let missing = ApiResponse.error(.notFound, "job \(job.id) has no output '\(name)'")
            guard job.snapshot.outputs.contains(name) else { return missing }
            guard let body = try? await FileIO().loadFile(path: job.folder + "/" + name, context: context) else { return missing }
            return Response(status: .ok, headers: [.contentType: Self.mediaType(name)], body: body)
        }
        router.get("/kiri/v1/plugins") { _, _ in
            let catalog = PluginPath.catalog(user: state.options.pluginDirectories)
            var domains: [String: [String]] = [:]
            for domain in PluginCatalog.domains { domains[domain] = catalog.entries(domain: domain).map(\.name) }
            return ApiResponse.json(["plugins": domains, "recipes": state.catalog.recipes.keys.sorted(),
                                     "models": state.catalog.models.map(\.title), "allow_recipes": state.options.allowRecipes,
                                     "a1111_names": ["samplers": state.catalog.samplerNames, "schedules": state.catalog.scheduleNames]]
                                    as [String: Any])
        }
    }

    private func job(_ context: BasicRequestContext) throws -> Job {
        let id = try context.parameters.require("id")
        guard let job = state.queue.job(id) else { throw HTTPError(.notFound, message: "no job '\(id)'") }
        return job
    }

    /// `{"recipe": "txt2img", "arguments": {"prompt": "...", "steps": 20}}` or `{"source": "...", "arguments": [...]}`;
    /// `model=NAME` names a served model (GET /sdapi/v1/sd-models), which becomes its path.
    private func spec(_ fields: RequestFields) throws -> JobSpec {
        let recipe = try fields.string("recipe", "")
        let source = try fields.string("source", "")
        var spec: JobSpec
        switch (recipe.isEmpty, source.isEmpty) {
        case (false, true):
            spec = JobSpec(recipe: recipe + ".lua", source: try state.bundledSource(recipe), runs: [])
        case (true, false):
            guard state.options.allowRecipes else {
                throw HTTPError(.forbidden, message: "this server runs bundled recipes only (start it with --allow-recipes to accept recipe source)")
            }
            spec = JobSpec(recipe: "recipe.lua", source: source, runs: [])
        default:
            throw FieldError(field: "recipe", message: "give either recipe (a bundled recipe's name) or source (a recipe's Lua text)")
        }
        var arguments: [String] = []
        if let value = fields.members["arguments"] {
            switch value {
            case .null: break
            case .array(let items):
                for (index, item) in items.enumerated() {
                    guard case .string(let text) = item else {
                        throw FieldError([.name("arguments"), .index(index)], "expected a string, got \(item.kindName)")
                    }
                    arguments.append(text)
                }
            case .object(let members):
                for member in members {
                    arguments.append(member.key + "=" + (try RequestFields.argumentText(member.value, path: [.name("arguments"), .name(member.key)])))
                }
            default:
                throw FieldError(field: "arguments", message: "expected an array of strings or an object, got \(value.kindName)")
            }
        }
        guard arguments.count <= Self.maxArguments else {
            throw FieldError(field: "arguments", message: "at most \(Self.maxArguments), got \(arguments.count)")
        }
        // Arguments reach the recipe as C strings: a NUL would cut one short without a word.
        if let index = arguments.firstIndex(where: { $0.utf8.contains(0) }) {
            throw FieldError([.name("arguments"), .index(index)], "contains a NUL character")
        }
        for (index, argument) in arguments.enumerated() where argument.hasPrefix("model=") {
            let name = String(argument.dropFirst("model=".count))
            guard let model = state.catalog.model(titled: name) else {
                throw FieldError(field: "arguments", message: "model=\(name): no served model of that name (GET /sdapi/v1/sd-models lists them)")
            }
            arguments[index] = model.path == nil ? "model=default" : "model=served:\(model.title)"
        }
        spec.runs = [arguments]
        return spec
    }

    static func mediaType(_ name: String) -> String {
        switch name.split(separator: ".").last?.lowercased() {
        case "png": "image/png"
        case "json": "application/json"
        case "csv": "text/csv"
        case "txt", "lua": "text/plain; charset=utf-8"
        default: "application/octet-stream"
        }
    }
}
