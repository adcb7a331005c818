import ArgumentParser
import Foundation
import Kiri
import KiriLua
import KiriModels
import KiriServer
import Synchronization

/// The `kiri` command line.
struct KiriCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiri",
        abstract: "Kiri: a diffusion engine with Lua recipes.",
        version: "\(KiriVersion.string), \(KernelISA.summary)",
        subcommands: [Run.self, Sample.self, Train.self, Serve.self, List.self, Info.self, Bench.self]
    )
}

/// Parses "4G", "512M", "64K" or a plain byte count.
struct ByteCount: ExpressibleByArgument, CustomStringConvertible {
    var bytes: Int
    /// How --help shows a default: "4G", as it is typed.
    var description: String {
        for (unit, scale) in [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] where bytes % scale == 0 {
            return "\(bytes / scale)\(unit)"
        }
        return "\(bytes)"
    }
    var defaultValueDescription: String { description }
    init?(argument: String) {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var text = argument.uppercased()
        if text.hasSuffix("B") { text.removeLast() }
        var scale = 1
        if let last = text.last, let unit = units[last] { scale = unit; text.removeLast() }
        guard let value = Double(text), value.isFinite, value > 0, value * Double(scale) < Double(Int.max) else { return nil }
        bytes = Int(value * Double(scale))
    }
}

/// `--plugins DIR`, repeatable: user plugin folders, searched before the bundled ones (run, sample, list).
struct PluginOptions: ParsableArguments {
    @Option(name: .customLong("plugins"), help: "A folder of user plugins, searched before the bundled ones (repeatable).")
    var directories: [String] = []

    /// A misspelt folder would otherwise leave the bundled plugins in use without a word.
    func validate() throws {
        for directory in directories {
            guard BundledFiles.isFolder(directory) else { throw ValidationError("--plugins '\(directory)': no such folder") }
        }
    }

    /// Says which user plugins replace bundled ones of the same name, so a recipe's different output is explained.
    func reportOverrides() {
        let catalog = PluginPath.catalog(user: directories)
        for domain in PluginCatalog.domains {
            for entry in catalog.entries(domain: domain) where entry.overridesBundled {
                report("note: the user plugin \(entry.path) replaces the bundled \(domain)/\(entry.name).lua")
            }
        }
    }
}

/// The run's two clocks (SandboxLimits), the same for `run` and `sample`: the script's own time is limited so
/// that a runaway recipe stops, while model evaluations (minutes for Stable Diffusion on a CPU) are not.
struct TimeLimitOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Stop a recipe after this many seconds of its own work; model evaluations (loading, each network pass) do not count.")
    var timeout: Double = 60
    @Option(parsing: .unconditional, help: "Stop the whole run after this many seconds, model evaluations included (default: no limit).")
    var wallTimeout: Double?

    func validate() throws {
        guard timeout.isFinite, timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds, got \(timeout)") }
        if let wallTimeout, !(wallTimeout.isFinite && wallTimeout > 0) {
            throw ValidationError("--wall-timeout must be a positive number of seconds, got \(wallTimeout)")
        }
    }

    func limits(memory: Int, disk: Int) -> SandboxLimits {
        SandboxLimits(timeout: timeout, wallTimeout: wallTimeout ?? .infinity, memory: memory, disk: disk)
    }
}

/// `-o` is a folder for every command: a name with an image's extension, or an existing file, is a mistake.
enum OutputFolder {
    static func looksLikeAFile(_ path: String) -> Bool {
        let extensions = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]
        let name = FileAccess.name(of: path).lowercased()
        return extensions.contains { name.hasSuffix("." + $0) } || FileAccess.isRegularFile(path)
    }
}

