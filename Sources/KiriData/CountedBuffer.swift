import KiriTensor

/// A failed dataset read or batch. The message names the file at fault (`'train-images-idx3-ubyte.gz': not an IDX
/// file ...`); `argument`, when set, is the position of the argument at fault in the script's call.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public var argument: Int?
    public var message: String

    public init(argument: Int? = nil, _ message: String) {
        self.argument = argument
        self.message = message
    }

    public var description: String { message }
}

/// `count` elements charged to `MemoryBudget.current` as tensors are (security case 36: a dataset's bytes are counted
/// against `--memory` before they are allocated), refunded when freed. Contents uninitialised.
final class CountedBuffer<Element> {
    let pointer: UnsafeMutablePointer<Element>
    let count: Int
    private let budget: MemoryBudget?
    private let bytes: Int

    /// Throws, saying what `what` is and how much it would take, when the memory cap refuses it.
    init(count: Int, what: @autoclosure () -> String) throws(DataError) {
        precondition(count >= 0, "CountedBuffer: negative count")
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<Element>.stride)
        let budget = MemoryBudget.current
        guard !overflow, budget?.reserve(bytes) ?? true else {
            let left = budget.map { max(0, $0.limit - $0.used) } ?? 0
            throw DataError("\(what()) take\(overflow ? " more than the memory there is" : " \(describeBytes(bytes))"), but the run has "
                + "\(describeBytes(left)) left of its \(describeBytes(budget?.limit ?? 0)) memory cap (--memory)")
        }
        pointer = .allocate(capacity: max(count, 1))
        self.count = count
        self.budget = budget
        self.bytes = bytes
    }

    deinit {
        pointer.deallocate()
        budget?.release(bytes)
    }

    var buffer: UnsafeMutableBufferPointer<Element> { UnsafeMutableBufferPointer(start: pointer, count: count) }
}
