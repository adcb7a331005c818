import Foundation
import Hummingbird
import KiriImage
import Synchronization

/// AUTOMATIC1111's `/sdapi/v1` endpoints (modules/api/api.py) that clients such as webuiapi use: generation waits
/// for its job and answers with base64 PNGs that carry A1111's `parameters` text.
final class A1111Routes: Sendable {
    let state: ServerState
    /// The last progress answer, by job, step and whether it had the image.
    private let progressKept = Mutex<(key: String, bytes: [UInt8])?>(nil)

    init(state: ServerState) { self.state = state }

    func addRoutes(to router: Router<BasicRequestContext>) {
        let state = self.state
        router.post("/sdapi/v1/txt2img") { request, _ in try await self.generate(request, image: false) }
        router.post("/sdapi/v1/img2img") { request, _ in try await self.generate(request, image: true) }
        router.get("/sdapi/v1/samplers") { _, _ in
            ApiResponse.json(state.catalog.samplers.map { plugin in
                ["name": state.catalog.samplerTitle(plugin), "aliases": ["k_" + plugin, plugin], "options": [String: String]()]
            })
        }
        router.get("/sdapi/v1/schedulers") { _, _ in
            let automatic: [String: Any] = ["name": "automatic", "label": "Automatic", "aliases": NSNull(), "default_rho": -1,
                                            "need_inner_model": false]
            return ApiResponse.json([automatic] + state.catalog.schedules.map { plugin in
                ["name": plugin, "label": state.catalog.scheduleNames[plugin] ?? plugin, "aliases": NSNull(), "default_rho": -1,
                 "need_inner_model": false] as [String: Any]
            })
        }
        router.get("/sdapi/v1/sd-models") { _, _ in
            ApiResponse.json(state.catalog.models.map { model in
                ["title": model.title, "model_name": model.name, "hash": NSNull(), "sha256": NSNull(), "filename": model.title,
                 "config": NSNull()] as [String: Any]
            })
        }
        router.get("/sdapi/v1/options") { _, _ in self.options() }
        router.post("/sdapi/v1/options") { request, _ in
            let fields = try await request.fields(limit: state.options.maxBodyBytes)
            let title = try fields.string("sd_model_checkpoint", "")
            if !title.isEmpty {
                guard let model = state.catalog.model(titled: title) else {
                    throw FieldError(field: "sd_model_checkpoint", message: "no model '\(title)' (GET /sdapi/v1/sd-models lists them)")
                }
                state.setModel(model)
            }
            if let value = fields.members["CLIP_stop_at_last_layers"], value != .null {
                let skip = try fields.int("CLIP_stop_at_last_layers", 1)
                try fields.check("CLIP_stop_at_last_layers", skip, 1...12)
                state.setClipSkip(skip)
            }
            return ApiResponse.json(NSNull())
        }
        router.get("/sdapi/v1/progress") { request, _ in
            let skipImage = ["true", "True", "1"].contains(request.uri.queryParameters.get("skip_current_image") ?? "")
            return self.progress(skipImage: skipImage)
        }
        router.post("/sdapi/v1/interrupt") { _, _ in
            state.queue.running?.interrupt()
            return ApiResponse.json([String: Any]())
        }
        router.post("/sdapi/v1/skip") { _, _ in
            state.queue.running?.interrupt()
            return ApiResponse.json([String: Any]())
        }
        // What clients such as SillyTavern list before they generate: Kiri has none of these.
        for path in ["upscalers", "latent-upscale-modes", "sd-vae", "sd-modules", "loras", "prompt-styles"] {
            router.get(RouterPath("/sdapi/v1/" + path)) { _, _ in ApiResponse.json([Any]()) }
        }
        router.get("/internal/ping") { _, _ in ApiResponse.json([String: Any]()) }
    }

    private func options() -> Response {
        ApiResponse.json(["sd_model_checkpoint": state.currentModel.title, "sd_checkpoint_hash": NSNull(),
                          "CLIP_stop_at_last_layers": state.clipSkip, "samples_format": "png",
                          "live_previews_enable": true, "show_progress_every_n_steps": 1] as [String: Any])
    }