struct SandboxOptions: ParsableArguments {
    @OptionGroup var time: TimeLimitOptions
    @Option(help: "Memory cap for Lua and tensors together, e.g. 4G or 512M (a 512×512 SD 1.5 generation fits in 4G).")
    var memory: ByteCount = ByteCount(argument: "4G")!
    @Option(help: "Cap on the bytes the script may write, all files together, e.g. 1G or 200M.")
    var disk: ByteCount = ByteCount(argument: "1G")!
    @Option(name: .customLong("allow"), help: "A file the script may read (repeatable); with --from, the only files it may read.")
    var allowedFiles: [String] = []
    @Option(name: [.short, .long], help: "Folder the script may write into.")
    var output: String = "out"
    @Flag(help: "Let the script replace files in the output folder; without it an existing file is kept and the new one gets the next free name (NAME-2.png, ...).")
    var overwrite = false
    @OptionGroup var plugins: PluginOptions
    @Flag(name: [.short, .long], help: "No progress bar or notes (the bar is only drawn when stderr is a terminal anyway).")
    var quiet = false

    func validate() throws {
        if OutputFolder.looksLikeAFile(output) {
            throw ValidationError("-o names the folder the script writes into, not a file: '\(output)'")
        }
    }

    func request(script: String, arguments: [String], source: String? = nil, outputDirectory: String? = nil) -> RunRequest {
        if !quiet { plugins.reportOverrides() }
        var request = RunRequest(script: script, arguments: arguments,
                                 limits: time.limits(memory: memory.bytes, disk: disk.bytes),
                                 outputDirectory: outputDirectory ?? output, pluginDirectories: plugins.directories,
                                 source: source, allowedFiles: allowedFiles, progress: ProgressBar.standardError(quiet: quiet))
        request.overwrite = overwrite
        return request
    }
}

/// Runs a request once, printing a failure as `kiri: file:line: message`.
func runOnce(_ request: RunRequest) -> Result<[String], ScriptFailure> {
    do {
        return .success(try RecipeRunner.run(request))
    } catch let failure as ScriptFailure {
        report(failure.message)
        switch failure.stoppedBy {
        case .timeLimit: report("the recipe's own time passed --timeout; give a larger --timeout SECONDS if it is legitimate (files it wrote are kept)")
        case .wallTimeLimit: report("the run passed --wall-timeout; give a larger one, or none, if it is legitimate (files it wrote are kept)")
        default: break
        }
        return .failure(failure)
    } catch {
        report("\(error)")
        return .failure(ScriptFailure(kind: .error, message: "\(error)"))
    }
}

/// Runs async work from a synchronous command and waits for it (the commands are ParsableCommand, not async).
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}

/// `kiri: message` on standard error; messages quote scripts and PNGs, so control characters are escaped there.
func report(_ message: String) {
    TerminalText.write("kiri: \(message)\n", to: .standardError)
}

func fail(_ message: String) -> ExitCode {
    report(message)
    return ExitCode(1)
}

