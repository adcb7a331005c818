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
    /// Files written into the job's folder before it runs (init and mask images), which its recipe reads by name.
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
    /// The recipe's name and its runs' arguments; its source and inputs are the payload (`takePayload`).
    let recipe: String
    let runs: [[String]]
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
        /// The request's source and images until the job runs.
        var payload: (source: String, inputs: [String: [UInt8]])?
    }
    private let state = Mutex(State())

    /// The recipe's output kept for the API: the last lines, each cut at `logLineBytes` (a shared recipe could print
    /// megabytes, and the server keeps a thousand jobs).
    static let logLines = 200, logLineBytes = 1000
    /// Output file names listed for the API (a recipe may write many small files within its disk cap).
    static let maxOutputs = 1000
    /// Readers of a job's events at once, and the events each may fall behind by (step events carry previews).
    static let maxSubscribers = 64, eventBuffer = 16

    init(id: String, spec: JobSpec, folder: String) {
        (self.id, recipe, runs, self.folder) = (id, spec.recipe, spec.runs, folder)
        state.withLock { $0.payload = (spec.source, spec.inputs) }
    }

    /// The source and inputs, for the run; the job keeps none of them after.
    func takePayload() -> (source: String, inputs: [String: [UInt8]]) {
        state.withLock { locked in
            defer { locked.payload = nil }
            return locked.payload ?? ("", [:])
        }
    }

    var snapshot: JobSnapshot { state.withLock { snapshot($0) } }

    private func snapshot(_ locked: State) -> JobSnapshot {
        JobSnapshot(id: id, recipe: recipe, status: locked.status, step: locked.step, steps: locked.steps, run: locked.run,
                    runs: runs.count, sigma: locked.sigma, progress: progress(locked), interrupted: locked.interruptRequested,
                    queuePosition: locked.queuePosition, created: created.timeIntervalSince1970,
                    started: locked.started?.timeIntervalSince1970, finished: locked.finished?.timeIntervalSince1970,
                    outputs: locked.outputs, error: locked.failure?.message, errorKind: locked.failure?.kind, log: locked.log)
    }

    /// 0 to 1 over all runs.
    private func progress(_ locked: State) -> Double {
        guard locked.status != .succeeded else { return 1 }
        guard !runs.isEmpty else { return 0 }
        let perRun = locked.steps > 0 ? Double(locked.step) / Double(locked.steps) : 0
        return min(max((Double(max(locked.run - 1, 0)) + perRun) / Double(runs.count), 0), 1)
    }

    var status: JobStatus { state.withLock { $0.status } }
    /// Changes with each step, run and interrupt.
    var version: Int { state.withLock { $0.version } }
    var preview: [UInt8]? { state.withLock { $0.preview } }
    var isInterrupted: Bool { state.withLock { $0.interruptRequested || $0.cancelRequested } }

    func setQueuePosition(_ position: Int?) { state.withLock { $0.queuePosition = position } }

    /// Starts the job's clock; false when it was cancelled while it waited.
    func start() -> Bool {
        let started = state.withLock { locked -> Bool in
            guard locked.status == .queued else { return false }
            (locked.status, locked.started, locked.queuePosition) = (.running, Date(), nil)
            return true
        }
        if started { publish("state", snapshot) }
        return started
    }

    /// The run's cancellation, so that `cancel()` reaches its kernels; a cancel that came first applies now.
    func attach(_ cancellation: Cancellation) {
        let cancelled = state.withLock { locked -> Bool in
            locked.cancellation = cancellation
            return locked.cancelRequested
        }
        if cancelled { cancellation.cancel() }
    }

    func beginRun(_ run: Int) {
        state.withLock { locked in
            (locked.run, locked.step, locked.steps, locked.sigma) = (run, 0, 0, nil)
            locked.version += 1
        }
    }

    /// A sampler step; `preview` is a PNG when one was made for it. The step event is made only for a reader.
    func update(step: Int, of steps: Int, sigma: Double?, preview: [UInt8]?) {
        let event = state.withLock { locked -> (run: Int, progress: Double, sigma: Double?)? in
            (locked.step, locked.steps) = (step, steps)
            locked.version += 1
            if let sigma { locked.sigma = sigma }
            if let preview { locked.preview = preview }
            return locked.subscribers.isEmpty ? nil : (locked.run, progress(locked), locked.sigma)
        }
        guard let event else { return }
        var fields: [String: Any] = ["step": step, "steps": steps, "run": event.run, "runs": runs.count, "progress": event.progress]
        if let sigma = event.sigma { fields["sigma"] = sigma }
        if let preview { fields["preview"] = "data:image/png;base64," + Data(preview).base64EncodedString() }
        publish("step", fields)
    }

    func log(_ text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).suffix(Self.logLines).map { line in
            line.utf8.count <= Self.logLineBytes ? String(line) : String(decoding: line.utf8.prefix(Self.logLineBytes), as: UTF8.self) + "…"
        }
        guard !lines.isEmpty else { return }
        state.withLock { locked in
            locked.log.append(contentsOf: lines)
            if locked.log.count > Self.logLines { locked.log.removeFirst(locked.log.count - Self.logLines) }
        }
        for line in lines { publish("log", ["line": line]) }
    }

    func addOutputs(_ names: [String]) {
        let names = state.withLock { locked in
            let kept = Array(names.prefix(max(Self.maxOutputs - locked.outputs.count, 0)))
            locked.outputs.append(contentsOf: kept)
            return kept
        }
        for name in names {
            let escaped = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? name
            publish("output", ["file": name, "url": "/kiri/v1/jobs/\(id)/outputs/\(escaped)"])
        }
    }

    /// Ends the job: `failure` nil for success; a job cancelled keeps the status `cancelled`.
    func finish(_ failure: JobFailure?) {
        let (waiters, subscribers, snapshot) = state.withLock { locked in
            locked.status = locked.cancelRequested ? .cancelled : failure == nil ? .succeeded : .failed
            locked.failure = locked.cancelRequested ? JobFailure(.cancelled, failure?.message ?? "cancelled") : failure
            locked.finished = Date()
            locked.cancellation = nil
            let taken = (locked.waiters, locked.subscribers)
            (locked.waiters, locked.subscribers) = ([], [:])
            return (taken.0, taken.1, self.snapshot(locked))
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
        let cancellation = state.withLock { locked -> Cancellation? in
            guard !locked.status.isFinished else { return nil }
            locked.cancelRequested = true
            return locked.cancellation
        }
        cancellation?.cancel()
    }

    /// A1111's interrupt: the sampler stops at its next step and the recipe saves what it has; later runs are skipped.
    func interrupt() {
        state.withLock { locked in
            guard !locked.status.isFinished else { return }
            locked.interruptRequested = true
            locked.version += 1
        }
    }

    /// Returns when the job has finished.
    func finished() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { locked -> Bool in
                if locked.status.isFinished { return true }
                locked.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// The job's events from now on, after a `state` event; a finished job gives `done` alone; nil when
    /// `maxSubscribers` read it already. A slow reader loses the oldest events rather than holding memory.
    func events() -> AsyncStream<JobEvent>? {
        let (stream, continuation) = AsyncStream<JobEvent>.makeStream(bufferingPolicy: .bufferingNewest(Self.eventBuffer))
        let key = state.withLock { locked -> Int?? in
            // The first event is yielded under the lock, so that no step can come before it.
            guard !locked.status.isFinished else {
                continuation.yield(JobEvent(name: "done", json: Self.json(self.snapshot(locked))))
                continuation.finish()
                return .some(nil)
            }
            guard locked.subscribers.count < Self.maxSubscribers else { return .none }
            let key = locked.nextSubscriber
            locked.nextSubscriber += 1
            locked.subscribers[key] = continuation
            continuation.yield(JobEvent(name: "state", json: Self.json(self.snapshot(locked))))
            return .some(key)
        }
        guard let key else { return nil }
        if let key {
            continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: key) } }
        }
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

    /// Queues a job; throws QueueFull past `capacity` waiting jobs, QueueClosed after `shutdown()`. The job is made
    /// before the lock is taken, which every progress request takes too.
    func submit(_ make: (String) throws -> Job) throws -> Job {
        while true {
            let job = try make(Self.newID())
            let added = try state.withLock { locked -> Bool in
                guard locked.accepting else { throw QueueClosed() }
                // --queue 0 still runs a job when the server is idle.
                guard locked.pending.count < capacity || (locked.running == nil && locked.pending.isEmpty) else { throw QueueFull() }
                guard locked.jobs[job.id] == nil else { return false }   // 1 in 2^64: another id
                job.setQueuePosition(locked.pending.count + (locked.running == nil ? 0 : 1))
                locked.pending.append(job)
                locked.jobs[job.id] = job
                return true
            }
            if added {
                wake.signal()
                return job
            }
        }
    }

    func job(_ id: String) -> Job? { state.withLock { $0.jobs[id] } }

    var running: Job? { state.withLock { $0.running } }

    /// The newest `limit` jobs: waiting, running and finished.
    func recent(limit: Int) -> [Job] {
        state.withLock { locked in
            let finished = locked.finishedOrder.reversed().compactMap { locked.jobs[$0] }
            return Array((locked.pending.reversed() + (locked.running.map { [$0] } ?? []) + finished).prefix(limit))
        }
    }

    /// Jobs waiting, not counting the one running.
    var waiting: Int { state.withLock { $0.pending.count } }

    /// Cancels a job; a queued one leaves the queue at once.
    func cancel(_ job: Job) {
        job.cancel()
        let removed = state.withLock { locked -> Bool in
            guard let index = locked.pending.firstIndex(where: { $0 === job }) else { return false }
            locked.pending.remove(at: index)
            renumber(&locked)
            return true
        }
        if removed {
            job.finish(JobFailure(.cancelled, "cancelled while queued"))
            remember(job)
        }
    }

    /// Takes no more jobs, cancels those waiting and the one running, and returns when the worker has stopped.
    func shutdown() async {
        let (pending, running) = state.withLock { locked -> ([Job], Job?) in
            locked.accepting = false
            let pending = locked.pending
            locked.pending = []
            return (pending, locked.running)
        }
        for job in pending {
            job.cancel()
            job.finish(JobFailure(.cancelled, "the server is shutting down"))
        }
        running?.cancel()
        wake.signal()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { locked -> Bool in
                if locked.workerDone { return true }
                locked.drainWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// What the worker does when woken.
    private enum Next {
        case run(Job)
        /// A cancelled job's wake-up: nothing waits.
        case idle
        case stop
    }

    private func work() {
        while true {
            wake.wait()
            let next = state.withLock { locked -> Next in
                if locked.pending.isEmpty { return locked.accepting ? .idle : .stop }
                let job = locked.pending.removeFirst()
                locked.running = job
                renumber(&locked)
                return .run(job)
            }
            guard case .run(let job) = next else {
                if case .stop = next { break }
                continue
            }
            let started = job.start()   // false: cancelled while it waited, and finished then
            let failure = started ? execute(job) : nil
            // Off the queue before its waiters wake, so that their next request finds the server idle.
            state.withLock { $0.running = nil }
            remember(job)
            if started { job.finish(failure) }
        }
        let waiters = state.withLock { locked -> [CheckedContinuation<Void, Never>] in
            locked.workerDone = true
            defer { locked.drainWaiters = [] }
            return locked.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func renumber(_ locked: inout State) {
        for (index, job) in locked.pending.enumerated() { job.setQueuePosition(index + (locked.running == nil ? 0 : 1)) }
    }

    /// Keeps the last `history` finished jobs findable; older ones are forgotten, and their folders deleted (their
    /// outputs could no longer be fetched, and the disk would fill job by job).
    private func remember(_ job: Job) {
        let forgotten = state.withLock { locked -> [Job] in
            locked.finishedOrder.append(job.id)
            var forgotten: [Job] = []
            while locked.finishedOrder.count > history {
                if let old = locked.jobs.removeValue(forKey: locked.finishedOrder.removeFirst()) { forgotten.append(old) }
            }
            return forgotten
        }
        for old in forgotten { try? FileManager.default.removeItem(atPath: old.folder) }
    }

    /// 16 hex digits from the system's random source: ids cannot be guessed from one another.
    static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return String(format: "%016llx", generator.next() as UInt64)
    }
}
