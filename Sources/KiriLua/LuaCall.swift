import KiriTensor
import LuaBridge

/// An error a binding reports to Lua. With `argument`, it reads like lauxlib's
/// "bad argument #2 to 'add' (Tensor expected, got nil)"; the C trampoline adds that frame.
public struct ScriptError: Error {
    public var argument: Int?
    public var message: String

    public init(argument: Int? = nil, _ message: String) {
        self.argument = argument
        self.message = message
    }
}

extension ScriptError {
    /// Runs a binding that a prelude calls through pcall, where lauxlib cannot name the function: argument errors get
    /// the "bad argument #n to 'function'" wording here. With `handleFirst`, errors are numbered as the host gets the
    /// arguments (the handle first) and reported as the script's method call numbers them.
    public static func naming(_ function: String, handleFirst: Bool = false, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as ScriptError {
            guard let argument = error.argument else { throw error }
            throw ScriptError("bad argument #\(handleFirst ? argument - 1 : argument) to '\(function)' (\(error.message))")
        }
    }
}

/// A Swift function exposed to Lua, under `name` in each of `tables` ("kiri", "Tensor", "meta", ...).
public struct Binding: @unchecked Sendable {  // immutable after start-up
    public var name: String
    public var tables: [String]
    /// How many new tensors it may return: the C side reserves their userdata before the call.
    public var tensorResults: Int
    public var body: (LuaCall) throws -> Void
    /// A model evaluation (loading, a forward pass, hashing a checkpoint): it runs off the script clock, so the
    /// time limit stops runaway Lua, not the minutes a model takes on a CPU (Cancellation).
    public var offScriptClock: Bool

    public init(name: String, tables: [String], tensorResults: Int, offScriptClock: Bool = false,
                body: @escaping (LuaCall) throws -> Void) {
        self.name = name
        self.tables = tables
        self.tensorResults = tensorResults
        self.offScriptClock = offScriptClock
        self.body = body
    }
}

/// The arguments of one call from Lua, and the place to put its results. Reads use only
/// non-raising bridge calls; results are pushed by C after the Swift function returns.
public struct LuaCall {
    let state: OpaquePointer
    let call: UnsafeMutablePointer<KiriCall>

    /// Looked up only by the bindings that need it: most calls are tensor maths on the hot path.
    public var runtime: LuaRuntime { LuaRuntime.from(state) }

    public var count: Int { Int(call.pointee.argumentCount) }

    public func type(_ index: Int) -> Int { index <= count ? Int(kiri_arg_type(state, Int32(index))) : KIRI_TNONE }
    public func isNil(_ index: Int) -> Bool { type(index) <= KIRI_TNIL }
    public func isTensor(_ index: Int) -> Bool { index <= count && kiri_arg_tensor(state, Int32(index)) != nil }
    public func isNumber(_ index: Int) -> Bool { type(index) == KIRI_TNUMBER }

    public func typeName(_ index: Int) -> String {
        if index > count { return "no value" }
        if kiri_arg_is_closed_tensor(state, Int32(index)) != 0 { return "closed Tensor" }
        return String(cString: kiri_arg_typename(state, Int32(index)))
    }

    public func expected(_ what: String, _ index: Int) -> ScriptError {
        ScriptError(argument: index, "\(what) expected, got \(typeName(index))")
    }

    // MARK: Arguments

    public func tensor(_ index: Int) throws -> Tensor {
        guard index <= count, let handle = kiri_arg_tensor(state, Int32(index)) else { throw expected("Tensor", index) }
        let tensor = Unmanaged<Tensor>.fromOpaque(handle).takeUnretainedValue()
        if tensor.isReleased { throw ScriptError(argument: index, "Tensor expected, got closed Tensor") }
        return tensor
    }

    public func number(_ index: Int) throws -> Double {
        var value = 0.0
        guard index <= count, kiri_arg_number(state, Int32(index), &value) != 0 else { throw expected("number", index) }
        return value
    }

    public func optionalNumber(_ index: Int) throws -> Double? { isNil(index) ? nil : try number(index) }

    /// A finite float32 value: NaN and ±inf are refused where a value parameter is expected.
    public func float(_ index: Int) throws -> Float {
        let value = try number(index)
        guard value.isFinite else { throw ScriptError(argument: index, "finite number expected, got \(value)") }
        return Float(value)
    }

    public func optionalFloat(_ index: Int) throws -> Float? { isNil(index) ? nil : try float(index) }

    public func integer(_ index: Int) throws -> Int {
        guard index <= count else { throw expected("integer", index) }
        var value: Int64 = 0
        if kiri_arg_integer(state, Int32(index), &value) != 0 { return Int(value) }
        if type(index) == KIRI_TNUMBER {
            throw ScriptError(argument: index, "number has no integer representation")
        }
        throw expected("integer", index)
    }