extension KiriCommand {
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a Lua recipe in the sandbox.",
            discussion: """
                Arguments after FILE reach the script as `arg[1]`, `arg[2]`, ... and as `...`; arg[0] is FILE's name (no folder).
                With --from IMAGE.png, the recipe and arguments stored in a PNG Kiri wrote run again, and make \
                the same image bit for bit (with the same plugins and model). Kiri first says which recipe that is, \
                its source's SHA-256 and whether it differs from the bundled recipe of that name. Nothing in the PNG \
                grants access to a file: the run reads only the plugins, the bundled models, the output folder and \
                the files named with --allow.
                """)

        static let sharedRecipeWallTimeout: Double = 3600

        @OptionGroup var sandbox: SandboxOptions
        @Option(name: .customLong("from"), help: "Run the recipe stored in a PNG Kiri wrote, with its arguments (key=value arguments after it change them); a PNG from AUTOMATIC1111 runs txt2img.lua with its parameters.")
        var image: String?
        @Flag(help: "Run again whenever the recipe or a plugin or module it loaded changes.")
        var watch = false
        @Argument(help: "The recipe, a .lua file.")
        var file: String?
        @Argument(parsing: .captureForPassthrough, help: "Arguments for the script.")
        var arguments: [String] = []

        func validate() throws {
            if image != nil, let file, !file.contains("=") {
                throw ValidationError("give a recipe FILE or --from IMAGE, not both (after --from IMAGE, key=value arguments change the stored ones)")
            }
            if image == nil, file == nil { throw ValidationError("missing the recipe: kiri run FILE.lua [ARGS...] or kiri run --from IMAGE.png") }
            if image != nil, watch { throw ValidationError("--watch needs a recipe file, not --from") }
        }

        func run() throws {
            var request: RunRequest
            if let image {
                let provenance: RecipeProvenance
                do {
                    provenance = try RecipeProvenance(image: image)
                } catch {
                    throw fail("\(error)")
                }
                report(provenance.announcement(image: image, catalog: PluginPath.catalog(user: sandbox.plugins.directories)))
                // key=value arguments typed after --from IMAGE come after the stored ones, so they win.
                let typed = (file.map { [$0] } ?? []) + arguments
                request = sandbox.request(script: provenance.recipeName, arguments: provenance.arguments + typed,
                                          source: provenance.source)
                // A shared PNG's recipe could call models in a loop, which the script clock does not count: it gets
                // an hour of wall time unless --wall-timeout says otherwise.
                if sandbox.time.wallTimeout == nil { request.limits.wallTimeout = Self.sharedRecipeWallTimeout }
            } else {
                request = sandbox.request(script: file!, arguments: arguments)
            }
            guard watch, image == nil, let file else {
                if case .failure = runOnce(request) { throw ExitCode(1) }
                return
            }
            while true {
                let files: [String]
                switch runOnce(request) {
                case .success(let loaded): files = loaded
                case .failure(let failure): files = failure.loadedFiles.isEmpty ? [file] : failure.loadedFiles
                }
                let changed = FileWatcher.waitForChange(files)
                report("\(changed) changed, running \(file) again")
            }
        }
    }

    struct Sample: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an image from a prompt (Scripts/txt2img.lua), with the default model or --model.",
            discussion: """
                The default model draws Fashion-MNIST's classes: t-shirt, trouser, pullover, dress, coat, sandal, \
                shirt, sneaker, bag and ankle boot (plurals and synonyms such as "boots" or "jeans" work too).
                Example: kiri sample --prompt sneaker --steps 20 --cfg 4 --sampler dpmpp_2m --schedule karras --seed 7 --name sneaker.png
                With --model, a Stable Diffusion 1.x or 2.x checkpoint: a diffusers folder, one .safetensors file or a .gguf file.
                Example: kiri sample --model sd15.safetensors --prompt "a red fox in the snow" --width 512 --height 512
                """)

        @Option(help: "What to draw: a class name, with A1111's [from:to:when], [a|b] and AND if you like.") var prompt: String?
        @Option(help: "What to steer away from: a class name, or empty for none.") var negative = ""
        @Option(help: "A model: a diffusers pipeline folder or a single-file .safetensors or .gguf checkpoint (default: Kiri's).")
        var model: String?
        @Option(parsing: .unconditional, help: "Image width in pixels, a multiple of 8 (default: the model's).") var width = 0
        @Option(parsing: .unconditional, help: "Image height in pixels, a multiple of 8 (default: the model's).") var height = 0
        @Option(parsing: .unconditional, help: "A1111's Clip skip: 2 takes the text encoder's penultimate layer (default 1, the last).") var clipSkip = 1
        @Option(help: "A VAE .safetensors file to use instead of the model's own (LDM or diffusers layout).") var vae: String?
        @Option(help: "The format weights are kept in: f32, f16, bf16 or q8_0 (8-bit blocks, half of f16's memory); default: as the file stores them.")
        var weights: String?
        @Option(help: "Memory cap for the run (the bundled recipe is trusted; a 512×512 SD 1.5 generation fits in 4G).")
        var memory: ByteCount = ByteCount(argument: "16G")!
        @Option(parsing: .unconditional, help: "Sampler steps.") var steps = 20
        @Option(parsing: .unconditional, help: "Classifier-free guidance scale.") var cfg = 4.0
        @Option(help: "A sampler plugin (kiri list samplers).") var sampler = "dpmpp_2m"
        @Option(help: "A schedule plugin (kiri list schedules).") var schedule = "karras"
        @Option(help: "Guidance patches with their defaults, comma-separated (kiri list guidance), e.g. rescale_cfg,apg.")
        var guidance = ""
        @OptionGroup var plugins: PluginOptions
        @Option(parsing: .unconditional, help: "Seed of image 1's noise; image k of a batch has seed + k - 1, as in A1111. -1 picks one at random (and says which).")
        var seed = 0
        @Option(parsing: .unconditional, help: "A1111's variation seed: each image's noise is slerped --subseed-strength of the way towards this seed's.")
        var subseed = 0
        @Option(parsing: .unconditional, help: "How far towards the variation seed's noise, from 0 (none) to 1.") var subseedStrength = 0.0
        @Option(parsing: .unconditional, help: "Images to make at once (1 to 64).") var batch = 1
        @Option(name: [.short, .long], help: "The folder to write into, as for kiri run.") var output = "out"
        @Option(help: "The PNG's name in the output folder (default: A1111's NUMBER-SEED.png, numbered on from the folder's files); several images are NAME-1.png, NAME-2.png, ...")
        var name: String?
        @Flag(help: "Replace an existing file of that name; without it the new image gets the next free name.") var overwrite = false
        @Flag(name: [.short, .long], help: "No progress bar or notes.") var quiet = false
        @OptionGroup var time: TimeLimitOptions

        /// Ranges as lib/recipe.lua checks them, said here with the option's own name.
        func validate() throws {
            func check(_ ok: Bool, _ message: String) throws { if !ok { throw ValidationError(message) } }
            try check(steps >= 1, "--steps must be at least 1, got \(steps)")
            try check(cfg.isFinite && cfg >= 0, "--cfg must be a number from 0 up, got \(cfg)")
            try check((1...64).contains(batch), "--batch must be from 1 to 64, got \(batch)")
            try check(seed >= -1, "--seed must be 0 or more (or -1 for a random one), got \(seed)")
            try check(subseed >= 0, "--subseed must be 0 or more, got \(subseed)")
            try check((0...1).contains(subseedStrength), "--subseed-strength must be from 0 to 1, got \(subseedStrength)")
            try check(width >= 0 && width % 8 == 0, "--width must be a multiple of 8 (0: the model's), got \(width)")
            try check(height >= 0 && height % 8 == 0, "--height must be a multiple of 8 (0: the model's), got \(height)")
            try check(clipSkip >= 1, "--clip-skip must be at least 1, got \(clipSkip)")
            try check(!OutputFolder.looksLikeAFile(output),
                      "-o names the output folder, as for kiri run; give the file's name with --name \(FileAccess.name(of: output))")
            if let name {
                try check(name.lowercased().hasSuffix(".png"), "--name: Kiri writes PNG files, so the name must end in .png, got '\(name)'")
                try check(!name.contains("/"), "--name is a file name inside the output folder (-o), got '\(name)'")
            }
        }

        func run() throws {
            guard let scripts = BundledFiles.scripts else { throw fail("cannot find Kiri's Scripts folder (set KIRI_HOME)") }
            let seed = self.seed >= 0 ? self.seed : Int(UInt32.random(in: 0...UInt32.max))   // A1111's range
            let file = name ?? String(format: "%05ld", Self.nextNumber(in: output)) + "-\(seed).png"
            let arguments = [
                "prompt=\(prompt ?? "sneaker")", "negative=\(negative)", "steps=\(steps)", "cfg=\(cfg)",
                "sampler=\(sampler)", "schedule=\(schedule)", "guidance=\(guidance)", "seed=\(seed)", "batch=\(batch)",
                "subseed=\(subseed)", "subseed_strength=\(subseedStrength)",
                "out=\(file)", "width=\(width)", "height=\(height)", "clip_skip=\(clipSkip)",
            ] + (model.map { ["model=\($0)"] } ?? []) + (vae.map { ["vae=\($0)"] } ?? []) + (weights.map { ["weights=\($0)"] } ?? [])
            var request = RunRequest(
                script: scripts + "/txt2img.lua", arguments: arguments,
                limits: time.limits(memory: memory.bytes, disk: SandboxLimits().disk), outputDirectory: output,
                pluginDirectories: plugins.directories, progress: ProgressBar.standardError(quiet: quiet))
            request.overwrite = overwrite
            if !quiet {
                plugins.reportOverrides()
                if prompt == nil {
                    report("no --prompt given, so drawing a sneaker (\(steps) \(sampler) steps on the \(schedule) schedule, "
                        + "CFG \(cfg), seed \(seed)). Try --prompt \"ankle boot\" or kiri sample --help.")
                }
                if self.seed < 0 { report("--seed -1: using seed \(seed)") }
            }
            if case .failure = runOnce(request) { throw ExitCode(1) }
        }

        /// A1111's next image number (modules/images.py get_next_sequence_number): one more than the largest
        /// number that starts a file name in the folder, 0 in an empty or new folder.
        static func nextNumber(in folder: String) -> Int {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            let numbers = names.compactMap { name in Int(name.prefix { $0.isASCII && $0.isNumber }.prefix(9)) }
            return (numbers.max() ?? -1) + 1
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a diffusion model (Scripts/train.lua), with that recipe's key=value arguments.",
            discussion: """
                The default retrains Kiri's default model: Fashion-MNIST (Debian's dataset-fashion-mnist), 2500 steps \
                of batch 128, v-prediction, AdamW, an EMA of the weights; data=FOLDER trains on a folder of PNGs \
                (subfolders are classes). Everything goes under the output folder: checkpoints, sample grids, \
                loss.csv, loss.png and the final model. resume=OUT/train/checkpoint-NNNNNN continues a run bit for bit.
                Example: kiri train -o runs steps=2500 batch=128 lr=1e-3
                Example: kiri train -o runs data=my_images steps=2000 batch=32 sample_every=250
                Keys: data, size, channels, flip, config, init, resume, steps, batch, lr, weight_decay, clip, ema, \
                warmup, lr_schedule, prediction, loss, snr_gamma, timesteps, noise_offset, cond_dropout, seed, \
                checkpoint_every, sample_every, log_every, sample_steps, sample_cfg, out (see Scripts/train.lua).
                """)

        @Option(help: "Memory cap for the run, e.g. 16G.") var memory: ByteCount = ByteCount(argument: "16G")!
        @Option(help: "Cap on the bytes the run may write, e.g. 8G (checkpoints add up).") var disk: ByteCount = ByteCount(argument: "8G")!
        @Option(parsing: .unconditional, help: "Stop after this many seconds of the recipe's own work (default: no limit; training takes hours).")
        var timeout: Double?
        @Option(parsing: .unconditional, help: "Stop the whole run after this many seconds (default: no limit).")
        var wallTimeout: Double?
        @Option(name: [.short, .long], help: "The folder to write into, as for kiri run.") var output = "out"
        @OptionGroup var plugins: PluginOptions
        @Flag(help: "Replace existing files in the output folder.") var overwrite = false
        @Flag(name: [.short, .long], help: "No notes.") var quiet = false
        @Argument(parsing: .captureForPassthrough, help: "key=value arguments for Scripts/train.lua.")
        var arguments: [String] = []

        func validate() throws {
            for (name, value) in [("--timeout", timeout), ("--wall-timeout", wallTimeout)] {
                if let value, !(value.isFinite && value > 0) { throw ValidationError("\(name) must be a positive number of seconds, got \(value)") }
            }
            if OutputFolder.looksLikeAFile(output) { throw ValidationError("-o names the folder the run writes into, not a file: '\(output)'") }
        }

        func run() throws {
            guard let scripts = BundledFiles.scripts else { throw fail("cannot find Kiri's Scripts folder (set KIRI_HOME)") }
            if !quiet { plugins.reportOverrides() }
            var request = RunRequest(
                script: scripts + "/train.lua", arguments: arguments,
                limits: SandboxLimits(timeout: timeout ?? .infinity, wallTimeout: wallTimeout ?? .infinity, memory: memory.bytes,
                                      disk: disk.bytes),
                outputDirectory: output, pluginDirectories: plugins.directories, progress: ProgressBar.standardError(quiet: quiet))
            request.overwrite = overwrite
            if case .failure = runOnce(request) { throw ExitCode(1) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List plugins with their descriptions and where each comes from.")
        @OptionGroup var plugins: PluginOptions
        @Argument(help: "samplers, schedules, guidance, post, models, noise, losses, timesteps or lr_schedules (all when omitted).")
        var domain: String?

        func validate() throws {
            if let domain, !PluginCatalog.domains.contains(domain) {
                throw ValidationError("unknown plugin kind '\(domain)'; choose one of \(PluginCatalog.domains.joined(separator: ", "))")
            }
        }

        func run() throws {
            let catalog = PluginPath.catalog(user: plugins.directories)
            for domain in domain.map({ [$0] }) ?? PluginCatalog.domains {
                let entries = catalog.entries(domain: domain)
                guard !entries.isEmpty || self.domain != nil else { continue }
                print("\(domain):")
                let width = entries.map(\.name.count).max() ?? 0
                for entry in entries {
                    let origin = entry.isBundled ? "bundled"
                        : "user: \(entry.path)" + (entry.overridesBundled ? ", overrides bundled" : "")
                    print("  \(entry.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(entry.description) [\(origin)]")
                }
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what a model is: its files, architecture, parameters, dtype, prediction type and schedule.",
            discussion: "The fields are those of `m.info` in Lua. The weights are not loaded, only their header.")
        @Argument(help: "A diffusers pipeline folder, a single-file SD 1.x/2.x checkpoint (.safetensors or stable-diffusion.cpp's .gguf), a .safetensors file with its config.json beside it, or a diffusers model folder.")
        var path: String

        func run() throws {
            do {
                print(try ModelSummary(files: PipelineFiles.locate(path)).text)
            } catch {
                throw fail("\(error)")
            }
        }
    }

    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve AUTOMATIC1111's API, Kiri's recipe jobs and a web page over HTTP.",
            discussion: """
                One job runs at a time; the rest wait in a queue of --queue jobs (a full queue answers 503 with \
                Retry-After). Each job runs in its own sandbox with the limits below and writes only into OUTPUT/jobs/ID. \
                SIGTERM or SIGINT cancel the running job, refuse new ones and exit 0. Only loopback is served unless \
                --host says otherwise, which then needs --token (or KIRI_SERVE_TOKEN).
                Example: kiri serve --model v1-5-pruned-emaonly.safetensors
                API: /sdapi/v1/txt2img, /img2img, /samplers, /schedulers, /sd-models, /options, /progress, /interrupt; \
                /kiri/v1/jobs, /kiri/v1/jobs/ID (GET, DELETE), /kiri/v1/jobs/ID/events (Server-Sent Events), \
                /kiri/v1/jobs/ID/outputs/NAME, /kiri/v1/plugins; /openapi.json describes them.
                """)

        @Option(help: "The address to listen on; beyond loopback it needs --token.") var host = "127.0.0.1"
        @Option(parsing: .unconditional, help: "The port (0: any free one; the one in use is printed).") var port = 7860
        @Option(name: .customLong("model"), help: "A model to serve: a diffusers folder or a single-file checkpoint (repeatable; the first is A1111's current one). Kiri's default model is always served.")
        var models: [String] = []
        @OptionGroup var plugins: PluginOptions
        @Option(help: "A bearer token every API request must carry (default: KIRI_SERVE_TOKEN, else none).") var token: String?
        @Option(parsing: .unconditional, help: "Jobs that may wait behind the running one.") var queue = 16
        @Flag(help: "Accept recipe source in POST /kiri/v1/jobs (it runs sandboxed, as any shared recipe).") var allowRecipes = false
        @Option(parsing: .unconditional, help: "Stop a job's recipe after this many seconds of its own work; model evaluations do not count.")
        var timeout: Double = 60
        @Option(parsing: .unconditional, help: "Stop a job after this many seconds in all.") var wallTimeout: Double = 3600
        @Option(help: "Memory cap of each job, Lua and tensors together.") var memory: ByteCount = ByteCount(argument: "4G")!
        @Option(help: "Cap on the bytes each job may write.") var disk: ByteCount = ByteCount(argument: "1G")!
        @Option(help: "Largest request body, e.g. 32M (base64 images count).") var maxBody: ByteCount = ByteCount(argument: "32M")!
        @Option(help: "Memory for the models kept loaded between jobs (least recently used out first).")
        var modelCache: ByteCount = ByteCount(argument: "8G")!
        @Option(name: [.short, .long], help: "The folder jobs write into (OUTPUT/jobs/ID).") var output = "served"

        func validate() throws {
            for (name, value) in [("--timeout", timeout), ("--wall-timeout", wallTimeout)] where !(value.isFinite && value > 0) {
                throw ValidationError("\(name) must be a positive number of seconds, got \(value)")
            }
            for model in models where !FileManager.default.fileExists(atPath: model) {
                throw ValidationError("--model '\(model)': no such file or folder")
            }
            if OutputFolder.looksLikeAFile(output) { throw ValidationError("-o names a folder, not a file: '\(output)'") }
        }

        func run() throws {
            var options = ServerOptions()
            (options.host, options.port, options.models, options.pluginDirectories) = (host, port, models, plugins.directories)
            options.token = token ?? ProcessInfo.processInfo.environment["KIRI_SERVE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            (options.queue, options.allowRecipes, options.output, options.maxBodyBytes) = (queue, allowRecipes, output, maxBody.bytes)
            options.modelCacheBytes = modelCache.bytes
            options.limits = SandboxLimits(timeout: timeout, wallTimeout: wallTimeout, memory: memory.bytes, disk: disk.bytes)
            let server: KiriServer
            do {
                server = try KiriServer(options: options)
            } catch {
                throw fail("\(error)")
            }
            let shownHost = host.contains(":") ? "[\(host)]" : host
            do {
                try waitFor {
                    try await server.run { port in
                        FileHandle.standardOutput.write(Data("kiri serve: listening on http://\(shownHost):\(port)\n".utf8))
                    }
                }
            } catch {
                throw fail("serve: \(error)")
            }
        }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks, each against a baseline measured in the same run.",
            subcommands: [Step.self, Model.self, Sample.self, Pipeline.self, Train.self, Serve.self], defaultSubcommand: Step.self)
    }
}

