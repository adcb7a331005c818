import Foundation
import KiriImage

/// AUTOMATIC1111's `/sdapi/v1/txt2img` and `/img2img` request (modules/api/models.py,
/// StableDiffusionProcessingTxt2Img and Img2Img), as far as Kiri honours it; other fields are ignored. The defaults
/// are A1111's UI's (20 steps of DPM++ 2M, Karras, CFG 7; its API alone says 50 steps of Euler), and without width
/// and height the model's own size.
struct A1111Generation {
    var prompt: String
    var negativePrompt: String
    var steps: Int
    var cfgScale: Double
    var sampler: String
    var schedule: String
    var seed: Int
    var subseed: Int
    var subseedStrength: Double
    var width: Int
    var height: Int
    var batchSize: Int
    var iterations: Int
    var clipSkip: Int
    var model: ServerCatalog.Model
    /// img2img: the image (PNG bytes), its mask, and how far to denoise it.
    var initImage: [UInt8]?
    var mask: [UInt8]?
    var denoisingStrength: Double
    /// A1111's `save_images`: keep the files on the server too (its API's default is to send them only).
    var saveImages: Bool

    /// The request's fields in A1111's names, with the defaults filled in: the response's `parameters`.
    var echo: [String: Any]

    init(_ fields: RequestFields, image: Bool, server: ServerState) throws(FieldError) {
        let catalog = server.catalog
        prompt = try fields.string("prompt", "")
        negativePrompt = try fields.string("negative_prompt", "")
        steps = try fields.int("steps", 20)
        try fields.check("steps", steps, 1...1000)
        cfgScale = try fields.double("cfg_scale", 7)
        try fields.check("cfg_scale", cfgScale, 0...100)
        let samplerName = try fields.string("sampler_name", try fields.string("sampler_index", "DPM++ 2M"))
        guard let named = catalog.sampler(named: samplerName.isEmpty ? "DPM++ 2M" : samplerName) else {
            throw FieldError(field: "sampler_name", message: "unknown sampler '\(samplerName)' (GET /sdapi/v1/samplers lists them)")
        }
        sampler = named.sampler
        let scheduler = try fields.string("scheduler", "Automatic")
        if ["", "Automatic", "automatic"].contains(scheduler) {
            schedule = named.schedule ?? "karras"
        } else if let plugin = catalog.schedule(named: scheduler) {
            schedule = plugin
        } else {
            throw FieldError(field: "scheduler", message: "unknown scheduler '\(scheduler)' (GET /sdapi/v1/schedulers lists them)")
        }
        let requestedSeed = try fields.int("seed", -1)
        try fields.check("seed", requestedSeed, -1...(1 << 53) - 1)
        seed = requestedSeed >= 0 ? requestedSeed : Int(UInt32.random(in: 0...UInt32.max))   // A1111's range
        let requestedSubseed = try fields.int("subseed", -1)
        try fields.check("subseed", requestedSubseed, -1...(1 << 53) - 1)
        subseed = requestedSubseed >= 0 ? requestedSubseed : Int(UInt32.random(in: 0...UInt32.max))
        subseedStrength = try fields.double("subseed_strength", 0)
        try fields.check("subseed_strength", subseedStrength, 0...1)
        batchSize = try fields.int("batch_size", 1)
        try fields.check("batch_size", batchSize, 1...64)
        iterations = try fields.int("n_iter", 1)
        try fields.check("n_iter", iterations, 1...100)
        // Image k of the job has seed + k - 1: the last must be a seed too.
        let images = batchSize * iterations
        for (key, first) in [("seed", seed), ("subseed", subseed)] where first > (1 << 53) - images {
            throw FieldError(field: key, message: "\(first) + \(images - 1) (the job's last image) passes the largest seed, \((1 << 53) - 1)")
        }
        width = try fields.int("width", 0)
        height = try fields.int("height", 0)
        for (key, value) in [("width", width), ("height", height)] {
            try fields.check(key, value, 0...4096)
            guard value % 8 == 0 else { throw FieldError(field: key, message: "must be a multiple of 8, got \(value)") }
        }
        saveImages = try fields.bool("save_images", false)
        denoisingStrength = try fields.double("denoising_strength", 0.75)
        // txt2img ignores it, as A1111 does without hires fix.
        guard !image || (denoisingStrength > 0 && denoisingStrength <= 1) else {
            throw FieldError(field: "denoising_strength", message: "must be above 0 and at most 1, got \(denoisingStrength)")
        }
        let overrides = try fields.object("override_settings")
        let title = try overrides?.string("sd_model_checkpoint", "") ?? ""
        if title.isEmpty {
            model = server.currentModel
        } else if let chosen = catalog.model(titled: title) {
            model = chosen
        } else {
            throw FieldError([.name("override_settings"), .name("sd_model_checkpoint")],
                             "no model '\(title)' (GET /sdapi/v1/sd-models lists them)")
        }
        clipSkip = try overrides?.int("CLIP_stop_at_last_layers", server.clipSkip) ?? server.clipSkip
        try overrides?.check("CLIP_stop_at_last_layers", clipSkip, 1...12)

        if image {
            // Kiri does not resize: img2img keeps the init image's size.
            (width, height) = (0, 0)
            let images = try fields.strings("init_images")
            guard let first = images.first else { throw FieldError(field: "init_images", message: "img2img needs one image (a base64 PNG)") }
            initImage = try Self.png(first, path: [.name("init_images"), .index(0)], server: server)
            let maskText = try fields.string("mask", "")
            if !maskText.isEmpty {
                var maskBytes = try Self.png(maskText, path: [.name("mask")], server: server)
                if try fields.bool("inpainting_mask_invert", false) {
                    maskBytes = try Self.inverted(maskBytes, path: [.name("mask")])
                }
                mask = maskBytes
            }
        }
        echo = [
            "prompt": prompt, "negative_prompt": negativePrompt, "steps": steps, "cfg_scale": cfgScale,
            "sampler_name": catalog.samplerTitle(sampler), "scheduler": catalog.scheduleNames[schedule] ?? schedule,
            "seed": requestedSeed, "subseed": requestedSubseed, "subseed_strength": subseedStrength, "width": width,
            "height": height, "batch_size": batchSize, "n_iter": iterations,
        ]
        if image { echo["denoising_strength"] = denoisingStrength }
    }

