import Dispatch
import Foundation
import KiriTensor
import Synchronization

/// What a job runs: a recipe's source with one argument list per run (A1111's `n_iter` makes several), reading only
/// the served models and its own inputs, writing only into its own folder.
struct JobSpec: Sendable {
    /// The recipe's name as PNGs record it (`txt2img.lua`, or `recipe.lua` for a request's own source).
    var recipe: String
    var source: String
    var runs: [[String]]
    /// Files the recipe may read besides the plugins and bundled models: served models, the job's input images.
    var allowedFiles: [String] = []
    /// Files the server wrote into the job's folder before it ran (inputs, not outputs).
    var inputs: [String: [UInt8]] = [:]
}

enum JobStatus: String, Codable, Sendable {
    case queued, running, succeeded, failed, cancelled
    var isFinished: Bool { self != .queued && self != .running }
}

/// One job as the API shows it.
struct JobSnapshot: Codable, Sendable {
    var id: String
    var recipe: String
    var status: JobStatus
    /// The sampler's step of `steps` in the current run, `run` of `runs` (1-based).
    var step: Int
    var steps: Int
    var run: Int
    var runs: Int
    var sigma: Double?
    /// 0 to 1 over all runs.
    var progress: Double
    /// Set when the job was interrupted (A1111's interrupt): its sampler stopped early and kept what it had.
    var interrupted: Bool
    var queuePosition: Int?
    var created: Double
    var started: Double?
    var finished: Double?
    /// File names in the job's folder, in the order they were written.
    var outputs: [String]
    var error: String?
    /// What stopped a failed or cancelled job: recipe (its error, or its input's), memory, time, cancelled, server.
    var errorKind: JobFailure.Kind?
    /// What the recipe printed, the last lines.
    var log: [String]
}

/// Server-Sent Events of a job: `state` once on connecting, then `step` (with a `preview` PNG as a data URL when one
/// is made), `log`, `output`, and `done` with the final state.
struct JobEvent: Sendable {
    var name: String
    var json: String
}

/// A job and what it has done so far; every method may be called from any thread.
final class Job: Sendable {
    let id: String
    let spec: JobSpec
    let folder: String
    let created = Date()

    private struct State {
        var status = JobStatus.queued
        var step = 0, steps = 0, run = 0
        var sigma: Double?
        var started: Date?, finished: Date?
        var outputs: [String] = []
        var failure: JobFailure?
        var log: [String] = []
        var preview: [UInt8]?
        var interruptRequested = false, cancelRequested = false
        var cancellation: Cancellation?
        var subscribers: [Int: AsyncStream<JobEvent>.Continuation] = [:]
        var nextSubscriber = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var queuePosition: Int?
        /// Counts the state's changes, so that a reader can keep what it made of the last one.
        var version = 0
    }
    private let state = Mutex(State())

    /// The recipe's output kept for the API: the last lines, each cut at `logLineBytes` (a shared recipe could print
    /// megabytes, and the server keeps a thousand jobs).
    static let logLines = 200, logLineBytes = 1000
    /// Output file names listed for the API (a recipe may write many small files within its disk cap).
    static let maxOutputs = 10_000

    init(id: String, spec: JobSpec, folder: String) {
        self.id = id
        self.spec = spec
        self.folder = folder
    }

    var snapshot: JobSnapshot { state.withLock { snapshot($0) } }

    private func snapshot(_ s: State) -> JobSnapshot {
        let runs = spec.runs.count
        let perRun = s.steps > 0 ? Double(s.step) / Double(s.steps) : 0
        let progress = s.status == .succeeded ? 1 : runs == 0 ? 0 : (Double(max(s.run - 1, 0)) + perRun) / Double(runs)
        return JobSnapshot(id: id, recipe: spec.recipe, status: s.status, step: s.step, steps: s.steps, run: s.run, runs: runs,
                           sigma: s.sigma, progress: min(max(progress, 0), 1), interrupted: s.interruptRequested,
                           queuePosition: s.queuePosition, created: created.timeIntervalSince1970,
                           started: s.started?.timeIntervalSince1970, finished: s.finished?.timeIntervalSince1970,
                           outputs: s.outputs, error: s.failure?.message, errorKind: s.failure?.kind, log: s.log)
    }

    var status: JobStatus { state.withLock { $0.status } }
    /// Changes whenever a step is reported.
    var version: Int { state.withLock { $0.version } }
    var preview: [UInt8]? { state.withLock { $0.preview } }
    var isInterrupted: Bool { state.withLock { $0.interruptRequested || $0.cancelRequested } }

    func setQueuePosition(_ position: Int?) { state.withLock { $0.queuePosition = position } }

    /// Starts the job's clock; false when it was cancelled while it waited.
    func start() -> Bool {
        let started = state.withLock { s -> Bool in
            guard s.status == .queued else { return false }
            (s.status, s.started, s.queuePosition) = (.running, Date(), nil)
            return true
        }
        if started { publish("state", snapshot) }
        return started
    }

