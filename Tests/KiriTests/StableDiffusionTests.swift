import Foundation
import KiriModels
import KiriTensor
import XCTest

/// A Stable Diffusion pipeline through the Lua API against diffusers' StableDiffusionPipeline on the same weights:
/// the tiny random pipeline of Tests/Fixtures/models/pipeline (make_pipeline.py; README there). Tokens, prompt
/// embeddings, the UNet, the VAE both ways, and whole txt2img runs (Euler, DPM++ 2M, Euler with Karras sigmas)
/// from the same initial latents to the decoded image.
extension ModelAPITests {
    static let pipeline = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/pipeline").path

    /// Runs `body` with `m` the tiny pipeline and each named fixture tensor as a Lua global of that name; returns the
    /// numbers it printed.
    func pipelineRun(_ tensors: [String], _ body: String) throws -> [Double] {
        let io = try SafetensorsFile(path: Self.pipeline + "/io.safetensors")
        let globals = try tensors.map { "local \($0) = \(literal(try io.tensor($0)))" }.joined(separator: "\n")
        let output = try run("""
            local m = kiri.models.load(\(quoted(Self.pipeline + "/tiny-sd")))
            local function relative(a, b) return (a - b):abs():max() / b:abs():max() end
            \(globals)
            \(body)
            """, roots: [Self.pipeline])
        return printedNumbers(output)
    }

    func testPipelineTokensAndPromptEmbeddings() throws {
        let numbers = try pipelineRun(["prompt_ids", "negative_ids", "prompt_embeds", "negative_embeds"], """
            local function same_ids(ids, reference)
                local expected = reference:reshape({77}):totable()
                for i, id in ipairs(ids) do if expected[i] ~= id then return 0 end end
                return expected[#ids] == ids[#ids] and 1 or 0
            end
            print(m.info.architecture == "sd1" and 1 or 0)
            print(same_ids(m:tokenize("a red fox in the snow"), prompt_ids), same_ids(m:tokenize("blurry"), negative_ids))
            print(relative(m:encode("a red fox in the snow").context, prompt_embeds))
            print(relative(m:encode("blurry").context, negative_embeds))
            """)
        XCTAssertEqual(numbers.count, 5)
        XCTAssertEqual(Array(numbers.prefix(3)), [1, 1, 1], "architecture and token ids")
        print("prompt embeddings: max relative error \(numbers[3]), \(numbers[4])")
        XCTAssertLessThanOrEqual(numbers[3], 1e-4)
        XCTAssertLessThanOrEqual(numbers[4], 1e-4)
    }

    func testPipelineUNetAndVAE() throws {
        let numbers = try pipelineRun(["unet_x", "unet_out", "prompt_embeds", "decode_latents", "decode_image",
                                       "encode_image", "encode_latents"], """
            print(relative(m:forward(unet_x, 500, {context = prompt_embeds}), unet_out))
            print(relative(m:decode(decode_latents), decode_image))
            print(relative(m:encode_image(encode_image), encode_latents))
            """)
        XCTAssertEqual(numbers.count, 3)
        print("UNet \(numbers[0]), VAE decode \(numbers[1]), VAE encode \(numbers[2]) (max relative errors)")
        for error in numbers { XCTAssertLessThanOrEqual(error, 1e-4) }
    }

    /// diffusers' Euler starts from latents × init_noise_sigma (σ_max with "linspace" spacing); its DPM-Solver++
    /// from the latents themselves in its variance-preserving x, which is k-diffusion's x / √(σ² + 1).
    func testPipelineEndToEndMatchesDiffusers() throws {
        for (name, sampler, start) in [("euler", "euler", "sigmas[1]"), ("euler_karras", "euler", "sigmas[1]"),
                                       ("dpmpp_2m", "dpmpp_2m", "math.sqrt(sigmas[1]^2 + 1)")] {
            let numbers = try pipelineRun(["latents", "prompt_embeds", "negative_embeds", "\(name)_sigmas",
                                           "\(name)_latents", "\(name)_image"], """
                local sigmas = \(name)_sigmas
                local denoiser = m:denoiser()
                local cond, uncond = m:encode("a red fox in the snow"), m:encode("blurry")
                local function guided(x, sigma)
                    local u = denoiser(x, sigma, uncond)
                    return u + (denoiser(x, sigma, cond) - u) * 7.5
                end
                local x = kiri.samplers.\(sampler)(guided, latents * \(start), sigmas, {})
                print(relative(x, \(name)_latents))
                print(relative(m:decode(x), \(name)_image))
                """)
            XCTAssertEqual(numbers.count, 2, name)
            print("\(name): final latents \(numbers[0]), decoded image \(numbers[1]) (max relative errors)")
            XCTAssertLessThanOrEqual(numbers[1], 1e-3, name)
        }
    }

    /// Kiri's schedules give diffusers' sigmas for this model (its scheduler config, "linspace" as diffusers'
    /// from_config gives the Euler and DPM schedulers here; see the fixture's README).
    func testPipelineSchedulesMatchDiffusers() throws {
        let numbers = try pipelineRun(["euler_sigmas", "euler_karras_sigmas"], """
            local schedule = {n = 6, spacing = "linspace"}
            for key, value in pairs(m.info.schedule) do schedule[key] = value end
            print(relative(kiri.schedules.discrete(schedule), euler_sigmas))
            local sigmas = m:denoiser().sigmas
            print(relative(kiri.schedules.karras{n = 6, sigma_min = sigmas[1], sigma_max = sigmas[#sigmas]}, euler_karras_sigmas))
            """)
        XCTAssertEqual(numbers.count, 2)
        print("sigmas: discrete \(numbers[0]), karras \(numbers[1]) (max relative errors)")
        for error in numbers { XCTAssertLessThanOrEqual(error, 1e-5) }
    }
}

