import Foundation
import KiriModels
import XCTest

/// The Lua training API (issue 15) as a script uses it: kiri.models.create and load{train = true} against a
/// diffusers checkpoint's keys and the inference network, m:backward against finite differences, a training loop,
/// m:save against kiri.models.load, optimizer and EMA state through kiri.save_tensors / load_tensors, and the errors.
final class TrainingAPITests: XCTestCase {
    /// A diffusers UNet2DModel with attention and class labels, and its scheduler (Tests/Fixtures/models/parity).
    static let parity = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/parity/unet2d_attention_class").path

    /// `tiny(channels, attention)`: a config table for a small UNet2DModel on 1×8×8 samples, for the loops.
    static let tiny = """
        local function tiny(channels, attention, extra)
            local config = {_class_name = "UNet2DModel", sample_size = 8, in_channels = 1, out_channels = 1,
                layers_per_block = 1, block_out_channels = channels or {8, 16}, norm_num_groups = 4, attention_head_dim = 8,
                down_block_types = {"DownBlock2D", attention == false and "DownBlock2D" or "AttnDownBlock2D"},
                up_block_types = {attention == false and "UpBlock2D" or "AttnUpBlock2D", "UpBlock2D"}}
            for key, value in pairs(extra or {}) do config[key] = value end
            return config
        end
        """

    var scratch: String!
    var output: String { scratch + "/out" }

    override func setUpWithError() throws { scratch = try temporaryFolder("kiri-training") }

    /// Runs `source` with PARITY (the fixture's folder), OUT (the output folder, absolute) and tiny() defined.
    func run(_ source: String) throws -> String {
        try runEngine("""
            local PARITY, OUT = \(luaString(Self.parity)), \(luaString(output))
            \(Self.tiny)
            \(source)
            """, roots: [Self.parity, scratch], outputDirectory: output)
    }

    /// Both ways of giving a config make the same network, whose parameters are the diffusers checkpoint's tensors
    /// by name and shape, initialised as torch.nn initialises them.
    func testCreateFromATableOrAConfigPathHasTheCheckpointsNamesAndShapes() throws {
        let printed = try run("""
            local file = kiri.load_tensors(PARITY .. "/unet/diffusion_pytorch_model.safetensors")
            -- The fixture's config.json as a table, its null fields left out.
            local config = {_class_name = "UNet2DModel", sample_size = 16, in_channels = 1, out_channels = 1,
                layers_per_block = 2, block_out_channels = {16, 32}, down_block_types = {"DownBlock2D", "AttnDownBlock2D"},
                up_block_types = {"AttnUpBlock2D", "UpBlock2D"}, attention_head_dim = 8, norm_num_groups = 8,
                num_class_embeds = 5, add_attention = true, act_fn = "silu", center_input_sample = false,
                downsample_padding = 1, flip_sin_to_cos = true, freq_shift = 0, mid_block_scale_factor = 1, norm_eps = 1e-5,
                resnet_time_scale_shift = "default", time_embedding_type = "positional", downsample_type = "conv",
                upsample_type = "conv", dropout = 0.0}
            local from_table = kiri.models.create(config, {seed = 7})
            local from_path = kiri.models.create(PARITY .. "/unet/config.json", {seed = 7})
            local other_seed = kiri.models.create(config, {seed = 8})
            local function shape(t) return table.concat(t:shape(), "x") end
            for _, m in ipairs({from_table, from_path}) do
                local seen, count, elements = {}, 0, 0
                for _, p in ipairs(m:parameters()) do
                    assert(file[p.name], "not in the checkpoint: " .. p.name)
                    assert(shape(p.value) == shape(file[p.name]) and shape(p.grad) == shape(file[p.name]), p.name)
                    assert(not seen[p.name], "twice: " .. p.name)
                    seen[p.name], count, elements = true, count + 1, elements + p.value:numel()
                end
                for name in pairs(file) do assert(seen[name], "not in the network: " .. name) end
                print("parameters", count, elements, m.info.parameters, m.info.architecture, tostring(m))
            end
            local a, b, c = from_table:parameters(), from_path:parameters(), other_seed:parameters()
            local same, differ = 0, 0
            for i = 1, #a do
                same = math.max(same, (a[i].value - b[i].value):abs():max())
                differ = math.max(differ, (a[i].value - c[i].value):abs():max())
            end
            print("seeds", same, differ)
            local named = {}
            for _, p in ipairs(a) do named[p.name] = p end
            -- conv_in: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in 1*3*3; GroupNorm weight 1, bias 0; Embedding N(0, 1).
            local conv, norm, norm_bias = named["conv_in.weight"].value, named["conv_norm_out.weight"].value, named["conv_norm_out.bias"].value
            print("init", conv:min(), conv:max(), norm:min(), norm:max(), norm_bias:abs():max(),
                named["class_embedding.weight"].value:std(), named["class_embedding.weight"].value:numel())
            """)
        let lines = printed.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        XCTAssertEqual(lines.count, 4, printed)
        let header = try SafetensorsFile(path: Self.parity + "/unet/diffusion_pytorch_model.safetensors")
        for line in lines.prefix(2) {
            XCTAssertEqual(line, ["parameters", "\(header.names.count)", "252865", "252865", "UNet2DModel",
                                  "Model: UNet2DModel (training), 252865 parameters"])
        }
        let seeds = printedNumbers(lines[2].dropFirst().joined(separator: " "))
        XCTAssertEqual(seeds.first, 0, "a table and the config.json it was typed from make the same network")
        XCTAssertGreaterThan(seeds.last ?? 0, 0.1, "another seed, other weights")
        let initial = printedNumbers(lines[3].dropFirst().joined(separator: " "))
        XCTAssertEqual(initial.count, 7)
        XCTAssertGreaterThanOrEqual(initial[0], -1.0 / 3)
        XCTAssertLessThanOrEqual(initial[1], 1.0 / 3)
        XCTAssertGreaterThan(initial[1] - initial[0], 0.6, "144 uniform draws span most of [-1/3, 1/3]")
        XCTAssertEqual(Array(initial[2...4]), [1, 1, 0])
        XCTAssertEqual(initial[5], 1, accuracy: 0.1, "640 standard normal draws")
    }