    /// The run's cancellation, so that `cancel()` reaches its kernels; a cancel that came first applies now.
    func attach(_ cancellation: Cancellation) {
        let cancelled = state.withLock { s -> Bool in
            s.cancellation = cancellation
            return s.cancelRequested
        }
        if cancelled { cancellation.cancel() }
    }

    func beginRun(_ run: Int) {
        state.withLock { s in (s.run, s.step, s.steps, s.sigma) = (run, 0, 0, nil) }
    }

    /// A sampler step; `preview` is a PNG when one was made for it.
    func update(step: Int, of steps: Int, sigma: Double?, preview: [UInt8]?) {
        let snapshot = state.withLock { s -> JobSnapshot in
            (s.step, s.steps) = (step, steps)
            s.version += 1
            if let sigma { s.sigma = sigma }
            if let preview { s.preview = preview }
            return self.snapshot(s)
        }
        var fields: [String: Any] = ["step": snapshot.step, "steps": snapshot.steps, "run": snapshot.run, "runs": snapshot.runs,
                                     "progress": snapshot.progress]
        if let sigma = snapshot.sigma { fields["sigma"] = sigma }
        if let preview { fields["preview"] = "data:image/png;base64," + Data(preview).base64EncodedString() }
        publish("step", fields)
    }

    func log(_ text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).suffix(Self.logLines).map { line in
            line.utf8.count <= Self.logLineBytes ? String(line) : String(decoding: line.utf8.prefix(Self.logLineBytes), as: UTF8.self) + "…"
        }
        guard !lines.isEmpty else { return }
        state.withLock { s in
            s.log.append(contentsOf: lines)
            if s.log.count > Self.logLines { s.log.removeFirst(s.log.count - Self.logLines) }
        }
        for line in lines { publish("log", ["line": line]) }
    }

    func addOutputs(_ names: [String]) {
        let names = state.withLock { s in
            let kept = Array(names.prefix(max(Self.maxOutputs - s.outputs.count, 0)))
            s.outputs.append(contentsOf: kept)
            return kept
        }
        for name in names { publish("output", ["file": name, "url": "/kiri/v1/jobs/\(id)/outputs/\(name)"]) }
    }

    /// Ends the job: `failure` nil for success; a job cancelled keeps the status `cancelled`.
    func finish(_ failure: JobFailure?) {
        let (waiters, subscribers, snapshot) = state.withLock { s in
            s.status = s.cancelRequested ? .cancelled : failure == nil ? .succeeded : .failed
            s.failure = s.cancelRequested ? JobFailure(.cancelled, failure?.message ?? "cancelled") : failure
            s.finished = Date()
            s.cancellation = nil
            let taken = (s.waiters, s.subscribers)
            (s.waiters, s.subscribers) = ([], [:])
            return (taken.0, taken.1, self.snapshot(s))
        }
        let done = JobEvent(name: "done", json: Self.json(snapshot))
        for subscriber in subscribers.values {
            subscriber.yield(done)
            subscriber.finish()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Stops the job: a queued one never runs, a running one stops at its next kernel tile or Lua instruction batch.
    func cancel() {
        let cancellation = state.withLock { s -> Cancellation? in
            guard !s.status.isFinished else { return nil }
            s.cancelRequested = true
            return s.cancellation
        }
        cancellation?.cancel()
    }

    /// A1111's interrupt: the sampler stops at its next step and the recipe saves what it has; later runs are skipped.
    func interrupt() { state.withLock { s in if !s.status.isFinished { s.interruptRequested = true } } }

    /// Returns when the job has finished.
    func finished() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.status.isFinished { return true }
                s.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// The job's events from now on, after a `state` event; a finished job gives `done` alone. A slow reader loses
    /// the oldest step events rather than holding memory.
    func events() -> AsyncStream<JobEvent> {
        let (stream, continuation) = AsyncStream<JobEvent>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let (key, snapshot) = state.withLock { s -> (Int?, JobSnapshot) in
            let snapshot = self.snapshot(s)
            guard !s.status.isFinished else { return (nil, snapshot) }
            let key = s.nextSubscriber
            s.nextSubscriber += 1
            s.subscribers[key] = continuation
            return (key, snapshot)
        }
        guard let key else {
            continuation.yield(JobEvent(name: "done", json: Self.json(snapshot)))
            continuation.finish()
            return stream
        }
        continuation.yield(JobEvent(name: "state", json: Self.json(snapshot)))
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: key) } }
        return stream
    }

    private func publish(_ name: String, _ value: some Encodable) { publish(JobEvent(name: name, json: Self.json(value))) }

    private func publish(_ name: String, _ fields: [String: Any]) {
        publish(JobEvent(name: name, json: ServerState.jsonText(fields)))
    }

    private func publish(_ event: JobEvent) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for subscriber in subscribers { subscriber.yield(event) }
    }

    static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

