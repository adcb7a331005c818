import KiriTensor

/// A safetensors file seen under other keys: each key names a contiguous run of elements of one file tensor, with
/// the shape a network expects. Renaming, dropping a conv's trailing 1×1 (VAE attention) and taking rows of a fused
/// matrix (OpenCLIP's q/k/v) are all such runs, so nothing is read or copied until a network asks for a tensor,
/// and then only the run itself.
public final class TensorMap: TensorSource {
    public struct Entry: Sendable, Equatable {
        /// The file's key.
        public let source: String
        /// Elements of the source tensor, in its row-major order.
        public let elements: Range<Int>
        public let shape: [Int]
    }

    public let file: SafetensorsFile
    public let names: [String]
    private let entries: [String: Entry]

    public var path: String { file.path }

    /// `entries` in the order given; a key given twice keeps its last entry.
    init(_ file: SafetensorsFile, _ entries: [(key: String, entry: Entry)]) {
        self.file = file
        var table: [String: Entry] = [:]
        var names: [String] = []
        for (key, entry) in entries {
            if table.updateValue(entry, forKey: key) == nil { names.append(key) }
        }
        self.names = names
        self.entries = table
    }

    /// The file's tensors whose keys start with `prefix`, under the rest of the key (`text_model.` for a
    /// transformers file saved with its wrapper).
    public convenience init(_ file: SafetensorsFile, removingPrefix prefix: String) {
        self.init(file, file.names.filter { $0.hasPrefix(prefix) }.map { name in
            (String(name.dropFirst(prefix.count)), Entry.whole(name, file.info(name)!.shape))
        })
    }

    public func entry(_ name: String) -> Entry? { entries[name] }

    public func shape(_ name: String) -> [Int]? { entries[name]?.shape }

    public func format(_ name: String) -> WeightFormat? { entries[name].flatMap { file.format($0.source) } }

    public func copyStored(_ name: String, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool {
        guard let entry = entries[name] else { return false }
        return file.copyStored(entry.source, elements: entry.elements, as: format, into: out)
    }

    public func tensor(_ name: String) throws(ModelFileError) -> Tensor {
        guard let entry = entries[name] else { throw ModelFileError(path, "missing tensor '\(name)'") }
        return try file.tensor(entry.source, elements: entry.elements, shape: entry.shape)
    }
}

extension TensorMap.Entry {
    /// All of the source tensor, as `shape`: its own, or another of the same count ([C, C, 1, 1] as [C, C]).
    static func whole(_ source: String, _ shape: [Int]) -> Self {
        Self(source: source, elements: 0..<shape.reduce(1, *), shape: shape)
    }

    /// Rows `part·n ..< (part + 1)·n` of a source [parts·n, ...], which are contiguous in row-major order.
    static func rows(_ source: String, _ shape: [Int], part: Int, of parts: Int) -> Self {
        let rows = shape[0] / parts, rowElements = shape.dropFirst().reduce(1, *)
        return Self(source: source, elements: part * rows * rowElements..<(part + 1) * rows * rowElements,
                    shape: [rows] + shape.dropFirst())
    }
}
