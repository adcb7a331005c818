/// One JSON config object (`config.json`, `scheduler_config.json`) read field by field, where every error names the
/// file and the field (security case 33). Absent fields and explicit nulls are told apart only where diffusers
/// does (e.g. `mid_block_type: null` means no mid block).
struct ConfigFields {
    /// Configs are a few kilobytes; a trained_betas list of 1000 numbers is about 25 KB.
    static let maximumFileSize = 16 << 20

    let path: String
    let object: JSONValue

    init(path: String) throws(ModelFileError) {
        try self.init(path: path, json: Self.json(path: path))
    }

    /// The config file at `path` parsed, refused past `maximumFileSize` or when it is not UTF-8 JSON.
    static func json(path: String) throws(ModelFileError) -> JSONValue {
        let file = try MappedFile(path: path)
        defer { file.unmap() }
        guard file.size <= Self.maximumFileSize else {
            throw ModelFileError(path, "config is \(file.size) bytes, more than the limit of \(Self.maximumFileSize)")
        }
        guard StrictJSONParser.isValidUTF8(file.bytes) else { throw ModelFileError(path, "config is not valid UTF-8") }
        do {
            return try StrictJSONParser.parse(file.bytes)
        } catch {
            throw ModelFileError(path, "config is not valid JSON: \(error)")
        }
    }

    init(path: String, json: JSONValue) throws(ModelFileError) {
        guard case .object = json else { throw ModelFileError(path, "config is \(json.kindName), not a JSON object") }
        self.path = path
        object = json
    }

    func failure(_ field: String, _ message: String) -> ModelFileError {
        ModelFileError(path, "field '\(field)' \(message)")
    }

    /// The value, or nil when absent or null.
    func value(_ field: String) -> JSONValue? {
        guard let value = object[field], value != .null else { return nil }
        return value
    }

    func isPresent(_ field: String) -> Bool { object[field] != nil }

    func required(_ field: String) throws(ModelFileError) -> JSONValue {
        guard let value = value(field) else {
            throw ModelFileError(path, object[field] == nil ? "missing field '\(field)'" : "field '\(field)' is null")
        }
        return value
    }

    // MARK: Scalars

    func integer(_ value: JSONValue, _ field: String) throws(ModelFileError) -> Int {
        guard let integer = value.integer else { throw failure(field, "must be an integer, got \(Self.describe(value))") }
        return integer
    }

    /// Every integer field has a range, its maximum far above any published model's value, so that no size the
    /// network computes from it overflows and no array it sizes is large (security case 36).
    func requiredInteger(_ field: String, _ range: ClosedRange<Int>) throws(ModelFileError) -> Int {
        try within(range, integer(required(field), field), field)
    }

    func integer(_ field: String, default fallback: Int, _ range: ClosedRange<Int>) throws(ModelFileError) -> Int {
        guard let value = value(field) else { return fallback }
        return try within(range, integer(value, field), field)
    }

    func optionalInteger(_ field: String, _ range: ClosedRange<Int>) throws(ModelFileError) -> Int? {
        guard let value = value(field) else { return nil }
        return try within(range, integer(value, field), field)
    }

    func within(_ range: ClosedRange<Int>, _ value: Int, _ field: String) throws(ModelFileError) -> Int {
        guard value >= range.lowerBound else { throw failure(field, "must be at least \(range.lowerBound), got \(value)") }
        guard value <= range.upperBound else { throw failure(field, "is \(value), above the maximum of \(range.upperBound)") }
        return value
    }

    func double(_ field: String, default fallback: Double) throws(ModelFileError) -> Double {
        guard let value = value(field) else { return fallback }
        guard let number = value.double else { throw failure(field, "must be a finite number, got \(Self.describe(value))") }
        return number
    }

    func bool(_ field: String, default fallback: Bool) throws(ModelFileError) -> Bool {
        guard let value = value(field) else { return fallback }
        guard case .bool(let flag) = value else { throw failure(field, "must be true or false, got \(Self.describe(value))") }
        return flag
    }

    func optionalString(_ field: String) throws(ModelFileError) -> String? {
        guard let value = value(field) else { return nil }
        guard case .string(let text) = value else { throw failure(field, "must be a string, got \(Self.describe(value))") }
        return text
    }

    /// A string naming one case of `E`; the error lists the cases, so a typo shows its fix.
    func choice<E: RawRepresentable & CaseIterable>(_ value: JSONValue, _ field: String, _ kind: String = "value")
        throws(ModelFileError) -> E where E.RawValue == String
    {
        guard case .string(let text) = value else { throw failure(field, "must be a string, got \(Self.describe(value))") }
        guard let choice = E(rawValue: text) else {
            let known = E.allCases.map(\.rawValue).joined(separator: ", ")
            throw failure(field, "has unknown \(kind) '\(text)' (Kiri supports \(known))")
        }
        return choice
    }

    func choice<E: RawRepresentable & CaseIterable>(_ field: String, default fallback: E) throws(ModelFileError) -> E
        where E.RawValue == String
    {
        guard let value = value(field) else { return fallback }
        return try choice(value, field)
    }

