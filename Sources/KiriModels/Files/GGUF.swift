import KiriTensor

/// GGUF, ggml's file format, which stable-diffusion.cpp's `convert` writes and its users keep their models in
/// (ggml/docs/gguf.md, ggml/src/gguf.cpp): "GGUF", a version (2 or 3), the tensor and key-value counts (u64), the
/// key-value pairs, each tensor's name, dimensions (innermost first), ggml type and offset in the data section,
/// then the data section at the next multiple of `general.alignment` (32 unless given). Tensor names are the
/// checkpoint's own (`model.diffusion_model.…`), so a GGUF file loads as the single-file checkpoint it came from.
enum GGUF {
    static let magic: [UInt8] = Array("GGUF".utf8)

    static func starts(_ bytes: UnsafeRawBufferPointer) -> Bool { bytes.count >= 4 && bytes.prefix(4).elementsEqual(magic) }

    /// ggml_type values Kiri reads, and the names of the others for the error that refuses them.
    static let dtypes: [UInt32: DType] = [0: .f32, 1: .f16, 8: .q8_0, 30: .bf16]
    static let otherTypes: [UInt32: String] = [
        2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
        15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
        23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]

    /// ggml's limit on dimensions (GGML_MAX_DIMS).
    static let maximumDimensions = 4
}

/// Reads a GGUF header front to back, every count and length checked against the bytes left.
private struct GGUFReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    func failure(_ message: String) -> ModelFileError { ModelFileError(path, "GGUF header at byte \(offset): \(message)") }

    var remaining: Int { bytes.count - offset }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(ModelFileError) -> T {
        guard remaining >= MemoryLayout<T>.size else {
            throw failure("the file ends inside the header (\(bytes.count) bytes)")
        }
        let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return value
    }

    /// A count of items of at least `itemBytes` each, which the bytes left must be able to hold.
    mutating func count(_ what: String, itemBytes: Int) throws(ModelFileError) -> Int {
        let value = try read(UInt64.self)
        guard value <= UInt64(remaining / itemBytes) else {
            throw failure("\(value) \(what) cannot fit in the \(remaining) bytes left")
        }
        return Int(value)
    }

    mutating func string() throws(ModelFileError) -> String {
        let length = try count("bytes of string", itemBytes: 1)
        let text = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length])
        guard StrictJSONParser.isValidUTF8(text) else { throw failure("a string is not valid UTF-8") }
        offset += length
        return String(decoding: text, as: UTF8.self)
    }

    /// Bytes of a metadata value of each fixed-size gguf_type.
    static let sizes: [UInt32: Int] = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8]

    /// A metadata value of gguf_type `type` as text (numbers, booleans and strings; nil for an array, skipped).
    mutating func value(_ type: UInt32, inArray: Bool = false) throws(ModelFileError) -> String? {
        switch type {
        case 0: return String(try read(UInt8.self))
        case 1: return String(try read(Int8.self))
        case 2: return String(try read(UInt16.self))
        case 3: return String(try read(Int16.self))
        case 4: return String(try read(UInt32.self))
        case 5: return String(try read(Int32.self))
        case 6: return String(Float(bitPattern: try read(UInt32.self)))
        case 7:
            let value = try read(UInt8.self)
            guard value <= 1 else { throw failure("a boolean is \(value)") }
            return value == 1 ? "true" : "false"
        case 8: return try string()
        case 9:
            guard !inArray else { throw failure("an array holds arrays, which Kiri does not read") }
            let elementType = try read(UInt32.self)
            // Skipped unread: numbers by their size at once, strings by their lengths.
            if let size = Self.sizes[elementType] {
                offset += size * (try count("array elements", itemBytes: size))
                return nil
            }
            let count = try count("array elements", itemBytes: 8)
            for _ in 0..<count { _ = try value(elementType, inArray: true) }
            return nil
        case 10: return String(try read(UInt64.self))
        case 11: return String(try read(Int64.self))
        case 12: return String(Double(bitPattern: try read(UInt64.self)))
        default: throw failure("unknown metadata value type \(type)")
        }
    }
}

