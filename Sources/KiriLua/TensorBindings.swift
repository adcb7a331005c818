import KiriTensor
import LuaBridge

/// The tensor API of lua-api.md ("Tensors"), in Torch7's manner: functions and operators allocate,
/// a `_` suffix mutates in place and returns self, and element-wise functions on `kiri` take an
/// optional result tensor first (`kiri.add(result, a, b)`). Dimensions and indices are 1-based;
/// negative dimensions count from the end.
enum Bindings {
    static let all: [Binding] = constructors + elementwise + reductions + shapes + metamethods + host
    /// The functions alone, indexed like `all`: the dispatcher fetches one per call.
    nonisolated(unsafe) static let bodies = ContiguousArray(all.map(\.body))

    // MARK: - Helpers

    /// Runs a tensor-core call whose parameters start at Lua argument `first`, so a TensorError's
    /// argument position becomes the Lua one.
    @discardableResult
    static func at<T>(_ first: Int, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as TensorError {
            throw ScriptError(argument: error.argument.map { $0 + first - 1 }, error.message)
        }
    }

    /// Pushes `result`, or the result argument itself when the operation wrote into it.
    static func push(_ result: Tensor, into: Tensor?, _ call: LuaCall) throws {
        if let into, result === into { call.pushArgument(1) } else { try call.push(result) }
    }

    /// Whether `call` uses the result-first form: one argument more than `arity`, a tensor first.
    static func resultFirst(_ call: LuaCall, arity: Int) throws -> Tensor? {
        call.count > arity && call.isTensor(1) ? try call.tensor(1) : nil
    }

    static func seed(_ call: LuaCall, _ index: Int) throws -> UInt64 {
        if let seed = try call.optionalInteger(index) { return UInt64(bitPattern: Int64(seed)) }
        defer { call.runtime.nextSeed &+= 1 }
        return call.runtime.nextSeed
    }

    /// A tensor (for `a + b`, either operand may be a number).
    static func binary(_ op: Tensor.BinaryOp, _ call: LuaCall, _ first: Int, into: Tensor?) throws -> Tensor {
        if call.isTensor(first) {
            let lhs = try call.tensor(first)
            if call.isNumber(first + 1) { return try at(first) { try lhs.binary(op, try call.float(first + 1), into: into) } }
            let rhs = try call.tensor(first + 1)
            return try at(first) { try lhs.binary(op, rhs, into: into) }
        }
        if call.isNumber(first) && call.isTensor(first + 1) {
            let scalar = try call.float(first), rhs = try call.tensor(first + 1)
            return try at(first + 1) { try rhs.binary(op, scalarOnLeft: scalar, into: into) }
        }
        throw call.expected("Tensor", first)
    }

    // MARK: - Constructors

    static let constructors: [Binding] = [
        Binding(name: "tensor", tables: ["kiri"], tensorResults: 1) { call in
            if call.isNumber(1) { return try call.push(at(1) { try Tensor.full([], try call.float(1)) }) }
            guard call.type(1) == KIRI_TTABLE else { throw call.expected("table or number", 1) }
            try call.push(NestedTable.read(call, argument: 1))
        },
        shapeConstructor("zeros") { try Tensor.zeros($0) },
        shapeConstructor("ones") { try Tensor.ones($0) },
        Binding(name: "full", tables: ["kiri"], tensorResults: 1) { call in
            let shape = try call.integers(from: 1)
            let value = try call.float(call.type(1) == KIRI_TTABLE ? 2 : call.count)
            try call.push(at(1) { try Tensor.full(shape, value) })
        },
        Binding(name: "arange", tables: ["kiri"], tensorResults: 1) { call in
            let (start, end) = call.count >= 2 ? (try call.number(1), try call.number(2)) : (0, try call.number(1))
            let step = call.count >= 3 ? try call.number(3) : 1
            guard [start, end, step].allSatisfy(\.isFinite), step != 0 else {
                throw ScriptError(argument: call.count >= 3 ? 3 : 1, "finite bounds and a non-zero step expected")
            }
            guard abs((end - start) / step) <= Double(Tensor.maxElements) else {
                throw ScriptError(argument: 1, "range has too many elements")
            }
            try call.push(at(1) { try Tensor.arange(start, end, step) })
        },
        Binding(name: "linspace", tables: ["kiri"], tensorResults: 1) { call in
            let start = try call.float(1), end = try call.float(2), count = try call.integer(3)
            guard count >= 0, count <= Tensor.maxElements else {
                throw ScriptError(argument: 3, "count must be between 0 and \(Tensor.maxElements), got \(count)")
            }
            try call.push(at(1) { try Tensor.linspace(Double(start), Double(end), count) })
        },
        randomConstructor("randn") { try Tensor.randn($0, seed: $1) },
        randomConstructor("rand") { try Tensor.rand($0, seed: $1) },
        likeConstructor("zeros_like") { shape, _ in try Tensor.zeros(shape) },
        likeConstructor("ones_like") { shape, _ in try Tensor.ones(shape) },
        likeConstructor("randn_like", seeded: true) { try Tensor.randn($0, seed: $1) },
        likeConstructor("rand_like", seeded: true) { try Tensor.rand($0, seed: $1) },
        Binding(name: "manual_seed", tables: ["kiri"], tensorResults: 0) { call in
            call.runtime.nextSeed = UInt64(bitPattern: Int64(try call.integer(1)))
        },
    ]

