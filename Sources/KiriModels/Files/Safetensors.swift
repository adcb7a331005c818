import Foundation
import KiriTensor

/// A `.safetensors` file, memory-mapped and validated as a whole when opened (security cases 22–30), so that every
/// later read is a bounds-checked copy out of the mapping. Format: an 8-byte little-endian header length, a JSON
/// header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`, then the data
/// section, which the tensors must tile exactly (huggingface/safetensors, `SafeTensors::deserialize`).
///
/// A GGUF file (stable-diffusion.cpp's, starting "GGUF") is read the same way, its header validated as strictly
/// (GGUF.swift): the same tensors, by the same names, with Q8_0 among the dtypes.
///
/// Tensors are converted to float32 once, by `tensor(_:)`; the mapping stays open until `close()` or deinit.
public final class SafetensorsFile {
    public struct TensorInfo: Sendable, Equatable {
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data section, as the header's `data_offsets`.
        public let dataOffsets: Range<Int>
        /// Number of elements (1 for rank 0, 0 when any dimension is 0).
        public let count: Int
    }

    /// A header beyond this is refused before it is read: real headers are a few hundred kilobytes, and the limit
    /// is the one huggingface/safetensors applies.
    public static let maximumHeaderLength = 100_000_000

    public let path: String
    /// Tensor names in the order the header lists them.
    public let names: [String]
    /// The header's `__metadata__` (empty if absent).
    public let metadata: [String: String]
    private let tensors: [String: TensorInfo]
    /// Tensors of a dtype Kiri does not read, by name, with their dtype: integer buffers such as a text encoder's
    /// int64 `position_ids`, which many checkpoints carry and no network reads, or a GGUF file's other
    /// quantisations. They are validated like the rest but never converted.
    public let unreadTensors: [String: String]
    private let mapping: MappedFile
    /// File offset of the data section: 8 + header length.
    private let dataStart: Int

    public init(path: String) throws(ModelFileError) {
        try PickleCheckpoint.refuse(path)
        let mapping = try MappedFile(path: path)
        let header = GGUF.starts(mapping.bytes) ? try TensorFileHeader(gguf: mapping.bytes, path: path)
            : try TensorFileHeader(bytes: mapping.bytes, path: path)
        self.path = path
        self.mapping = mapping
        names = header.names
        metadata = header.metadata
        tensors = header.tensors
        unreadTensors = header.unreadTensors
        dataStart = header.dataStart
    }

    public func info(_ name: String) -> TensorInfo? { tensors[name] }

    /// Elements in all tensors together.
    public var parameterCount: Int { tensors.values.reduce(0) { $0 + $1.count } }

    /// The dtype holding the most bytes, which is how the file was saved (a "fp16" checkpoint may keep a few
    /// tensors in float32); a tie goes to the earlier case of `DType`; nil for a file without tensors.
    public var storageDType: DType? {
        var bytes: [DType: Int] = [:]
        for name in names {
            let info = tensors[name]!
            bytes[info.dtype, default: 0] += info.dataOffsets.count
        }
        return DType.allCases.filter { bytes[$0] != nil }.max { bytes[$0]! < bytes[$1]! }
    }

    public var isClosed: Bool { mapping.base == nil }

    /// Unmaps the file now, for a caller that has converted what it needs; later reads throw.
    public func close() { mapping.unmap() }

    public func shape(_ name: String) -> [Int]? { tensors[name]?.shape }

    /// The tensor `name` as float32, converted from the file's dtype (any alignment) into new storage.
    public func tensor(_ name: String) throws(ModelFileError) -> Tensor {
        guard let info = tensors[name] else { return try tensor(name, elements: 0..<0, shape: []) }
        return try tensor(name, elements: 0..<info.count, shape: info.shape)
    }

