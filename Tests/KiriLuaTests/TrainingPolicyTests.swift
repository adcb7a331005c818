import Foundation
import XCTest
@testable import KiriLua

/// The training policy as plugins (issue 15): Plugins/losses, Plugins/timesteps, Plugins/lr_schedules and
/// Plugins/lib/training.lua. Losses, gradients, the forward process, SNR weights and learning rates against
/// Tests/Fixtures/training/policy.json (torch 2.13 autograd and diffusers 0.42; see its README); the timestep
/// samplers and conditioning dropout against closed forms of their distributions.
final class TrainingPolicyTests: XCTestCase {
    typealias JSON = ScheduleTests.JSON

    /// The fixture, decoded with JSONDecoder: JSONSerialization's numbers can be a unit in the last place off.
    static let fixture: [String: JSON] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/training/policy.json")
        guard let data = try? Data(contentsOf: url), let decoded = try? JSONDecoder().decode(JSON.self, from: data),
              case .table(let table) = decoded else { return [:] }
        return table
    }()

    static func numbers(_ value: JSON?) -> [Double] { value?.numbers ?? [] }

    static func number(_ value: JSON?) -> Double? {
        if case .number(let number)? = value { return number }
        return nil
    }

    static func table(_ value: JSON?) -> [String: JSON] {
        if case .table(let table)? = value { return table }
        return [:]
    }

    /// A list of numbers as a Lua literal, each exactly.
    static func lua(_ values: [Double]) -> String {
        "{" + values.map { String(format: "%.17g", $0) }.joined(separator: ", ") + "}"
    }

    /// The fixture's inputs as Lua globals, and `emit(label, values)`, which prints a number, a list or a tensor's
    /// elements exactly, one line per label.
    static var prelude: String {
        let inputs = table(fixture["inputs"]), schedule = table(fixture["schedule"])
        let shape = numbers(fixture["shape"]).map { String(Int($0)) }.joined(separator: ", ")
        func tensor(_ key: String) -> String { "kiri.tensor(\(lua(numbers(inputs[key])))):reshape({\(shape)})" }
        return """
            training = require "lib.training"
            P, T, X0, NOISE = \(tensor("prediction")), \(tensor("target")), \(tensor("x0")), \(tensor("noise"))
            W, STEPS = \(lua(numbers(inputs["weights"]))), \(lua(numbers(inputs["timesteps"])))
            ACP = \(lua(numbers(schedule["alphas_cumprod"])))
            function emit(label, values)
                if type(values) == "number" then values = {values} end
                if type(values) == "userdata" then values = values:reshape({-1}):totable() end
                local parts = {}
                for i, v in ipairs(values) do parts[i] = string.format("%.17g", v) end
                print(label .. "\\t" .. table.concat(parts, " "))
            end

            """
    }

    /// Runs `body` after the prelude; what it emitted, by label.
    func emitted(_ body: String, file: StaticString = #filePath, line: UInt = #line) -> [String: [Double]] {
        var result: [String: [Double]] = [:]
        for row in runLua(Self.prelude + body, file: file, line: line).split(separator: "\n") {
            let fields = row.split(separator: "\t", maxSplits: 1)
            guard fields.count == 2 else { continue }
            result[String(fields[0])] = fields[1].split(separator: " ").compactMap { Double($0) }
        }
        return result
    }

    /// The largest distance in float32 units in the last place between two lists of float32 values.
    func ulps(_ got: [Double], _ want: [Double]) -> Int {
        guard got.count == want.count, !got.isEmpty else { return .max }
        func ordered(_ x: Double) -> Int {
            let bits = Int(Int32(bitPattern: Float(x).bitPattern))
            return bits < 0 ? Int(Int32.min) - bits : bits
        }
        return zip(got, want).map { abs(ordered($0) - ordered($1)) }.max() ?? 0
    }

    func relativeError(_ got: Double?, _ want: Double?) -> Double {
        guard let got, let want else { return .infinity }
        return abs(got - want) / abs(want)
    }

    // MARK: - Parity with torch and diffusers

    func testLossesAndGradientsMatchTorchAutograd() throws {
        let cases: [(name: String, call: String)] = [
            ("mse", "kiri.losses.mse(P, T)"),
            ("mse_weighted", "kiri.losses.mse(P, T, {weights = W})"),
            ("huber", "kiri.losses.huber(P, T)"),
            ("huber_delta_0.5", "kiri.losses.huber(P, T, {delta = 0.5})"),
            ("huber_delta_0.5_weighted", "kiri.losses.huber(P, T, {delta = 0.5, weights = kiri.tensor(W)})"),
        ]
        let out = emitted(cases.map { "do local loss, grad = \($0.call); emit('\($0.name) loss', loss); emit('\($0.name) grad', grad) end" }
            .joined(separator: "\n"))
        let losses = Self.table(Self.fixture["losses"])
        XCTAssertEqual(losses.count, cases.count)
        for (name, _) in cases {
            let want = Self.table(losses[name])
            let lossError = relativeError(out["\(name) loss"]?.first, Self.number(want["loss"]))
            let gradUlps = ulps(out["\(name) grad"] ?? [], Self.numbers(want["grad"]))
            print("\(name): loss relative error \(lossError), gradient max \(gradUlps) ulp")
            // torch sums the loss in float32, Kiri in double: they agree to float32 rounding. Every gradient element
            // is rounded as autograd rounds it, so it is the same float32.
            XCTAssertLessThanOrEqual(lossError, 2e-7, name)
            XCTAssertEqual(gradUlps, 0, name)
        }
    }

    /// sqrt(alphas_cumprod) and sqrt(1 - alphas_cumprod) of `timesteps`, each float32 operation correctly rounded, in
    /// diffusers' order; then DDPMScheduler.add_noise, get_velocity and compute_snr from them.
    static func floatReference(timesteps: [Double], table: [Double], x0: [Double], noise: [Double])
        -> (noisy: [Double], velocity: [Double], snr: [Double]) {
        let perSample = x0.count / timesteps.count
        var noisy: [Double] = [], velocity: [Double] = [], snr: [Double] = []
        for (b, t) in timesteps.enumerated() {
            let alphaBar = Float(table[Int(t)])
            let root = Float(Double(alphaBar).squareRoot()), complement = Float(Double(1 - alphaBar).squareRoot())
            for i in b * perSample..<(b + 1) * perSample {
                noisy.append(Double(root * Float(x0[i]) + complement * Float(noise[i])))
                velocity.append(Double(root * Float(noise[i]) - complement * Float(x0[i])))
            }
            let ratio = root / complement
            snr.append(Double(ratio * ratio))
        }
        return (noisy, velocity, snr)
    }

    func testForwardProcessAndTargetsMatchDDPMScheduler() throws {
        let schedule = Self.table(Self.fixture["schedule"]), inputs = Self.table(Self.fixture["inputs"])
        let out = emitted("""
            emit('alphas_cumprod', training.alphas_cumprod{beta_schedule = 'linear', beta_start = 0.0001, beta_end = 0.02,
                num_train_timesteps = 1000})
            emit('add_noise', training.add_noise(X0, NOISE, STEPS, ACP))
            emit('add_noise tensors', training.add_noise(X0, NOISE, kiri.tensor(STEPS), kiri.tensor(ACP)))
            emit('v', training.target('v_prediction', X0, NOISE, STEPS, ACP))
            emit('epsilon', training.target('epsilon', X0, NOISE))
            emit('sample', training.target('sample', X0, NOISE))
            emit('noise', NOISE)
            emit('x0', X0)
            emit('snr', training.snr(STEPS, ACP))
            local ratios = training.snr(kiri.tensor(STEPS), ACP)
            emit('snr tensor', {ratios:dim(), #ratios})
            """)
        let table = Self.numbers(schedule["alphas_cumprod"])
        XCTAssertEqual(ulps(out["alphas_cumprod"] ?? [], table), 0, "alphas_cumprod")
        // Bit for bit against the same float32 steps with correctly rounded square roots.
        let reference = Self.floatReference(timesteps: Self.numbers(inputs["timesteps"]), table: table,
                                            x0: Self.numbers(inputs["x0"]), noise: Self.numbers(inputs["noise"]))
        XCTAssertEqual(ulps(out["add_noise"] ?? [], reference.noisy), 0, "add_noise")
        XCTAssertEqual(ulps(out["add_noise tensors"] ?? [], reference.noisy), 0, "add_noise with tensor arguments")
        XCTAssertEqual(ulps(out["v"] ?? [], reference.velocity), 0, "v_prediction")
        XCTAssertEqual(ulps(out["snr"] ?? [], reference.snr), 0, "snr")
        // torch 2.13's float32 sqrt (AVX2) is not correctly rounded: it gives sqrt(1 - alphas_cumprod[999]) one unit in
        // the last place high, so sample 4 differs by that much, and compute_snr (vectorised over the whole table)
        // rounds 177 of the 1000 roots either way.
        let noisyUlps = ulps(out["add_noise"] ?? [], Self.numbers(Self.fixture["add_noise"]))
        let velocityUlps = ulps(out["v"] ?? [], Self.numbers(Self.fixture["get_velocity"]))
        let snrUlps = ulps(out["snr"] ?? [], Self.numbers(Self.fixture["snr"]))
        print("against diffusers: add_noise \(noisyUlps) ulp, get_velocity \(velocityUlps) ulp, compute_snr \(snrUlps) ulp")
        XCTAssertLessThanOrEqual(noisyUlps, 1)
        XCTAssertLessThanOrEqual(velocityUlps, 2)
        XCTAssertLessThanOrEqual(snrUlps, 2)
        XCTAssertEqual(out["epsilon"], out["noise"])
        XCTAssertEqual(out["sample"], out["x0"])
        XCTAssertEqual(out["snr tensor"], [1, 4])
    }

    func testMinSNRWeightedLossMatchesDiffusersTrainTextToImage() throws {
        let minSNR = Self.table(Self.fixture["min_snr"]), cases = Self.table(minSNR["cases"])
        let gamma = Self.number(minSNR["gamma"]) ?? 0
        // The fixture's SNR (compute_snr's float32), so the weights are diffusers' own; training.snr is checked above.
        var body = "local snr = \(Self.lua(Self.numbers(Self.fixture["snr"])))\n"
        for kind in ["epsilon", "v_prediction", "sample"] {
            body += """
                do
                    local loss, grad = kiri.losses.min_snr(P, T, {snr = snr, gamma = \(gamma), prediction_type = '\(kind)'})
                    emit('\(kind) loss', loss); emit('\(kind) grad', grad)
                    local weighted = kiri.losses.min_snr(P, T, {snr = snr, gamma = \(gamma), prediction_type = '\(kind)',
                        weights = {1, 1, 1, 1}})
                    emit('\(kind) unit weights', weighted)
                    emit('\(kind) from the timesteps', (kiri.losses.min_snr(P, T, {snr = training.snr(STEPS, ACP),
                        gamma = \(gamma), prediction_type = '\(kind)'})))
                end

                """
        }
        let out = emitted(body)
        for kind in ["epsilon", "v_prediction", "sample"] {
            let want = Self.table(cases[kind])
            let lossError = relativeError(out["\(kind) loss"]?.first, Self.number(want["loss"]))
            let gradUlps = ulps(out["\(kind) grad"] ?? [], Self.numbers(want["grad"]))
            let fromTimesteps = relativeError(out["\(kind) from the timesteps"]?.first, Self.number(want["loss"]))
            print("min_snr \(kind): weights \(Self.numbers(want["weights"])), loss relative error \(lossError), " +
                  "gradient max \(gradUlps) ulp; with training.snr's SNR, loss relative error \(fromTimesteps)")
            XCTAssertLessThanOrEqual(lossError, 2e-7, kind)
            XCTAssertEqual(gradUlps, 0, kind)
            XCTAssertEqual(out["\(kind) unit weights"], out["\(kind) loss"], kind)
            XCTAssertLessThanOrEqual(fromTimesteps, 1e-6, kind)
        }
        XCTAssertNotEqual(out["epsilon loss"], out["v_prediction loss"])
    }

    func testLearningRateSchedulesMatchDiffusersUnderLambdaLR() throws {
        guard case .list(let cases)? = Self.fixture["lr_schedules"] else { return XCTFail("no lr_schedules") }
        XCTAssertEqual(cases.count, 4)
        for (index, entry) in cases.enumerated() {
            let schedule = Self.table(entry), opts = Self.table(schedule["opts"])
            guard case .text(let name)? = schedule["name"], let steps = Self.number(schedule["steps"]) else {
                return XCTFail("case \(index)")
            }
            let out = emitted("""
                local rates, opts = {}, \(JSON.table(opts).lua)
                for step = 0, \(Int(steps) - 1) do rates[#rates + 1] = kiri.lr_schedules.\(name)(step, opts) end
                emit('lr', rates)
                """)
            let want = Self.numbers(schedule["lr"])
            // Python and Lua evaluate the same double expressions with the same libm: equal, not just close.
            XCTAssertEqual(out["lr"], want, "case \(index): \(name) \(JSON.table(opts).lua)")
            print("lr_schedules.\(name) \(JSON.table(opts).lua): \(want.count) steps, equal to diffusers' LambdaLR")
        }
    }

    // MARK: - Timestep samplers against closed forms

    /// The Kolmogorov-Smirnov bound at 99.9 %: the largest distance of an empirical CDF of n draws from the true one.
    func ksBound(_ n: Int) -> Double { 1.95 / Double(n).squareRoot() }

    func draws(_ call: String) -> [Double] {
        emitted("emit('t', \(call))")["t"] ?? []
    }

    func assertTimesteps(_ values: [Double], count: Int, batch: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(values.count, batch, file: file, line: line)
        XCTAssert(values.allSatisfy { $0 == $0.rounded() && $0 >= 0 && $0 < Double(count) },
                  "every timestep an integer in 0..\(count - 1)", file: file, line: line)
    }

    /// The empirical CDF at each k against `cdf(k)` = P(timestep <= k).
    func assertCDF(_ values: [Double], at points: [Int], _ cdf: (Int) -> Double, _ label: String,
                   file: StaticString = #filePath, line: UInt = #line) {
        var worst = 0.0
        for k in points {
            let empirical = Double(values.filter { $0 <= Double(k) }.count) / Double(values.count)
            worst = max(worst, abs(empirical - cdf(k)))
        }
        print("\(label): largest CDF distance \(worst) (bound \(ksBound(values.count)))")
        XCTAssertLessThanOrEqual(worst, ksBound(values.count), label, file: file, line: line)
    }

    func testUniformTimestepsAreUniformOnZeroToNMinusOne() throws {
        let n = 20000, count = 1000
        let values = draws("kiri.timesteps.uniform(\(n), 7)")
        assertTimesteps(values, count: count, batch: n)
        let mean = values.reduce(0, +) / Double(n)
        let standardError = ((Double(count * count) - 1) / 12 / Double(n)).squareRoot()
        print("uniform: mean \(mean), want \(Double(count - 1) / 2) +- \(4 * standardError)")
        XCTAssertLessThanOrEqual(abs(mean - Double(count - 1) / 2), 4 * standardError)
        assertCDF(values, at: [0, 99, 249, 499, 749, 998], { Double($0 + 1) / Double(count) }, "uniform")
        // Every one of ten timesteps, by a chi-square test with 9 degrees of freedom (27.88 at 99.9 %).
        let small = draws("kiri.timesteps.uniform(\(n), 8, {num_train_timesteps = 10})")
        assertTimesteps(small, count: 10, batch: n)
        var chiSquare = 0.0
        for k in 0..<10 {
            let observed = Double(small.filter { $0 == Double(k) }.count), expected = Double(n) / 10
            chiSquare += (observed - expected) * (observed - expected) / expected
        }
        print("uniform over 10 timesteps: chi-square \(chiSquare)")
        XCTAssertLessThan(chiSquare, 27.88)
    }

    /// Phi, the standard normal CDF.
    func phi(_ x: Double) -> Double { 0.5 * erfc(-x / 2.0.squareRoot()) }

    func testLogitNormalTimestepsFollowTheLogitNormalCDF() throws {
        let n = 20000, count = 1000
        let centred = draws("kiri.timesteps.logit_normal(\(n), 11)")
        assertTimesteps(centred, count: count, batch: n)
        let below = Double(centred.filter { $0 < Double(count / 2) }.count) / Double(n)
        print("logit_normal mean 0: fraction below N/2 \(below)")
        XCTAssertLessThanOrEqual(abs(below - 0.5), 4 * (0.25 / Double(n)).squareRoot())
        // P(floor(N sigmoid(z)) <= k) = P(z < logit((k + 1) / N)) for z ~ N(mean, std).
        let mean = 0.5, std = 1.5
        let shifted = draws("kiri.timesteps.logit_normal(\(n), 12, {mean = \(mean), std = \(std)})")
        assertTimesteps(shifted, count: count, batch: n)
        assertCDF(shifted, at: [9, 99, 299, 499, 699, 899, 989], { k in
            let u = Double(k + 1) / Double(count)
            return self.phi((log(u / (1 - u)) - mean) / std)
        }, "logit_normal mean \(mean) std \(std)")
    }

    func testCosineTimestepsFollowTheCosineScheduleNoiseLevels() throws {
        let n = 20000
        let table = Self.numbers(Self.table(Self.fixture["schedule"])["alphas_cumprod"])
        let values = draws("""
            kiri.timesteps.cosine(\(n), 13, {beta_schedule = 'linear', beta_start = 0.0001, beta_end = 0.02})
            """)
        assertTimesteps(values, count: table.count, batch: n)
        // Cosine time of a timestep: the u at which cos^2(pi u / 2) equals its alphas_cumprod (diffusers' table).
        let times = table.map { 2 / Double.pi * acos($0.squareRoot()) }
        assertCDF(values, at: [0, 19, 99, 199, 399, 599, 799, 949], { times[$0] / times[times.count - 1] }, "cosine")
        // Not uniform: the linear table's noise rises fast at first, so a fifth of the draws fall below 100.
        let below = Double(values.filter { $0 < 100 }.count) / Double(n)
        print("cosine: fraction below 100 \(below), c_99 / c_999 = \(times[99] / times[999])")
        XCTAssertGreaterThan(below, 0.15)
    }

    func testTimestepSamplersAreDeterministicForASeed() throws {
        for name in ["uniform", "logit_normal", "cosine"] {
            let out = emitted("""
                emit('a', kiri.timesteps.\(name)(64, 5)); emit('b', kiri.timesteps.\(name)(64, 5))
                emit('c', kiri.timesteps.\(name)(64, 6))
                """)
            XCTAssertEqual(out["a"], out["b"], name)
            XCTAssertNotEqual(out["a"], out["c"], name)
            XCTAssertEqual(out["a"]?.count, 64, name)
        }
    }

    // MARK: - Noise offset and conditioning dropout

    func testDropLabelsAndDropContext() throws {
        let out = emitted("""
            local labels = {}
            for i = 1, 20000 do labels[i] = i % 10 end
            local function changed(list, null)
                local count = 0
                for i, label in ipairs(list) do
                    if label ~= labels[i] then assert(label == null); count = count + 1 end
                end
                return count
            end
            emit('p0', changed(training.drop_labels(labels, 0, 10, 1), 10))
            local all = training.drop_labels(labels, 1, 10, 1)
            local nulls = 0
            for _, label in ipairs(all) do if label == 10 then nulls = nulls + 1 end end
            emit('p1', nulls)
            emit('p0.3', changed(training.drop_labels(labels, 0.3, -1, 2), -1))
            emit('again', training.drop_labels({1, 2, 3, 4, 5, 6, 7, 8}, 0.5, 0, 3))
            emit('same', training.drop_labels({1, 2, 3, 4, 5, 6, 7, 8}, 0.5, 0, 3))
            emit('tensor', training.drop_labels(kiri.tensor({1, 2, 3, 4, 5, 6, 7, 8}), 0.5, 0, 3))
            -- drop_context replaces whole rows, the same samples as drop_labels for the same seed.
            local context = kiri.arange(8 * 3 * 2):reshape({8, 3, 2}) + 1
            local dropped = training.drop_context(context, 0.5, kiri.zeros({3, 2}) - 5, 3)
            local rows = {}
            for b = 1, 8 do
                local row = dropped[b]
                rows[b] = row:eq(-5):sum() == 6 and 0 or (row:eq(context[b]):sum() == 6 and b or -1)
            end
            emit('rows', rows)
            emit('leading one', training.drop_context(context, 1, kiri.zeros({1, 3, 2}), 4):abs():sum())
            """)
        XCTAssertEqual(out["p0"], [0], "probability 0 drops nothing")
        XCTAssertEqual(out["p1"], [20000], "probability 1 drops every label")
        let fraction = (out["p0.3"]?.first ?? 0) / 20000
        print("drop_labels p = 0.3: fraction dropped \(fraction)")
        XCTAssertLessThanOrEqual(abs(fraction - 0.3), 4 * (0.3 * 0.7 / 20000).squareRoot())
        XCTAssertEqual(out["again"], out["same"], "deterministic for a seed")
        XCTAssertEqual(out["again"], out["tensor"], "a tensor of labels drops the same ones")
        XCTAssertEqual(out["rows"], out["again"], "drop_context drops the rows drop_labels drops")
        XCTAssert(out["again"]?.contains(0) == true && out["again"]?.contains(where: { $0 != 0 }) == true)
        XCTAssertEqual(out["leading one"], [0])
    }

    func testOffsetNoiseAddsOneGaussianOffsetPerSampleAndChannel() throws {
        let out = emitted("""
            local noise = kiri.randn({512, 4, 3, 5}, 1)
            local offset = training.offset_noise(noise, 0.1, 9) - noise
            local means = offset:mean(4, true):mean(3, true)
            emit('spread', (offset - means):abs():max())
            emit('std', means:std())
            emit('mean', means:mean())
            emit('offset', offset:narrow(1, 1, 2):mean(4):mean(3))
            emit('expected', kiri.randn({2, 4, 1, 1}, 9) * 0.1)
            emit('zero', (training.offset_noise(noise, 0, 9) - noise):abs():max())
            emit('same', (training.offset_noise(noise, 0.1, 9) - training.offset_noise(noise, 0.1, 9)):abs():max())
            """)
        XCTAssertLessThanOrEqual(out["spread"]?.first ?? 1, 1e-6, "one offset per sample and channel")
        let std = out["std"]?.first ?? 0
        // 2048 offsets: the sample std of N(0, 0.01) is within about 4 standard errors (0.1 / sqrt(2 * 2048) each).
        print("offset_noise strength 0.1: offsets' std \(std), mean \(out["mean"]?.first ?? .nan)")
        XCTAssertLessThanOrEqual(abs(std - 0.1), 4 * 0.1 / (2.0 * 2048).squareRoot())
        XCTAssertLessThanOrEqual(zip(out["offset"] ?? [], out["expected"] ?? [1]).map { abs($0 - $1) }.max() ?? 1, 1e-7)
        XCTAssertEqual(out["zero"], [0])
        XCTAssertEqual(out["same"], [0])
    }

    // MARK: - Errors and plugin folders

    func testBadArgumentsAreLauxlibErrorsAtTheCallersLine() throws {
        let cases: [(String, String)] = [
            ("kiri.losses.huber(kiri.ones({2, 3}), nil)", "bad argument #2 to 'huber' (Tensor expected, got nil)"),
            ("kiri.losses.mse(kiri.ones({2, 3}), kiri.ones({2, 4}))",
             "bad argument #2 to 'mse' (target shape [2,4] does not match prediction shape [2,3])"),
            ("kiri.losses.mse(kiri.ones({2, 3}), kiri.ones({2, 3}), {weights = {1}})",
             "bad argument #3 to 'mse' (weights has 1 values but the batch has 2 samples)"),
            ("kiri.losses.huber(kiri.ones({2}), kiri.ones({2}), {delta = -1})",
             "bad argument #3 to 'huber' (delta must be a positive number, got -1)"),
            ("kiri.losses.min_snr(kiri.ones({2}), kiri.ones({2}), {snr = {1, 2}, gamma = 0})",
             "bad argument #3 to 'min_snr' (gamma must be a positive number, got 0)"),
            ("kiri.losses.min_snr(kiri.ones({2}), kiri.ones({2}), {snr = {1}})",
             "bad argument #3 to 'min_snr' (snr must hold one SNR per sample (2), got 1 values)"),
            ("kiri.losses.min_snr(kiri.ones({1}), kiri.ones({1}), {snr = {0}})",
             "bad argument #3 to 'min_snr' (snr[1] must be a number > 0 (>= 0 unless epsilon), got 0)"),
            ("kiri.losses.min_snr(kiri.ones({1}), kiri.ones({1}), {snr = {1}, prediction_type = 'v'})",
             "bad argument #3 to 'min_snr' (prediction_type must be 'epsilon', 'v_prediction' or 'sample', got 'v')"),
            ("kiri.timesteps.uniform(0, 1)", "bad argument #1 to 'uniform' (batch must be a positive integer, got 0)"),
            ("kiri.timesteps.cosine(2, 1.5)", "bad argument #2 to 'cosine' (seed must be an integer or nil, got 1.5)"),
            ("kiri.timesteps.logit_normal(2, 1, {std = 0})",
             "bad argument #3 to 'logit_normal' (std must be a positive number, got 0)"),
            ("kiri.lr_schedules.cosine(0, {lr = 1, warmup = 10, total = 5})",
             "bad argument #2 to 'cosine' (warmup (10) must be at most total (5))"),
            ("kiri.lr_schedules.cosine(0, {lr = 1})",
             "bad argument #2 to 'cosine' (total must be a positive integer (the number of training steps), got nil)"),
            ("kiri.lr_schedules.constant(-1, {lr = 1})", "bad argument #1 to 'constant' (step must be an integer >= 0, got -1)"),
            ("kiri.lr_schedules.constant(0, {})", "bad argument #2 to 'constant' (lr must be a number >= 0, got nil)"),
            ("training.drop_labels({1}, 1.5, 0, 1)",
             "bad argument #2 to 'drop_labels' (probability must be a number from 0 to 1, got 1.5)"),
            ("training.drop_context(kiri.ones({2, 3}), 0.1, kiri.ones({4}), 1)",
             "bad argument #3 to 'drop_context' (null_context must have one sample's shape [3], got [4])"),
            ("training.target('noise', kiri.ones({1}), kiri.ones({1}))",
             "bad argument #1 to 'target' (prediction_type must be 'epsilon', 'v_prediction' or 'sample', got 'noise')"),
            ("training.add_noise(kiri.ones({2, 1}), kiri.ones({2, 1}), {0, 1000}, training.alphas_cumprod())",
             "bad argument #3 to 'add_noise' (timesteps[2] must be an integer from 0 to 999, got 1000)"),
            ("training.add_noise(kiri.ones({2, 1}), kiri.ones({2, 1}), {0}, training.alphas_cumprod())",
             "bad argument #3 to 'add_noise' (timesteps has 1 values but the batch has 2 samples)"),
            ("training.snr({1}, {0.5, 2})", "bad argument #2 to 'snr' (alphas_cumprod[2] must be in [0, 1], got 2)"),
            ("training.offset_noise(kiri.ones({2, 3}), -0.1, 1)",
             "bad argument #2 to 'offset_noise' (strength must be a number >= 0, got -0.1)"),
        ]
        for (call, message) in cases {
            let failure = luaError("local training = require 'lib.training'\nlocal _ = \(call)")
            XCTAssertEqual(failure?.message.components(separatedBy: "\n").first, "test.lua:2: " + message, call)
        }
    }

    func testAUserFolderOrRegisterReplacesATrainingPlugin() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-training-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("losses"), withIntermediateDirectories: true)
        try "-- Mine.\nreturn function() return 42 end\n".write(to: folder.appendingPathComponent("losses/mse.lua"),
                                                              atomically: true, encoding: .utf8)
        var printed = ""
        let runtime = try makeRuntime(userPlugins: [folder.path], output: { printed += $0 })
        defer { runtime.close() }
        try runtime.run(source: """
            print(kiri.losses.mse(), (kiri.losses.huber(kiri.zeros({1}), kiri.zeros({1}))))
            kiri.register("timesteps", "fixed", function(batch) local t = {} for i = 1, batch do t[i] = 7 end return t end)
            kiri.register("lr_schedule", "cosine", function() return 0.5 end)
            kiri.register("loss", "zero", function() return 0 end)
            print(#kiri.timesteps.fixed(3), kiri.lr_schedules.cosine(1, {}), kiri.losses.zero())
            """, name: "test.lua")
        XCTAssertEqual(printed, "42\t0.0\n3\t0.5\t0\n")
    }
}