extension KiriCommand.Bench {
    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A Lua sampler step against a native Swift loop.")
        @Option(help: "Timed repetitions; the median is reported.")
        var repetitions: Int = 51
        @Option(help: "Steps per repetition.")
        var steps: Int = 200

        func run() throws {
            print(try EulerStepBenchmark.run(repetitions: repetitions, steps: steps))
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One training step of a UNet (forward, backward, clipping, AdamW), against PyTorch on the same config.",
            discussion: "Example: kiri bench train Sources/Kiri/Resources/models/fashion-mnist/config.json --batch 128 --python /work/venv/bin/python")
        @Argument(help: "A UNet config.json (default: the default model's).")
        var config: String?
        @Option(parsing: .unconditional, help: "Batch size.") var batch: Int = 128
        @Option(parsing: .unconditional, help: "Timed steps; the median is reported.") var runs: Int = 10
        @Option(help: "A Python with torch and diffusers, to time PyTorch in the same run.") var python: String?
        @Flag(help: "Gradient checkpointing, in both (diffusers' enable_gradient_checkpointing).") var gradientCheckpointing = false

        func validate() throws {
            guard batch >= 1, runs >= 1 else { throw ValidationError("--batch and --runs must be at least 1") }
        }

        func run() throws {
            guard let path = config ?? BundledFiles.models["fashion-mnist"].map({ $0 + "/config.json" }) else {
                throw ValidationError("give a config.json: the default model is not installed")
            }
            print(try TrainingBenchmark.run(config: path, batch: batch, runs: runs, gradientCheckpointing: gradientCheckpointing,
                                            python: python))
        }
    }

    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "kiri serve: the API's latency over the same small job run directly, and /sdapi/v1/progress's requests per second under wrk while a job runs.")
        @Option(parsing: .unconditional, help: "Timed jobs each way; the median is reported.") var runs: Int = 20
        @Option(parsing: .unconditional, help: "Sampler steps of the small job.") var steps: Int = 4
        @Option(parsing: .unconditional, help: "Seconds of wrk.") var seconds: Int = 5

        func validate() throws {
            guard runs >= 1, steps >= 1, seconds >= 1 else { throw ValidationError("--runs, --steps and --seconds must be at least 1") }
        }

        func run() throws {
            let (runs, steps, seconds) = (runs, steps, seconds)
            let kiri = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
            print(try waitFor { try await ServerBenchmark.run(runs: runs, steps: steps, kiri: kiri, wrkSeconds: seconds) })
        }
    }

    struct Model: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A UNet's forward pass at batch 1 and 2, against PyTorch on the same weights.",
            discussion: "Make the reference network with Tests/Fixtures/models/parity/make_parity.py --bench-weights DIR.")
        @Argument(help: "A model folder or .safetensors file (with its config.json).")
        var path: String
        @Option(help: "Timed runs per batch size; the median is reported.")
        var runs: Int = 30
        @Option(help: "A Python with torch and diffusers, to time PyTorch in the same run.")
        var python: String?

        func run() throws {
            print(try UNetBenchmark.run(model: path, runs: runs, python: python))
        }
    }

    struct Sample: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The default model's txt2img loop in Lua at batch 1 and 8, against diffusers on the same weights.")
        @Option(help: "Timed runs per batch size; the median is reported.")
        var runs: Int = 10
        @Option(help: "A Python with torch and diffusers, to time PyTorch in the same run.")
        var python: String?

        func run() throws {
            print(try SampleBenchmark.run(runs: runs, python: python))
        }
    }
}