    /// The bytes of a base64 PNG, with or without a `data:image/png;base64,` prefix (webuiapi sends one); checked to
    /// be a PNG Kiri can read within the server's pixel limit.
    static func png(_ text: String, path: [FieldError.Key], server: ServerState) throws(FieldError) -> [UInt8] {
        let field = FieldError(path, "").field
        let payload = text.hasPrefix("data:") ? String(text.drop { $0 != "," }.dropFirst()) : text
        guard let data = Data(base64Encoded: payload, options: .ignoreUnknownCharacters) else {
            throw FieldError(path, "not base64")
        }
        let bytes = [UInt8](data)
        guard bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) else {
            throw FieldError(path, "not a PNG image (Kiri reads PNG only)")
        }
        let image: PNGImage
        do {
            image = try ServerState.decodePNG(bytes, name: field, byteLimit: server.options.maxImagePixels * 4)
        } catch {
            throw FieldError(path, "cannot read the PNG: \(error)")
        }
        guard image.width * image.height <= server.options.maxImagePixels else {
            throw FieldError(path, "\(image.width)x\(image.height) is more than the server's \(server.options.maxImagePixels) pixels")
        }
        return bytes
    }

    /// A1111's `inpainting_mask_invert`: black becomes the part to repaint. Alpha is kept.
    static func inverted(_ bytes: [UInt8], path: [FieldError.Key]) throws(FieldError) -> [UInt8] {
        do {
            let image = try ServerState.decodePNG(bytes, name: FieldError(path, "").field, byteLimit: Int.max)
            let colours = image.channels == 2 || image.channels == 4 ? image.channels - 1 : image.channels
            var pixels = image.pixels
            for index in pixels.indices where index % image.channels < colours { pixels[index] = 255 - pixels[index] }
            return try PNGImage(width: image.width, height: image.height, channels: image.channels, pixels: pixels).encoded()
        } catch {
            throw FieldError(path, "cannot read the PNG: \(error)")
        }
    }

    /// The job: txt2img, img2img or inpaint, one run per iteration, each of `batchSize` images with seeds following
    /// on, named as A1111 names them (NNNNN-SEED.png).
    func job(server: ServerState) throws -> JobSpec {
        let recipe = initImage == nil ? "txt2img" : mask == nil ? "img2img" : "inpaint"
        var inputs: [String: [UInt8]] = [:]
        var common = [
            "prompt=\(prompt)", "negative=\(negativePrompt)", "steps=\(steps)", "cfg=\(cfgScale)", "sampler=\(sampler)",
            "schedule=\(schedule)", "batch=\(batchSize)", "width=\(width)", "height=\(height)", "clip_skip=\(clipSkip)",
            "subseed_strength=\(subseedStrength)",
        ]
        if model.path != nil { common.append("model=served:\(model.title)") }
        if let initImage {
            inputs["init.png"] = initImage
            common += ["init=init.png", "strength=\(denoisingStrength)"]   // read from the job's folder
            if let mask {
                inputs["mask.png"] = mask
                common.append("mask=mask.png")
            }
        }
        let runs = (0..<iterations).map { iteration in
            let first = seed + iteration * batchSize
            return common + ["seed=\(first)", "subseed=\(subseed + iteration * batchSize)",
                             "out=" + String(format: "%05ld-%ld.png", iteration * batchSize, first)]
        }
        return JobSpec(recipe: recipe + ".lua", source: try server.bundledSource(recipe), runs: runs, inputs: inputs)
    }

    /// A1111's `info`: a JSON string of the generation's settings, one infotext per image.
    func info(infotexts: [String], size: (width: Int, height: Int)?, server: ServerState) -> String {
        let count = infotexts.count
        let fields: [String: Any] = [
            "prompt": prompt, "all_prompts": Array(repeating: prompt, count: count), "negative_prompt": negativePrompt,
            "all_negative_prompts": Array(repeating: negativePrompt, count: count), "seed": seed,
            "all_seeds": (0..<count).map { seed + $0 }, "subseed": subseed, "all_subseeds": (0..<count).map { subseed + $0 },
            "subseed_strength": subseedStrength, "width": size?.width ?? width, "height": size?.height ?? height,
            "sampler_name": server.catalog.samplerTitle(sampler), "scheduler": server.catalog.scheduleNames[schedule] ?? schedule,
            "cfg_scale": cfgScale, "steps": steps, "batch_size": batchSize, "restore_faces": false,
            "sd_model_name": model.name, "sd_model_hash": NSNull(), "denoising_strength": initImage == nil ? NSNull() : denoisingStrength as Any,
            "clip_skip": clipSkip, "index_of_first_image": 0, "infotexts": infotexts, "styles": [String](),
            "job_timestamp": Self.timestamp(), "version": "kiri", "is_using_inpainting_conditioning": false,
            "extra_generation_params": [String: Any](),
        ]
        return ServerState.jsonText(fields)
    }

    /// A1111's job_timestamp: local time as YYYYMMDDhhmmss.
    static func timestamp(_ date: Date = Date()) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMddHHmmss"
        return formatter.string(from: date)
    }
}