    /// The trainable network loaded from a checkpoint computes what the inference network computes.
    func testLoadForTrainingForwardEqualsTheInferenceForward() throws {
        let printed = try run("""
            local trainable = kiri.models.load(PARITY .. "/unet", {train = true})
            local inference = kiri.models.load(PARITY .. "/unet")
            local x = kiri.randn({3, 1, 16, 16}, 11)
            local t, extra = {3, 250.5, 999}, {class = {0, 4, 2}}
            local y, reference = trainable:forward(x, t, extra), inference:forward(x, t, extra)
            print((y - reference):abs():max(), reference:abs():max())
            for key, value in pairs(inference.info) do
                if type(value) ~= "table" then assert(trainable.info[key] == value, key) end
            end
            for key, value in pairs(inference.info.schedule) do assert(trainable.info.schedule[key] == value, key) end
            assert(table.concat(trainable.sample_shape, ",") == table.concat(inference.sample_shape, ","))
            """)
        let numbers = printedNumbers(printed)
        XCTAssertEqual(numbers.count, 2, printed)
        XCTAssertGreaterThan(numbers[1], 0.5)
        XCTAssertLessThanOrEqual(numbers[0], 1e-5 * numbers[1], "max |trainable - inference| against max |inference|")
    }

    /// A few AdamW steps on one batch lower the loss, and m:parameters() gives the tensors the network and the
    /// optimizer use: a value written from Lua changes the output, a gradient written from Lua moves the weight.
    func testATrainingLoopLowersTheLossAndTheParametersAreLive() throws {
        let printed = try run("""
            local training = require "lib.training"
            local m = kiri.models.create(tiny(), {seed = 1})
            local alphas_cumprod = training.alphas_cumprod(m.info.schedule)
            local images, noise = kiri.rand({8, 1, 8, 8}, 2) * 2 - 1, kiri.randn({8, 1, 8, 8}, 3)
            local t = kiri.timesteps.uniform(8, 4)
            local x_t = training.add_noise(images, noise, t, alphas_cumprod)
            local opt = kiri.optim.adamw(m, {lr = 3e-3, weight_decay = 0})
            local losses = {}
            for step = 1, 20 do
                local loss, grad = kiri.losses.mse(m:forward(x_t, t), noise)
                losses[step] = loss
                m:zero_grad()
                m:backward(grad)
                assert(opt:step() == step)
            end
            print("loss", losses[1], losses[20])

            local named = {}
            for _, p in ipairs(m:parameters()) do named[p.name] = p end
            local weight, bias = named["conv_out.weight"], named["conv_out.bias"]
            weight.value:fill_(0)
            bias.value:fill_(0.25)
            local y = m:forward(x_t, t)
            print("filled", y:min(), y:max())
            m:zero_grad()
            m:backward(kiri.ones_like(y))
            print("bias grad", bias.grad:item())   -- d sum(y) / d bias: one per output element
            m:zero_grad()
            print("zeroed", bias.grad:item())
            -- A fresh AdamW's first step moves a weight by lr * g / (|g| + eps): nothing for g = 0, lr for g = 1.
            local fresh = kiri.optim.adamw(m, {lr = 1e-2, weight_decay = 0})
            bias.grad:fill_(1)
            local before = named["conv_in.weight"].value:clone()
            fresh:step()
            print("stepped", bias.value:item(), (named["conv_in.weight"].value - before):abs():max())
            """)
        let lines = printed.split(separator: "\n").map { printedNumbers(String($0)) }
        XCTAssertEqual(lines.count, 5, printed)
        XCTAssertLessThan(lines[0][1], 0.5 * lines[0][0], "loss after 20 steps against the first: \(lines[0])")
        XCTAssertEqual(lines[1], [0.25, 0.25], "conv_out filled from Lua: the output is its bias")
        XCTAssertEqual(lines[2], [8 * 64])
        XCTAssertEqual(lines[3], [0])
        XCTAssertEqual(lines[4][0], 0.25 - 1e-2, accuracy: 1e-6)
        XCTAssertEqual(lines[4][1], 0, "a parameter whose gradient is 0 stays")
    }