    /// Elements `elements` of tensor `name` (row-major) as a new float32 tensor of `shape`, converting only those:
    /// how a `TensorMap` reads part of a fused tensor or a reshaped one.
    func tensor(_ name: String, elements: Range<Int>, shape: [Int]) throws(ModelFileError) -> Tensor {
        guard let info = tensors[name] else {
            if let dtype = unreadTensors[name] {
                throw ModelFileError(path, "tensor '\(name)': dtype \(dtype) is not supported (Kiri reads F32, F16, BF16 and GGUF's Q8_0)")
            }
            throw ModelFileError(path, "missing tensor '\(name)'")
        }
        guard elements.lowerBound >= 0, elements.upperBound <= info.count, elements.count == shape.reduce(1, *),
              Self.isWholeBlocks(elements, info) else {
            throw ModelFileError(path, "tensor '\(name)' \(shapeString(info.shape)) \(info.dtype.rawValue) has no elements \(elements) of shape \(shapeString(shape))")
        }
        guard let base = mapping.base else { throw ModelFileError(path, "file is closed; cannot read tensor '\(name)'") }
        let tensor: Tensor
        do {
            tensor = try Tensor(shape: shape)
        } catch {
            throw ModelFileError(path, "tensor '\(name)': \(error)")
        }
        let start = dataStart + info.dataOffsets.lowerBound + info.dtype.bytes(elements.lowerBound)
        Self.convert(info.dtype, base + start, count: elements.count, into: tensor.data)
        mapping.release(start..<start + info.dtype.bytes(elements.count))
        if let cancellation = Cancellation.current, cancellation.isStopped {
            throw ModelFileError(path, "tensor '\(name)': \(cancellation.error.message)")
        }
        return tensor
    }

    /// Elements `elements` of tensor `name` copied as the file stores them into `out`, when that is `format`; the
    /// file's pages for them are released. False (nothing copied) for another dtype or no such tensor.
    func copyStored(_ name: String, elements: Range<Int>, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool {
        guard let info = tensors[name], WeightFormat(info.dtype) == format, let base = mapping.base,
              elements.lowerBound >= 0, elements.upperBound <= info.count, Self.isWholeBlocks(elements, info) else { return false }
        let start = dataStart + info.dataOffsets.lowerBound
        let range = start + info.dtype.bytes(elements.lowerBound)..<start + info.dtype.bytes(elements.upperBound)
        let (source, target) = (UInt(bitPattern: base + range.lowerBound), UInt(bitPattern: out))
        Parallel.forEach(range.count, grain: 1 << 20) { part in
            UnsafeMutableRawPointer(bitPattern: target)!.advanced(by: part.lowerBound)
                .copyMemory(from: UnsafeRawPointer(bitPattern: source)!.advanced(by: part.lowerBound), byteCount: part.count)
        }
        mapping.release(range)
        return true
    }

    /// Whether `elements` of the tensor start and end on its dtype's blocks (a q8_0 slice of whole rows).
    private static func isWholeBlocks(_ elements: Range<Int>, _ info: TensorInfo) -> Bool {
        elements.lowerBound % info.dtype.blockSize == 0 && elements.upperBound % info.dtype.blockSize == 0
    }

    /// Large tensors convert on every core (an SD UNet holds 860 M elements), a range of whole blocks each:
    /// converting a multi-GB file takes seconds.
    private static func convert(_ dtype: DType, _ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        // Sendable stand-ins for the pointers.
        let sourceAddress = UInt(bitPattern: source), outAddress = UInt(bitPattern: out), block = dtype.blockSize
        Parallel.forEach(count / block, grain: (1 << 18) / block) { blocks in
            let range = blocks.lowerBound * block..<blocks.upperBound * block
            dtype.convert(UnsafeRawPointer(bitPattern: sourceAddress).unsafelyUnwrapped + dtype.bytes(range.lowerBound),
                          count: range.count,
                          into: UnsafeMutablePointer<Float>(bitPattern: outAddress).unsafelyUnwrapped + range.lowerBound)
        }
    }
}

/// The parsed and validated header of a safetensors (or GGUF) file.
struct TensorFileHeader {
    var names: [String] = []
    var tensors: [String: SafetensorsFile.TensorInfo] = [:]
    var unreadTensors: [String: String] = [:]
    var metadata: [String: String] = [:]
    var dataStart = 0

