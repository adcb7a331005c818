import Foundation
import KiriModels

/// A field of a request that has the wrong type or value: a 422 naming it, in the shape FastAPI (A1111's server)
/// gives, `{"detail": [{"loc": ["body", "init_images", 0], "msg": ..., "type": ...}]}`.
struct FieldError: Error, CustomStringConvertible {
    enum Key: Sendable, Equatable {
        case name(String)
        case index(Int)
    }

    /// From the body down; empty for the body itself. Names come from requests, so they are kept apart, never
    /// parsed back out of a string.
    var path: [Key]
    var message: String

    init(_ path: [Key], _ message: String) {
        (self.path, self.message) = (path, message)
    }

    /// A field of the body by name ("body": the body itself).
    init(field: String, message: String) {
        self.init(field == "body" ? [] : [.name(field)], message)
    }

    /// How messages name it: `init_images[0]`, `override_settings.sd_model_checkpoint`.
    var field: String {
        path.enumerated().map { offset, key in
            switch key {
            case .name(let name): offset == 0 ? name : "." + name
            case .index(let index): "[\(index)]"
            }
        }.joined()
    }

    var description: String { path.isEmpty ? message : "\(field): \(message)" }

    var location: [Any] {
        ["body"] + path.map { key -> Any in
            switch key {
            case .name(let name): name
            case .index(let index): index
            }
        }
    }
}

/// A request body's JSON object, read by the types the API declares. Missing and null fields take their defaults;
/// unknown fields are ignored, as A1111 does.
struct RequestFields {
    let members: [String: JSONValue]
    /// Where this object is in the body (empty for the body itself), for the errors of its fields.
    let path: [FieldError.Key]

    /// Parses `bytes` (bounded by the server's body limit) as a JSON object.
    init(body bytes: [UInt8]) throws(FieldError) {
        guard bytes.withUnsafeBytes({ StrictJSONParser.isValidUTF8($0) }) else { throw FieldError(field: "body", message: "not UTF-8 text") }
        let value: JSONValue
        do {
            value = try StrictJSONParser.parse(bytes)
        } catch {
            throw FieldError(field: "body", message: "not JSON: \(error)")
        }
        try self.init(value, path: [])
    }

    init(_ value: JSONValue, path: [FieldError.Key]) throws(FieldError) {
        guard case .object(let list) = value else { throw FieldError(path, "expected an object, got \(value.kindName)") }
        self.path = path
        members = Dictionary(uniqueKeysWithValues: list.map { ($0.key, $0.value) })   // the parser refuses duplicate keys
    }

    private func error(_ key: String, _ message: String) -> FieldError { FieldError(path + [.name(key)], message) }

    private func present(_ key: String) -> JSONValue? {
        guard let value = members[key], value != .null else { return nil }
        return value
    }

    func string(_ key: String, _ fallback: String) throws(FieldError) -> String {
        guard let value = present(key) else { return fallback }
        guard case .string(let text) = value else { throw error(key, "expected a string, got \(value.kindName)") }
        // Recipe arguments are C strings: a NUL would cut the text short without a word.
        guard !text.utf8.contains(0) else { throw error(key, "contains a NUL character") }
        return text
    }

    /// A whole number; 20.0 counts as 20, as pydantic reads it.
    func int(_ key: String, _ fallback: Int) throws(FieldError) -> Int {
        guard let value = present(key) else { return fallback }
        if let integer = value.integer { return integer }
        if let double = value.double, double == double.rounded(), abs(double) < 9.0e15 { return Int(double) }
        throw error(key, "expected an integer, got \(value.kindName)")
    }

    func double(_ key: String, _ fallback: Double) throws(FieldError) -> Double {
        guard let value = present(key) else { return fallback }
        guard let double = value.double else { throw error(key, "expected a number, got \(value.kindName)") }
        return double
    }

    /// A boolean; A1111's integer flags (`inpainting_mask_invert: 1`) count too.
    func bool(_ key: String, _ fallback: Bool) throws(FieldError) -> Bool {
        guard let value = present(key) else { return fallback }
        if case .bool(let flag) = value { return flag }
        if let integer = value.integer, integer == 0 || integer == 1 { return integer == 1 }
        throw error(key, "expected a boolean, got \(value.kindName)")
    }

    func strings(_ key: String) throws(FieldError) -> [String] {
        guard let value = present(key) else { return [] }
        guard case .array(let items) = value else { throw error(key, "expected an array of strings, got \(value.kindName)") }
        var strings: [String] = []
        for (index, item) in items.enumerated() {
            guard case .string(let text) = item else {
                throw FieldError(path + [.name(key), .index(index)], "expected a string, got \(item.kindName)")
            }
            strings.append(text)
        }
        return strings
    }

    func object(_ key: String) throws(FieldError) -> RequestFields? {
        guard let value = present(key) else { return nil }
        return try RequestFields(value, path: path + [.name(key)])
    }

    /// A field that must hold one of `range`'s values.
    func check<T: Comparable>(_ key: String, _ value: T, _ range: ClosedRange<T>) throws(FieldError) {
        guard range.contains(value) else { throw error(key, "must be from \(range.lowerBound) to \(range.upperBound), got \(value)") }
    }

    /// A recipe argument's text for a JSON scalar (Kiri's jobs take `{"steps": 20}` as `steps=20`).
    static func argumentText(_ value: JSONValue, path: [FieldError.Key]) throws(FieldError) -> String {
        switch value {
        case .string(let text): return text
        case .number(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        default: throw FieldError(path, "expected a string, number or boolean, got \(value.kindName)")
        }
    }
}
