import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// LoRA files against diffusers' load_lora_weights + fuse_lora on the tiny SD 1.x pipeline
/// (Tests/Fixtures/models/lora, made by make_lora.py): a kohya-named LoRA and a PEFT one as diffusers saves it,
/// their merged weights, the UNet's output and the text encoder's hidden states; other key layouts against those;
/// and the errors a wrong file gives.
final class LoRATests: ModelFileTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models").path
    static let pipeline = "\(fixtures)/singlefile/sd1/diffusers"

    func lora(_ name: String) -> String { "\(Self.fixtures)/lora/\(name).safetensors" }

    var io: SafetensorsFile!
    var unet: SafetensorsFile!
    var textEncoder: SafetensorsFile!

    override func setUpWithError() throws {
        try super.setUpWithError()
        io = try SafetensorsFile(path: lora("io"))
        unet = try SafetensorsFile(path: "\(Self.pipeline)/unet/diffusion_pytorch_model.safetensors")
        textEncoder = try SafetensorsFile(path: "\(Self.pipeline)/text_encoder/model.safetensors")
    }

    /// The patches of `loras` (file, scale) together.
    func patches(_ loras: [(String, Float)], textEncoder: (any TensorSource)? = nil) throws -> LoRAPatches {
        var patches = LoRAPatches()
        for (path, scale) in loras {
            patches.add(try LoRAFile(path: path).patches(unet: unet, textEncoder: textEncoder ?? self.textEncoder, scale: scale))
        }
        return patches
    }

    /// The networks with the LoRAs merged, their weights kept in float32 as the fixture's diffusers pipeline keeps
    /// them (an f16 file's weights would round the merged values to float16, as ComfyUI and A1111 do).
    func networks(_ patches: LoRAPatches, textEncoder base: any TensorSource) throws -> (UNet, CLIPTextModel) {
        let unet = try UNet(config: UNetConfig(path: "\(Self.pipeline)/unet/config.json"),
                            weights: ReformattedSource(LoRAMergedSource(base: unet, patches: patches.unet), format: .f32))
        let text = try CLIPTextModel(config: CLIPTextConfig(path: "\(Self.pipeline)/text_encoder/config.json"),
                                     weights: ReformattedSource(LoRAMergedSource(base: base, patches: patches.textEncoder), format: .f32))
        return (unet, text)
    }

    /// The UNet's output and the text encoder's last hidden state against case `name` of the fixture.
    func checkOutputs(_ name: String, _ patches: LoRAPatches, textEncoder: (any TensorSource)? = nil,
                      file: StaticString = #filePath, line: UInt = #line) throws {
        let (unet, text) = try networks(patches, textEncoder: textEncoder ?? self.textEncoder)
        let output = try unet.forward(try io.tensor("x"), timesteps: try io.tensor("timesteps").values,
                                      context: try io.tensor("encoder_hidden_states"))
        let ids = try io.tensor("input_ids").values.map { Int($0) }
        let hidden = try text.forward([ids]).hiddenStates
        for (actual, key) in [(output, "\(name).unet_output"), (hidden, "\(name).text_hidden_state")] {
            let expected = try io.tensor(key)
            XCTAssertEqual(actual.shape, expected.shape, key, file: file, line: line)
            let error = relativeError(actual.values, expected.values)
            print("\(key) \(shapeString(actual.shape)): max |Δ| / max |reference| = \(error)")
            XCTAssertLessThanOrEqual(error, 1e-4, key, file: file, line: line)
        }
    }

    /// Each fused weight the fixture holds for case `name` against the merged source's.
    func checkWeights(_ name: String, _ patches: LoRAPatches, file: StaticString = #filePath, line: UInt = #line) throws {
        var checked = 0
        for key in io.names where key.hasPrefix(name + ".unet.") || key.hasPrefix(name + ".text_encoder.") {
            let isUNet = key.hasPrefix(name + ".unet.")
            let weight = String(key.dropFirst(name.count + (isUNet ? 6 : 14)))
            let source = isUNet ? LoRAMergedSource(base: unet, patches: patches.unet)
                                : LoRAMergedSource(base: textEncoder, patches: patches.textEncoder)
            let sourceKey = isUNet ? weight : "text_model." + weight
            let expected = try io.tensor(key)
            let actual = try source.requireTensor(sourceKey, shape: expected.shape)
            let error = relativeError(actual.values, expected.values)
            print("\(key) \(shapeString(expected.shape)): max |Δ| / max |reference| = \(error)")
            XCTAssertLessThanOrEqual(error, 1e-5, key, file: file, line: line)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 4, "fused weights in the fixture", file: file, line: line)
    }

    // MARK: Against diffusers

    /// kohya's names: 11 UNet modules (linear and 1×1-conv attention projections, ff, a 3×3 resnet conv) and 5 of
    /// the text encoder, F16 weights, F32 alphas.
    func testKohyaMatchesDiffusers() throws {
        let patches = try patches([(lora("kohya"), 0.8)])
        XCTAssertEqual(patches.unet.count, 11)
        XCTAssertEqual(patches.textEncoder.count, 5)
        try checkWeights("kohya", patches)
        try checkOutputs("kohya", patches)
    }

    /// PEFT's names as diffusers saves them, per-module alphas from the header's alpha_pattern, the text encoder's
    /// modules without `text_model.` (transformers 5).
    func testPEFTMatchesDiffusers() throws {
        let patches = try patches([(lora("peft"), 0.8)])
        XCTAssertEqual(patches.unet.count, 5)
        XCTAssertEqual(patches.textEncoder.count, 3)
        try checkWeights("peft", patches)
        try checkOutputs("peft", patches)
    }

    /// Both files at once (diffusers' set_adapters with weights 0.8 and 0.5): the updates add, three weights of
    /// them on the same tensors.
    func testTwoLoRAsAddUp() throws {
        let both = try patches([(lora("kohya"), 0.8), (lora("peft"), 0.5)])
        let (kohya, peft) = (try patches([(lora("kohya"), 0.8)]), try patches([(lora("peft"), 0.5)]))
        XCTAssertEqual(both.unet.values.filter { $0.count == 2 }.count, 2)
        XCTAssertEqual(both.textEncoder.values.filter { $0.count == 2 }.count, 1)
        var worst: Float = 0
        for key in Set(both.unet.keys) {
            let base = try unet.tensor(key).values
            let sum = zip(zip(try LoRAMergedSource(base: unet, patches: kohya.unet).tensor(key).values,
                              try LoRAMergedSource(base: unet, patches: peft.unet).tensor(key).values), base)
                .map { $0.0 + $0.1 - $1 }
            let merged = try LoRAMergedSource(base: unet, patches: both.unet).tensor(key).values
            worst = max(worst, relativeError(merged, sum))
        }
        print("two LoRAs against the sum of each alone: max relative difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-6)
        try checkOutputs("both", both)
    }

    /// At scale 0 no update is made: every weight is the base's bit for bit, and so are the outputs.
    func testScaleZeroIsTheBase() throws {
        let patches = try patches([(lora("kohya"), 0), (lora("peft"), 0)])
        XCTAssertTrue(patches.isEmpty)
        let merged = LoRAMergedSource(base: unet, patches: patches.unet)
        for name in unet.names {
            XCTAssertEqual(try merged.tensor(name).values.map(\.bitPattern), try unet.tensor(name).values.map(\.bitPattern), name)
        }
        try checkOutputs("base", patches)
    }

    /// The down and up tensors are charged to the run's memory cap like any tensor: the kohya file's 4 431 elements
    /// as float32 fit in 32 KiB and not in 8.
    func testMemoryCap() throws {
        let enough = MemoryBudget(limit: 32 << 10)
        let patches = try MemoryBudget.$current.withValue(enough) { try LoRAFile(path: lora("kohya")).patches(unet: unet, textEncoder: textEncoder, scale: 1) }
        let elements = (Array(patches.unet.values) + Array(patches.textEncoder.values)).flatMap { $0 }.reduce(0) { $0 + $1.up.count + $1.down.count }
        withExtendedLifetime(patches) { XCTAssertEqual(enough.used, elements * 4) }
        let short = MemoryBudget(limit: 8 << 10)
        assertModelFileError(lora("kohya"), ["tensor 'lora_", "not enough memory"]) {
            try MemoryBudget.$current.withValue(short) { try LoRAFile(path: lora("kohya")).patches(unet: unet, textEncoder: textEncoder, scale: 1) }
        }
    }

    // MARK: Other layouts of the same modules

    /// A text encoder whose keys lack `text_model.` takes both files' updates under its own keys.
    func testTextEncoderWithoutTextModelLevel() throws {
        let flat = TensorMap(textEncoder, removingPrefix: "text_model.")
        let patches = try patches([(lora("kohya"), 0.8), (lora("peft"), 0.5)], textEncoder: flat)
        XCTAssertNotNil(patches.textEncoder["encoder.layers.0.self_attn.q_proj.weight"])
        XCTAssertTrue(patches.textEncoder.keys.allSatisfy { !$0.hasPrefix("text_model.") })
        try checkOutputs("both", patches, textEncoder: flat)
    }

    /// A single-file checkpoint's UNet, keys mapped from the original layout, takes the same updates.
    func testSingleFileCheckpoint() throws {
        let checkpoint = try SingleFileCheckpoint(path: "\(Self.fixtures)/singlefile/sd1.safetensors")
        let lora = try LoRAFile(path: lora("kohya"))
        let patches = try lora.patches(unet: checkpoint.unet, textEncoder: checkpoint.textEncoder, scale: 0.8)
        XCTAssertEqual(Set(patches.unet.keys), Set(try self.patches([(self.lora("kohya"), 0.8)]).unet.keys))
        let key = "down_blocks.1.resnets.0.conv1.weight"
        let expected = try io.tensor("kohya.unet.\(key)")
        let merged = try LoRAMergedSource(base: checkpoint.unet, patches: patches.unet).requireTensor(key, shape: expected.shape)
        XCTAssertLessThanOrEqual(relativeError(merged.values, expected.values), 1e-5)
    }

    /// kohya names in the original UNet layout (`lora_unet_input_blocks_1_1_...`), as written by trainers that work on
    /// the LDM UNet: the same modules, through the single-file key map (levels of one resnet: input block 1 is level
    /// 0's layer, 2 its downsampler, 3 level 1's layer; output blocks 0–1 are up block 0, 2–3 up block 1).
    func testKohyaOriginalLayoutNames() throws {
        let renames = [("lora_unet_down_blocks_0_attentions_0_", "lora_unet_input_blocks_1_1_"),
                       ("lora_unet_mid_block_attentions_0_", "lora_unet_middle_block_1_"),
                       ("lora_unet_up_blocks_1_attentions_1_", "lora_unet_output_blocks_3_1_"),
                       ("lora_unet_down_blocks_1_resnets_0_conv1", "lora_unet_input_blocks_3_0_in_layers_2")]
        var renamed = 0
        let path = try rewrite(lora("kohya")) { name, tensor in
            guard let (diffusers, original) = renames.first(where: { name.hasPrefix($0.0) }) else { return [(name, tensor)] }
            renamed += 1
            return [(original + name.dropFirst(diffusers.count), tensor)]
        }
        XCTAssertEqual(renamed, 33)
        try assertSamePatches(try patches([(path, 0.8)]), try patches([(lora("kohya"), 0.8)]))

        let file = try SafetensorsFile(path: lora("kohya"))
        let twice = try write(try file.names.map { ($0, try file.tensor($0)) }
                              + [("lora_unet_input_blocks_1_1_proj_in.lora_down.weight", try file.tensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight")),
                                 ("lora_unet_input_blocks_1_1_proj_in.lora_up.weight", try file.tensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"))])
        assertRefused(twice, ["LoRA modules 'lora_unet_down_blocks_0_attentions_0_proj_in' and 'lora_unet_input_blocks_1_1_proj_in' both update 'down_blocks.0.attentions.0.proj_in.weight'"])
    }

    /// diffusers' older names: `attn1.processor.to_q_lora.down.weight`, `proj_in.lora.down.weight`,
    /// `self_attn.to_q_lora.down.weight`, `mlp.fc2.lora_linear_layer.down.weight`; and a file of UNet keys alone
    /// without `unet.` (save_attn_procs).
    func testOlderDiffusersNames() throws {
        func older(_ name: String) -> String {
            let role = name.hasSuffix(".lora_A.weight") ? "down" : "up"
            let module = String(name.dropLast(".lora_A.weight".count))
            for (projection, processor) in [(".to_q", ".processor.to_q_lora"), (".to_out.0", ".processor.to_out_lora"),
                                            (".self_attn.q_proj", ".self_attn.to_q_lora"), (".self_attn.v_proj", ".self_attn.to_v_lora")]
            where module.hasSuffix(projection) {
                return module.dropLast(projection.count) + processor + ".\(role).weight"
            }
            return module + (module.hasPrefix("text_encoder.") ? ".lora_linear_layer" : ".lora") + ".\(role).weight"
        }
        let path = try rewrite(lora("peft")) { name, tensor in [(older(name), tensor)] }
        XCTAssertTrue(try SafetensorsFile(path: path).names.contains("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"))
        try assertSamePatches(try patches([(path, 0.8)]), try patches([(lora("peft"), 0.8)]))

        let unetOnly = try rewrite(lora("peft")) { name, tensor in
            name.hasPrefix("unet.") ? [(String(name.dropFirst("unet.".count)), tensor)] : []
        }
        let patches = try LoRAFile(path: unetOnly).patches(unet: unet, textEncoder: textEncoder, scale: 0.8)
        XCTAssertEqual(patches.unet.count, 5)
        XCTAssertTrue(patches.textEncoder.isEmpty)
    }

    func assertSamePatches(_ actual: LoRAPatches, _ expected: LoRAPatches, file: StaticString = #filePath, line: UInt = #line) throws {
        for (actual, expected) in [(actual.unet, expected.unet), (actual.textEncoder, expected.textEncoder)] {
            XCTAssertEqual(Set(actual.keys), Set(expected.keys), file: file, line: line)
            for (key, patches) in expected {
                XCTAssertEqual(actual[key]?.map(\.factor), patches.map(\.factor), key, file: file, line: line)
                XCTAssertEqual(actual[key]?.map(\.up.values), patches.map(\.up.values), key, file: file, line: line)
                XCTAssertEqual(actual[key]?.map(\.down.values), patches.map(\.down.values), key, file: file, line: line)
            }
        }
    }

    // MARK: Errors

    let query = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"

    /// The fixture's kohya file with `transform` applied to each tensor (nil drops it) and `extra` tensors added.
    func kohya(_ transform: (String, Tensor) throws -> Tensor? = { $1 }, extra: [(String, Tensor)] = []) throws -> String {
        let file = try SafetensorsFile(path: lora("kohya"))
        var tensors: [(String, Tensor)] = []
        for name in file.names {
            if let tensor = try transform(name, try file.tensor(name)) { tensors.append((name, tensor)) }
        }
        return try write(tensors + extra, metadata: file.metadata)
    }

    /// The fixture's PEFT file with its adapter config edited by `edit`.
    func peft(_ edit: (String) -> String) throws -> String {
        let file = try SafetensorsFile(path: lora("peft"))
        let config = file.metadata[PEFTAdapterConfig.metadataKey]!
        return try write(try file.names.map { ($0, try file.tensor($0)) }, metadata: [PEFTAdapterConfig.metadataKey: edit(config)])
    }

    func assertRefused(_ path: String, _ fragments: [String], textEncoder: Bool = true, file: StaticString = #filePath, line: UInt = #line) {
        let message = assertModelFileError(path, fragments, file: file, line: line) {
            try LoRAFile(path: path).patches(unet: unet, textEncoder: textEncoder ? self.textEncoder : nil, scale: 1)
        }
        print(message)
    }

    func testLoRAForAnotherArchitecture() throws {
        let path = try write([("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", try Tensor(shape: [4, 1280], values: .init(repeating: 0, count: 5120))),
                              ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", try Tensor(shape: [1280, 4], values: .init(repeating: 0, count: 5120))),
                              ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight", try Tensor(shape: [4, 640], values: .init(repeating: 0, count: 2560))),
                              ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_up.weight", try Tensor(shape: [640, 4], values: .init(repeating: 0, count: 2560)))])
        assertRefused(path, ["LoRA for another architecture? none of its 2 modules match this model's UNet or text encoder, e.g. 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj'"])
    }

    func testModulesTheModelLacks() throws {
        let missing = "lora_unet_down_blocks_0_attentions_1_proj_in"
        let path = try kohya(extra: [("\(missing).lora_down.weight", try Tensor(shape: [2, 32], values: .init(repeating: 0, count: 64))),
                                     ("\(missing).lora_up.weight", try Tensor(shape: [32, 2], values: .init(repeating: 0, count: 64)))])
        assertRefused(path, ["1 of the LoRA's 17 modules match no module of this model: '\(missing)'"])
        assertRefused(lora("kohya"), ["5 of the LoRA's 16 modules match no module of this model (this model has no text encoder): 'lora_te_text_model_encoder_layers_0_self_attn_k_proj'", "and 2 more"],
                      textEncoder: false)
    }

    func testShapeThatDoesNotFit() throws {
        let path = try kohya { name, tensor in
            name == "\(self.query).lora_down.weight" ? try Tensor(shape: [4, 16], values: Array(tensor.values.prefix(64))) : tensor
        }
        assertRefused(path, ["LoRA module '\(query)' (up [32, 4], down [4, 16]) does not fit 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight' [32, 32] of this model's UNet"])
        let rank = try kohya { name, tensor in
            name == "\(self.query).lora_up.weight" ? try Tensor(shape: [16, 8], values: tensor.values) : tensor
        }
        assertRefused(rank, ["'\(query).lora_up.weight' has shape [16, 8]", "down '\(query).lora_down.weight' [4, 32] needs an up of [out, 4]"])
    }

    func testDownWithoutUp() throws {
        let path = try kohya { name, tensor in name == "\(self.query).lora_up.weight" ? nil : tensor }
        assertRefused(path, ["LoRA module '\(query)' has '\(query).lora_down.weight' and '\(query).alpha' but no up tensor"])
    }

    func testBadAlpha() throws {
        for alpha: Float in [0, -1, .nan, .infinity] {
            let path = try kohya { name, tensor in name == "\(self.query).alpha" ? try Tensor(shape: [], values: [alpha]) : tensor }
            assertRefused(path, ["LoRA tensor '\(query).alpha' is \(alpha); an alpha must be positive and finite"])
        }
        let pair = try kohya { name, tensor in name == "\(self.query).alpha" ? try Tensor(shape: [2], values: [1, 2]) : tensor }
        assertRefused(pair, ["'\(query).alpha' has shape [2]; an alpha is one number"])
    }

    func testRankZero() throws {
        let path = try kohya { name, tensor in
            name.hasPrefix(self.query + ".lora_") ? try Tensor(shape: name.hasSuffix("down.weight") ? [0, 32] : [32, 0], values: []) : tensor
        }
        assertRefused(path, ["'\(query).lora_down.weight' has shape [0, 32]: a down needs rank r ≥ 1 rows"])
    }

    func testUnknownSuffix() throws {
        let path = try kohya(extra: [("\(query).hada_w1_a", try Tensor(shape: [4, 32], values: .init(repeating: 0, count: 128)))])
        assertRefused(path, ["key '\(query).hada_w1_a' has an unknown suffix", "LoHa"])
    }

    func testNonFiniteWeights() throws {
        let path = try kohya { name, tensor in
            name == "\(self.query).lora_up.weight" ? try Tensor(shape: tensor.shape, values: [.nan] + tensor.values.dropFirst()) : tensor
        }
        assertRefused(path, ["LoRA tensor '\(query).lora_up.weight' holds a value that is not finite"])
    }

    func testPEFTConfigs() throws {
        for (field, value, fragment) in [("unet.use_dora\": false", "unet.use_dora\": true", "'unet.use_dora' is true: DoRA adapters are not supported"),
                                         ("unet.lora_alpha\": 4", "unet.lora_alpha\": \"four\"", "'unet.lora_alpha' is a string, not a finite number")] {
            let path = try peft { $0.replacingOccurrences(of: field, with: value) }
            assertRefused(path, ["__metadata__ 'lora_adapter_metadata'", fragment])
        }
        // rsLoRA scales by alpha / √r; to_q has rank 2.
        let path = try peft { $0.replacingOccurrences(of: "\"unet.use_rslora\": false", with: "\"unet.use_rslora\": true") }
        let key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
        let (stabilized, plain) = (try patches([(path, 1)]).unet[key]![0].factor, try patches([(lora("peft"), 1)]).unet[key]![0].factor)
        XCTAssertEqual(stabilized, plain * Float(2).squareRoot(), accuracy: 1e-6)
    }

    func testPickleRefused() throws {
        let pickle = try write([0x80, 0x02], "lora.ckpt")
        assertModelFileError(pickle, ["PyTorch pickles", "lora.safetensors"]) { try LoRAFile(path: pickle) }
    }
}