    /// m:backward's input gradient against a central difference of sum(forward(x) * w), at the largest entry and
    /// another one.
    func testBackwardInputGradientMatchesFiniteDifferences() throws {
        let printed = try run("""
            local m = kiri.models.load(PARITY .. "/unet", {train = true})
            local x, w = kiri.randn({2, 1, 16, 16}, 21), kiri.randn({2, 1, 16, 16}, 22)
            local t, extra = {40, 700}, {class = {1, 3}}
            local function loss() return (m:forward(x, t, extra) * w):sum() end
            loss()
            local dx = m:backward(w)
            local flat, gradient = x:view(-1), dx:view(-1)
            local h = 3e-2
            for _, k in ipairs({math.tointeger(gradient:abs():argmax(1):item()), 300}) do
                local saved = flat[k]
                flat[k] = saved + h
                local up = loss()
                flat[k] = saved - h
                local down = loss()
                flat[k] = saved
                print(gradient[k], (up - down) / (2 * h), dx:abs():max())
            end
            """)
        let lines = printed.split(separator: "\n").map { printedNumbers(String($0)) }
        XCTAssertEqual(lines.count, 2, printed)
        for line in lines {
            print("backward \(line[0]), central difference \(line[1])")
            XCTAssertGreaterThan(abs(line[0]), 0.05 * line[2], "an entry whose gradient is not noise")
            XCTAssertLessThanOrEqual(abs(line[0] - line[1]), 2e-3 * line[2], "float32 central difference, h = 3e-2")
        }
    }