    /// kiri.zeros({2, 3}) or kiri.zeros(2, 3).
    static func shapeConstructor(_ name: String, _ make: @escaping ([Int]) throws -> Tensor) -> Binding {
        Binding(name: name, tables: ["kiri"], tensorResults: 1) { call in
            let shape = try call.integers(from: 1)
            try call.push(at(1) { try make(shape) })
        }
    }

    /// kiri.randn({1, 4, 64, 64}, seed) or kiri.randn(2, 3); without a seed, the run's next seed.
    static func randomConstructor(_ name: String, _ make: @escaping ([Int], UInt64) throws -> Tensor) -> Binding {
        Binding(name: name, tables: ["kiri"], tensorResults: 1) { call in
            let shape = try call.integers(from: 1)
            let seed = try seed(call, call.type(1) == KIRI_TTABLE ? 2 : call.count + 1)
            try call.push(at(1) { try make(shape, seed) })
        }
    }

    static func likeConstructor(_ name: String, seeded: Bool = false,
                                _ make: @escaping ([Int], UInt64) throws -> Tensor) -> Binding {
        Binding(name: name, tables: ["kiri"], tensorResults: 1) { call in
            let shape = try call.tensor(1).shape
            let seed = seeded ? try seed(call, 2) : 0
            try call.push(at(1) { try make(shape, seed) })
        }
    }

    // MARK: - Element-wise

    static let binaryOps: [(String, Tensor.BinaryOp)] = [
        ("add", .add), ("sub", .sub), ("mul", .mul), ("div", .div), ("pow", .pow),
        ("minimum", .minimum), ("maximum", .maximum),
        ("eq", .equal), ("lt", .less), ("le", .lessEqual), ("gt", .greater), ("ge", .greaterEqual),
    ]
    static let unaryOps: [(String, Tensor.UnaryOp)] = [
        ("neg", .neg), ("abs", .abs), ("sqrt", .sqrt), ("exp", .exp), ("log", .log), ("tanh", .tanh),
        ("sigmoid", .sigmoid), ("silu", .silu), ("sign", .sign), ("floor", .floor), ("ceil", .ceil),
        ("round", .round), ("square", .square), ("reciprocal", .reciprocal),
    ]

