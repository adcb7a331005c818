import Foundation
import KiriTensor

/// Elements in a tensor of `shape`, or nil if the product overflows: every size a config, a header or an input
/// implies is multiplied this way before anything is allocated for it (security case 36).
func elementCount(_ shape: [Int]) -> Int? {
    var count = 1
    for size in shape {
        let (product, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else { return nil }
        count = product
    }
    return count
}

/// nil when `bytes` fit in what the run's budget (`MemoryBudget.current`) has left, counting `reusable` bytes the
/// caller holds already; else what is left, as "600 KiB left of its 1.0 GiB memory cap". Checked before the
/// allocations it is about, which then charge the budget one by one (TensorStorage); the budget has one owner
/// thread, so nothing else spends it in between.
func memoryLeft(ifShortOf bytes: Int, reusable: Int = 0) -> String? {
    guard let budget = MemoryBudget.current else { return nil }
    let left = max(0, budget.limit - budget.used) + reusable
    return bytes <= left ? nil : "\(describeBytes(left)) left of its \(describeBytes(budget.limit)) memory cap"
}

/// Refuses to load `what` from `source` when its `bytes` do not fit in what the run has left (security case 36),
/// before anything is converted.
func reserveLoading(_ bytes: Int, of what: String, from source: any TensorSource) throws(ModelFileError) {
    if let left = memoryLeft(ifShortOf: bytes) {
        throw ModelFileError(source.path, "loading \(what) takes \(describeBytes(bytes)), but the run has \(left)")
    }
}

/// Bytes loading the parameters in `source` takes at most: each weight of rank 2 or more in the format the source
/// gives it (q8_0 counted as float16, which its rows fall back to), the rest as float32, a float32 3×3 filter
/// [O, I, 3, 3] with its Winograd transforms U[16, O, I] too, plus three of the largest tensor as float32 for what
/// a conversion holds (the float32 original of the weight being narrowed, or q, k and v while they are stacked).
/// From the header alone; the data section holds every element in at least two bytes, so no sum here can overflow.
public func loadingBytes(_ source: any TensorSource) -> Int {
    var total = 0, largest = 0
    for name in source.names {
        let shape = source.shape(name)!, count = shape.reduce(1, *)
        let format = shape.count >= 2 ? source.format(name) ?? .f32 : .f32
        let isFilter = shape.count == 4 && shape[2] == 3 && shape[3] == 3
        total += format == .f32 ? 4 * (isFilter ? count + count / 9 * winogradPoints : count) : 2 * count
        largest = max(largest, count)
    }
    return total + 3 * largest * MemoryLayout<Float>.stride
}
