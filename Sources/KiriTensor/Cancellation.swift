#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Stops a run's long host work when one of its time limits passes or its owner cancels it (security-cases.md, 38).
/// Lua's instruction hook cannot interrupt a C or Swift call, so every kernel that may run longer than a few
/// milliseconds asks `isStopped` between its tiles or rows and, once it is true, skips the rest of its work; the
/// binding that called it then fails. Sticky: once stopped, it stays stopped. `cancel()` may be called from any
/// thread (a server cancelling a job); the rest belongs to the run's own thread.
///
/// Two clocks. The script clock (`timeout`) stops a runaway recipe, but does not run while the engine evaluates a
/// model (`offScriptClock`): a Stable Diffusion image takes minutes on a CPU, and a limit that counted them would
/// throw legitimate work away. The wall clock (`wallTimeout`, none by default) counts everything.
public final class Cancellation: Sendable {
    public enum Reason: Int, Sendable {
        case timeLimit = 1, cancelled = 2, wallTimeLimit = 3
    }

    /// Seconds the script may run outside model evaluations, counted from `start()`.
    public let timeout: Double
    /// Seconds the whole run may take, model evaluations included (infinity: no limit).
    public let wallTimeout: Double
    /// 0 while running, else a Reason's raw value.
    private let stopped = Atomic<Int>(0)
    /// Monotonic nanoseconds; Int.max until `start()`, so setting a run up is not the script's time. The script
    /// deadline moves later by the time each model evaluation took.
    private let deadline = Atomic<Int>(Int.max)
    private let wallDeadline = Atomic<Int>(Int.max)
    /// How many model evaluations are running (they nest: a model call inside a model call's callback).
    private let offClock = Atomic<Int>(0)

    public init(timeout: Double = .infinity, wallTimeout: Double = .infinity) {
        self.timeout = timeout
        self.wallTimeout = wallTimeout
    }

    /// Starts the clocks (again, for a second run on the same state); a stop already recorded stays.
    public func start() {
        let now = Self.now()
        deadline.store(Self.deadline(now, timeout), ordering: .relaxed)
        wallDeadline.store(Self.deadline(now, wallTimeout), ordering: .relaxed)
    }

    /// Stops the run as soon as its current kernel or Lua instruction batch notices.
    public func cancel() {
        _ = stopped.compareExchange(expected: 0, desired: Reason.cancelled.rawValue, ordering: .relaxed)
    }

    /// Why the run was stopped, without reading the clock (nil: it was not).
    public var reason: Reason? { Reason(rawValue: stopped.load(ordering: .relaxed)) }

    /// Whether to stop now: cancelled, or past a deadline (which then stops the run for good). Reads the clock
    /// (a vDSO call, about 20 ns), so call it per tile or row, not per element.
    public var isStopped: Bool {
        if stopped.load(ordering: .relaxed) != 0 { return true }
        let now = Self.now()
        let reason: Reason
        if now >= wallDeadline.load(ordering: .relaxed) {
            reason = .wallTimeLimit
        } else if now >= deadline.load(ordering: .relaxed), offClock.load(ordering: .relaxed) == 0 {
            reason = .timeLimit
        } else {
            return false
        }
        _ = stopped.compareExchange(expected: 0, desired: reason.rawValue, ordering: .relaxed)
        return true
    }

    /// Runs `body`, a model evaluation, with the script clock stopped: its time moves the script's deadline
    /// later. The wall clock and `cancel()` still stop it.
    public func offScriptClock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        let started = Self.now()
        offClock.add(1, ordering: .relaxed)
        defer {
            // The outermost evaluation's time covers the ones nested in it.
            if offClock.subtract(1, ordering: .relaxed).newValue == 0 {
                let elapsed = Self.now() - started, current = deadline.load(ordering: .relaxed)
                deadline.store(current >= Int.max - elapsed ? Int.max : current + elapsed, ordering: .relaxed)
            }
        }
        return try body()
    }

    /// Throws `error` once the run is stopped; for loops that can throw between their pieces.
    public func check() throws(TensorError) {
        if isStopped { throw error }
    }

    /// What a stopped run's host call fails with.
    public var error: TensorError {
        switch reason {
        case .cancelled: TensorError("run cancelled")
        case .wallTimeLimit: TensorError("wall-clock time limit exceeded (\(Self.seconds(wallTimeout)) s, model evaluations included)")
        default: TensorError("time limit exceeded (\(Self.seconds(timeout)) s of script time; model evaluations do not count)")
        }
    }

    /// The cancellation of the run on this task or thread (nil: none, nothing stops). Kernels read it once, on the
    /// calling thread: task locals are not seen by DispatchQueue's worker threads.
    @TaskLocal public static var current: Cancellation?

    static func now() -> Int {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int(time.tv_sec) * 1_000_000_000 + Int(time.tv_nsec)
    }

    private static func deadline(_ now: Int, _ seconds: Double) -> Int {
        let nanoseconds = seconds * 1e9
        return nanoseconds >= Double(Int.max / 2) ? Int.max : now + Int(nanoseconds)
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