    public func optionalInteger(_ index: Int) throws -> Int? { isNil(index) ? nil : try integer(index) }

    public func boolean(_ index: Int, default value: Bool) -> Bool {
        isNil(index) ? value : kiri_arg_boolean(state, Int32(index)) != 0
    }

    public func string(_ index: Int) throws -> String {
        guard index <= count, let string = try stackString(Int32(index)) else { throw expected("string", index) }
        return string
    }

    /// A 1-based dimension of a rank-`rank` tensor (negative counts from the end) as the tensor core's
    /// 0-based axis. Checked here, so messages show the script's own numbers.
    public func dimension(_ index: Int, rank: Int) throws -> Int {
        let dim = try integer(index)
        let axis = dim > 0 ? dim - 1 : dim + rank
        guard dim != 0, (0..<rank).contains(axis) else {
            throw ScriptError(argument: index,
                              "dimension \(dim) out of range for a rank-\(rank) tensor (dimensions count from 1; -1 is the last)")
        }
        return axis
    }

    public func optionalDimension(_ index: Int, rank: Int) throws -> Int? { isNil(index) ? nil : try dimension(index, rank: rank) }

    /// Integers given as one table `{2, 3}` or as the remaining arguments `2, 3`.
    public func integers(from index: Int, allowNegativeOne: Bool = false) throws -> [Int] {
        if type(index) == KIRI_TTABLE {
            let length = kiri_table_length(state, Int32(index))
            guard length <= Tensor.maxRank else {
                throw ScriptError(argument: index, "at most \(Tensor.maxRank) sizes expected, got \(length)")
            }
            var values: [Int] = []
            for position in 0..<length {
                _ = kiri_table_push(state, Int32(index), Int64(position + 1))
                defer { kiri_pop(state, 1) }
                values.append(try size(at: -1, argument: index, allowNegativeOne: allowNegativeOne))
            }
            return values
        }
        guard count - index + 1 <= Tensor.maxRank else {
            throw ScriptError(argument: index, "at most \(Tensor.maxRank) sizes expected, got \(count - index + 1)")
        }
        return try stride(from: index, through: count, by: 1).map {
            try size(at: Int32($0), argument: $0, allowNegativeOne: allowNegativeOne)
        }
    }

    private func size(at stackIndex: Int32, argument: Int, allowNegativeOne: Bool) throws -> Int {
        var value: Int64 = 0
        guard kiri_arg_integer(state, stackIndex, &value) != 0 else {
            var number = 0.0
            let given = kiri_arg_number(state, stackIndex, &number) != 0
                ? "\(number)" : String(cString: kiri_arg_typename(state, stackIndex))
            throw ScriptError(argument: argument, "size must be an integer, got \(given)")
        }
        guard value >= 0 || (allowNegativeOne && value == -1) else {
            throw ScriptError(argument: argument, "size must be non-negative, got \(value)")
        }
        guard value <= Int64(Tensor.maxElements) else {
            throw ScriptError(argument: argument, "size \(value) is too large")
        }
        return Int(value)
    }

    public func isTable(_ index: Int) -> Bool { type(index) == KIRI_TTABLE }

    /// The numbers of the list at `index` (raw reads, at most `limit`); a wrong entry is reported as Lua argument
    /// `argument`, named `name[position]`.
    public func numbers(_ index: Int, argument: Int, name: String, limit: Int) throws -> [Double] {
        guard isTable(index) else { throw ScriptError(argument: argument, "\(name): table expected, got \(typeName(index))") }
        let length = kiri_table_length(state, Int32(index))
        guard length <= limit else { throw ScriptError(argument: argument, "\(name) has \(length) values, at most \(limit) expected") }
        return try (0..<length).map { position in
            _ = kiri_table_push(state, Int32(index), Int64(position + 1))
            defer { kiri_pop(state, 1) }
            var value = 0.0
            guard kiri_arg_number(state, -1, &value) != 0 else {
                throw ScriptError(argument: argument, "\(name)[\(position + 1)] must be a number, got \(String(cString: kiri_arg_typename(state, -1)))")
            }
            return value
        }
    }

    /// A sequence of tensors, e.g. the first argument of kiri.cat. Errors name an element by its position, or by
    /// `names[position]` for a list made from a table of named tensors (kiri.save_tensors).
    public func tensors(_ index: Int, names: [String]? = nil) throws -> [Tensor] {
        guard type(index) == KIRI_TTABLE else { throw expected("table of Tensors", index) }
        let length = kiri_table_length(state, Int32(index))
        guard length <= 4096 else { throw ScriptError(argument: index, "at most 4096 Tensors expected") }
        return try (0..<length).map { position in
            _ = kiri_table_push(state, Int32(index), Int64(position + 1))
            defer { kiri_pop(state, 1) }
            guard let handle = kiri_arg_tensor(state, -1) else {
                let element = names.flatMap { position < $0.count ? "for '\($0[position])'" : nil } ?? "at index \(position + 1)"
                let kind = kiri_arg_is_closed_tensor(state, -1) != 0 ? "closed Tensor" : String(cString: kiri_arg_typename(state, -1))
                throw ScriptError(argument: index, "Tensor expected \(element), got \(kind)")
            }
            return Unmanaged<Tensor>.fromOpaque(handle).takeUnretainedValue()
        }
    }