    static let elementwise: [Binding] =
        binaryOps.flatMap { name, op in
            [
                Binding(name: name, tables: ["kiri", "Tensor"], tensorResults: 1) { call in
                    let into = try resultFirst(call, arity: 2)
                    try push(binary(op, call, into == nil ? 1 : 2, into: into), into: into, call)
                },
                Binding(name: name + "_", tables: ["Tensor"], tensorResults: 0) { call in
                    let tensor = try call.tensor(1)
                    if call.isNumber(2) {
                        try at(1) { try tensor.binaryInPlace(op, try call.float(2)) }
                    } else {
                        let other = try call.tensor(2)
                        try at(1) { try tensor.binaryInPlace(op, other) }
                    }
                    call.pushArgument(1)
                },
            ]
        }
        + unaryOps.flatMap { name, op in
            [
                Binding(name: name, tables: ["kiri", "Tensor"], tensorResults: 1) { call in
                    let into = try resultFirst(call, arity: 1)
                    let tensor = try call.tensor(into == nil ? 1 : 2)
                    try push(at(1) { try tensor.unary(op, into: into) }, into: into, call)
                },
                Binding(name: name + "_", tables: ["Tensor"], tensorResults: 0) { call in
                    try at(1) { try call.tensor(1).unaryInPlace(op) }
                    call.pushArgument(1)
                },
            ]
        }
        + [
            Binding(name: "clamp", tables: ["kiri", "Tensor"], tensorResults: 1) { call in
                let into = try resultFirst(call, arity: 3)
                let first = into == nil ? 1 : 2
                let tensor = try call.tensor(first)
                let low = try call.optionalFloat(first + 1), high = try call.optionalFloat(first + 2)
                try push(at(first) { try tensor.clamp(min: low, max: high, into: into) },
                         into: into, call)
            },
            Binding(name: "clamp_", tables: ["Tensor"], tensorResults: 0) { call in
                let tensor = try call.tensor(1)
                let low = try call.optionalFloat(2), high = try call.optionalFloat(3)
                _ = try at(1) { try tensor.clamp(min: low, max: high, into: tensor) }
                call.pushArgument(1)
            },
            Binding(name: "lerp", tables: ["kiri", "Tensor"], tensorResults: 1) { call in
                let into = try resultFirst(call, arity: 3)
                let first = into == nil ? 1 : 2
                try push(lerp(call, first, into: into), into: into, call)
            },
            Binding(name: "lerp_", tables: ["Tensor"], tensorResults: 0) { call in
                _ = try lerp(call, 1, into: try call.tensor(1))
                call.pushArgument(1)
            },
            Binding(name: "where", tables: ["kiri"], tensorResults: 1) { call in
                let into = try resultFirst(call, arity: 3)
                let first = into == nil ? 1 : 2
                let condition = try call.tensor(first), a = try call.tensor(first + 1), b = try call.tensor(first + 2)
                try push(at(first) { try Tensor.where(condition, a, b, into: into) }, into: into, call)
            },
            /// x:axpy_(alpha, d) is x += alpha * d with no temporaries: a sampler's Euler step.
            Binding(name: "axpy_", tables: ["Tensor"], tensorResults: 0) { call in
                let tensor = try call.tensor(1), alpha = try call.float(2), x = try call.tensor(3)
                try at(1) { try tensor.axpy(alpha, x) }
                call.pushArgument(1)
            },
            Binding(name: "copy_", tables: ["Tensor"], tensorResults: 0) { call in
                let tensor = try call.tensor(1), source = try call.tensor(2)
                try at(1) { try tensor.copy(from: source) }
                call.pushArgument(1)
            },
            Binding(name: "fill_", tables: ["Tensor"], tensorResults: 0) { call in
                try call.tensor(1).fill(try call.float(2))
                call.pushArgument(1)
            },
            Binding(name: "zero_", tables: ["Tensor"], tensorResults: 0) { call in
                try call.tensor(1).fill(0)
                call.pushArgument(1)
            },
            Binding(name: "matmul", tables: ["kiri", "Tensor"], tensorResults: 1) { call in
                let into = try resultFirst(call, arity: 2)
                let first = into == nil ? 1 : 2
                let a = try call.tensor(first), b = try call.tensor(first + 1)
                try push(at(first) { try a.matmul(b, into: into) }, into: into, call)
            },
        ]

    /// lerp(start, end, weight): weight a number or a tensor.
    static func lerp(_ call: LuaCall, _ first: Int, into: Tensor?) throws -> Tensor {
        let start = try call.tensor(first), end = try call.tensor(first + 1)
        if call.isNumber(first + 2) {
            let weight = try call.float(first + 2)
            return try at(first) { try start.lerp(end, weight: weight, into: into) }
        }
        let weight = try call.tensor(first + 2)
        return try at(first) { try start.lerp(end, weight: weight, into: into) }
    }

    // MARK: - Reductions

    /// t:sum() is a number; t:sum(dim [, keepdim]) a tensor.
    static func reduction(_ name: String, _ make: @escaping (LuaCall) throws -> Tensor.Reduction,
                          dimension: Int = 2) -> Binding {
        Binding(name: name, tables: ["kiri", "Tensor"], tensorResults: 1) { call in
            let tensor = try call.tensor(1)
            let reduction = try make(call)
            guard let dim = try call.optionalDimension(dimension, rank: tensor.rank) else {
                return call.push(Double(try at(1) { try tensor.reduce(reduction).item() }))
            }
            let keepDim = call.boolean(dimension + 1, default: false)
            try call.push(at(1) { try tensor.reduce(reduction, dim: dim, keepDim: keepDim) })
        }
    }