    // MARK: Arrays

    func array(_ value: JSONValue, _ field: String) throws(ModelFileError) -> [JSONValue] {
        guard case .array(let elements) = value else { throw failure(field, "must be an array, got \(Self.describe(value))") }
        return elements
    }

    /// Each element of the array `field` is named `field[i]` in errors.
    func requiredChoices<E: RawRepresentable & CaseIterable>(_ field: String, _ kind: String) throws(ModelFileError) -> [E]
        where E.RawValue == String
    {
        var result: [E] = []
        for (index, element) in try array(required(field), field).enumerated() {
            result.append(try choice(element, "\(field)[\(index)]", kind))
        }
        guard !result.isEmpty else { throw failure(field, "is empty") }
        return result
    }

    /// At most `maximumCount` elements, each in `range`.
    func requiredIntegers(_ field: String, _ range: ClosedRange<Int>, maximumCount: Int) throws(ModelFileError) -> [Int] {
        let elements = try array(required(field), field)
        guard elements.count <= maximumCount else {
            throw failure(field, "has \(elements.count) values, above the maximum of \(maximumCount)")
        }
        var result: [Int] = []
        for (index, element) in elements.enumerated() {
            result.append(try within(range, integer(element, "\(field)[\(index)]"), "\(field)[\(index)]"))
        }
        guard !result.isEmpty else { throw failure(field, "is empty") }
        return result
    }

    func doubles(_ field: String) throws(ModelFileError) -> [Double]? {
        guard let value = value(field) else { return nil }
        var result: [Double] = []
        for (index, element) in try array(value, field).enumerated() {
            guard let number = element.double else {
                throw failure("\(field)[\(index)]", "must be a finite number, got \(Self.describe(element))")
            }
            result.append(number)
        }
        return result
    }

    /// diffusers' "int or one per block" fields (`layers_per_block`, `attention_head_dim`, ...), expanded to one
    /// value per block; nil when absent or null and there is no default.
    func perBlock(_ field: String, blocks: Int, default fallback: Int?, _ range: ClosedRange<Int>, allowList: Bool = true)
        throws(ModelFileError) -> [Int]?
    {
        guard let value = value(field) else { return fallback.map { Array(repeating: $0, count: blocks) } }
        if case .array(let elements) = value, allowList {
            guard elements.count == blocks else {
                throw failure(field, "has \(elements.count) values but the model has \(blocks) down blocks")
            }
            var result: [Int] = []
            for (index, element) in elements.enumerated() {
                result.append(try within(range, integer(element, "\(field)[\(index)]"), "\(field)[\(index)]"))
            }
            return result
        }
        guard value.integer != nil else {
            throw failure(field, allowList ? "must be an integer or a list of \(blocks) integers, got \(Self.describe(value))"
                                           : "must be an integer, got \(Self.describe(value))")
        }
        return Array(repeating: try within(range, integer(value, field), field), count: blocks)
    }

    /// diffusers' "bool or one per block" fields (`only_cross_attention`), expanded to one value per block.
    func perBlockFlags(_ field: String, blocks: Int, default fallback: Bool) throws(ModelFileError) -> [Bool] {
        guard case .array(let elements)? = value(field) else {
            return Array(repeating: try bool(field, default: fallback), count: blocks)
        }
        guard elements.count == blocks else {
            throw failure(field, "has \(elements.count) values but the model has \(blocks) down blocks")
        }
        var result: [Bool] = []
        for (index, element) in elements.enumerated() {
            guard case .bool(let flag) = element else {
                throw failure("\(field)[\(index)]", "must be true or false, got \(Self.describe(element))")
            }
            result.append(flag)
        }
        return result
    }

    // MARK: Features Kiri does not run

    /// A field that must keep one of its diffusers defaults, because a different value selects a feature Kiri
    /// does not implement; an array passes when every element does (`only_cross_attention: [false, ...]`).
    func requireDefault(_ field: String, _ allowed: [JSONValue]) throws(ModelFileError) {
        guard let value = object[field] else { return }
        func matches(_ value: JSONValue) -> Bool {
            if case .array(let elements) = value { return !elements.isEmpty && elements.allSatisfy(matches) }
            return allowed.contains { expected in
                if let left = value.double, let right = expected.double { return left == right }
                return value == expected
            }
        }
        guard matches(value) else {
            let expected = allowed.map(Self.describe).joined(separator: " or ")
            throw failure(field, "is \(Self.describe(value)), which Kiri does not support (it needs \(expected))")
        }
    }

    static func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool(let flag): String(flag)
        case .number(let text): text
        case .string(let text): "'\(text)'"
        case .array, .object: value.kindName
        }
    }
}

extension JSONValue {
    /// A config file (`config.json`, `scheduler_config.json`) as ConfigFields reads it, bounded in size, for a
    /// caller that keeps the JSON as well as the config made from it (a network being trained writes it back).
    public init(configAt path: String) throws(ModelFileError) { self = try ConfigFields.json(path: path) }
}
