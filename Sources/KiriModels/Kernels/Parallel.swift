import COpenBLAS
import Foundation

/// Wraps a value the compiler cannot prove Sendable (a raw pointer, a non-escaping closure made escapable) for
/// `DispatchQueue.concurrentPerform`, whose iterations touch disjoint parts of the same buffers.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
}

enum Parallel {
    /// Cores used by the elementwise and normalisation kernels (OpenBLAS runs its own threads for sgemm).
    static let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Runs `body(range)` over `0..<count` split into at most `threads` contiguous ranges, each at least `grain`
    /// long; below two grains it runs on the calling thread, where starting a thread would cost more than it saves.
    static func forEach(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
        split(count, pieces: count / max(grain, 1), body)
    }

    /// Runs `body(range)` on `pieces` (clamped to 1...threads and to `count`) contiguous ranges of `0..<count` at once.
    static func split(_ count: Int, pieces: Int, _ body: (Range<Int>) -> Void) {
        let pieces = min(threads, count, pieces)
        guard pieces > 1 else {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            let box = UncheckedSendable(value: escapable)
            DispatchQueue.concurrentPerform(iterations: pieces) { piece in
                box.value(count * piece / pieces..<count * (piece + 1) / pieces)
            }
        }
    }

    /// Threads worth using for a matrix product of `flops`: below ~4 MFLOP a second thread costs more than it saves.
    static func threads(flops: Int) -> Int { flops < 1 << 22 ? 1 : threads }
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