extension KiriCommand.Bench {
    struct Pipeline: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A Stable Diffusion pipeline's load, encode, CFG step, decode and txt2img, against diffusers and stable-diffusion.cpp on the same weights.",
            discussion: """
                Make full-size random SD 1.5 weights with Tests/Benchmarks/make_sd15_pipeline.py --out DIR --single-file FILE. \
                Each engine runs in turn, with its own peak RSS; see Tests/Benchmarks/README.md.
                """)
        @Argument(help: "A diffusers SD pipeline folder (Kiri and diffusers load it).")
        var model: String
        @Option(help: "Timed runs of the step and the decode; the median is reported.")
        var runs: Int = 3
        @Option(help: "Steps of the whole txt2img.")
        var steps: Int = 20
        @Option(help: "Whole txt2img runs (0: none).")
        var txt2imgRuns: Int = 1
        @Option(help: "Kiri's weight format: f32, f16, bf16 or q8_0 (default: as stored).")
        var weights: String?
        @Option(help: "A Python with torch and diffusers, to time diffusers in the same run.")
        var python: String?
        @Option(help: "A Python with stable-diffusion-cpp-python, to time stable-diffusion.cpp in the same run.")
        var sdcppPython: String?
        @Option(help: "The single-file checkpoint (or GGUF) stable-diffusion.cpp loads.")
        var singleFile: String?
        @Option(help: "stable-diffusion.cpp's weight types, comma-separated (f16 is the file's own).")
        var sdcppTypes: String = "f16"

        func run() throws {
            var options = PipelineBenchmark.Options(model: model)
            (options.runs, options.steps, options.txt2imgRuns, options.weights) = (runs, steps, txt2imgRuns, weights)
            (options.python, options.sdcppPython, options.singleFile, options.sdcppTypes) = (python, sdcppPython, singleFile, sdcppTypes)
            print(try PipelineBenchmark.run(options))
        }
    }
}

// A KIRI_HOME that is not a folder would silently fall back to the checkout's or the install's files.
if let home = ProcessInfo.processInfo.environment["KIRI_HOME"] {
    if !BundledFiles.isFolder(home) { report("warning: KIRI_HOME=\(home) is not a folder, so it is ignored") }
}
// KIRI_ISA=generic|avx2|avx512 runs the kernels of a lower instruction set than the CPU's best.
if let isa = ProcessInfo.processInfo.environment["KIRI_ISA"] {
    do {
        try KernelISA.select(isa)
    } catch {
        FileHandle.standardError.write(Data("kiri: KIRI_ISA=\(isa): \(error)\n".utf8))
        exit(1)
    }
}
KiriCommand.main()
