import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// AutoencoderKL against diffusers' encode and decode on the same weights and inputs: the fixtures vae/ and
/// vae_tiled/ in Tests/Fixtures/models/parity, written by make_vae.py there. Errors are max |Δ| / max |reference|.
final class VAEParityTests: ModelFileTestCase {
    static let model = (UNetParityTests.parity as NSString).appendingPathComponent("vae")

    func load(_ folder: String = model) throws -> AutoencoderKL {
        let files = try ModelFiles.locate(folder)
        return try AutoencoderKL(config: try AutoencoderKLConfig(path: files.config), weights: try SafetensorsFile(path: files.weights))
    }

    /// Encodes and decodes case `name`'s inputs and compares both with diffusers'.
    func check(_ network: AutoencoderKL, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let io = try SafetensorsFile(path: (UNetParityTests.parity as NSString).appendingPathComponent("\(name)/io.safetensors"))
        XCTAssertEqual(network.parameterCount, Int(io.metadata["parameters"] ?? ""), "parameter count", file: file, line: line)
        for (output, reference) in [(try network.encode(try io.tensor("images")), "encoded"),
                                    (try network.decode(try io.tensor("latents")), "decoded")] {
            let expected = try io.tensor(reference)
            XCTAssertEqual(output.shape, expected.shape, reference, file: file, line: line)
            let error = relativeError(output.values, expected.values)
            print("\(name) \(reference) \(shapeString(output.shape)), tiling \(network.tiling): max |Δ| / max |reference| = \(error)")
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name) \(reference)", file: file, line: line)
        }
    }

    func testEncodeAndDecode() throws { try check(try load(), "vae") }

    /// On the plain loops of ReferenceBackend, whole and tiled.
    func testReferenceBackend() throws {
        try onBackend(ReferenceBackend()) {
            try check(try load(), "vae")
            let network = try load()
            network.tiling = .enabled
            try check(network, "vae_tiled")
        }
    }

    /// Tiles of 32 pixels (16 latent) on a 64×52 image and 32×26 latents, against diffusers' enable_tiling().
    func testTiledEncodeAndDecode() throws {
        let network = try load()
        network.tiling = .enabled
        XCTAssertEqual(network.tileSampleSize, 32, "diffusers' tile_sample_min_size is the config's sample_size")
        try check(network, "vae_tiled")
    }

    /// `.automatic` tiles above `automaticTilingPixels` exactly as `.enabled` does, and leaves smaller images whole.
    func testAutomaticTiling() throws {
        let network = try load()
        let io = try SafetensorsFile(path: (UNetParityTests.parity as NSString).appendingPathComponent("vae_tiled/io.safetensors"))
        let latents = try io.tensor("latents")
        let whole = try network.decode(latents).values
        network.automaticTilingPixels = 64 * 52 - 1
        let automatic = try network.decode(latents).values
        network.tiling = .enabled
        XCTAssertEqual(automatic, try network.decode(latents).values)
        XCTAssertNotEqual(automatic, whole)
    }

    /// Checkpoints from diffusers before 0.14 name the mid-block attentions' projections query, key, value and
    /// proj_attn: vae/'s weights with those names (make_vae.py checks that diffusers loads them alike) give vae/'s
    /// outputs.
    func testLegacyAttentionNames() throws {
        let source = try Data(contentsOf: URL(fileURLWithPath: (Self.model as NSString).appendingPathComponent("diffusion_pytorch_model.safetensors")))
        let length = Int(source.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = String(decoding: source[8..<8 + length], as: UTF8.self)
        for (name, legacy) in [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")] {
            header = header.replacingOccurrences(of: "attentions.0.\(name).", with: "attentions.0.\(legacy).")
        }
        XCTAssertTrue(header.contains("encoder.mid_block.attentions.0.proj_attn.weight"))
        let target = (folder as NSString).appendingPathComponent("vae_legacy")
        try write(safetensors(header) + Array(source[(8 + length)...]), "vae_legacy/diffusion_pytorch_model.safetensors")
        try FileManager.default.copyItem(atPath: (Self.model as NSString).appendingPathComponent("config.json"),
                                         toPath: (target as NSString).appendingPathComponent("config.json"))
        try check(try load(target), "vae")
    }

    func testSidesMustBeMultiplesOfTheDownscaleFactor() throws {
        let network = try load()
        XCTAssertThrowsError(try network.encode(try Tensor.zeros([1, 3, 32, 33]))) { error in
            XCTAssertEqual(error as? TensorError, TensorError(argument: 1,
                "images' height and width must be multiples of 2 (the VAE's downscale factor), got [1, 3, 32, 33]"))
        }
        XCTAssertThrowsError(try network.decode(try Tensor.zeros([1, 3, 16, 16]))) { error in
            XCTAssertEqual((error as? TensorError)?.message, "expected latents [batch, 4, height, width], got [1, 3, 16, 16]")
        }
    }

    /// A config whose latent_channels disagree with the weights fails at the first tensor that shows it, naming it
    /// and both shapes.
    func testWrongShapeNamesTheKey() throws {
        let config = try AutoencoderKLConfig(path: try editedConfig { $0["latent_channels"] = 2 })
        let weights = (Self.model as NSString).appendingPathComponent("diffusion_pytorch_model.safetensors")
        assertModelFileError(weights, ["tensor 'encoder.conv_out.weight' has shape [8, 16, 3, 3] but the model needs [4, 16, 3, 3]"]) {
            try AutoencoderKL(config: config, weights: try SafetensorsFile(path: weights))
        }
    }

    func testConfigRefusesOtherBlocksAndLatentStatistics() throws {
        for (edit, message) in [
            ({ $0["down_block_types"] = ["DownEncoderBlock2D", "DownBlock2D"] } as (inout [String: Any]) -> Void,
             "field 'down_block_types[1]' has unknown block type 'DownBlock2D' (Kiri supports DownEncoderBlock2D)"),
            ({ $0["up_block_types"] = ["UpDecoderBlock2D"] }, "field 'up_block_types' has 1 blocks but 'block_out_channels' has 2"),
            ({ $0["latents_mean"] = [0.1, 0.2, 0.3, 0.4] }, "field 'latents_mean' is an array, which Kiri does not support (it needs null)"),
            ({ $0["norm_num_groups"] = 3 }, "field 'norm_num_groups' (3) does not divide block_out_channels[0] (8)"),
            ({ $0["layers_per_block"] = 1 << 40 }, "field 'layers_per_block' is 1099511627776, above the maximum of 64"),
            ({ $0["_class_name"] = "UNet2DModel" }, "field '_class_name' has unknown model class 'UNet2DModel' (Kiri supports AutoencoderKL)"),
        ] {
            let path = try editedConfig(edit)
            assertModelFileError(path, [message]) { try AutoencoderKLConfig(path: path) }
        }
        let config = try AutoencoderKLConfig(path: try editedConfig {
            $0["scaling_factor"] = nil
            $0["shift_factor"] = nil
            $0["use_quant_conv"] = nil
            $0["mid_block_add_attention"] = nil
        })
        XCTAssertEqual(config.scalingFactor, 0.18215)
        XCTAssertNil(config.shiftFactor)
        XCTAssertTrue(config.useQuantConv && config.midBlockAddAttention)
        XCTAssertEqual(config.downscaleFactor, 2)
    }

    /// The network's size is checked against the cap before loading; a pass whose activations alone pass the cap is
    /// refused before any work, naming the input's shape.
    func testMemoryCap() throws {
        let files = try ModelFiles.locate(Self.model)
        let config = try AutoencoderKLConfig(path: files.config), weights = try SafetensorsFile(path: files.weights)
        let short = MemoryBudget(limit: loadingBytes(weights) - 1)
        assertModelFileError(files.weights, ["loading the network takes", "memory cap"]) {
            try MemoryBudget.$current.withValue(short) { try AutoencoderKL(config: config, weights: weights) }
        }
        XCTAssertEqual(short.peak, 0, "allocated before refusing")

        let network = try AutoencoderKL(config: config, weights: weights)
        network.tiling = .disabled
        let latents = try Tensor.zeros([1, 4, 256, 256])
        let budget = MemoryBudget(limit: 8 << 20)
        XCTAssertThrowsError(try MemoryBudget.$current.withValue(budget) { try network.decode(latents) }) { error in
            let message = (error as? TensorError)?.message ?? "\(error)"
            XCTAssertTrue(message.hasPrefix("input of shape [1, 4, 256, 256] needs at least 36 MiB for the network's activations"), message)
        }
        XCTAssertEqual(budget.peak, 0)
    }

    /// With tiling, a pass's memory beyond its input and output grows with the tile and the image's width (one row of
    /// tiles is held for blending), not with its area.
    func testTiledMemoryIsBoundedByTheTile() throws {
        let tiled = try load(), untiled = try load()
        tiled.tiling = .enabled
        tiled.tileSampleSize = 64
        untiled.tiling = .disabled
        /// Peak bytes of a decode beyond its input and output, from a freshly emptied pool.
        func working(_ network: AutoencoderKL, _ latents: Tensor) throws -> Int {
            network.releaseBuffers()
            let budget = MemoryBudget(limit: 1 << 34)
            let image = try MemoryBudget.$current.withValue(budget) { try network.decode(latents) }
            return budget.peak - (image.count + latents.count) * MemoryLayout<Float>.stride
        }
        var peaks: [Int] = []
        for side in [128, 256, 512] {
            let latents = try Tensor.zeros([1, 4, side / 2, side / 2])
            peaks.append(try working(tiled, latents))
            // Untiled, the mid-block attention over all (side / 2)² latent pixels takes a minute at 512.
            let whole = side < 512 ? ", \(try working(untiled, latents)) untiled" : ""
            print("decode to \(side)×\(side), bytes beyond input and output: \(peaks.last!) in tiles of 64\(whole)")
        }
        XCTAssertLessThan(peaks[2], 2 * peaks[0])
    }

    /// A stopped run ends within a block (or a piece of a kernel) of the stop, with the cancellation's error.
    func testDecodeStopsWithTheRun() throws {
        let network = try load()
        network.tiling = .disabled
        let latents = try Tensor.randn([1, 4, 128, 128], seed: 1)
        let cancellation = Cancellation(timeout: 0.2)
        cancellation.start()
        let start = DispatchTime.now().uptimeNanoseconds
        XCTAssertThrowsError(try Cancellation.$current.withValue(cancellation) { try network.decode(latents) }) { error in
            XCTAssertEqual(error as? TensorError, cancellation.error)
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print("a decode with a 0.2 s limit stopped after \(elapsed) s")
        XCTAssertLessThan(elapsed, 1.2)
    }

    /// A copy of vae/config.json in the temporary folder, edited by `edit`; returns its path.
    func editedConfig(_ edit: (inout [String: Any]) -> Void) throws -> String {
        let source = URL(fileURLWithPath: (Self.model as NSString).appendingPathComponent("config.json"))
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: source)) as! [String: Any]
        edit(&json)
        return try write(Array(try JSONSerialization.data(withJSONObject: json)), "config.json")
    }
}
