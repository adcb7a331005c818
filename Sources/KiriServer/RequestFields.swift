import Foundation
import KiriModels

/// A field of a request that has the wrong type or value: a 422 naming it, in the shape FastAPI (A1111's server)
/// gives, `{"detail": [{"loc": ["body", field], "msg": ..., "type": ...}]}`.
struct FieldError: Error, CustomStringConvertible {
    var field: String
    var message: String
    var description: String { field == "body" ? message : "\(field): \(message)" }

    /// FastAPI's `loc`: ["body", "init_images", 0] for the field `init_images[0]`, ["body"] for the body itself.
    var location: [Any] {
        guard field != "body" else { return ["body"] }
        var location: [Any] = ["body"]
        for part in field.split(separator: ".") {
            let pieces = part.split(separator: "[")
            location.append(String(pieces[0]))
            for index in pieces.dropFirst() { location.append(Int(index.dropLast()) ?? String(index.dropLast())) }
        }
        return location
    }
}

/// A request body's JSON object, read by the types the API declares. Missing and null fields take their defaults;
/// unknown fields are ignored, as A1111 does.
struct RequestFields {
    let members: [String: JSONValue]

    /// Parses `bytes` (bounded by the server's body limit) as a JSON object.
    init(body bytes: [UInt8]) throws(FieldError) {
        guard bytes.withUnsafeBytes({ StrictJSONParser.isValidUTF8($0) }) else { throw FieldError(field: "body", message: "not UTF-8 text") }
        let value: JSONValue
        do {
            value = try StrictJSONParser.parse(bytes)
        } catch {
            throw FieldError(field: "body", message: "not JSON: \(error)")
        }
        try self.init(value, field: "body")
    }

    init(_ value: JSONValue, field: String) throws(FieldError) {
        guard case .object(let list) = value else { throw FieldError(field: field, message: "expected an object, got \(value.kindName)") }
        members = Dictionary(list.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    private func present(_ key: String) -> JSONValue? {
        guard let value = members[key], value != .null else { return nil }
        return value
    }

    func string(_ key: String, _ fallback: String) throws(FieldError) -> String {
        guard let value = present(key) else { return fallback }
        guard case .string(let text) = value else { throw FieldError(field: key, message: "expected a string, got \(value.kindName)") }
        // Recipe arguments are C strings: a NUL would cut the text short without a word.
        guard !text.utf8.contains(0) else { throw FieldError(field: key, message: "contains a NUL character") }
        return text
    }

    /// A whole number; 20.0 counts as 20, as pydantic reads it.
    func int(_ key: String, _ fallback: Int) throws(FieldError) -> Int {
        guard let value = present(key) else { return fallback }
        if let integer = value.integer { return integer }
        if let double = value.double, double == double.rounded(), abs(double) < 9.0e15 { return Int(double) }
        throw FieldError(field: key, message: "expected an integer, got \(value.kindName)")
    }

    func double(_ key: String, _ fallback: Double) throws(FieldError) -> Double {
        guard let value = present(key) else { return fallback }
        guard let double = value.double else { throw FieldError(field: key, message: "expected a number, got \(value.kindName)") }
        return double
    }

    /// A boolean; A1111's integer flags (`inpainting_mask_invert: 1`) count too.
    func bool(_ key: String, _ fallback: Bool) throws(FieldError) -> Bool {
        guard let value = present(key) else { return fallback }
        if case .bool(let flag) = value { return flag }
        if let integer = value.integer, integer == 0 || integer == 1 { return integer == 1 }
        throw FieldError(field: key, message: "expected a boolean, got \(value.kindName)")
    }

    func strings(_ key: String) throws(FieldError) -> [String] {
        guard let value = present(key) else { return [] }
        guard case .array(let items) = value else { throw FieldError(field: key, message: "expected an array of strings, got \(value.kindName)") }
        var strings: [String] = []
        for (index, item) in items.enumerated() {
            guard case .string(let text) = item else {
                throw FieldError(field: "\(key)[\(index)]", message: "expected a string, got \(item.kindName)")
            }
            strings.append(text)
        }
        return strings
    }

    func object(_ key: String) throws(FieldError) -> RequestFields? {
        guard let value = present(key) else { return nil }
        return try RequestFields(value, field: key)
    }

    /// A field that must hold one of `range`'s values.
    func check<T: Comparable>(_ key: String, _ value: T, _ range: ClosedRange<T>) throws(FieldError) {
        guard range.contains(value) else { throw FieldError(field: key, message: "must be from \(range.lowerBound) to \(range.upperBound), got \(value)") }
    }

    /// A recipe argument's text for a JSON scalar (Kiri's jobs take `{"steps": 20}` as `steps=20`).
    static func argumentText(_ value: JSONValue, field: String) throws(FieldError) -> String {
        switch value {
        case .string(let text): return text
        case .number(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        default: throw FieldError(field: field, message: "expected a string, number or boolean, got \(value.kindName)")
        }
    }
}
