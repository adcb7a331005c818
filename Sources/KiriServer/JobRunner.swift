import Foundation
import Kiri
import KiriLua
import KiriTensor

/// Why a job failed: the recipe (or the input it was given) raised an error, a limit stopped it, or it was cancelled.
struct JobFailure: Sendable {
    enum Kind: String, Codable, Sendable { case recipe, memory, time, cancelled, server }
    var kind: Kind
    var message: String

    init(_ kind: Kind, _ message: String) {
        (self.kind, self.message) = (kind, message)
    }

    /// The first line, without the traceback: what an A1111 client shows.
    var summary: String { String(message.prefix { $0 != "\n" }) }
}

/// Runs a job's recipe in the sandbox, once per argument list, with the server's limits (the wall clock counts the
/// whole job): it reads the plugins, the bundled and served models and its own inputs, and writes only into its
/// own folder. Messages show files in the job's folder by name and served models by their name, never a host path.
struct JobRunner: Sendable {
    let limits: SandboxLimits
    let pluginDirectories: [String]
    let models: ModelCache
    /// The served models' paths by name: jobs load them as `served:NAME`.
    let served: [String: String]

    /// The job's failure, nil when every run succeeded.
    func run(_ job: Job) -> JobFailure? {
        // The request's source and images are the job's to use once: the history keeps none of them.
        let (source, inputs) = job.takePayload()
        do {
            try FileManager.default.createDirectory(atPath: job.folder, withIntermediateDirectories: true)
            for (name, bytes) in inputs {
                try Data(bytes).write(to: URL(fileURLWithPath: job.folder + "/" + name))
            }
        } catch {
            return JobFailure(.server, "cannot prepare the job's folder: \(error.localizedDescription)")
        }
        let deadline = Date().addingTimeInterval(limits.wallTimeout)
        var known = Set(inputs.keys)
        for (index, arguments) in job.runs.enumerated() {
            if index > 0, job.isInterrupted { break }
            var runLimits = limits
            runLimits.wallTimeout = deadline.timeIntervalSinceNow
            guard runLimits.wallTimeout > 0 else {
                return JobFailure(.time, "the job passed the server's --wall-timeout of \(limits.wallTimeout) s after \(index) of \(job.runs.count) runs")
            }
            job.beginRun(index + 1)
            var request = RunRequest(script: job.recipe, arguments: arguments, limits: runLimits, outputDirectory: job.folder,
                                     pluginDirectories: pluginDirectories, source: source, progress: JobProgress(job: job))
            request.started = { job.attach($0) }
            request.modelCache = models
            (request.servedModels, request.readsFromOutput) = (served, true)
            var failure: JobFailure?
            do {
                try RecipeRunner.run(request) { job.log(shown($0, job)) }
            } catch let error as ScriptFailure {
                let kind: JobFailure.Kind = switch error.kind {
                case .memory: .memory
                case .timeout: .time
                case .cancelled: .cancelled
                case .error, .setup: .recipe
                }
                failure = JobFailure(kind, shown(error.message, job))
            } catch {
                failure = JobFailure(.server, shown("\(error)", job))
            }
            let written = Self.newFiles(in: job.folder, besides: known)
            job.addOutputs(written)
            known.formUnion(written)
            if let failure { return failure }
        }
        return nil
    }

    /// `text` with the job's folder left out of its files' paths and served models by name.
    func shown(_ text: String, _ job: Job) -> String {
        var text = text.replacingOccurrences(of: job.folder + "/", with: "")
        for (name, path) in served { text = text.replacingOccurrences(of: path, with: "served:" + name) }
        return text
    }

    /// Regular files in `folder` not in `known`, oldest first (a recipe's files in the order it wrote them).
    static func newFiles(in folder: String, besides known: Set<String>) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        let files = names.filter { !known.contains($0) && !$0.hasPrefix(".") }.compactMap { name -> (String, Date)? in
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: folder + "/" + name),
                  attributes[.type] as? FileAttributeType == .typeRegular else { return nil }
            return (name, attributes[.modificationDate] as? Date ?? .distantPast)
        }
        return files.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0.localizedStandardCompare($1.0) == .orderedAscending }.map(\.0)
    }
}

/// A job's progress as its recipe's samplers report it: steps, sigmas and, at most every `previewInterval`
/// seconds, a preview of the denoised estimate. It stops the sampler when the job is interrupted.
final class JobProgress: KiriProgress {
    let job: Job
    static let previewInterval = 0.1
    private var lastPreview = 0.0

    init(job: Job) { self.job = job }

    func step(_ index: Int, of total: Int) { job.update(step: index, of: total, sigma: nil, preview: nil) }

    func step(_ index: Int, of total: Int, sigma: Double?, denoised: Tensor?) -> Bool {
        var preview: [UInt8]?
        let now = ProcessInfo.processInfo.systemUptime
        if let denoised, now - lastPreview >= Self.previewInterval || index == total {
            preview = LatentPreview.png(denoised)
            lastPreview = now
        }
        job.update(step: index, of: total, sigma: sigma.flatMap { $0.isFinite ? $0 : nil }, preview: preview)
        return job.isInterrupted
    }

    var canStopSamplers: Bool { true }

    func end() {}
}
