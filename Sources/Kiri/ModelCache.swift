import Foundation
import KiriModels
import KiriTensor

/// Models that earlier runs of this process loaded, kept for the next (a server's jobs): a Stable Diffusion
/// checkpoint takes seconds to load, and a server's jobs keep asking for the same few. Their tensors are charged to
/// the cache's own budget, not to the run that loaded them, and the least recently used go first when a new one
/// would pass `limit`. A run that changes a model (a LoRA merged into it) takes it out of the cache: from then on it
/// is that run's alone.
public final class ModelCache: @unchecked Sendable {
    public let budget: MemoryBudget
    private let lock = NSLock()
    /// Least recently used first.
    private var entries: [(key: String, model: LoadedModel)] = []

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
        } catch where count > 0 {
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

    private static func stamp(_ file: String) -> String {
        let attributes = try? FileManager.default.attributesOfItem(atPath: file)
        let size = attributes?[.size] as? Int ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        return "\(file):\(size):\(modified)"
    }
}