/// The queue is full: the client should come back later (503 with Retry-After).
struct QueueFull: Error {}
/// The server is shutting down and takes no new jobs.
struct QueueClosed: Error {}

/// Jobs run one at a time on a thread of their own (the work is CPU-bound and its kernels use every core); the rest
/// wait in a bounded FIFO. Finished jobs are remembered, the most recent `history` of them.
final class JobQueue: Sendable {
    let capacity: Int
    let history: Int
    private let execute: @Sendable (Job) -> JobFailure?
    private struct State {
        var pending: [Job] = []
        var jobs: [String: Job] = [:]
        var finishedOrder: [String] = []
        var running: Job?
        var accepting = true
        var workerDone = false
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// `execute` runs a job and returns its failure, nil when it succeeded.
    init(capacity: Int, history: Int = 1000, execute: @escaping @Sendable (Job) -> JobFailure?) {
        self.capacity = capacity
        self.history = history
        self.execute = execute
        let thread = Thread { [self] in work() }
        thread.name = "kiri-jobs"
        thread.stackSize = 16 << 20   // Lua and the recipe runner recurse deeper than a secondary thread's default
        thread.start()
    }

    /// Queues a job; throws QueueFull past `capacity` waiting jobs, QueueClosed after `shutdown()`.
    func submit(_ make: (String) throws -> Job) throws -> Job {
        let job = try state.withLock { s -> Job in
            guard s.accepting else { throw QueueClosed() }
            // --queue 0 still runs a job when the server is idle.
            guard s.pending.count < capacity || (s.running == nil && s.pending.isEmpty) else { throw QueueFull() }
            var id: String
            repeat { id = Self.newID() } while s.jobs[id] != nil
            let job = try make(id)
            job.setQueuePosition(s.pending.count + (s.running == nil ? 0 : 1))
            s.pending.append(job)
            s.jobs[id] = job
            return job
        }
        wake.signal()
        return job
    }

    func job(_ id: String) -> Job? { state.withLock { $0.jobs[id] } }

    var running: Job? { state.withLock { $0.running } }

    /// The newest `limit` jobs: waiting, running and finished.
    func recent(limit: Int) -> [Job] {
        state.withLock { s in
            let finished = s.finishedOrder.reversed().compactMap { s.jobs[$0] }
            return Array((s.pending.reversed() + (s.running.map { [$0] } ?? []) + finished).prefix(limit))
        }
    }

    /// Jobs waiting, not counting the one running.
    var waiting: Int { state.withLock { $0.pending.count } }

    /// Cancels a job; a queued one leaves the queue at once.
    func cancel(_ job: Job) {
        job.cancel()
        let removed = state.withLock { s -> Bool in
            guard let index = s.pending.firstIndex(where: { $0 === job }) else { return false }
            s.pending.remove(at: index)
            renumber(&s)
            return true
        }
        if removed {
            job.finish(JobFailure(.cancelled, "cancelled while queued"))
            remember(job)
        }
    }

    /// Takes no more jobs, cancels those waiting and the one running, and returns when the worker has stopped.
    func shutdown() async {
        let (pending, running) = state.withLock { s -> ([Job], Job?) in
            s.accepting = false
            let pending = s.pending
            s.pending = []
            return (pending, s.running)
        }
        for job in pending {
            job.cancel()
            job.finish(JobFailure(.cancelled, "the server is shutting down"))
        }
        running?.cancel()
        wake.signal()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.workerDone { return true }
                s.drainWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    private func work() {
        while true {
            wake.wait()
            let next = state.withLock { s -> Job?? in
                if s.pending.isEmpty { return s.accepting ? .some(nil) : .none }
                let job = s.pending.removeFirst()
                s.running = job
                renumber(&s)
                return .some(job)
            }
            guard let next else { break }
            guard let job = next else { continue }
            if job.start() { job.finish(execute(job)) }
            state.withLock { $0.running = nil }
            remember(job)
        }
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.workerDone = true
            defer { s.drainWaiters = [] }
            return s.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func renumber(_ s: inout State) {
        for (index, job) in s.pending.enumerated() { job.setQueuePosition(index + (s.running == nil ? 0 : 1)) }
    }

    /// Keeps the last `history` finished jobs findable; older ones are forgotten (their folders stay on disk).
    private func remember(_ job: Job) {
        state.withLock { s in
            s.finishedOrder.append(job.id)
            while s.finishedOrder.count > history { s.jobs[s.finishedOrder.removeFirst()] = nil }
        }
    }

    /// 16 hex digits from the system's random source: ids cannot be guessed from one another.
    static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(format: "%016llx", generator.next() as UInt64)
    }
}