    static let reductions: [Binding] = [
        reduction("sum") { _ in .sum },
        reduction("mean") { _ in .mean },
        reduction("min") { _ in .min },
        reduction("max") { _ in .max },
        // var/std(dim, unbiased = true): the unbiased flag comes after the dimension.
        reduction("var") { .variance(unbiased: $0.boolean(3, default: true)) },
        reduction("std") { .std(unbiased: $0.boolean(3, default: true)) },
        // norm(p = 2, dim): Torch7's order.
        reduction("norm", { call in
            let p = try call.optionalNumber(2) ?? 2
            guard p > 0 else { throw ScriptError(argument: 2, "p must be positive (or math.huge), got \(p)") }
            return .norm(p: p)
        }, dimension: 3),
        Binding(name: "argmax", tables: ["kiri", "Tensor"], tensorResults: 1) { call in
            let tensor = try call.tensor(1), dim = try call.dimension(2, rank: tensor.rank)
            let indices = try at(1) { try tensor.argmax(dim: dim, keepDim: call.boolean(3, default: false)) }
            try indices.binaryInPlace(.add, 1)   // 1-based, like every index in Lua
            try call.push(indices)
        },
    ]

    // MARK: - Shapes

    static let shapes: [Binding] = [
        Binding(name: "shape", tables: ["kiri", "Tensor"], tensorResults: 0) { call in
            try call.push(numbers: try call.tensor(1).shape.map(Double.init))
        },
        Binding(name: "size", tables: ["kiri", "Tensor"], tensorResults: 0) { call in
            let tensor = try call.tensor(1)
            guard let axis = try call.optionalDimension(2, rank: tensor.rank) else {
                return try call.push(numbers: tensor.shape.map(Double.init))
            }
            call.push(integer: tensor.shape[axis])
        },
        Binding(name: "dim", tables: ["kiri", "Tensor"], tensorResults: 0) { call in
            call.push(integer: try call.tensor(1).rank)
        },
        Binding(name: "numel", tables: ["kiri", "Tensor"], tensorResults: 0) { call in
            call.push(integer: try call.tensor(1).count)
        },
        Binding(name: "item", tables: ["kiri", "Tensor"], tensorResults: 0) { call in
            call.push(Double(try at(1) { try call.tensor(1).item() }))
        },
        Binding(name: "totable", tables: ["kiri", "Tensor"], tensorResults: 0) { call in
            call.pushNested(try call.tensor(1))
        },
        Binding(name: "clone", tables: ["kiri", "Tensor"], tensorResults: 1) { call in
            try call.push(at(1) { try call.tensor(1).clone() })
        },
        shapeMethod("reshape") { tensor, call in try tensor.reshape(call.integers(from: 2, allowNegativeOne: true)) },
        shapeMethod("view") { tensor, call in try tensor.reshape(call.integers(from: 2, allowNegativeOne: true)) },
        shapeMethod("expand") { tensor, call in try tensor.expand(call.integers(from: 2, allowNegativeOne: true)) },
        shapeMethod("repeatTensor") { tensor, call in try tensor.repeated(call.integers(from: 2)) },
        shapeMethod("permute") { tensor, call in
            try tensor.permute(call.integers(from: 2).enumerated().map { position, dim in
                guard (1...max(tensor.rank, 1)).contains(dim) else {
                    throw ScriptError(argument: 2 + position, "dimension \(dim) out of range for a rank-\(tensor.rank) tensor (dimensions count from 1)")
                }
                return dim - 1
            })
        },
        shapeMethod("transpose") { tensor, call in
            try tensor.transpose(call.dimension(2, rank: tensor.rank), call.dimension(3, rank: tensor.rank))
        },
        shapeMethod("narrow") { tensor, call in
            let axis = try call.dimension(2, rank: tensor.rank)
            let start = try position(call, 3, in: tensor, axis: axis, allowingEnd: true)
            let length = try call.integer(4)
            if length < 0 || length > tensor.shape[axis] - start {
                throw ScriptError(argument: 4, "length \(length) out of range: dimension \(axis + 1) has size \(tensor.shape[axis]) and the slice starts at \(start + 1)")
            }
            return try tensor.narrow(axis, start: start, length: length)
        },
        shapeMethod("select") { tensor, call in
            let axis = try call.dimension(2, rank: tensor.rank)
            return try tensor.select(axis, index: position(call, 3, in: tensor, axis: axis))
        },
        shapeMethod("unsqueeze") { tensor, call in
            let axis = try call.dimension(2, rank: tensor.rank + 1)   // a place among rank + 1 dimensions
            var shape = tensor.shape
            shape.insert(1, at: axis)
            return try tensor.reshape(shape)
        },
        shapeMethod("squeeze") { tensor, call in
            guard let axis = try call.optionalDimension(2, rank: tensor.rank) else {
                return try tensor.reshape(tensor.shape.filter { $0 != 1 })
            }
            var shape = tensor.shape
            if shape[axis] == 1 { shape.remove(at: axis) }
            return try tensor.reshape(shape)
        },
        listMethod("cat", newDimensions: 0) { try Tensor.cat($0, dim: $1) },
        listMethod("stack", newDimensions: 1) { try Tensor.stack($0, dim: $1) },
    ]