    /// Integer dtypes by their byte size: accepted in a file (as buffers), never read.
    static let integerDTypes = ["BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8]

    /// Dtypes the safetensors format defines but Kiri does not read, so the error can say which it is.
    static let otherFormatDTypes: Set<String> = [
        "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64",
        "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
    ]

    init(bytes: UnsafeRawBufferPointer, path: String) throws(ModelFileError) {
        // Case 22: the 8-byte length prefix itself.
        guard bytes.count >= 8 else {
            throw ModelFileError(path, "file is \(bytes.count) bytes, shorter than the 8-byte header length of a safetensors file")
        }
        let hint = PickleCheckpoint.looksLikePickle(bytes)
            ? " (the file starts like a PyTorch pickle checkpoint, not safetensors)" : ""
        let length = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        // Case 23 before 22's limit, so an overflowing length is reported as what it is.
        let (headerEnd, overflow) = length.addingReportingOverflow(8)
        guard !overflow else {
            throw ModelFileError(path, "header length \(length) overflows when added to the 8-byte prefix\(hint)")
        }
        guard length <= SafetensorsFile.maximumHeaderLength else {
            throw ModelFileError(path, "header length \(length) exceeds the limit of \(SafetensorsFile.maximumHeaderLength) bytes\(hint)")
        }
        guard headerEnd <= bytes.count else {
            throw ModelFileError(path, "header length \(length) runs past the end of the file (\(bytes.count) bytes)\(hint)")
        }
        dataStart = Int(headerEnd)
        let dataSize = bytes.count - dataStart

        // Case 24: UTF-8, JSON, object.
        let text = UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart])
        guard StrictJSONParser.isValidUTF8(text) else { throw ModelFileError(path, "header is not valid UTF-8\(hint)") }
        let json: JSONValue
        do {
            json = try StrictJSONParser.parse(text)
        } catch {
            // Case 25: JSONSerialization would have kept one of the two silently.
            if let key = error.duplicateKey, error.depth == 1 {
                throw ModelFileError(path, "duplicate tensor name '\(key)' in the header")
            }
            throw ModelFileError(path, "header is not valid JSON: \(error.message) at header byte \(error.offset)\(hint)")
        }
        guard case .object(let members) = json else {
            throw ModelFileError(path, "header is \(json.kindName), not a JSON object\(hint)")
        }

        var spans: [String: Range<Int>] = [:]
        for member in members {
            if member.key == "__metadata__" {
                metadata = try Self.metadata(member.value, path: path)
            } else {
                let (info, integerDType) = try Self.tensorInfo(member.key, member.value, dataSize: dataSize, path: path)
                spans[member.key] = info.dataOffsets
                if let integerDType {
                    unreadTensors[member.key] = integerDType
                } else {
                    tensors[member.key] = info
                    names.append(member.key)
                }
            }
        }
        try Self.checkTiling(spans, dataSize: dataSize, path: path)
    }

    private static func metadata(_ value: JSONValue, path: String) throws(ModelFileError) -> [String: String] {
        guard case .object(let members) = value else {
            throw ModelFileError(path, "__metadata__ is \(value.kindName), not an object of strings")
        }
        var result: [String: String] = [:]
        for member in members {
            guard case .string(let text) = member.value else {
                throw ModelFileError(path, "__metadata__ '\(member.key)' is \(member.value.kindName), not a string")
            }
            result[member.key] = text
        }
        return result
    }

