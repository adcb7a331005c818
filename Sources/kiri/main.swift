import ArgumentParser
import Foundation
import Kiri
import KiriLua
import KiriModels

/// The `kiri` command line.
struct KiriCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiri",
        abstract: "Kiri: a diffusion engine with Lua recipes.",
        version: "\(KiriVersion.string), \(KernelISA.summary)",
        subcommands: [Run.self, Sample.self, List.self, Info.self, Bench.self]
    )
}

/// Parses "4G", "512M", "64K" or a plain byte count.
struct ByteCount: ExpressibleByArgument {
    var bytes: Int
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
}

struct SandboxOptions: ParsableArguments {
    @Option(help: "Stop the script after this many seconds.")
    var timeout: Double = 60
    @Option(help: "Memory cap for Lua and tensors together, e.g. 4G or 512M (a 512×512 SD 1.5 generation fits in 4G).")
    var memory: ByteCount = ByteCount(argument: "4G")!
    @Option(help: "Cap on the bytes the script may write, all files together, e.g. 1G or 200M.")
    var disk: ByteCount = ByteCount(argument: "1G")!
    @Option(name: .customLong("allow"), help: "A file the script may read (repeatable); with --from, the only files it may read.")
    var allowedFiles: [String] = []
    @Option(name: [.short, .long], help: "Folder the script may write into.")
    var output: String = "out"
    @OptionGroup var plugins: PluginOptions
    @Flag(name: [.short, .long], help: "No progress bar (it is only drawn when stderr is a terminal anyway).")
    var quiet = false

    func validate() throws {
        guard timeout.isFinite, timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds") }
    }

    func request(script: String, arguments: [String], source: String? = nil, outputDirectory: String? = nil) -> RunRequest {
        RunRequest(script: script, arguments: arguments,
                   limits: SandboxLimits(timeout: timeout, memory: memory.bytes, disk: disk.bytes),
                   outputDirectory: outputDirectory ?? output, pluginDirectories: plugins.directories, source: source,
                   allowedFiles: allowedFiles, progress: ProgressBar.standardError(quiet: quiet))
    }
}

