import Foundation
import Kiri
import KiriImage
@testable import KiriServer
import XCTest

/// AUTOMATIC1111's endpoints against the running server, on Kiri's default model (28×28, fast).
final class A1111APITests: XCTestCase {
    /// txt2img gives A1111's response: base64 PNGs with the `parameters` text, `info` as a JSON string with a seed
    /// per image, and the same pixels `kiri run Scripts/txt2img.lua` makes from the same settings.
    func testTxt2ImgMatchesTheRecipeRunDirectly() async throws {
        let server = try await RunningServer.start()
        let reply = try await server.call("POST", "/sdapi/v1/txt2img", json: [
            "prompt": "ankle boot", "steps": 6, "cfg_scale": 4, "sampler_name": "Euler a", "scheduler": "Karras",
            "seed": 11, "batch_size": 2, "an_unknown_field": [1, 2],
        ])
        try await server.stop()
        XCTAssertEqual(reply.status, 200, reply.text)
        let images = try XCTUnwrap(reply.object["images"] as? [String])
        XCTAssertEqual(images.count, 2)
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(XCTUnwrap(reply.object["info"] as? String).utf8)) as? [String: Any])
        XCTAssertEqual(info["all_seeds"] as? [Int], [11, 12])
        XCTAssertEqual(info["sampler_name"] as? String, "Euler a")
        XCTAssertEqual((reply.object["parameters"] as? [String: Any])?["steps"] as? Int, 6)

        let served = try images.map(decodePNG(base64:))
        let parameters = try XCTUnwrap(served[1].text.first { $0.key == "parameters" }?.value)
        XCTAssertTrue(parameters.hasPrefix("ankle boot\n"), parameters)
        XCTAssertTrue(parameters.contains("Steps: 6, Sampler: Euler a, Schedule type: Karras, CFG scale: 4, Seed: 12"), parameters)
        XCTAssertEqual((info["infotexts"] as? [String])?[1], parameters)

        let folder = NSTemporaryDirectory() + "kiri-direct-" + JobQueue.newID()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let scripts = try XCTUnwrap(BundledFiles.scripts)
        try RecipeRunner.run(RunRequest(script: scripts + "/txt2img.lua", arguments: [
            "prompt=ankle boot", "steps=6", "cfg=4", "sampler=euler_ancestral", "schedule=karras", "seed=11", "batch=2", "out=x.png",
        ], outputDirectory: folder)) { _ in }
        for (index, image) in served.enumerated() {
            let direct = try PNGImage.read(path: folder + "/x-\(index + 1).png")
            XCTAssertEqual(image.pixels, direct.pixels, "image \(index + 1)")
        }
    }

    /// No host path reaches a served model's job or its PNGs (security case 39): the model is `served:NAME`, the
    /// init image `init.png` in the job's folder.
    func testNoHostPathInTheImages() async throws {
        let model = ServerClientTests.fixtures + "/models/pipeline/tiny-sd"
        let server = try await RunningServer.start { $0.models = [model] }
        let first = try await server.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "a fox", "steps": 2, "width": 32, "height": 32])
        XCTAssertEqual(first.status, 200, first.text)
        let image = try XCTUnwrap((first.object["images"] as? [String])?.first)
        let second = try await server.call("POST", "/sdapi/v1/img2img", json: ["init_images": [image], "prompt": "a cat", "steps": 2])
        XCTAssertEqual(second.status, 200, second.text)
        try await server.stop()
        for reply in [first, second] {
            for chunk in try decodePNG(base64: XCTUnwrap((reply.object["images"] as? [String])?.first)).text {
                XCTAssertFalse(chunk.value.contains(server.output) || chunk.value.contains(model), "\(chunk.key): \(chunk.value)")
            }
        }
        let parameters = try decodePNG(base64: XCTUnwrap((second.object["images"] as? [String])?.first)).text
        XCTAssertTrue(parameters.contains { $0.key == "parameters" && $0.value.contains("Model: tiny-sd") }, "\(parameters)")
    }

    /// n_iter runs the batch again with the seeds following on, as A1111 numbers them.
    func testIterationsFollowOnSeeds() async throws {
        let server = try await RunningServer.start()
        let reply = try await server.call("POST", "/sdapi/v1/txt2img", json: ["steps": 2, "seed": 5, "batch_size": 2, "n_iter": 2])
        // As A1111's API, the images are sent, and kept on the server only with save_images.
        let jobs = server.output + "/jobs"
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: jobs), [])
        let saved = try await server.call("POST", "/sdapi/v1/txt2img", json: ["steps": 2, "save_images": true])
        XCTAssertEqual(saved.status, 200)
        let folders = try FileManager.default.contentsOfDirectory(atPath: jobs)
        XCTAssertEqual(folders.count, 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: jobs + "/" + folders[0]).count, 1)
        try await server.stop()
        XCTAssertEqual(reply.status, 200, reply.text)
        let info = try XCTUnwrap(JSONSerialization.jsonObject(with: Data((reply.object["info"] as? String ?? "").utf8)) as? [String: Any])
        XCTAssertEqual(info["all_seeds"] as? [Int], [5, 6, 7, 8])
        let seeds = try (reply.object["images"] as? [String] ?? []).map { image in
            try decodePNG(base64: image).text.first { $0.key == "parameters" }?.value.components(separatedBy: "Seed: ").last?.prefix { $0.isNumber }
        }
        XCTAssertEqual(seeds.map { $0.map(String.init) }, ["5", "6", "7", "8"])
    }

    /// A wrong type or value is a 422 naming the field, in FastAPI's shape.
    func testBadFieldsAreNamed() async throws {
        let server = try await RunningServer.start()
        let cases: [([String: Any], String)] = [
            (["steps": "twenty"], "steps"), (["steps": 0], "steps"), (["cfg_scale": true], "cfg_scale"),
            (["sampler_name": "Nope"], "sampler_name"), (["scheduler": "nope"], "scheduler"), (["width": 30], "width"),
            (["batch_size": 65], "batch_size"), (["override_settings": ["sd_model_checkpoint": "missing.safetensors"]], "override_settings"),
            (["prompt": "a\u{0}b"], "prompt"), (["seed": (1 << 53) - 2, "batch_size": 3], "seed"),
        ]
        for (body, field) in cases {
            let reply = try await server.call("POST", "/sdapi/v1/txt2img", json: body)
            XCTAssertEqual(reply.status, 422, "\(body)")
            let detail = (reply.object["detail"] as? [[String: Any]])?.first
            XCTAssertEqual((detail?["loc"] as? [Any])?.dropFirst().first as? String, field, "\(body): \(reply.text)")
        }
        let notJSON = try await server.call("POST", "/sdapi/v1/txt2img", body: Data("{steps: 3".utf8))
        XCTAssertEqual(notJSON.status, 422)
        let strength = try await server.call("POST", "/sdapi/v1/img2img", json: ["init_images": ["aGVsbG8="], "denoising_strength": 0])
        XCTAssertEqual(((strength.object["detail"] as? [[String: Any]])?.first?["loc"] as? [String])?.last, "denoising_strength")
        let img2img = try await server.call("POST", "/sdapi/v1/img2img", json: ["init_images": ["aGVsbG8="]])
        XCTAssertEqual(img2img.status, 422)
        XCTAssertTrue(img2img.text.contains("not a PNG"), img2img.text)
        let location = (img2img.object["detail"] as? [[String: Any]])?.first?["loc"] as? [Any]
        XCTAssertEqual(location?.count, 3)
        XCTAssertEqual(location?.last as? Int, 0, "FastAPI's loc: [\"body\", \"init_images\", 0]")
        // What only the recipe can judge is a 422 too, its first line without a traceback or a host path.
        let notAClass = try await server.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "a red fox", "steps": 2])
        XCTAssertEqual(notAClass.status, 422, notAClass.text)
        let message = notAClass.object["error"] as? String ?? ""
        XCTAssertTrue(message.contains("red fox") && !message.contains("traceback") && !message.contains(server.output), message)
        try await server.stop()
    }

    /// The lists clients read: A1111's sampler names with Kiri's as aliases, schedulers, models, options.
    func testListsAndOptions() async throws {
        let server = try await RunningServer.start()
        let samplers = try await server.call("GET", "/sdapi/v1/samplers").json as? [[String: Any]] ?? []
        let dpm = samplers.first { $0["name"] as? String == "DPM++ 2M" }
        XCTAssertEqual(dpm?["aliases"] as? [String], ["k_dpmpp_2m", "dpmpp_2m"])
        XCTAssertEqual(samplers.count, PluginPath.catalog(user: []).entries(domain: "samplers").count)
        let schedulers = try await server.call("GET", "/sdapi/v1/schedulers").json as? [[String: Any]] ?? []
        XCTAssertEqual(schedulers.first?["label"] as? String, "Automatic")
        XCTAssertTrue(schedulers.contains { $0["name"] as? String == "karras" && $0["label"] as? String == "Karras" })
        let models = try await server.call("GET", "/sdapi/v1/sd-models").json as? [[String: Any]] ?? []
        XCTAssertEqual(models.map { $0["title"] as? String }, ["fashion-mnist"])
        for path in ["/sdapi/v1/loras", "/sdapi/v1/upscalers", "/sdapi/v1/sd-vae"] {
            let empty = try await server.call("GET", path)
            XCTAssertEqual(empty.text, "[]", path)
        }
        let ping = try await server.call("GET", "/internal/ping")
        XCTAssertEqual(ping.text, "{}")
        let set = try await server.call("POST", "/sdapi/v1/options", json: ["sd_model_checkpoint": "nope"])
        XCTAssertEqual(set.status, 422)
        let options = try await server.call("GET", "/sdapi/v1/options").object
        XCTAssertEqual(options["sd_model_checkpoint"] as? String, "fashion-mnist")
        try await server.stop()
    }

    /// img2img with a mask: where the mask is black the image is kept, so an all-black mask gives the image back;
    /// `inpainting_mask_invert` turns an all-white mask into the same.
    func testInpaintingKeepsWhatTheMaskProtects() async throws {
        let server = try await RunningServer.start()
        let first = try await server.call("POST", "/sdapi/v1/txt2img", json: ["prompt": "sneaker", "steps": 4, "seed": 1])
        let initImage = try XCTUnwrap((first.object["images"] as? [String])?.first)
        let original = try decodePNG(base64: initImage)
        for (value, invert): (UInt8, Bool) in [(0, false), (255, true)] {
            let mask = try PNGImage(width: original.width, height: original.height, channels: 1,
                                    pixels: [UInt8](repeating: value, count: original.width * original.height)).encoded()
            let reply = try await server.call("POST", "/sdapi/v1/img2img", json: [
                "init_images": ["data:image/png;base64," + initImage], "mask": Data(mask).base64EncodedString(),
                "inpainting_mask_invert": invert ? 1 : 0, "prompt": "trouser", "steps": 4, "denoising_strength": 1, "seed": 2,
            ])
            XCTAssertEqual(reply.status, 200, reply.text)
            let image = try decodePNG(base64: XCTUnwrap((reply.object["images"] as? [String])?.first))
            let worst = zip(image.pixels, original.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 255
            XCTAssertLessThanOrEqual(worst, 1, "mask \(value), invert \(invert)")
        }
        // Without a mask the whole image is repainted towards the prompt.
        let repainted = try await server.call("POST", "/sdapi/v1/img2img", json: [
            "init_images": [initImage], "prompt": "trouser", "steps": 4, "denoising_strength": 1, "seed": 2,
        ])
        let image = try decodePNG(base64: XCTUnwrap((repainted.object["images"] as? [String])?.first))
        XCTAssertNotEqual(image.pixels, original.pixels)
        try await server.stop()
    }

    /// Interrupt stops the sampler early and the request still answers with the image it had, as A1111 does;
    /// progress reports the running job's steps meanwhile.
    func testInterruptReturnsThePartialImage() async throws {
        let server = try await RunningServer.start()
        async let generation = server.call("POST", "/sdapi/v1/txt2img", json: ["steps": 1000, "seed": 3, "sampler_name": "Euler"])
        var progress: [String: Any] = [:]
        for _ in 0..<600 {
            progress = try await server.call("GET", "/sdapi/v1/progress").object
            if ((progress["state"] as? [String: Any])?["sampling_step"] as? Int ?? 0) >= 2 { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        let state = try XCTUnwrap(progress["state"] as? [String: Any])
        XCTAssertEqual(state["sampling_steps"] as? Int, 1000)
        XCTAssertGreaterThan(progress["progress"] as? Double ?? 0, 0)
        XCTAssertNotNil(progress["current_image"] as? String, "a preview of the denoised estimate")
        let interrupt = try await server.call("POST", "/sdapi/v1/interrupt")
        XCTAssertEqual(interrupt.status, 200)
        let reply = try await generation
        XCTAssertEqual(reply.status, 200, reply.text)
        XCTAssertEqual((reply.object["images"] as? [String])?.count, 1)
        let jobs = try await server.call("GET", "/kiri/v1/jobs").json as? [[String: Any]] ?? []
        XCTAssertEqual(jobs.first?["interrupted"] as? Bool, true)
        XCTAssertLessThan(jobs.first?["step"] as? Int ?? 1000, 1000)
        try await server.stop()
    }
}
