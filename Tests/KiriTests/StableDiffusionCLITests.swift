import Foundation
import Kiri
import KiriImage
import KiriModels
import KiriTensor
import XCTest

/// Stable Diffusion as a user runs it, on the tiny random pipeline of Tests/Fixtures/models/pipeline: `kiri sample
/// --model`, the recipes with model=, hires fix, img2img and inpainting through the VAE, `kiri run --from`, and the
/// bad input the issue lists (a size not a multiple of 8, unbalanced brackets, a truncated file, an unknown family).
final class StableDiffusionCLITests: CLITestCase {
    static let model = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/pipeline/tiny-sd").path

    func png(_ name: String) throws -> PNGImage { try PNGImage.read(path: folder.appendingPathComponent(name).path) }

    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path) }

    func testSampleWithAModelFolderWritesAnImageThatRunFromReproduces() throws {
        let made = try kiri(["sample", "--model", Self.model, "--prompt", "a (red:1.2) fox in the snow", "--negative", "blurry",
                             "--width", "64", "--height", "48", "--steps", "3", "--cfg", "7", "--seed", "3", "-o", ".", "--name", "fox.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let image = try png("fox.png")
        XCTAssertEqual([image.width, image.height, image.channels], [64, 48, 3])
        let parameters = image.text.first { $0.key == "parameters" }?.value ?? ""
        XCTAssertTrue(parameters.hasPrefix("a (red:1.2) fox in the snow\nNegative prompt: blurry\nSteps: 3"), parameters)
        XCTAssertTrue(parameters.contains("Size: 64x48"), parameters)

        let again = try kiri(["run", "--from", "fox.png", "--allow", Self.model, "-o", "again"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("again/fox.png")),
                       try Data(contentsOf: folder.appendingPathComponent("fox.png")))
        let other = try kiri(["sample", "--model", Self.model, "--prompt", "a (red:1.2) fox in the snow", "--negative", "blurry",
                              "--width", "64", "--height", "48", "--steps", "3", "--cfg", "7", "--seed", "4", "-o", ".", "--name", "other.png"])
        XCTAssertEqual(other.status, 0, other.stderr)
        XCTAssertNotEqual(try png("other.png").pixels, image.pixels, "the seed changes the image")
    }

    /// `--vae` replaces the model's VAE: here one in LDM's layout (the VAE of a single-file checkpoint, whose
    /// downscale factor is 2 where the pipeline's is 8, so the latents are 32² for a 64² image and the PNG says so).
    func testAVAEFileReplacesTheModelsOwn() throws {
        let vae = URL(fileURLWithPath: Self.model).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("singlefile/sd1.safetensors").path
        let made = try kiri(["sample", "--model", Self.model, "--vae", vae, "--prompt", "a fox", "--width", "64", "--height", "64",
                             "--steps", "2", "--clip-skip", "2", "-o", ".", "--name", "vae.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let image = try png("vae.png")
        XCTAssertEqual([image.width, image.height], [64, 64])
        let parameters = image.text.first { $0.key == "parameters" }?.value ?? ""
        XCTAssertTrue(parameters.hasSuffix("Size: 64x64, Model: tiny-sd, VAE: sd1, Clip skip: 2, Version: kiri \(KiriVersion.string)"),
                      parameters)
        let plain = try kiri(["sample", "--model", Self.model, "--prompt", "a fox", "--width", "64", "--height", "64",
                              "--steps", "2", "--clip-skip", "2", "-o", ".", "--name", "plain.png"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertNotEqual(try png("plain.png").pixels, image.pixels)
        let notVAE = try kiri(["sample", "--model", Self.model, "--vae", Self.model + "/unet/diffusion_pytorch_model.safetensors",
                               "--prompt", "a fox", "-o", ".", "--name", "bad.png"])
        XCTAssertEqual(notVAE.status, 1)
        XCTAssertTrue(notVAE.stderr.contains("diffusion_pytorch_model.safetensors: not a VAE"), notVAE.stderr)
    }

    func testHiresImg2ImgAndInpaintingThroughTheVAE() throws {
        let hires = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/hires.lua",
                              "model=\(Self.model)", "prompt=a fox", "width=64", "height=64", "scale=1.5", "steps=2",
                              "denoise=0.6", "out=hires.png"])
        XCTAssertEqual(hires.status, 0, hires.stderr)
        XCTAssertEqual([try png("hires.png").width, try png("hires.png").height], [96, 96])
        let pixels = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/hires.lua", "model=\(Self.model)",
                               "prompt=a fox", "width=64", "height=64", "scale=2", "upscaler=lanczos", "steps=2", "out=lanczos.png"])
        XCTAssertEqual(pixels.status, 0, pixels.stderr)
        XCTAssertEqual(try png("lanczos.png").width, 128)

        let start = folder.appendingPathComponent("hires.png").path
        let mask = folder.appendingPathComponent("mask.png").path
        let right = try Tensor(shape: [1, 96, 96])
        for row in 0..<96 { for column in 48..<96 { right.data[row * 96 + column] = 1 } }
        try PNGImage(tensor: right, text: []).save(to: mask)
        let img2img = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/img2img.lua", "model=\(Self.model)",
                                "init=\(start)", "prompt=a fox", "steps=4", "strength=0.5", "out=i2i.png"])
        XCTAssertEqual(img2img.status, 0, img2img.stderr)
        XCTAssertEqual(try png("i2i.png").width, 96)
        let inpaint = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/inpaint.lua", "model=\(Self.model)",
                                "init=\(start)", "mask=\(mask)", "prompt=a fox", "steps=3", "out=inpaint.png"])
        XCTAssertEqual(inpaint.status, 0, inpaint.stderr)
        XCTAssertEqual(try png("inpaint.png").width, 96)
    }

    /// `kiri info` names every component of a pipeline folder and of a single file, with m.info's fields; the
    /// parameter count is the components' together (diffusers' counts: UNet 203,204, text encoder 96,554, VAE 67,231).
    func testInfoShowsEveryComponent() throws {
        let folder = try kiri(["info", Self.model])
        XCTAssertEqual(folder.status, 0, folder.stderr)
        for line in ["unet: UNet2DConditionModel, ", "text_encoder: CLIPTextModel, 2 layers × 32, quick_gelu, ", "tokenizer: CLIPTokenizer, ",
                     "vae: AutoencoderKL, 4 latent channels, scaling_factor 0.18215, ", "architecture: sd1", "parameters: 366989",
                     "dtype: F16", "timestep_spacing: leading", "steps_offset: 1", "schedule.beta_schedule: scaled_linear"] {
            XCTAssertTrue(folder.stdout.contains(line), "'\(line)' not in:\n\(folder.stdout)")
        }
        let single = URL(fileURLWithPath: Self.model).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("singlefile/sd2.safetensors").path
        let file = try kiri(["info", single])
        XCTAssertEqual(file.status, 0, file.stderr)
        for line in ["checkpoint: single file in the original layout", "text_encoder: CLIPTextModel (OpenCLIP ViT-H, penultimate layer)",
                     "tokenizer: CLIPTokenizer, Kiri's bundled CLIP BPE", "architecture: sd2", "prediction: v"] {
            XCTAssertTrue(file.stdout.contains(line), "'\(line)' not in:\n\(file.stdout)")
        }
    }

    /// The kernels' instruction set: `kiri --version` names it, KIRI_ISA chooses a lower one (every path gives the
    /// same image, bit for bit: widening stored weights is exact on each), and a set the CPU lacks is an error. The
    /// weights= option keeps them as q8_0, which changes the image a little and says so in no PNG field.
    func testInstructionSetsAndWeightFormats() throws {
        let version = try kiri(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertTrue(version.stdout.contains("kernels: \(KernelISA.detected) (CPU: \(KernelISA.detected))"), version.stdout)
        let arguments = ["sample", "--model", Self.model, "--prompt", "a fox", "--width", "64", "--height", "64", "--steps", "2"]
        var images: [String: [UInt8]] = [:]
        for isa in KernelISA.available {
            let made = try kiri(arguments + ["-o", ".", "--name", "\(isa).png"], environment: ["KIRI_ISA": isa])
            XCTAssertEqual(made.status, 0, made.stderr)
            images[isa] = try png("\(isa).png").pixels
        }
        XCTAssertEqual(Set(images.values).count, 1, "the same image from \(KernelISA.available)")
        let lacking = try kiri(["list"], environment: ["KIRI_ISA": "sse9"])
        XCTAssertEqual(lacking.status, 1)
        XCTAssertTrue(lacking.stderr.contains("KIRI_ISA=sse9: unknown instruction set 'sse9'"), lacking.stderr)

        let quantized = try kiri(arguments + ["--weights", "q8_0", "-o", ".", "--name", "q8.png"])
        XCTAssertEqual(quantized.status, 0, quantized.stderr)
        let (reference, q8) = (try png("generic.png").pixels, try png("q8.png").pixels)
        XCTAssertNotEqual(reference, q8, "q8_0 weights differ from f16 ones")
        let worst = zip(reference, q8).map { abs(Int($0) - Int($1)) }.max() ?? 255
        print("q8_0 weights against f16: largest pixel difference \(worst)/255")
        XCTAssertLessThanOrEqual(worst, 32)
        let bad = try kiri(arguments + ["--weights", "f8", "-o", ".", "--name", "bad.png"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("weights must be one of f32, f16, bf16, q8_0, got 'f8'"), bad.stderr)
        XCTAssertFalse(exists("bad.png"))
    }

    /// The recipes' own string handling passes the sandbox's pattern-cost guard on what users have: a 400-byte
    /// model path and LoRA paths (CI's checkout is deeper than a developer's), and a 3 KB A1111 prompt with emphasis,
    /// edits and a <lora:> tag. Patterns such as "^%s*(.-)%s*$" used to be refused on a few hundred bytes.
    func testLongPromptsAndPathsPassThePatternGuard() throws {
        let deep = folder.appendingPathComponent(String(repeating: "d", count: 200) + "/" + String(repeating: "e", count: 200))
        try FileManager.default.createDirectory(at: deep, withIntermediateDirectories: true)
        let fixtures = URL(fileURLWithPath: Self.model).deletingLastPathComponent().deletingLastPathComponent()
        try FileManager.default.createSymbolicLink(atPath: deep.path + "/tiny-sd", withDestinationPath: Self.model)
        try FileManager.default.createSymbolicLink(atPath: deep.path + "/loras", withDestinationPath: fixtures.path + "/lora")
        let prompt = String(repeating: "a (red:1.1) fox in the snow, [cat:dog:0.5], ", count: 70)
        let made = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/txt2img.lua", "model=\(deep.path)/tiny-sd",
                             "prompt=\(prompt)", "steps=2", "width=64", "height=64", "out=long.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let parameters = try png("long.png").text.first { $0.key == "parameters" }?.value ?? ""
        XCTAssertTrue(parameters.hasPrefix(prompt), parameters)
        // The LoRAs are for another model: the error naming the file shows both paths were parsed.
        try assertForeignLoRAsRefused(model: deep.path + "/tiny-sd", loras: deep.path + "/loras", prompt: prompt)
    }

    /// A LoRA for another model, by lora= (with spaces around the weight) and by the prompt's <lora:NAME:weight> in
    /// lora_dir, is refused naming the file, and nothing is written.
    func assertForeignLoRAsRefused(model: String, loras: String, prompt: String, line: UInt = #line) throws {
        let byList = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/txt2img.lua", "model=\(model)",
                               "lora=\(loras)/kohya.safetensors : 0.8", "prompt=\(prompt)", "steps=1", "out=by-list.png"])
        XCTAssertEqual(byList.status, 1, line: line)
        XCTAssertTrue(byList.stderr.contains("/kohya.safetensors: LoRA module 'lora_unet_down_blocks_0_attentions_0_proj_in'"),
                      byList.stderr, line: line)
        let byTag = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/txt2img.lua", "model=\(model)",
                              "prompt=\(prompt) <lora:peft:0.5>", "lora_dir=\(loras)", "steps=1", "out=by-tag.png"])
        XCTAssertEqual(byTag.status, 1, line: line)
        XCTAssertTrue(byTag.stderr.contains("/peft.safetensors: "), byTag.stderr, line: line)
        XCTAssertFalse(exists("by-list.png") || exists("by-tag.png"), line: line)
    }

    func testBadInputSaysWhatIsWrongAndWritesNothing() throws {
        let size = try kiri(["sample", "--model", Self.model, "--prompt", "a fox", "--width", "60", "--height", "64", "-o", ".", "--name", "a.png"])
        XCTAssertNotEqual(size.status, 0)
        XCTAssertTrue(size.stderr.contains("--width must be a multiple of 8 (0: the model's), got 60"), size.stderr)
        let brackets = try kiri(["sample", "--model", Self.model, "--prompt", "a (red fox", "--steps", "2", "-o", ".", "--name", "b.png"])
        XCTAssertEqual(brackets.status, 1)
        XCTAssertTrue(brackets.stderr.contains("prompt: column 11: '(' at column 3 is never closed"), brackets.stderr)

        let truncated = folder.appendingPathComponent("truncated.safetensors").path
        let whole = try Data(contentsOf: URL(fileURLWithPath: Self.model + "/unet/diffusion_pytorch_model.safetensors"))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: truncated))
        let cut = try kiri(["sample", "--model", truncated, "--prompt", "a fox", "-o", ".", "--name", "c.png"])
        XCTAssertEqual(cut.status, 1)
        XCTAssertTrue(cut.stderr.contains("truncated.safetensors: "), cut.stderr)

        let unknown = folder.appendingPathComponent("unknown.safetensors").path
        let header = Array(#"{"some.other.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.utf8)
        try Data(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header + [0, 0, 0, 0])
            .write(to: URL(fileURLWithPath: unknown))
        let family = try kiri(["info", unknown])
        XCTAssertEqual(family.status, 1)
        XCTAssertTrue(family.stderr.contains("unknown.safetensors: "), family.stderr)
        let loras = URL(fileURLWithPath: Self.model).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("lora").path
        try assertForeignLoRAsRefused(model: Self.model, loras: loras, prompt: "a fox")
        let untagged = try kiri(["run", "-o", ".", GenerationCLITests.scripts + "/txt2img.lua", "model=\(Self.model)",
                                 "prompt=a fox <lora:peft:0.5>", "steps=1", "out=f.png"])
        XCTAssertTrue(untagged.stderr.hasPrefix("kiri: <lora:peft> needs lora_dir=FOLDER"), untagged.stderr)
        for name in ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"] { XCTAssertFalse(exists(name), name) }
    }
}
