import KiriTensor
import LuaBridge

/// kiri.tensor({{1, 2}, {3, 4}}): nested Lua sequences of numbers to a tensor. Raw reads only, so
/// metamethods never run, and the rank limit stops recursive tables.
enum NestedTable {
    static func read(_ call: LuaCall, argument: Int) throws -> Tensor {
        let shape = try discoverShape(call, argument: argument)
        var values: [Float] = []
        values.reserveCapacity(shape.reduce(1, *))
        try fill(call, stackIndex: Int32(argument), level: 0, shape: shape, values: &values, argument: argument)
        return try Bindings.at(argument) { try Tensor(shape: shape, values: values) }
    }

    /// Follows first elements down: {{1, 2}, {3, 4}} has shape [2, 2].
    private static func discoverShape(_ call: LuaCall, argument: Int) throws -> [Int] {
        var shape: [Int] = []
        var pushed: Int32 = 0
        defer { kiri_pop(call.state, pushed) }
        var top = Int32(argument)
        while Int(kiri_arg_type(call.state, top)) == KIRI_TTABLE {
            guard shape.count < Tensor.maxRank else {
                throw ScriptError(argument: argument, "table nested deeper than \(Tensor.maxRank) levels")
            }
            let length = kiri_table_length(call.state, top)
            shape.append(length)
            guard length > 0, Int(kiri_table_push(call.state, top, 1)) != KIRI_TNONE else { break }
            pushed += 1
            top = -1
        }
        return shape
    }

    private static func fill(_ call: LuaCall, stackIndex: Int32, level: Int, shape: [Int],
                             values: inout [Float], argument: Int) throws {
        if level == shape.count {
            var number = 0.0
            guard kiri_arg_number(call.state, stackIndex, &number) != 0 else {
                throw ScriptError(argument: argument, "number expected at depth \(level), got \(String(cString: kiri_arg_typename(call.state, stackIndex)))")
            }
            values.append(Float(number))
            return
        }
        guard Int(kiri_arg_type(call.state, stackIndex)) == KIRI_TTABLE,
              kiri_table_length(call.state, stackIndex) == shape[level] else {
            throw ScriptError(argument: argument, "ragged table: expected \(shape[level]) entries at depth \(level + 1)")
        }
        for position in 0..<shape[level] {
            guard Int(kiri_table_push(call.state, stackIndex, Int64(position + 1))) != KIRI_TNONE else {
                throw ScriptError(argument: argument, "table too deep")
            }
            defer { kiri_pop(call.state, 1) }
            try fill(call, stackIndex: -1, level: level + 1, shape: shape, values: &values, argument: argument)
        }
    }
}