    /// A1111's progress: the running job's share done, the seconds it expects to need still, its preview. Clients
    /// poll it many times a step, so the answer is made once per step (its ETA too) and kept.
    private func progress(skipImage: Bool) -> Response {
        guard let job = state.queue.running else { return ApiResponse.json(progressFields(nil, skipImage: skipImage)) }
        let key = "\(job.id) \(job.version) \(skipImage)"
        if let kept = progressKept.withLock({ $0?.key == key ? $0?.bytes : nil }) {
            return ApiResponse.bytes(kept, type: "application/json")
        }
        let bytes = Array(ServerState.jsonText(progressFields(job, skipImage: skipImage)).utf8)
        progressKept.withLock { $0 = (key, bytes) }
        return ApiResponse.bytes(bytes, type: "application/json")
    }

    /// A1111's progress fields for `job`, nil when none runs.
    private func progressFields(_ job: Job?, skipImage: Bool) -> [String: Any] {
        let snapshot = job?.snapshot
        let done = snapshot?.progress ?? 0
        let elapsed = snapshot?.started.map { Date().timeIntervalSince1970 - $0 } ?? 0
        let eta = done > 0.01 ? elapsed / done - elapsed : 0
        let preview: Any = skipImage ? NSNull() : job?.preview.map { Data($0).base64EncodedString() as Any } ?? NSNull()
        let timestamp = snapshot.map { A1111Generation.timestamp(Date(timeIntervalSince1970: $0.created)) } ?? "0"
        return [
            "progress": done, "eta_relative": max(eta, 0), "current_image": preview, "textinfo": NSNull(),
            "state": ["skipped": false, "interrupted": snapshot?.interrupted ?? false, "job": job?.id ?? "",
                      "job_count": state.queue.waiting + (job == nil ? 0 : 1), "job_timestamp": timestamp,
                      "job_no": max((snapshot?.run ?? 0) - 1, 0), "sampling_step": snapshot?.step ?? 0,
                      "sampling_steps": snapshot?.steps ?? 0] as [String: Any],
        ]
    }

    private func generate(_ request: Request, image: Bool) async throws -> Response {
        let fields = try await request.fields(limit: state.options.maxBodyBytes)
        let generation = try A1111Generation(fields, image: image, server: state)
        let job = try state.submit(try generation.job(server: state))
        await job.finished()
        let snapshot = job.snapshot
        if let kind = snapshot.errorKind {
            let summary = JobFailure(kind, snapshot.error ?? "").summary
            switch kind {
            case .recipe, .memory:   // the settings asked for something the recipe or the memory cap refuses
                throw FieldError(field: "body", message: summary)
            case .cancelled:
                return ApiResponse.error(.serviceUnavailable, "the job was cancelled: \(summary)")
            case .time, .server:
                return ApiResponse.error(.internalServerError, summary)
            }
        }
        var images: [String] = [], infotexts: [String] = []
        var size: (width: Int, height: Int)?
        for name in snapshot.outputs where name.hasSuffix(".png") {
            let path = job.folder + "/" + name
            guard let bytes = FileManager.default.contents(atPath: path) else { continue }
            images.append(bytes.base64EncodedString())
            // IHDR's width and height, big-endian at bytes 16 and 20.
            if size == nil, bytes.count >= 24 {
                let word = { (at: Int) in bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
                size = (word(16), word(20))
            }
            let text = (try? PNGImage.readText(path: path, byteLimit: PNGImage.maxTextBytes, name: name)) ?? []
            infotexts.append(text.first { $0.key == "parameters" }?.value ?? "")
        }
        // As A1111's API, the images are sent and not kept unless save_images asks.
        if !generation.saveImages { try? FileManager.default.removeItem(atPath: job.folder) }
        return ApiResponse.json(["images": images, "parameters": generation.echo,
                                 "info": generation.info(infotexts: infotexts, size: size, server: state)] as [String: Any])
    }
}
