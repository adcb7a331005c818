import Foundation

/// Polls files for `kiri run --watch`. Polling is portable and, at a few files and 4 Hz, costs nothing.
public enum FileWatcher {
    /// Blocks until one of `files` changes (modified, replaced, created or removed); returns its path.
    public static func waitForChange(_ files: [String], interval: TimeInterval = 0.25) -> String {
        let before = Dictionary(files.map { ($0, stamp($0)) }, uniquingKeysWith: { first, _ in first })
        while true {
            Thread.sleep(forTimeInterval: interval)
            if let changed = files.first(where: { stamp($0) != before[$0] ?? nil }) { return changed }
        }
    }

    /// Modification time and size, or nil for a missing file.
    static func stamp(_ path: String) -> [Double]? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let date = attributes[.modificationDate] as? Date else { return nil }
        return [date.timeIntervalSince1970, Double((attributes[.size] as? Int) ?? 0)]
    }
}