    /// One header entry, with cases 24 (dtype), 26 (offsets within the data, begin ≤ end) and 27 (span = shape ×
    /// dtype size, no overflow); an integer tensor's dtype name comes back beside it (its info says F32, unused).
    private static func tensorInfo(_ name: String, _ value: JSONValue, dataSize: Int,
                                   path: String) throws(ModelFileError) -> (SafetensorsFile.TensorInfo, integerDType: String?) {
        func failure(_ message: String) -> ModelFileError { ModelFileError(path, "tensor '\(name)': \(message)") }
        guard case .object(let fields) = value else { throw failure("entry is \(value.kindName), not an object") }
        for field in fields where !["dtype", "shape", "data_offsets"].contains(field.key) {
            throw failure("unknown field '\(field.key)'")
        }

        guard let dtypeValue = value["dtype"] else { throw failure("missing 'dtype'") }
        guard case .string(let dtypeName) = dtypeValue else { throw failure("dtype is \(dtypeValue.kindName), not a string") }
        let integerSize = Self.integerDTypes[dtypeName]
        // Q8_0 is GGUF's, not a safetensors dtype.
        guard let dtype = integerSize != nil ? .f32 : DType(rawValue: dtypeName).flatMap({ $0.blockSize == 1 ? $0 : nil }) else {
            if otherFormatDTypes.contains(dtypeName) {
                throw failure("dtype \(dtypeName) is not supported (Kiri reads F32, F16 and BF16)")
            }
            throw failure("unknown dtype '\(dtypeName)'")
        }

        guard let shapeValue = value["shape"] else { throw failure("missing 'shape'") }
        guard case .array(let dimensions) = shapeValue else { throw failure("shape is \(shapeValue.kindName), not an array") }
        var shape: [Int] = []
        for dimension in dimensions {
            guard dimension.isIntegerLiteral else { throw failure("shape has \(describe(dimension)), not an integer") }
            guard let size = dimension.integer else { throw failure("shape dimension \(describe(dimension)) overflows") }
            guard size >= 0 else { throw failure("shape has negative dimension \(size)") }
            shape.append(size)
        }
        guard let count = elementCount(shape) else { throw failure("element count of shape \(shapeString(shape)) overflows") }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: integerSize ?? dtype.bytes(1))
        guard !overflow else { throw failure("byte size of shape \(shapeString(shape)) × \(dtypeName) overflows") }

        guard let offsetsValue = value["data_offsets"] else { throw failure("missing 'data_offsets'") }
        guard case .array(let offsets) = offsetsValue, offsets.count == 2 else {
            throw failure("data_offsets must be an array of two integers")
        }
        let offsetsText = "[\(describe(offsets[0])), \(describe(offsets[1]))]"
        for offset in offsets {
            guard offset.isIntegerLiteral else { throw failure("data_offsets \(offsetsText) are not integers") }
            guard let position = offset.integer, position >= 0, position <= dataSize else {
                throw failure("data_offsets \(offsetsText) out of bounds (the data section is \(dataSize) bytes)")
            }
        }
        let begin = offsets[0].integer!, end = offsets[1].integer!
        guard begin <= end else { throw failure("data_offsets \(offsetsText) begin after they end") }
        guard end - begin == byteCount else {
            throw failure("shape \(shapeString(shape)) × \(dtypeName) is \(byteCount) bytes but data_offsets \(offsetsText) span \(end - begin)")
        }
        return (SafetensorsFile.TensorInfo(dtype: dtype, shape: shape, dataOffsets: begin..<end, count: count),
                integerSize != nil ? dtypeName : nil)
    }

    /// Cases 26 and 28: sorted by offset, the tensors cover the data section exactly — no overlap, no gap, no
    /// trailing bytes — so no byte of the file is unaccounted for.
    private static func checkTiling(_ spans: [String: Range<Int>], dataSize: Int, path: String) throws(ModelFileError) {
        let sorted = spans.sorted { ($0.value.lowerBound, $0.value.upperBound, $0.key) < ($1.value.lowerBound, $1.value.upperBound, $1.key) }
        var covered = 0
        var previous: String?
        for (name, range) in sorted {
            if range.lowerBound > covered {
                throw ModelFileError(path, "gap in the data section: bytes [\(covered), \(range.lowerBound)) before tensor '\(name)' belong to no tensor")
            }
            if range.lowerBound < covered, let previous {
                let other = spans[previous]!
                throw ModelFileError(path, "tensor '\(name)' data_offsets [\(range.lowerBound), \(range.upperBound)] overlap tensor '\(previous)' [\(other.lowerBound), \(other.upperBound)]")
            }
            covered = range.upperBound
            previous = name
        }
        guard covered == dataSize else {
            throw ModelFileError(path, "\(dataSize - covered) trailing bytes after the last tensor (the data section is \(dataSize) bytes, the tensors end at \(covered))")
        }
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .number(let text): text
        case .string(let text): "'\(text)'"
        default: value.kindName
        }
    }
}
