#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Stops a run's long host work when its time limit passes or its owner cancels it (security-cases.md, 38).
/// Lua's instruction hook cannot interrupt a C or Swift call, so every kernel that may run longer than a few
/// milliseconds asks `isStopped` between its tiles or rows and, once it is true, skips the rest of its work; the
/// binding that called it then fails. Sticky: once stopped, it stays stopped. `cancel()` may be called from any
/// thread (a server cancelling a job); the rest belongs to the run's own thread.
public final class Cancellation: Sendable {
    public enum Reason: Int, Sendable {
        case timeLimit = 1, cancelled = 2
    }

    /// The run's wall-clock limit in seconds, counted from `start()`.
    public let timeout: Double
    /// 0 while running, else a Reason's raw value.
    private let stopped = Atomic<Int>(0)
    /// Monotonic nanoseconds; Int.max until `start()`, so setting a run up is not the script's time.
    private let deadline = Atomic<Int>(Int.max)

    public init(timeout: Double = .infinity) {
        self.timeout = timeout
    }

    /// Starts the clock (again, for a second run on the same state), unless already stopped.
    public func start() {
        let nanoseconds = timeout * 1e9
        deadline.store(nanoseconds >= Double(Int.max / 2) ? Int.max : Self.now() + Int(nanoseconds), ordering: .relaxed)
    }

    /// Stops the run as soon as its current kernel or Lua instruction batch notices.
    public func cancel() {
        _ = stopped.compareExchange(expected: 0, desired: Reason.cancelled.rawValue, ordering: .relaxed)
    }

    /// Why the run was stopped, without reading the clock (nil: it was not).
    public var reason: Reason? { Reason(rawValue: stopped.load(ordering: .relaxed)) }

    /// Whether to stop now: cancelled, or past the deadline (which then stops the run for good). Reads the clock
    /// (a vDSO call, about 20 ns), so call it per tile or row, not per element.
    public var isStopped: Bool {
        if stopped.load(ordering: .relaxed) != 0 { return true }
        guard Self.now() >= deadline.load(ordering: .relaxed) else { return false }
        _ = stopped.compareExchange(expected: 0, desired: Reason.timeLimit.rawValue, ordering: .relaxed)
        return true
    }

    /// Throws `error` once the run is stopped; for loops that can throw between their pieces.
    public func check() throws(TensorError) {
        if isStopped { throw error }
    }

    /// What a stopped run's host call fails with.
    public var error: TensorError {
        switch reason {
        case .cancelled: TensorError("run cancelled")
        default: TensorError("time limit exceeded (\(Self.seconds(timeout)) s)")
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

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