    /// Argument `argument`, a 1-based position along `axis` of `tensor`, as the core's 0-based one:
    /// 1...size, or 1...size + 1 for the start of a slice that may be empty. Checked here, so the message
    /// shows the script's own numbers and math.mininteger cannot overflow.
    static func position(_ call: LuaCall, _ argument: Int, in tensor: Tensor, axis: Int, allowingEnd: Bool = false) throws -> Int {
        let position = try call.integer(argument)
        let last = tensor.shape[axis] + (allowingEnd ? 1 : 0)
        guard position >= 1, position <= last else {
            throw ScriptError(argument: argument, "index \(position) out of range 1..\(last) for dimension \(axis + 1) of size \(tensor.shape[axis])")
        }
        return position - 1
    }

    static func shapeMethod(_ name: String, _ body: @escaping (Tensor, LuaCall) throws -> Tensor) -> Binding {
        Binding(name: name, tables: ["kiri", "Tensor"], tensorResults: 1) { call in
            let tensor = try call.tensor(1)
            try call.push(at(1) { try body(tensor, call) })
        }
    }

    /// kiri.cat({a, b}, dim = 1); the result has `newDimensions` more than the parts.
    static func listMethod(_ name: String, newDimensions: Int, _ body: @escaping ([Tensor], Int) throws -> Tensor) -> Binding {
        Binding(name: name, tables: ["kiri"], tensorResults: 1) { call in
            let tensors = try call.tensors(1)
            let dim = try call.optionalDimension(2, rank: (tensors.first?.rank ?? 0) + newDimensions) ?? 0
            try call.push(at(1) { try body(tensors, dim) })
        }
    }

    // MARK: - Metamethods

    static let metamethods: [Binding] =
        [("__add", Tensor.BinaryOp.add), ("__sub", .sub), ("__mul", .mul), ("__div", .div), ("__pow", .pow)].map { name, op in
            Binding(name: name, tables: ["meta"], tensorResults: 1) { call in try call.push(binary(op, call, 1, into: nil)) }
        }
        + [
            Binding(name: "__unm", tables: ["meta"], tensorResults: 1) { call in
                try call.push(at(1) { try call.tensor(1).unary(.neg) })
            },
            Binding(name: "__len", tables: ["meta"], tensorResults: 0) { call in
                let tensor = try call.tensor(1)
                guard let first = tensor.shape.first else { throw ScriptError(argument: 1, "length of a rank-0 tensor") }
                call.push(integer: first)
            },
            Binding(name: "__tostring", tables: ["meta"], tensorResults: 0) { call in
                guard call.isTensor(1) else { return try call.push("Tensor (closed)") }
                try call.push(try call.tensor(1).description)
            },
            // t[i]: a number for a 1-D tensor, else the i-th sub-tensor along the first dimension.
            // (t.name, a method, is answered in C before this is reached.)
            Binding(name: "__index", tables: ["meta"], tensorResults: 1) { call in
                let tensor = try call.tensor(1)
                let index = try elementIndex(call, tensor)
                if tensor.rank == 1 { return call.push(Double(tensor.data[index])) }
                try call.push(at(1) { try tensor.select(0, index: index) })
            },
            Binding(name: "__newindex", tables: ["meta"], tensorResults: 0) { call in
                let tensor = try call.tensor(1)
                let index = try elementIndex(call, tensor)
                if tensor.rank == 1 {
                    tensor.data[index] = try call.float(3)
                } else {
                    try at(1) { try tensor.setSlice(0, start: index, try call.tensor(3).reshape([1] + Array(tensor.shape.dropFirst()))) }
                }
            },
        ]

    static func elementIndex(_ call: LuaCall, _ tensor: Tensor) throws -> Int {
        guard tensor.rank >= 1 else { throw ScriptError(argument: 1, "cannot index a rank-0 tensor (use item())") }
        let index = try call.integer(2)
        guard index >= 1, index <= tensor.shape[0] else {
            throw ScriptError(argument: 2, "index \(index) out of range 1..\(tensor.shape[0])")
        }
        return index - 1
    }
}