extension ModelAPITests {
    /// m:hash() is A1111's short hash: the first 10 hex digits of the file's SHA-256, as `sha256sum` prints it
    /// (over 1 MB here, so the whole-block path runs); a folder has none.
    func testModelHashIsTheFilesShortSHA256() throws {
        let file = URL(fileURLWithPath: Self.pipeline).deletingLastPathComponent().appendingPathComponent("singlefile/sd1.safetensors").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        process.arguments = [file]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let expected = String(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).prefix(10))
        process.waitUntilExit()
        let output = try run("""
            print(kiri.models.load(\(quoted(file))):hash(), kiri.models.load(\(quoted(Self.pipeline + "/tiny-sd"))):hash())
            """, roots: [URL(fileURLWithPath: file).deletingLastPathComponent().path, Self.pipeline])
        XCTAssertEqual(output, "\(expected)\tnil\n")
    }
}

extension ModelAPITests {
    /// m:apply_lora on a single-file checkpoint against diffusers' fuse_lora (Tests/Fixtures/models/lora): a kohya
    /// LoRA at 0.8, then a PEFT one at 0.5 on top; and a LoRA for another model is refused, changing nothing. The
    /// model keeps float32 weights (`weights = "f32"`), as the fixture's diffusers pipeline does; kept as the file's
    /// float16, the merged weights round to float16 (as in ComfyUI and A1111), which the last check bounds.
    func testApplyLoRAMatchesDiffusers() throws {
        let fixtures = URL(fileURLWithPath: Self.pipeline).deletingLastPathComponent()
        let lora = fixtures.appendingPathComponent("lora").path, checkpoint = fixtures.appendingPathComponent("singlefile/sd1.safetensors").path
        let io = try SafetensorsFile(path: lora + "/io.safetensors")
        let output = try run("""
            local m = kiri.models.load(\(quoted(checkpoint)), {weights = "f32"})
            local x, t, c = \(literal(try io.tensor("x"))), \(literal(try io.tensor("timesteps"))), \(literal(try io.tensor("encoder_hidden_states")))
            local function relative(a, b) return (a - b):abs():max() / b:abs():max() end
            local base = m:forward(x, t, {context = c})
            print(relative(base, \(literal(try io.tensor("base.unet_output")))))
            m:apply_lora(\(quoted(lora + "/kohya.safetensors")), 0.8)
            print(relative(m:forward(x, t, {context = c}), \(literal(try io.tensor("kohya.unet_output")))))
            m:apply_lora(\(quoted(lora + "/peft.safetensors")), 0.5)
            local both = m:forward(x, t, {context = c})
            print(relative(both, \(literal(try io.tensor("both.unet_output")))))
            local ok, message = pcall(m.apply_lora, m, \(quoted(Self.pipeline + "/tiny-sd/unet/diffusion_pytorch_model.safetensors")), 1)
            print(ok and 1 or 0, (m:forward(x, t, {context = c}) - both):abs():max())
            print(message)
            local f16 = kiri.models.load(\(quoted(checkpoint)))
            f16:apply_lora(\(quoted(lora + "/kohya.safetensors")), 0.8)
            f16:apply_lora(\(quoted(lora + "/peft.safetensors")), 0.5)
            print(relative(f16:forward(x, t, {context = c}), \(literal(try io.tensor("both.unet_output")))))
            """, roots: [lora, fixtures.appendingPathComponent("singlefile").path, Self.pipeline])
        let lines = output.split(separator: "\n").map(String.init)
        let numbers = printedNumbers(lines.prefix(4).joined(separator: "\n"))
        XCTAssertEqual(numbers.count, 5, output)
        print("LoRA: base \(numbers[0]), kohya 0.8 \(numbers[1]), kohya 0.8 + PEFT 0.5 \(numbers[2]) (max relative errors)")
        for error in numbers.prefix(3) { XCTAssertLessThanOrEqual(error, 1e-4) }
        XCTAssertEqual(Array(numbers.suffix(2)), [0, 0], "a refused LoRA changes nothing")
        XCTAssertTrue(lines[4].contains("diffusion_pytorch_model.safetensors"), output)
        let rounded = printedNumbers(lines.last ?? "")
        print("LoRA merged into float16 weights: \(rounded) (max relative error)")
        XCTAssertEqual(rounded.count, 1, output)
        XCTAssertLessThanOrEqual(rounded.first ?? 1, 1e-3, "float16 rounding of the merged weights")
    }
}

extension ModelAPITests {
    /// Tokenizing and parsing do not check the run's stop, so a prompt is bounded (security case 38).
    func testPromptsAreBounded() throws {
        let message = failure("""
            local m = kiri.models.load(\(quoted(Self.pipeline + "/tiny-sd")))
            m:encode(string.rep("fox ", 20000))
            """, roots: [Self.pipeline])
        XCTAssertTrue(message?.contains("bad argument #1 to 'encode' (a prompt of 80000 bytes is longer than the 65536 Kiri encodes)") ?? false,
                      message ?? "encoded")
    }
}
