import Foundation
import KiriKernels
import KiriTensor

/// The bytes of a safetensors file (huggingface/safetensors, `serialize`) holding `tensors` in the order given, as
/// float32 or rounded to `format` (f16 or bf16, ties to even, as torch's `.half()` and `.bfloat16()` round): an
/// 8-byte little-endian header length, the JSON header (keys sorted, so the same tensors give the same bytes; padded
/// with spaces to a multiple of 8 as safetensors pads it), then the data, each tensor's right after the one before.
public func safetensorsBytes(_ tensors: [(name: String, tensor: Tensor)], format: WeightFormat = .f32,
                             metadata: [String: String] = [:]) -> [UInt8] {
    precondition(format != .q8_0, "safetensors has no q8_0")
    let dtype = ["f32": "F32", "f16": "F16", "bf16": "BF16"][format.rawValue]!
    var offset = 0
    var entries: [(String, JSONValue)] = []
    for (name, tensor) in tensors {
        let end = offset + format.rowBytes(tensor.count)
        entries.append((name, .object([
            JSONMember(key: "dtype", value: .string(dtype)),
            JSONMember(key: "shape", value: .array(tensor.shape.map { .number(String($0)) })),
            JSONMember(key: "data_offsets", value: .array([.number(String(offset)), .number(String(end))])),
        ])))
        offset = end
    }
    if !metadata.isEmpty {
        entries.append(("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { JSONMember(key: $0.key, value: .string($0.value)) })))
    }
    var header = Array(JSONValue.object(entries.sorted { $0.0 < $1.0 }.map { JSONMember(key: $0.0, value: $0.1) }).text().utf8)
    header += Array(repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8)
    var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
    bytes.reserveCapacity(bytes.count + offset)
    for (_, tensor) in tensors {
        let start = bytes.count
        bytes += repeatElement(0, count: format.rowBytes(tensor.count))
        bytes.withUnsafeMutableBytes { kiri_narrow($0.baseAddress! + start, tensor.data, format.kernelType, tensor.count) }
    }
    return bytes
}

extension JSONValue {
    /// The value as JSON text: compact, or with `indent` spaces per level (diffusers' config.json uses 2). Members
    /// keep their order.
    public func text(indent: Int? = nil, level: Int = 0) -> String {
        let newline = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let closing = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let text): return text
        case .string(let text): return Self.quoted(text)
        case .array(let values):
            guard !values.isEmpty else { return "[]" }
            return "[" + values.map { newline + $0.text(indent: indent, level: level + 1) }.joined(separator: ",") + closing + "]"
        case .object(let members):
            guard !members.isEmpty else { return "{}" }
            let separator = indent == nil ? ":" : ": "
            return "{" + members.map { newline + Self.quoted($0.key) + separator + $0.value.text(indent: indent, level: level + 1) }
                .joined(separator: ",") + closing + "}"
        }
    }

    private static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
