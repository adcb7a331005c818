import Foundation
@testable import Kiri
import XCTest

/// `kiri` as a user runs it: a separate process, its exit status, stdout and stderr, in a fresh folder.
class CLITestCase: XCTestCase {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The `kiri` binary built beside this test bundle.
    static let binary: URL = {
        var folder = Bundle(for: CLITestCase.self).bundleURL
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("kiri").path) && folder.path != "/" {
            folder.deleteLastPathComponent()
        }
        return folder.appendingPathComponent("kiri")
    }()

    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    /// Writes a file into the test folder, which is the process's working directory, and returns its
    /// relative path (Lua shortens long chunk names in messages, as `lua` itself does).
    func write(_ name: String, _ source: String) throws -> String {
        let url = folder.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try source.write(to: url, atomically: true, encoding: .utf8)
        return name
    }

    /// Runs kiri in the test folder; `environment` adds variables to this process's own.
    func kiri(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.currentDirectoryURL = folder
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// What `sha256sum` says of `text`: the reference an announced hash must match.
    func sha256sum(_ text: String) throws -> String {
        String(try run("/usr/bin/sha256sum", [try write("hashed.txt", text)]).prefix(64))
    }

    /// Runs another program in the test folder and returns its output and errors together.
    func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = folder
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}

final class CLITests: CLITestCase {
    func testVersionAndHelp() throws {
        let version = try kiri(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertTrue(version.stdout.range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression) != nil, version.stdout)
        let help = try kiri(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("run"), help.stdout)
    }

    func testRunPassesArgumentsAndPrintsToStdout() throws {
        let script = try write("args.lua", """
        local first, second = ...
        print(arg[0], arg[1], arg[2], first, second, #arg)
        print(rawequal(require "kiri", kiri))
        """)
        let result = try kiri(["run", script, "alpha", "--beta"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "\(script)\talpha\t--beta\talpha\t--beta\t2\ntrue\n")
    }

    func testLuaErrorShowsFileLineAndTracebackAndFails() throws {
        let script = try write("broken.lua", """
        local function inner() error("boom") end
        local function outer() inner() end
        outer()
        """)
        let result = try kiri(["run", script])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("\(script):1: boom"), result.stderr)
        XCTAssertTrue(result.stderr.contains("stack traceback:"), result.stderr)
        XCTAssertTrue(result.stderr.contains("\(script):3: in main chunk"), result.stderr)
    }

