import KiriTensor

/// A network's activations: a shape over storage borrowed from a `Workspace`, returned to it when the last
/// reference goes, so that a second forward pass of the same shapes allocates nothing.
final class Buffer {
    let shape: [Int]
    let count: Int
    let data: UnsafeMutablePointer<Float>
    private let storage: TensorStorage
    private let workspace: Workspace

    fileprivate init(shape: [Int], count: Int, storage: TensorStorage, workspace: Workspace) {
        self.shape = shape
        self.count = count
        data = storage.pointer
        self.storage = storage
        self.workspace = workspace
    }

    deinit { workspace.recycle(storage) }

    /// [B, C, H, W] accessors for the feature maps.
    var batch: Int { shape[0] }
    var channels: Int { shape[1] }
    var height: Int { shape[2] }
    var width: Int { shape[3] }
    var spatial: Int { shape[2] * shape[3] }
}

/// Free storage by element count (a request takes storage of its own size, else a somewhat larger one), plus one growable scratch area per purpose (a conv's im2col columns or Winograd
/// tiles, attention scores, feed-forward chunks). A sampling run calls the network with the same shapes at every
/// step, so after the first step every request is met from the free lists. Not thread-safe: one forward pass at a
/// time (UNet locks).
final class Workspace {
    enum Scratch: Int, CaseIterable {
        /// A conv's im2col columns or Winograd V and M.
        case columns
        /// Attention scores of each thread's chunk of queries.
        case scores
        /// The feed-forward's GEGLU input and output for a chunk of tokens.
        case feedForward, gated
        /// A chunk of a linear layer's weights, widened to float32.
        case weights
    }

    /// Where the network's operations run.
    let backend: any Backend
    private var free: [Int: [TensorStorage]] = [:]
    private var scratch: [TensorStorage?] = Array(repeating: nil, count: Scratch.allCases.count)
    /// Storage allocated since creation (a test checks that a warmed-up pass allocates none).
    private(set) var allocations = 0
    /// Bytes of storage handed out as buffers and not yet returned, and the most there have been at once (since
    /// `resetPeak`): what a pass holds in activations, which gradient checkpointing trades time to lower.
    private(set) var liveBytes = 0, peakBytes = 0
    /// False while a gradient-checkpointed block of a training forward runs: its layers keep nothing for the
    /// backward pass, which runs the block's forward again first (see `kept`).
    var keepsActivations = true

    init(backend: any Backend = defaultBackend) { self.backend = backend }

    /// Elements one buffer may hold: BLAS takes 32-bit sizes and offsets.
    static let maximumCount = Int(Int32.max)

    func take(_ shape: [Int]) throws -> Buffer {
        guard let count = elementCount(shape), count <= Self.maximumCount else {
            throw TensorError("an activation of shape \(shapeString(shape)) is over the \(Self.maximumCount) elements a buffer may hold")
        }
        let storage: TensorStorage
        if let free = free[count]?.popLast() ?? takeLarger(count) {
            storage = free
        } else {
            storage = try TensorStorage(count: count)
            allocations += 1
        }
        liveBytes += storage.count * MemoryLayout<Float>.stride
        peakBytes = max(peakBytes, liveBytes)
        return Buffer(shape: shape, count: count, storage: storage, workspace: self)
    }

    /// `buffer` when the layers keep their activations for backward, else nil.
    func kept(_ buffer: Buffer) -> Buffer? { keepsActivations ? buffer : nil }

    /// Starts counting `peakBytes` again from what is live now.
    func resetPeak() { peakBytes = liveBytes }

    /// The smallest free storage larger than `count` floats but at most four times that: the VAE decoder's last
    /// blocks halve their channels as the image doubles, and the storage of the wider activations they free serves
    /// the narrower ones instead of new storage beside it.
    private func takeLarger(_ count: Int) -> TensorStorage? {
        let sizes = free.lazy.filter { $0.key > count && $0.key <= 4 * count && !$0.value.isEmpty }.map(\.key)
        guard let size = sizes.min() else { return nil }
        return free[size]?.popLast()
    }

    fileprivate func recycle(_ storage: TensorStorage) {
        liveBytes -= storage.count * MemoryLayout<Float>.stride
        free[storage.count, default: []].append(storage)
    }

    /// At least `count` floats, valid until the next request for the same purpose.
    func scratch(_ purpose: Scratch, _ count: Int) throws -> UnsafeMutablePointer<Float> {
        if let storage = scratch[purpose.rawValue], storage.count >= count { return storage.pointer }
        guard count <= Self.maximumCount else {
            throw TensorError("\(count) floats of \(purpose) scratch are over the \(Self.maximumCount) a buffer may hold")
        }
        allocations += 1
        scratch[purpose.rawValue] = nil
        let storage = try TensorStorage(count: count)
        scratch[purpose.rawValue] = storage
        return storage.pointer
    }

    /// Bytes of free storage and scratch, which the next forward pass reuses before it allocates.
    var freeBytes: Int {
        let counts = free.values.joined().map(\.count) + scratch.compactMap { $0?.count }
        return counts.reduce(0, +) * MemoryLayout<Float>.stride
    }

    /// Returns the free storage to the system, keeping the scratch areas: where a pass goes on to larger
    /// activations (the VAE's blocks), storage that no later request fits would otherwise sit beside the new.
    func releaseFree() { free.removeAll() }

    /// Returns every free storage to the system (the scratch areas too).
    func trim() {
        releaseFree()
        scratch = Array(repeating: nil, count: Scratch.allCases.count)
    }
}
