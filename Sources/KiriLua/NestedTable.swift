import KiriTensor
import LuaBridge

/// kiri.tensor({{1, 2}, {3, 4}}): nested Lua sequences of numbers to a tensor. Raw reads only, so
/// metamethods never run, and the rank limit stops recursive tables.
enum NestedTable {
    static func read(_ call: LuaCall, argument: Int) throws -> Tensor {
        let shape = try discoverShape(call, argument: argument)
        // The shape is checked and the budget charged before a single value is read: sub-tables can be
        // shared ({a, a, a, ...}), so a few small tables can describe an astronomically large tensor.
        let tensor = try Bindings.at(argument) { try Tensor(shape: shape) }
        var filled = 0
        try fill(call, stackIndex: Int32(argument), level: 0, shape: shape, into: tensor.data, filled: &filled,
                 argument: argument)
        return tensor
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

    /// Writes the values in row-major order; the length checks guarantee exactly `shape`'s count.
    private static func fill(_ call: LuaCall, stackIndex: Int32, level: Int, shape: [Int],
                             into data: UnsafeMutablePointer<Float>, filled: inout Int, argument: Int) throws {
        if level == shape.count {
            var number = 0.0
            guard kiri_arg_number(call.state, stackIndex, &number) != 0 else {
                throw ScriptError(argument: argument, "number expected at depth \(level), got \(String(cString: kiri_arg_typename(call.state, stackIndex)))")
            }
            data[filled] = Float(number)
            filled += 1
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
            try fill(call, stackIndex: -1, level: level + 1, shape: shape, into: data, filled: &filled, argument: argument)
        }
    }
}