    /// Issue 14, 1: a stopped run says which option raises its limit, and keeps the files it wrote.
    func testAStoppedRunNamesItsLimitAndKeepsWhatItWrote() throws {
        let script = try write("slow.lua", """
            kiri.image.save("first.png", kiri.zeros(1, 4, 4))
            while true do end
            """)
        let timedOut = try kiri(["run", "--timeout", "0.3", script])
        XCTAssertEqual(timedOut.status, 1)
        XCTAssertTrue(timedOut.stderr.contains("give a larger --timeout SECONDS"), timedOut.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out/first.png").path))

        let walled = try kiri(["run", "--wall-timeout", "0.3", script])
        XCTAssertEqual(walled.status, 1)
        XCTAssertTrue(walled.stderr.contains("wall-clock time limit exceeded (0.3 s"), walled.stderr)
        XCTAssertTrue(walled.stderr.contains("--wall-timeout"), walled.stderr)
    }

    /// Issue 14, 12: the smaller things a new user runs into.
    func testHelpDefaultsHomeAndPythonLookup() throws {
        let help = try kiri(["run", "--help"])
        XCTAssertTrue(help.stdout.contains("(default: 4G)"), help.stdout)
        XCTAssertFalse(help.stdout.contains("ByteCount"), help.stdout)
        let home = try kiri(["list", "samplers"], environment: ["KIRI_HOME": folder.appendingPathComponent("nowhere").path])
        XCTAssertTrue(home.stderr.contains("warning: KIRI_HOME=") && home.stderr.contains("is not a folder"), home.stderr)
        let script = try write("args.lua", "print(arg[1])")
        let misplaced = try kiri(["run", script, "--timeout", "5"])
        XCTAssertTrue(misplaced.stdout.contains("--timeout"), "a plain script gets the option as its argument")
        let recipe = try kiri(["run", GenerationCLITests.scripts + "/txt2img.lua", "--steps", "5"])
        XCTAssertTrue(recipe.stderr.contains("kiri's own options go before the recipe's FILE"), recipe.stderr)
        // --python python3 is looked up in PATH, as a shell does.
        let env = try UNetBenchmark.executable("env")
        XCTAssertTrue(env.hasSuffix("/env") && FileManager.default.isExecutableFile(atPath: env), env)
        XCTAssertThrowsError(try UNetBenchmark.executable("no-such-python-here"))
    }

    /// Issue 14, 12: Tools/install.sh puts a binary that finds its plugins, recipes and model under PREFIX, and the
    /// shell completions where the shells look.
    func testInstallScript() throws {
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let prefix = folder.appendingPathComponent("prefix").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [checkout.appendingPathComponent("Tools/install.sh").path, prefix]
        process.environment = ProcessInfo.processInfo.environment.merging(["KIRI_BINARY": Self.binary.path]) { $1 }
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        for file in ["bin/kiri", "share/kiri/Plugins/samplers/euler.lua", "share/kiri/Scripts/txt2img.lua",
                     "share/kiri/models/fashion-mnist", "share/kiri/clip/merges.txt", "share/kiri/docs/luals/kiri.lua",
                     "share/bash-completion/completions/kiri", "share/zsh/site-functions/_kiri",
                     "share/fish/vendor_completions.d/kiri.fish"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: prefix + "/" + file), file)
        }
        let completion = try String(contentsOfFile: prefix + "/share/bash-completion/completions/kiri", encoding: .utf8)
        XCTAssertTrue(completion.contains("--wall-timeout"), "the completions know the options")
        let installed = Process()
        installed.executableURL = URL(fileURLWithPath: prefix + "/bin/kiri")
        installed.arguments = ["run", prefix + "/share/kiri/Scripts/txt2img.lua", "steps=2"]
        installed.currentDirectoryURL = folder
        installed.standardOutput = FileHandle.nullDevice
        try installed.run()
        installed.waitUntilExit()
        XCTAssertEqual(installed.terminationStatus, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out/txt2img.png").path))
    }

