import COpenBLAS
import Foundation

/// Wraps a value the compiler cannot prove Sendable (a raw pointer, a non-escaping closure made escapable) for
/// `DispatchQueue.concurrentPerform`, whose iterations touch disjoint parts of the same buffers.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value

    public init(value: Value) { self.value = value }
}

/// Work split over the cores, in pieces that obey the run's cancellation (security case 38): the calling thread
/// reads `Cancellation.current` (DispatchQueue's workers do not see task locals) and a piece starts only while the
/// run is not stopped. So that a stop takes effect within milliseconds, a stoppable run gets more, smaller pieces;
/// a kernel whose pieces are its threads (each with its own scratch) checks between its bands or items itself.
/// A kernel that skips work leaves garbage behind, so whoever called it checks the cancellation before using it.
public enum Parallel {
    /// Cores used by the kernels, each running a one-thread sgemm where it needs one.
    public static let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Pieces per core at most when the run can be stopped: dispatching one costs about a microsecond.
    public static let stoppablePiecesPerThread = 64

    /// Operations in one piece of a stoppable matrix product: 2^28, a few milliseconds of one core's sgemm.
    public static let stoppableFlops = 1 << 28

    /// Runs `body(range)` over `0..<count` split into ranges at least `grain` long (a grain is tens of microseconds
    /// of work); below two grains it runs on the calling thread, where starting a thread would cost more than it
    /// saves.
    public static func forEach(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
        split(count, pieces: count / max(grain, 1), body)
    }

    /// Runs `body(range)` on `pieces` contiguous ranges of `0..<count` at once, clamped to `count` and to one per
    /// core, or `stoppablePiecesPerThread` per core when the run can be stopped; skips the pieces not yet started
    /// once it is.
    public static func split(_ count: Int, pieces: Int, _ body: (Range<Int>) -> Void) {
        let cancellation = Cancellation.current
        let pieces = min(count, pieces, cancellation == nil ? threads : threads * stoppablePiecesPerThread)
        guard pieces > 1 else {
            if count > 0, !(cancellation?.isStopped ?? false) { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            let box = UncheckedSendable(value: escapable)
            DispatchQueue.concurrentPerform(iterations: pieces) { piece in
                if cancellation?.isStopped ?? false { return }
                box.value(count * piece / pieces..<count * (piece + 1) / pieces)
            }
        }
    }

    /// Threads worth using for a matrix product of `flops`: below ~4 MFLOP a second thread costs more than it saves.
    public static func threads(flops: Int) -> Int { flops < 1 << 22 ? 1 : threads }

    /// Pieces for a matrix product of `flops` that `split` may share out: one per thread, or per `stoppableFlops`
    /// when the run can be stopped (`split` clamps to the threads otherwise).
    public static func pieces(flops: Int) -> Int { flops < 1 << 22 ? 1 : max(threads, flops / stoppableFlops) }
}

/// OpenBLAS's thread count is one process-wide setting. While any network runs its kernels (which split work over
/// the cores themselves and call a one-thread sgemm from each), it is 1; the first to enter saves the old value and
/// the last to leave restores it, so networks running at once on different threads do not undo each other.
public enum SingleThreadedBLAS {
    nonisolated(unsafe) private static var depth = 0
    nonisolated(unsafe) private static var saved: Int32 = 1
    private static let lock = NSLock()

    public static func run<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        if depth == 0 {
            saved = openblas_get_num_threads()
            openblas_set_num_threads(1)
        }
        depth += 1
        lock.unlock()
        defer {
            lock.lock()
            depth -= 1
            if depth == 0 { openblas_set_num_threads(saved) }
            lock.unlock()
        }
        return try body()
    }
}

/// c[m, n] = alpha · op(a) · op(b) + beta · c, row-major, op transposing when asked — cblas_sgemm. The one place Kiri
/// calls it: sizes are checked against the 32-bit ints BLAS takes (callers bound them well below that; a product
/// past it would be a bug, not an input). OpenBLAS runs it on every core, or on one inside SingleThreadedBLAS.run.
public func sgemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                  _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int, beta: Float,
                  _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    guard m > 0, n > 0 else { return }
    precondition([m, n, k, lda, ldb, ldc].allSatisfy { $0 >= 0 && $0 <= Int(Int32.max) }, "sgemm: sizes past 32 bits")
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}
