import Foundation
import KiriModels
import KiriTensor

/// Models that earlier runs of this process loaded, kept for the next (a server's jobs): a Stable Diffusion
/// checkpoint takes seconds to load, and a server's jobs keep asking for the same few. Their tensors are charged to
/// the cache's own budget, not to the run that loaded them, and the least recently used go first when a new one
/// would pass `limit`. A run that changes a model (a LoRA merged into it) takes it out of the cache: from then on it
/// is that run's alone.
public final class ModelCache: @unchecked Sendable {
    /// Charged by the models' tensors; one job loads at a time, so it has one owner at a time.
    public let budget: MemoryBudget
    /// Least recently used first; LoadedModel is not Sendable, so a lock rather than a Mutex guards them.
    private var entries: [(key: String, model: LoadedModel)] = []
    private let lock = NSLock()

    public init(limit: Int) { budget = MemoryBudget(limit: limit) }

    public var count: Int { lock.withLock { entries.count } }

    /// The cached model for `path` with these options, or the one `load` makes under the cache's budget. The key
    /// holds the files' sizes and modification times, so a model replaced on disk is loaded again.
    func model(path: String, files: [String], options: String, load: () throws -> LoadedModel) throws -> LoadedModel {
        let key = ([path, options] + files.map(Self.stamp)).joined(separator: "\u{1}")
        if let model = lock.withLock({ () -> LoadedModel? in
            guard let index = entries.firstIndex(where: { $0.key == key }) else { return nil }
            let entry = entries.remove(at: index)
            entries.append(entry)
            return entry.model
        }) { return model }
        // Room for a model about its files' size: the oldest go until it would fit.
        let estimate = files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        lock.withLock {
            while !entries.isEmpty, budget.used + estimate > budget.limit { entries.removeFirst() }
        }
        let model: LoadedModel
        do {
            model = try MemoryBudget.$current.withValue(budget) { try load() }
        } catch where count > 0 && Self.isMemoryCap(error) {
            // It took more than its files (a format converted on loading): the others make room, and it tries again.
            lock.withLock { entries.removeAll() }
            model = try MemoryBudget.$current.withValue(budget) { try load() }
        }
        lock.withLock { entries.append((key, model)) }
        return model
    }

    /// Takes `model` out of the cache (a run is about to change it).
    func evict(_ model: LoadedModel) {
        lock.withLock { entries.removeAll { $0.model === model } }
    }

    /// A load refused for memory: the networks' checks say "... memory cap" (memoryLeft), tensors TensorError's
    /// outOfMemory. Any other failure (a bad file, a cancelled run) would fail again, and keeps the cache.
    private static func isMemoryCap(_ error: any Error) -> Bool {
        "\(error)".contains("memory cap") || (error as? TensorError)?.message == TensorError.outOfMemory.message
    }

    private static func stamp(_ file: String) -> String {
        let attributes = try? FileManager.default.attributesOfItem(atPath: file)
        let size = attributes?[.size] as? Int ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        return "\(file):\(size):\(modified)"
    }
}