extension TensorFileHeader {
    /// The header of a GGUF file, validated as strictly as a safetensors header (security cases 22–30): counts and
    /// lengths within the file, no duplicate keys or names, at most four dimensions whose product does not
    /// overflow, Q8_0 rows of whole blocks, offsets aligned, and every tensor Kiri reads inside the data section
    /// and apart from the others.
    init(gguf bytes: UnsafeRawBufferPointer, path: String) throws(ModelFileError) {
        var reader = GGUFReader(bytes: bytes, path: path)
        reader.offset = 4
        let version = try reader.read(UInt32.self)
        guard version == 2 || version == 3 else {
            throw ModelFileError(path, "GGUF version \(version) is not supported (Kiri reads versions 2 and 3)")
        }
        // A tensor's info takes at least 8 + 4 + 8 + 4 + 8 bytes, a key-value pair 8 + 4 + 1.
        let tensorCount = try reader.count("tensors", itemBytes: 32)
        let pairCount = try reader.count("metadata pairs", itemBytes: 13)
        var alignment = 32
        for _ in 0..<pairCount {
            let key = try reader.string(), type = try reader.read(UInt32.self)
            guard metadata[key] == nil else { throw reader.failure("duplicate metadata key '\(key)'") }
            let value = try reader.value(type)
            if key == "general.alignment" {
                guard type == 4, let value, let given = Int(value), given > 0, given & (given - 1) == 0, given <= 1 << 20 else {
                    throw reader.failure("general.alignment must be a u32 power of two up to 1 MiB")
                }
                alignment = given
            }
            metadata[key] = value ?? "(array)"
        }

        var spans: [(name: String, range: Range<Int>)] = []
        var seen = Set<String>()
        for _ in 0..<tensorCount {
            let name = try reader.string()
            guard seen.insert(name).inserted else { throw reader.failure("duplicate tensor name '\(name)'") }
            func failure(_ message: String) -> ModelFileError { ModelFileError(path, "tensor '\(name)': \(message)") }
            let rank = Int(try reader.read(UInt32.self))
            guard (1...GGUF.maximumDimensions).contains(rank) else { throw failure("\(rank) dimensions (GGUF allows 1 to 4)") }
            var dimensions: [Int] = []
            for _ in 0..<rank {
                let size = try reader.read(UInt64.self)
                guard size <= UInt64(Int.max) else { throw failure("dimension \(size) overflows") }
                dimensions.append(Int(size))
            }
            // ggml lists the innermost dimension first; the checkpoint's (and torch's) shape is the reverse.
            let shape = Array(dimensions.reversed())
            guard let count = elementCount(shape) else { throw failure("element count of shape \(shapeString(shape)) overflows") }
            let type = try reader.read(UInt32.self), start = try reader.read(UInt64.self)
            guard let dtype = GGUF.dtypes[type] else {
                guard let other = GGUF.otherTypes[type] else { throw failure("unknown ggml type \(type)") }
                unreadTensors[name] = other
                continue
            }
            guard dimensions[0] % dtype.blockSize == 0 else {
                throw failure("rows of \(dimensions[0]) elements are not whole \(dtype.rawValue) blocks of \(dtype.blockSize)")
            }
            let (byteCount, overflow) = (count / dtype.blockSize).multipliedReportingOverflow(by: dtype.bytes(dtype.blockSize))
            guard !overflow, start <= UInt64(Int.max - byteCount) else { throw failure("the data's size overflows") }
            guard Int(start) % alignment == 0 else { throw failure("offset \(start) is not a multiple of the alignment \(alignment)") }
            spans.append((name, Int(start)..<Int(start) + byteCount))
            tensors[name] = SafetensorsFile.TensorInfo(dtype: dtype, shape: shape, dataOffsets: spans.last!.range, count: count)
            names.append(name)
        }
        let (padded, overflow) = reader.offset.addingReportingOverflow(alignment - 1)
        dataStart = overflow ? Int.max : padded / alignment * alignment
        guard dataStart <= bytes.count else { throw ModelFileError(path, "GGUF data section starts past the end of the file") }
        let dataSize = bytes.count - dataStart
        var end = 0, previous = ""
        for span in spans.sorted(by: { ($0.range.lowerBound, $0.name) < ($1.range.lowerBound, $1.name) }) {
            guard span.range.upperBound <= dataSize else {
                throw ModelFileError(path, "tensor '\(span.name)': bytes [\(span.range.lowerBound), \(span.range.upperBound)) run past the \(dataSize)-byte data section")
            }
            guard span.range.lowerBound >= end else {
                throw ModelFileError(path, "tensor '\(span.name)' overlaps tensor '\(previous)' in the data section")
            }
            (end, previous) = (span.range.upperBound, span.name)
        }
    }
}
