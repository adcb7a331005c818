import COpenBLAS
import Foundation
import KiriTensor

/// Wraps a value the compiler cannot prove Sendable (a raw pointer, a non-escaping closure made escapable) for
/// `DispatchQueue.concurrentPerform`, whose iterations touch disjoint parts of the same buffers.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
}

/// Work split over the cores, in pieces that obey the run's cancellation (security case 38): the calling thread
/// reads `Cancellation.current` (DispatchQueue's workers do not see task locals) and a piece starts only while the
/// run is not stopped. So that a stop takes effect within milliseconds, a stoppable run gets more, smaller pieces;
/// a kernel whose pieces are its threads (each with its own scratch) checks between its bands or items itself.
/// A kernel that skips work leaves garbage behind, so whoever called it checks the cancellation before using it.
enum Parallel {
    /// Cores used by the kernels, each running a one-thread sgemm where it needs one.
    static let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Pieces per core at most when the run can be stopped: dispatching one costs about a microsecond.
    static let stoppablePiecesPerThread = 64

    /// Operations in one piece of a stoppable matrix product: 2^28, a few milliseconds of one core's sgemm.
    static let stoppableFlops = 1 << 28

    /// Runs `body(range)` over `0..<count` split into ranges at least `grain` long (a grain is tens of microseconds
    /// of work); below two grains it runs on the calling thread, where starting a thread would cost more than it
    /// saves.
    static func forEach(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
        split(count, pieces: count / max(grain, 1), body)
    }

    /// Runs `body(range)` on `pieces` contiguous ranges of `0..<count` at once, clamped to `count` and to one per
    /// core, or `stoppablePiecesPerThread` per core when the run can be stopped; skips the pieces not yet started
    /// once it is.
    static func split(_ count: Int, pieces: Int, _ body: (Range<Int>) -> Void) {
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
    static func threads(flops: Int) -> Int { flops < 1 << 22 ? 1 : threads }

    /// Pieces for a matrix product of `flops` that `split` may share out: one per thread, or per `stoppableFlops`
    /// when the run can be stopped (`split` clamps to the threads otherwise).
    static func pieces(flops: Int) -> Int { flops < 1 << 22 ? 1 : max(threads, flops / stoppableFlops) }
}

/// OpenBLAS's thread count is one process-wide setting. While any network runs its kernels (which split work over
/// the cores themselves and call a one-thread sgemm from each), it is 1; the first to enter saves the old value and
/// the last to leave restores it, so networks running at once on different threads do not undo each other.
enum SingleThreadedBLAS {
    nonisolated(unsafe) private static var depth = 0
    nonisolated(unsafe) private static var saved: Int32 = 1
    private static let lock = NSLock()

    static func run<T>(_ body: () throws -> T) rethrows -> T {
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