    /// A table of string keys and string values, e.g. kiri.image.save's text chunks. Raw reads, so
    /// metamethods never run; the pairs come in traversal order.
    public func stringTable(_ index: Int) throws -> [(key: String, value: String)] {
        guard type(index) == KIRI_TTABLE else { throw expected("table of strings", index) }
        guard kiri_push_nil(state) != 0 else { throw ScriptError("not enough memory") }
        var pairs: [(key: String, value: String)] = []
        while kiri_table_next(state, Int32(index)) != 0 {
            defer { kiri_pop(state, 1) }    // the value; the key stays for the next step, or goes below
            guard let key = try stackString(-2) else {
                var integer: Int64 = 0, number = 0.0
                let problem = kiri_arg_integer(state, -2, &integer) != 0 ? "key \(integer) is a number"
                    : kiri_arg_number(state, -2, &number) != 0 ? "key \(number) is a number"
                    : "a key is a \(String(cString: kiri_arg_typename(state, -2)))"
                kiri_pop(state, 1)
                throw ScriptError(argument: index, "table of strings expected, \(problem)")
            }
            guard let value = try stackString(-1) else {
                let problem = "key '\(key)' has a \(String(cString: kiri_arg_typename(state, -1)))"
                kiri_pop(state, 1)
                throw ScriptError(argument: index, "table of strings expected, \(problem)")
            }
            pairs.append((key, value))
        }
        return pairs
    }

    /// The string at stack index `index` (no conversion from numbers), or nil. The copy counts against the run's
    /// memory cap until the call returns: one big string handed to the host many times over (as every value of a
    /// table) would otherwise multiply past it.
    private func stackString(_ index: Int32) throws -> String? {
        var length = 0
        guard let bytes = kiri_arg_string(state, index, &length) else { return nil }
        let runtime = self.runtime
        guard runtime.budget.reserve(length) else {
            throw ScriptError("not enough memory: a \(length)-byte string passes the run's memory cap (--memory)")
        }
        call.pointee.heldStringBytes += length
        return bytes.withMemoryRebound(to: UInt8.self, capacity: length) {
            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
        }
    }

    // MARK: Results

    public func push(_ tensor: Tensor) throws {
        let handle = Unmanaged.passRetained(tensor).toOpaque()
        guard kiri_result_tensor(state, call, handle, tensor.count * MemoryLayout<Float>.stride) != 0 else {
            Unmanaged<Tensor>.fromOpaque(handle).release()
            throw ScriptError("internal error: no result slot for a Tensor")
        }
    }

    public func push(_ number: Double) { kiri_result_number(call, number) }
    public func push(integer: Int) { kiri_result_integer(call, Int64(integer)) }
    public func pushArgument(_ index: Int) { kiri_result_stack(call, Int32(index)) }

    public func push(_ string: String) throws {
        var string = string
        let pushed = string.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { kiri_result_string(state, call, $0.baseAddress, $0.count) }
        }
        if pushed == 0 { throw ScriptError("not enough memory") }
    }

    public func pushNil() { kiri_result_nil(call) }
    public func push(boolean: Bool) { kiri_result_boolean(call, boolean ? 1 : 0) }

    public func push(numbers: [Double]) throws {
        if kiri_result_numbers(state, call, numbers, numbers.count) == 0 { throw ScriptError("not enough memory") }
    }

    /// A table {key = value} of strings; a later pair wins over an earlier one with the same key.
    public func push(strings pairs: [(key: String, value: String)]) throws {
        var bytes: [UInt8] = []
        for (key, value) in pairs {
            for part in [key, value] {
                withUnsafeBytes(of: part.utf8.count) { bytes += $0 }    // the size_t length, then the bytes
                bytes += part.utf8
            }
        }
        let pushed = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { kiri_result_string_table(state, call, $0.baseAddress, $0.count) }
        }
        if pushed == 0 { throw ScriptError("not enough memory") }
    }

    /// The tensor as nested tables; its data stays alive because it is an argument of this call.
    public func pushNested(_ tensor: Tensor) {
        let shape = tensor.shape.map { Int32($0) }
        kiri_result_nested(call, tensor.data, shape, Int32(shape.count))
    }
}
