/// A JSON value (RFC 8259). Model files are untrusted input, so Kiri parses their JSON itself rather than with
/// Foundation's JSONSerialization, which silently keeps one of two duplicate keys (security case 25), accepts
/// non-standard syntax and gives no byte offsets.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The literal text, so a 64-bit integer keeps every digit and each reader decides how to convert it.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in file order; keys are unique (the parser refuses duplicates).
    case object([JSONMember])

    /// The member `key` of an object; nil for a missing key or a value that is not an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// The value of an integer literal (no fraction or exponent) that fits in Int.
    public var integer: Int? {
        guard case .number(let text) = self, isIntegerLiteral else { return nil }
        return Int(text)
    }

    /// True for a number written without fraction or exponent, however large.
    public var isIntegerLiteral: Bool {
        guard case .number(let text) = self else { return false }
        return text.utf8.allSatisfy { $0 == UInt8(ascii: "-") || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }
    }

    /// Any number that is finite as a Double (integers included).
    public var double: Double? {
        guard case .number(let text) = self, let value = Double(text), value.isFinite else { return nil }
        return value
    }

    /// How an error message names this value's kind: "a string", "null", ...
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

public struct JSONMember: Sendable, Equatable {
    public var key: String
    public var value: JSONValue
}

/// A JSON syntax error, or a duplicate key (kept apart so a caller can say "duplicate tensor name").
public struct JSONError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    /// Byte offset into the parsed text.
    public var offset: Int
    /// The repeated key, when that is the error.
    public var duplicateKey: String?
    /// Objects enclosing the duplicate: 1 for a key of the outermost object.
    public var depth: Int

    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 parser over bytes that are already known to be valid UTF-8. Nesting is limited so a hostile
/// header of a million `[` cannot exhaust the stack.
public struct StrictJSONParser {
    public static let maximumDepth = 128

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private var depth = 0

    /// Parses one value; only whitespace may surround it. The caller checks UTF-8 first (`isValidUTF8`).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONError) -> JSONValue {
        var parser = StrictJSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("unexpected content after the JSON value") }
        return value
    }

    /// Parses UTF-8 text held in an array, e.g. a config file read into memory.
    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue {
        // withUnsafeBytes rethrows untyped; a Result carries the typed error out.
        try bytes.withUnsafeBytes { raw in Result { () throws(JSONError) in try parse(raw) } }.get()
    }

    /// Strict UTF-8 (no overlong forms, surrogates or truncated sequences), checked without copying.
    public static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    private init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private func error(_ message: String) -> JSONError {
        let atEnd = position >= bytes.count && !message.hasPrefix("unexpected end")
        return JSONError(message: atEnd ? "unexpected end of JSON (\(message))" : message, offset: position, duplicateKey: nil, depth: depth)
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
    }

    private mutating func parseValue() throws(JSONError) -> JSONValue {
        guard let byte = current else { throw error("unexpected end of JSON") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character '\(printable(byte))'")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONError) {
        let count = literal.utf8CodeUnitCount
        let text = UnsafeRawBufferPointer(start: literal.utf8Start, count: count)
        guard position + count <= bytes.count, bytes[position..<position + count].elementsEqual(text) else {
            throw error("invalid literal (expected \(literal))")
        }
        position += count
    }

    private mutating func enter() throws(JSONError) {
        depth += 1
        guard depth <= Self.maximumDepth else { throw error("nesting deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func parseObject() throws(JSONError) -> JSONValue {
        try enter()
        position += 1
        var members: [JSONMember] = []
        var seen = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyOffset = position
            let key = try parseString()
            guard seen.insert(key).inserted else {
                throw JSONError(message: "duplicate key '\(key)'", offset: keyOffset, duplicateKey: key, depth: depth)
            }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after key '\(key)'") }
            position += 1
            skipWhitespace()
            members.append(JSONMember(key: key, value: try parseValue()))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"):
                position += 1
                depth -= 1
                return .object(members)
            default: throw error("expected ',' or '}' in object")
            }
        }
    }

    private mutating func parseArray() throws(JSONError) -> JSONValue {
        try enter()
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            position += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"):
                position += 1
                depth -= 1
                return .array(elements)
            default: throw error("expected ',' or ']' in array")
            }
        }
    }

    /// A string at `position` (which holds the opening quote). Plain runs are decoded straight from the input;
    /// escapes are rebuilt into a byte buffer.
    private mutating func parseString() throws(JSONError) -> String {
        position += 1
        let start = position
        var escaped: [UInt8]? = nil
        while true {
            guard let byte = current else { throw error("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                let text: String
                if let escaped {
                    text = String(decoding: escaped, as: UTF8.self)
                } else {
                    text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
                }
                position += 1
                return text
            case UInt8(ascii: "\\"):
                if escaped == nil { escaped = Array(bytes[start..<position]) }
                position += 1
                try appendEscape(into: &escaped!)
            case 0x00..<0x20:
                throw error("control character 0x\(String(byte, radix: 16)) in string (must be escaped)")
            default:
                escaped?.append(byte)
                position += 1
            }
        }
    }

    /// The escape after a backslash; `\u` pairs surrogates and refuses lone ones, which no UTF-8 string can hold.
    private mutating func appendEscape(into buffer: inout [UInt8]) throws(JSONError) {
        guard let byte = current else { throw error("unterminated string") }
        position += 1
        let simple: UInt8? = switch byte {
        case UInt8(ascii: "\""): 0x22
        case UInt8(ascii: "\\"): 0x5C
        case UInt8(ascii: "/"): 0x2F
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "n"): 0x0A
        case UInt8(ascii: "r"): 0x0D
        case UInt8(ascii: "t"): 0x09
        default: nil
        }
        if let simple {
            buffer.append(simple)
            return
        }
        guard byte == UInt8(ascii: "u") else { throw error("invalid escape '\\\(printable(byte))'") }
        var scalar = try parseHex4()
        if (0xD800..<0xDC00).contains(scalar) {
            guard current == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") else {
                throw error("lone UTF-16 surrogate in \\u escape")
            }
            position += 2
            let low = try parseHex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("lone UTF-16 surrogate in \\u escape") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00..<0xE000).contains(scalar) {
            throw error("lone UTF-16 surrogate in \\u escape")
        }
        buffer.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
    }

    private mutating func parseHex4() throws(JSONError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as text.
    private mutating func parseNumber() throws(JSONError) -> JSONValue {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        guard let first = current, isDigit(first) else { throw error("invalid number") }
        position += 1
        if first == UInt8(ascii: "0"), let next = current, isDigit(next) { throw error("invalid number (leading zero)") }
        skipDigits()
        if current == UInt8(ascii: ".") {
            position += 1
            guard let next = current, isDigit(next) else { throw error("invalid number (no digits after '.')") }
            skipDigits()
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard let next = current, isDigit(next) else { throw error("invalid number (no digits in exponent)") }
            skipDigits()
        }
        return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self))
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private mutating func skipDigits() {
        while let byte = current, isDigit(byte) { position += 1 }
    }

    private func printable(_ byte: UInt8) -> String {
        (0x20..<0x7F).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }
}
