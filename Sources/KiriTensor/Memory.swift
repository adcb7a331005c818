#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A byte cap shared by everything one script run allocates (the Lua runtime counts Lua's own allocations in the
/// same counter through `counter`). Single-threaded owner; tensor storage charges it on allocation and refunds it on
/// deinit.
public final class MemoryBudget: @unchecked Sendable {
    public let limit: Int

    /// Raw counter, shared with a C allocator: points to [used, peak, limit] as Int (stable for the object's life).
    /// The words live outside the object so C can update them without calling back into Swift.
    public let counter: UnsafeMutablePointer<Int>

    public init(limit: Int) {
        self.limit = limit
        counter = .allocate(capacity: 3)
        counter.initialize(from: [0, 0, limit], count: 3)
    }

    deinit { counter.deallocate() }

    public var used: Int { counter[0] }

    /// High-water mark since init or `resetPeak()`.
    public var peak: Int { counter[1] }

    public func resetPeak() { counter[1] = counter[0] }

    /// Charges `bytes`, or returns false and charges nothing if that would pass the limit.
    public func reserve(_ bytes: Int) -> Bool {
        guard bytes >= 0, bytes <= limit - counter[0] else { return false }
        counter[0] += bytes
        counter[1] = max(counter[1], counter[0])
        return true
    }

    public func release(_ bytes: Int) { counter[0] -= bytes }

    /// The budget charged by tensor allocations on the current task or thread (nil: unlimited).
    @TaskLocal public static var current: MemoryBudget?
}

/// "640 KiB", "3.2 MiB", "12 GiB": every byte count in a message reads alike.
public func describeBytes(_ bytes: Int) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) bytes" : String(format: value < 10 ? "%.1f " : "%.0f ", value) + units[unit]
}

/// What a released storage points at: never read (operations check `isReleased` first), but a valid address
/// rather than a dangling one should a caller forget.
nonisolated(unsafe) private let releasedPointer = UnsafeMutablePointer<Float>.allocate(capacity: 16)

/// Storage of at least this many bytes is mapped from the system directly rather than taken from malloc, so that
/// freeing it always returns it: glibc serves blocks up to 32 MiB from its heap once a large block has been freed,
/// and a heap freed in the middle stays with the process (an SD UNet's freed activations kept 290 MB).
let mappedStorageBytes = 1 << 20

/// Contiguous row-major float32 storage, 64-byte aligned for SIMD loads and BLAS. Allocation charges
/// `MemoryBudget.current`; the refund goes to that same budget, whichever task later frees the storage.
public final class TensorStorage {
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var count: Int
    public private(set) var isReleased = false
    private let budget: MemoryBudget?
    /// Whether `pointer` is an anonymous mapping of `count` floats (else a malloc block).
    private let isMapped: Bool

    /// Uninitialised contents. Throws `.outOfMemory` if the budget refuses or the system has no memory.
    public init(count: Int) throws {
        guard count >= 0, count <= Tensor.maxElements else {
            throw TensorError("cannot allocate \(count) elements")
        }
        let bytes = count * MemoryLayout<Float>.stride
        let budget = MemoryBudget.current
        guard budget?.reserve(bytes) ?? true else { throw TensorError.outOfMemory }
        var raw: UnsafeMutableRawPointer?
        isMapped = bytes >= mappedStorageBytes
        if isMapped {
            // Page-aligned, so 64-byte aligned.
            raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if raw == UnsafeMutableRawPointer(bitPattern: -1) { raw = nil }
        } else if posix_memalign(&raw, 64, max(bytes, 64)) != 0 {
            // Empty storage still gets a real block, so that `pointer` is always a valid, distinct address.
            raw = nil
        }
        guard let raw else {
            budget?.release(bytes)
            throw TensorError.outOfMemory
        }
        pointer = raw.bindMemory(to: Float.self, capacity: count)
        self.count = count
        self.budget = budget
    }

    deinit { release() }

    /// Frees the memory now rather than when the last reference goes (Lua's `__close`); afterwards `count` is 0.
    public func release() {
        guard !isReleased else { return }
        let bytes = count * MemoryLayout<Float>.stride
        if isMapped {
            munmap(pointer, bytes)
        } else {
            free(pointer)
        }
        budget?.release(bytes)
        pointer = releasedPointer
        count = 0
        isReleased = true
    }
}