/// Runs a request once, printing a failure as `kiri: file:line: message`.
func runOnce(_ request: RunRequest) -> Result<[String], ScriptFailure> {
    do {
        return .success(try RecipeRunner.run(request))
    } catch let failure as ScriptFailure {
        report(failure.message)
        return .failure(failure)
    } catch {
        report("\(error)")
        return .failure(ScriptFailure(kind: .error, message: "\(error)"))
    }
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

        @OptionGroup var sandbox: SandboxOptions
        @Option(name: .customLong("from"), help: "Run the recipe stored in a PNG Kiri wrote, with its arguments.")
        var image: String?
        @Flag(help: "Run again whenever the recipe or a plugin or module it loaded changes.")
        var watch = false
        @Argument(help: "The recipe, a .lua file.")
        var file: String?
        @Argument(parsing: .captureForPassthrough, help: "Arguments for the script.")
        var arguments: [String] = []

        func validate() throws {
            if image != nil, file != nil { throw ValidationError("give a recipe FILE or --from IMAGE, not both") }
            if image == nil, file == nil { throw ValidationError("missing the recipe: kiri run FILE.lua [ARGS...] or kiri run --from IMAGE.png") }
            if image != nil, watch { throw ValidationError("--watch needs a recipe file, not --from") }
        }

        func run() throws {
            let request: RunRequest
            if let image {
                let provenance: RecipeProvenance
                do {
                    provenance = try RecipeProvenance(image: image)
                } catch {
                    throw fail("\(error)")
                }
                report(provenance.announcement(image: image))
                request = sandbox.request(script: provenance.recipeName, arguments: provenance.arguments, source: provenance.source)
            } else {
                request = sandbox.request(script: file!, arguments: arguments)
            }
            guard watch, let file else {
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
                Example: kiri sample --prompt sneaker --steps 20 --cfg 4 --sampler dpmpp_2m --schedule karras --seed 7 -o sneaker.png
                With --model, a Stable Diffusion 1.x or 2.x checkpoint: a diffusers folder, one .safetensors file or a .gguf file.
                Example: kiri sample --model sd15.safetensors --prompt "a red fox in the snow" --width 512 --height 512
                """)

        @Option(help: "What to draw: a class name, with A1111's [from:to:when], [a|b] and AND if you like.") var prompt: String?
        @Option(help: "What to steer away from: a class name, or empty for none.") var negative = ""
        @Option(help: "A model: a diffusers pipeline folder or a single-file .safetensors or .gguf checkpoint (default: Kiri's).")
        var model: String?
        @Option(help: "Image width in pixels, a multiple of 8 (default: the model's).") var width = 0
        @Option(help: "Image height in pixels, a multiple of 8 (default: the model's).") var height = 0
        @Option(help: "A1111's Clip skip: 2 takes the text encoder's penultimate layer (default 1, the last).") var clipSkip = 1
        @Option(help: "A VAE .safetensors file to use instead of the model's own (LDM or diffusers layout).") var vae: String?
        @Option(help: "The format weights are kept in: f32, f16, bf16 or q8_0 (8-bit blocks, half of f16's memory); default: as the file stores them.")
        var weights: String?
        @Option(help: "Memory cap for the run (the bundled recipe is trusted; a 512×512 SD 1.5 generation fits in 4G).")
        var memory: ByteCount = ByteCount(argument: "16G")!
        @Option(help: "Sampler steps.") var steps = 20
        @Option(help: "Classifier-free guidance scale.") var cfg = 4.0
        @Option(help: "A sampler plugin (kiri list samplers).") var sampler = "dpmpp_2m"
        @Option(help: "A schedule plugin (kiri list schedules).") var schedule = "karras"
        @Option(help: "Guidance patches with their defaults, comma-separated (kiri list guidance), e.g. rescale_cfg,apg.")
        var guidance = ""
        @OptionGroup var plugins: PluginOptions
        @Option(help: "Seed of the starting noise and of the sampler's noise.") var seed = 0
        @Option(help: "Images to make at once; several are written as NAME-1.png, NAME-2.png, ...") var batch = 1
        @Option(name: [.short, .long], help: "The PNG to write.") var output = "sample.png"
        @Flag(name: [.short, .long], help: "No progress bar.") var quiet = false
        @Option(help: "Stop after this many seconds (a 512² Stable Diffusion image takes minutes on a CPU).") var timeout: Double = 3600

        func run() throws {
            guard let scripts = BundledFiles.scripts else { throw fail("cannot find Kiri's Scripts folder (set KIRI_HOME)") }
            let folder = FileAccess.folder(of: output)
            let arguments = [
                "prompt=\(prompt ?? "sneaker")", "negative=\(negative)", "steps=\(steps)", "cfg=\(cfg)",
                "sampler=\(sampler)", "schedule=\(schedule)", "guidance=\(guidance)", "seed=\(seed)", "batch=\(batch)",
                "out=\(FileAccess.name(of: output))", "width=\(width)", "height=\(height)", "clip_skip=\(clipSkip)",
            ] + (model.map { ["model=\($0)"] } ?? []) + (vae.map { ["vae=\($0)"] } ?? []) + (weights.map { ["weights=\($0)"] } ?? [])
            let request = RunRequest(
                script: scripts + "/txt2img.lua", arguments: arguments,
                limits: SandboxLimits(timeout: timeout, memory: memory.bytes), outputDirectory: folder,
                pluginDirectories: plugins.directories, progress: ProgressBar.standardError(quiet: quiet))
            if prompt == nil {
                print("kiri sample: no --prompt given, so drawing a sneaker (\(steps) \(sampler) steps on the \(schedule) schedule, "
                    + "CFG \(cfg), seed \(seed)). Try --prompt \"ankle boot\" or kiri sample --help.")
            }
            if case .failure = runOnce(request) { throw ExitCode(1) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List plugins with their descriptions and where each comes from.")
        @OptionGroup var plugins: PluginOptions
        @Argument(help: "samplers, schedules, guidance, post, models or noise (all when omitted).")
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

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks, each against a baseline measured in the same run.",
            subcommands: [Step.self, Model.self, Sample.self, Pipeline.self], defaultSubcommand: Step.self)
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