    /// m:gradient_checkpointing() changes how backward gets its activations, not what it computes: every gradient is
    /// the same to the bit, and it can be turned off again.
    func testGradientCheckpointingKeepsEveryGradient() throws {
        let printed = try run("""
            local x, w = kiri.randn({2, 1, 16, 16}, 21), kiri.randn({2, 1, 16, 16}, 22)
            local function gradients(...)
                local m = kiri.models.load(PARITY .. "/unet", {train = true})
                for _, enabled in ipairs({...}) do m:gradient_checkpointing(enabled) end
                m:forward(x, {40, 700}, {class = {1, 3}})
                local list = {m:backward(w)}
                for _, p in ipairs(m:parameters()) do list[#list + 1] = p.grad end
                return list
            end
            local plain, checkpointed, off = gradients(), gradients(nil), gradients(true, false)
            local differs, largest = 0, 0
            for i, g in ipairs(plain) do
                differs = math.max(differs, (g - checkpointed[i]):abs():max(), (g - off[i]):abs():max())
                largest = math.max(largest, g:abs():max())
            end
            print(#plain, differs, largest)
            local ok, message = pcall(kiri.models.create(tiny()).gradient_checkpointing, nil, true)
            print(message)
            print(select(2, pcall(function() kiri.models.create(tiny()):gradient_checkpointing(1) end)))
            """)
        let lines = printed.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, printed)
        let numbers = printedNumbers(lines[0])
        XCTAssertGreaterThan(numbers[0], 100, "x's gradient and every parameter's")
        XCTAssertEqual(numbers[1], 0, "the largest difference")
        XCTAssertGreaterThan(numbers[2], 0, "gradients that are not all zero")
        XCTAssertEqual(lines[1], "bad self for 'gradient_checkpointing' (call it as m:gradient_checkpointing(...))")
        XCTAssertTrue(lines[2].hasSuffix("bad argument #1 to 'gradient_checkpointing' (boolean or nil expected, got number)"), lines[2])
    }

    /// m:save writes diffusers' folder, which kiri.models.load reads back to the same network and schedule; a
    /// second save to that folder goes to the next free one.
    func testSaveWritesAFolderThatInferenceLoads() throws {
        let printed = try run("""
            local scheduler = {_class_name = "DDPMScheduler", prediction_type = "v_prediction", beta_schedule = "squaredcos_cap_v2"}
            local m = kiri.models.create(tiny(nil, true, {num_class_embeds = 3}), {seed = 5, scheduler = scheduler})
            local x, t, extra = kiri.randn({2, 1, 8, 8}, 1), {10, 900}, {class = {0, 2}}
            m:forward(x, t, extra)
            m:backward(kiri.randn({2, 1, 8, 8}, 2))
            kiri.optim.adamw(m):step()   -- weights that are not the seed's
            print(m:save("model"))
            print(m:save("model"))
            local plain = kiri.models.create(tiny(nil, false))
            print(plain:save("plain"))
            for _, case in ipairs({{m, "model", extra}, {plain, "plain"}}) do
                local trained, folder = case[1], OUT .. "/" .. case[2]
                for _, name in ipairs({"config.json", "scheduler_config.json"}) do assert(#kiri.read_text(folder .. "/" .. name) > 0) end
                local loaded = kiri.models.load(folder)
                local y, reference = loaded:forward(x, t, case[3]), trained:forward(x, t, case[3])
                print(case[2], loaded.info.prediction, loaded.info.schedule.beta_schedule, loaded.info.parameters == trained.info.parameters,
                    (y - reference):abs():max() / reference:abs():max())
            end
            local file = kiri.load_tensors(OUT .. "/model/diffusion_pytorch_model.safetensors")
            for _, p in ipairs(m:parameters()) do assert((file[p.name] - p.value):abs():max() == 0, p.name) end
            """)
        let lines = printed.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        XCTAssertEqual(lines.count, 5, printed)
        XCTAssertEqual(lines.prefix(3).map { $0.first ?? "" }, ["model/diffusion_pytorch_model.safetensors",
                                                               "model-2/diffusion_pytorch_model.safetensors",
                                                               "plain/diffusion_pytorch_model.safetensors"])
        XCTAssertEqual(lines[3].prefix(4), ["model", "v", "squaredcos_cap_v2", "true"])
        XCTAssertEqual(lines[4].prefix(4), ["plain", "eps", "linear", "true"])
        for line in lines.suffix(2) { XCTAssertLessThanOrEqual(Double(line[4]) ?? 1, 1e-5, line.joined(separator: " ")) }
        for name in ["config.json", "scheduler_config.json", "diffusion_pytorch_model.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(output)/model-2/\(name)"), name)
        }
        let config = try String(contentsOfFile: "\(output)/plain/scheduler_config.json", encoding: .utf8)
        XCTAssertEqual(try SchedulerConfig(path: "\(output)/plain/scheduler_config.json"), {
            var defaults = SchedulerConfig()
            defaults.className = "DDPMScheduler"
            return defaults
        }(), config)
    }

    /// A run saved after two steps (weights, AdamW moments and EMA averages through save_tensors) and continued
    /// two more steps by a second model, optimizer and EMA gives the first run's weights bit for bit.
    func testOptimizerAndEMAStateRoundTripBitForBit() throws {
        let printed = try run("""
            local x, noise, t = kiri.randn({4, 1, 8, 8}, 1), kiri.randn({4, 1, 8, 8}, 2), {5, 50, 500, 950}
            local function step(m, opt, ema)
                local loss, grad = kiri.losses.mse(m:forward(x, t), noise)
                m:zero_grad()
                m:backward(grad)
                kiri.optim.clip_grad_norm(m, 1.0)
                opt:step()
                ema:update()
                return loss
            end
            local options = {lr = 1e-2, weight_decay = 1e-2, betas = {0.8, 0.95}}
            local m = kiri.models.create(tiny(), {seed = 3})
            local opt, ema = kiri.optim.adamw(m, options), kiri.optim.ema(m, 0.9)
            step(m, opt, ema)
            step(m, opt, ema)
            m:save("checkpoint/model")
            local state = opt:state()
            for name, tensor in pairs(ema:state()) do state.tensors[name] = tensor end
            kiri.save_tensors("checkpoint/state.safetensors", state.tensors, {step = tostring(state.step)})
            step(m, opt, ema)
            step(m, opt, ema)

            local function resumed(load)
                local again = kiri.models.load(OUT .. "/checkpoint/model", {train = true})
                local opt2, ema2 = kiri.optim.adamw(again, options), kiri.optim.ema(again, 0.9)
                if load then
                    local saved, metadata = kiri.load_tensors(OUT .. "/checkpoint/state.safetensors")
                    local moments = {}
                    for name, tensor in pairs(saved) do if not name:find("^ema/") then moments[name] = tensor end end
                    opt2:load_state{step = math.tointeger(tonumber(metadata.step)), tensors = moments}
                    ema2:load_state(saved)
                end
                step(again, opt2, ema2)
                step(again, opt2, ema2)
                local weights, averages = 0, 0
                local a, b = m:parameters(), again:parameters()
                for i = 1, #a do weights = math.max(weights, (a[i].value - b[i].value):abs():max()) end
                local ea, eb = ema:state(), ema2:state()
                for name, tensor in pairs(ea) do averages = math.max(averages, (tensor - eb[name]):abs():max()) end
                return weights, averages, opt2:state().step
            end
            print("resumed", resumed(true))
            print("fresh", resumed(false))
            """)
        let lines = printed.split(separator: "\n").map { printedNumbers(String($0)) }
        XCTAssertEqual(lines.count, 2, printed)
        XCTAssertEqual(lines[0], [0, 0, 4], "weights and averages after the resumed run's two steps equal the run's, at step 4")
        XCTAssertGreaterThan(lines[1][0], 0, "without the saved moments the weights differ")
        XCTAssertGreaterThan(lines[1][1], 0, "without the saved averages the EMA differs")
    }

    func testErrors() throws {
        let printed = try run("""
            local function fails(f, ...)
                local ok, message = pcall(f, ...)
                assert(not ok, "no error")
                print((message:gsub("^test%.lua:%d+: ", "")))
            end
            local m = kiri.models.create(tiny())
            local x = kiri.randn({2, 1, 8, 8}, 1)
            fails(m.backward, m, kiri.zeros(2, 1, 8, 8))
            local y = m:forward(x, {1, 2})
            fails(m.backward, m, kiri.zeros(1, 1, 8, 8))
            fails(m.backward, m, 5)
            m:backward(kiri.ones_like(y))   -- the forward is still there for a gradient of the right shape
            fails(m.backward, m, kiri.ones_like(y))

            fails(kiri.optim.adamw, {})
            fails(kiri.optim.adamw, kiri.models.load(PARITY .. "/unet"))
            fails(kiri.optim.adamw, m, {lr = -1})
            fails(kiri.optim.ema, m, 2)
            fails(kiri.optim.clip_grad_norm, m, 0)

            local opt, ema = kiri.optim.adamw(m), kiri.optim.ema(m, 0.99)
            local other, wider = kiri.models.create(tiny(nil, false)), kiri.models.create(tiny({16, 32}))
            fails(opt.load_state, opt, kiri.optim.adamw(other):state())
            fails(opt.load_state, opt, kiri.optim.adamw(wider):state())
            fails(ema.load_state, ema, kiri.optim.ema(other, 0.9):state())
            fails(ema.load_state, ema, kiri.optim.ema(wider, 0.9):state())

            fails(kiri.save_tensors, "bad.safetensors", {[1] = kiri.zeros(1)})
            fails(kiri.save_tensors, "bad.safetensors", {["a\\nb"] = kiri.zeros(1)})
            fails(kiri.save_tensors, "bad.safetensors", {a = 1})
            fails(kiri.save_tensors, "bad.safetensors", {a = kiri.zeros(1)}, {step = 5})
            kiri.write_text("notes.txt", "hello")
            fails(kiri.load_tensors, OUT .. "/notes.txt")

            fails(kiri.models.create, 5)
            fails(kiri.models.create, tiny(), {seed = 1.5})
            fails(kiri.models.create, PARITY .. "/missing.json")
            fails(kiri.models.create, tiny(nil, nil, {_class_name = "Transformer2DModel"}))

            -- Tensors the engine shares with the script, closed by it: refused by name, never read.
            local moment = opt:state().tensors["exp_avg/conv_in.weight"]
            do local closing <close> = moment end
            fails(opt.step, opt)
            do local closing <close> = ema:state()["ema/conv_out.bias"] end
            fails(ema.update, ema)
            do local closing <close> = m:parameters()[1].value end
            fails(m.forward, m, x, 1)
            fails(m.zero_grad, m)
            local n = kiri.models.create(tiny())
            do local closing <close> = n:parameters()[2].grad end
            fails(n.forward, n, x, 1)
            fails(kiri.save_tensors, "closed.safetensors", {closed = moment})

            local closed = kiri.models.create(tiny())
            local closed_opt, closed_ema = kiri.optim.adamw(closed), kiri.optim.ema(closed, 0.9)
            closed:close()
            fails(closed.forward, closed, x, 1)
            fails(closed_opt.step, closed_opt)
            fails(closed_ema.update, closed_ema)
            """)
        let expected = [
            "bad argument #1 to 'backward' (backward needs a forward pass before it (each forward serves one backward))",
            "bad argument #1 to 'backward' (the gradient must have the output's shape [2, 1, 8, 8], got [1, 1, 8, 8])",
            "bad argument #1 to 'backward' (Tensor expected, got number)",
            "bad argument #1 to 'backward' (backward needs a forward pass before it (each forward serves one backward))",
            "bad argument #1 to 'adamw' (a trainable model expected, got table)",
            "bad argument #1 to 'adamw' (a trainable model expected, got table)",
            "bad argument #2 to 'adamw' (lr must be a number at least 0, got -1)",
            "bad argument #2 to 'ema' (decay must be a number in [0, 1], got 2)",
            "bad argument #2 to 'clip_grad_norm' (max_norm must be a number above 0, got 0)",
            "bad argument #1 to 'load_state' (no tensor 'exp_avg/down_blocks.1.attentions.0.group_norm.bias': the state is of another network)",
            "bad argument #1 to 'load_state' (tensor 'exp_avg/conv_in.bias' is [16] where this network's is [8]: the state is of another network)",
            "bad argument #1 to 'load_state' (no tensor 'ema/down_blocks.1.attentions.0.group_norm.bias': the state is of another network)",
            "bad argument #1 to 'load_state' (tensor 'ema/conv_in.bias' is [16] where this network's is [8]: the state is of another network)",
            "bad argument #2 to 'save_tensors' (a tensor's name must be a non-empty string without newlines, got 1)",
            "bad argument #2 to 'save_tensors' (a tensor's name must be a non-empty string without newlines, got a\nb)",
            "bad argument #2 to 'save_tensors' (Tensor expected for 'a', got number)",
            "bad argument #3 to 'save_tensors' (table of strings expected, key 'step' has a number)",
            "cannot load '\(output)/notes.txt': file is 5 bytes, shorter than the 8-byte header length of a safetensors file",
            "bad argument #1 to 'create' (table or path expected, got number)",
            "bad argument #2 to 'create' (seed must be an integer, got 1.5)",
            "cannot read '\(Self.parity)/missing.json': no such file",
            "config: field '_class_name' has unknown model class 'Transformer2DModel' (Kiri supports UNet2DModel, UNet2DConditionModel)",
            "exp_avg of 'conv_in.weight' has been closed: the optimizer cannot run without it",
            "the average of 'conv_out.bias' has been closed: the EMA cannot run without it",
            "parameter 'conv_in.weight' (or its gradient) has been closed: the network cannot run without it",
            "parameter 'conv_in.weight' (or its gradient) has been closed: the network cannot run without it",
            "parameter 'conv_in.bias' (or its gradient) has been closed: the network cannot run without it",
            "bad argument #2 to 'save_tensors' (Tensor expected for 'closed', got closed Tensor)",
            "the model is closed",
            "the optimizer's model is closed",
            "the EMA's model is closed",
        ]
        XCTAssertEqual(printed, expected.joined(separator: "\n") + "\n")
    }
}