    func testSyntaxErrorNamesTheFile() throws {
        let script = try write("syntax.lua", "local x = = 1\n")
        let result = try kiri(["run", script])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("\(script):1:"), result.stderr)
    }

    func testMissingFileGetsAClearMessage() throws {
        let result = try kiri(["run", "nowhere.lua"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("cannot read 'nowhere.lua': no such file"), result.stderr)
    }

    func testTimeoutAndMemoryOptions() throws {
        let busy = try write("busy.lua", "while true do end")
        let started = Date()
        let timedOut = try kiri(["run", "--timeout", "0.3", busy])
        XCTAssertEqual(timedOut.status, 1)
        XCTAssertTrue(timedOut.stderr.contains("time limit exceeded"), timedOut.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertNotEqual(try kiri(["run", "--timeout", "-1", busy]).status, 0, "a negative --timeout is refused")

        let bomb = try write("bomb.lua", "local t = {} for i = 1, 1e9 do t[i] = kiri.zeros(1024) end")
        let capped = try kiri(["run", "--memory", "64M", bomb])
        XCTAssertEqual(capped.status, 1)
        XCTAssertTrue(capped.stderr.contains("not enough memory"), capped.stderr)
        XCTAssertNotEqual(try kiri(["run", "--memory", "lots", bomb]).status, 0, "a bad --memory value is refused")
    }

    func testRequireFindsModulesBesideTheRecipeAndWritesStayInTheOutputFolder() throws {
        _ = try write("lib/helpers.lua", "return { twice = function(x) return 2 * x end }")
        let script = try write("main.lua", """
        local helpers = require "lib.helpers"
        kiri.write_text("result.txt", tostring(helpers.twice(21)))
        assert(not pcall(kiri.write_text, "../escape.txt", "x"))
        """)
        let result = try kiri(["run", "-o", "results", script])
        XCTAssertEqual(result.status, 0, result.stderr)
        let written = try String(contentsOf: folder.appendingPathComponent("results/result.txt"), encoding: .utf8)
        XCTAssertEqual(written, "42")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("escape.txt").path))
    }

    func testListShowsDescriptionsAndWhereEachPluginComesFrom() throws {
        _ = try write("mine/samplers/my_sampler.lua", "-- My own sampler.\nreturn function(model, x) return x end\n")
        let result = try kiri(["list", "--plugins", "mine", "samplers"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.hasPrefix("samplers:\n"), result.stdout)
        XCTAssertNotNil(result.stdout.range(of: #"\n  my_sampler +My own sampler\. \[user: mine/samplers/my_sampler\.lua\]\n"#,
                                            options: .regularExpression), result.stdout)
        XCTAssertNotNil(result.stdout.range(of: #"\n  euler +Euler.*\[bundled\]\n"#, options: .regularExpression), result.stdout)
        XCTAssertNotEqual(try kiri(["list", "nonsense"]).status, 0)
    }

    /// Issue 6's list: every guidance method and post-processing step is a bundled plugin `kiri list` shows.
    func testListShowsEveryGuidanceAndPostProcessingPlugin() throws {
        let guidance = try kiri(["list", "guidance"]), post = try kiri(["list", "post"])
        XCTAssertEqual(guidance.status, 0, guidance.stderr)
        for name in ["cfg", "rescale_cfg", "dynamic_thresholding", "perp_neg", "apg", "cfg_pp", "interval", "dual_cfg",
                     "scale_schedule"] {
            XCTAssertNotNil(guidance.stdout.range(of: "\n  \(name) +\\S.*\\[bundled\\]\n", options: .regularExpression), name)
        }
        for name in ["clamp", "to_image", "from_image", "contrast", "levels", "sharpen", "resize", "grid", "upscale_nearest"] {
            XCTAssertNotNil(post.stdout.range(of: "\n  \(name) +\\S.*\\[bundled\\]\n", options: .regularExpression), name)
        }
    }

    /// Issue 15's training policy: losses, timestep samplers and learning-rate schedules are plugin domains `kiri list`
    /// shows, alone or among all, and a user's folder replaces a bundled one.
    func testListShowsTheTrainingPolicyDomains() throws {
        let expected = ["losses": ["mse", "huber", "min_snr"], "timesteps": ["uniform", "logit_normal", "cosine"],
                        "lr_schedules": ["constant", "cosine"]]
        let all = try kiri(["list"])
        XCTAssertEqual(all.status, 0, all.stderr)
        for (domain, names) in expected {
            let result = try kiri(["list", domain])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertTrue(result.stdout.hasPrefix("\(domain):\n"), result.stdout)
            XCTAssertTrue(all.stdout.contains("\n\(domain):\n"), domain)
            for name in names {
                XCTAssertNotNil(result.stdout.range(of: "\n  \(name) +\\S.*\\[bundled\\]\n", options: .regularExpression), name)
            }
        }
        _ = try write("mine/losses/mse.lua", "-- My own loss.\nreturn function() return 0 end\n")
        let mine = try kiri(["list", "--plugins", "mine", "losses"])
        XCTAssertNotNil(mine.stdout.range(of: #"\n  mse +My own loss\. \[user: mine/losses/mse\.lua, overrides bundled\]\n"#,
                                          options: .regularExpression), mine.stdout)
    }

    /// An installed layout, PREFIX/bin/kiri with PREFIX/share/kiri/Plugins, finds its bundled plugins.
    func testInstalledBinaryFindsItsBundledPlugins() throws {
        let prefix = folder.appendingPathComponent("prefix")
        try FileManager.default.createDirectory(at: prefix.appendingPathComponent("bin"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.binary, to: prefix.appendingPathComponent("bin/kiri"))
        _ = try write("prefix/share/kiri/Plugins/samplers/installed_only.lua", "-- Only in the installed tree.\nreturn print\n")
        let process = Process()
        process.executableURL = prefix.appendingPathComponent("bin/kiri")
        process.arguments = ["list", "samplers"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let listing = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertNotNil(listing.range(of: #"installed_only +Only in the installed tree\. \[bundled\]"#, options: .regularExpression),
                        listing)
    }

    /// `kiri run --watch` runs again when a plugin the recipe loaded changes.
    func testWatchRerunsWhenAPluginChanges() throws {
        _ = try write("mine/samplers/greet.lua", "-- Greets.\nreturn function() return 'first' end\n")
        let script = try write("watch.lua", "print(kiri.samplers.greet())")
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = ["run", "--watch", "--plugins", "mine", script]
        process.currentDirectoryURL = folder
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { process.terminate() }
        var seen = ""
        func waitFor(_ text: String) -> Bool {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                seen += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
                if seen.contains(text) { return true }
            }
            return false
        }
        XCTAssertTrue(waitFor("first\n"), seen)
        Thread.sleep(forTimeInterval: 1.1)   // so the new modification time differs at one-second resolution too
        _ = try write("mine/samplers/greet.lua", "-- Greets.\nreturn function() return 'second' end\n")
        XCTAssertTrue(waitFor("second\n"), seen)
    }

    /// The error-against-NFE table: every deterministic sampler gets more accurate with more steps,
    /// second-order ones at least 4× from 10 to 40 steps (16× in theory).
    func testCompareSamplersRecipe() throws {
        let recipe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/compare_samplers.lua").path
        let result = try kiri(["run", recipe, "10,40", "128"])
        XCTAssertEqual(result.status, 0, result.stderr)
        var errors: [String: [Double]] = [:]
        for line in result.stdout.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count == 5, let coarse = Double(fields[2]), let fine = Double(fields[4]) else { continue }
            errors[String(fields[0])] = [coarse, fine]
        }
        XCTAssertEqual(errors.count, 13, result.stdout)
        for (name, pair) in errors { XCTAssertLessThan(pair[1], pair[0], "\(name) does not improve with steps") }
        for name in ["heun", "dpm_2", "dpmpp_2m", "lms", "deis", "ipndm"] {
            let pair = errors[name] ?? [0, 1]
            XCTAssertLessThan(pair[1] * 4, pair[0], "\(name): \(pair)")
        }
    }

    /// The model benchmark runs end to end on a parity fixture (its figures are for the benchmark README,
    /// not for a test).
    func testModelBenchmarkRuns() throws {
        let model = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures/models/parity/unet2d_attention_class").path
        let result = try kiri(["bench", "model", model, "--runs", "2"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("UNet2DModel (0.25 M parameters)"), result.stdout)
        XCTAssertTrue(result.stdout.contains("batch 2: median"), result.stdout)
        XCTAssertNotEqual(try kiri(["bench", "model", "nowhere"]).status, 0)
    }

    /// The pipeline benchmark runs end to end on the tiny SD pipeline (Kiri alone: diffusers and sd.cpp are not in CI).
    func testPipelineBenchmarkRuns() throws {
        let model = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures/models/pipeline/tiny-sd").path
        let result = try kiri(["bench", "pipeline", model, "--runs", "1", "--steps", "2"])
        XCTAssertEqual(result.status, 0, result.stderr)
        for row in ["| load | ", "| step, CFG, 512² | ", "| decode, 512² | ", "| txt2img, 2 steps | ", "| peak RSS | "] {
            XCTAssertTrue(result.stdout.contains(row), "\(row) in \(result.stdout)")
        }
        XCTAssertNotEqual(try kiri(["bench", "pipeline", "nowhere"]).status, 0)
    }

    func testBundledRecipeRuns() throws {
        let recipe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/gaussian_euler.lua").path
        let result = try kiri(["run", recipe, "100", "3"])
        XCTAssertEqual(result.status, 0, result.stderr)
        // Euler on the exact Gaussian ODE: the mean is exact, the std within the method's O(1/n) error.
        let numbers = result.stdout.split(whereSeparator: { " (),:".contains($0) }).compactMap { Double($0) }
        XCTAssertEqual(numbers.count, 5, result.stdout)
        XCTAssertEqual(numbers[1], 0.5, accuracy: 0.01)
        XCTAssertEqual(numbers[3], 0.2, accuracy: 0.02)
    }
}
