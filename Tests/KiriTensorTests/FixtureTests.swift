import Foundation
import XCTest
@testable import KiriTensor

/// Runs every case of Tests/Fixtures/tensor_ops.json (written by tensor_fixtures.py from numpy) and compares.
///
/// Tolerances, by the case's "kind":
/// - exact: float32 arithmetic (IEEE, same operation order as numpy), comparisons and copies must match bit for bit,
///   signed zeros included (any NaN matches NaN).
/// - elementwise: transcendental functions against a float64 reference: |got − want| ≤ 1e-6·|want|.
/// - reduction: reductions and matmul against a float64 reference: |got − want| ≤ 1e-5·|want| + 1e-6.
final class FixtureTests: XCTestCase {
    func testNumpyFixtures() throws {
        let fixtures = try loadFixtures()
        XCTAssertGreaterThan(fixtures.count, 250, "fixture file looks truncated")
        for fixture in fixtures {
            let result: Tensor
            do {
                result = try evaluate(fixture)
            } catch {
                XCTFail("\(fixture.name): threw \(error)")
                continue
            }
            assertMatches(result, fixture.expected, kind: fixture.kind, fixture.name)
        }
    }

    /// The same binary and unary cases again through every in-place and `into` path, including `into` aliasing an
    /// operand, which must give exactly the out-of-place result.
    func testFixturesInPlaceAndAliased() throws {
        for fixture in try loadFixtures() {
            let inputs = try fixture.inputs.map { try $0.tensor() }
            switch fixture.op {
            case "binary":
                let op = try binaryOp(fixture.attrs["op"])
                let shape = try XCTUnwrap(broadcastShape(inputs[0].shape, inputs[1].shape))
                let fresh = try Tensor(shape: shape)
                assertMatches(try inputs[0].binary(op, inputs[1], into: fresh), fixture.expected, kind: fixture.kind, "\(fixture.name) into")
                XCTAssertTrue(try inputs[0].binary(op, inputs[1], into: fresh) === fresh)
                if shape == inputs[0].shape {
                    let left = try inputs[0].clone()
                    assertMatches(try left.binaryInPlace(op, inputs[1]), fixture.expected, kind: fixture.kind, "\(fixture.name) in place")
                    let aliased = try inputs[0].clone()
                    assertMatches(try aliased.binary(op, inputs[1], into: aliased), fixture.expected, kind: fixture.kind, "\(fixture.name) into self")
                }
                if shape == inputs[1].shape {
                    let right = try inputs[1].clone()
                    assertMatches(try inputs[0].binary(op, right, into: right), fixture.expected, kind: fixture.kind, "\(fixture.name) into other")
                }
            case "binaryScalar":
                let tensor = try inputs[0].clone()
                let scalar = Float(try XCTUnwrap(fixture.attrs["scalar"]?.number))
                assertMatches(try tensor.binaryInPlace(binaryOp(fixture.attrs["op"]), scalar), fixture.expected, kind: fixture.kind, "\(fixture.name) in place")
            case "binaryScalarLeft":
                let tensor = try inputs[0].clone()
                let scalar = Float(try XCTUnwrap(fixture.attrs["scalar"]?.number))
                assertMatches(try tensor.binary(binaryOp(fixture.attrs["op"]), scalarOnLeft: scalar, into: tensor), fixture.expected, kind: fixture.kind, "\(fixture.name) into self")
            case "unary":
                let tensor = try inputs[0].clone()
                assertMatches(try tensor.unaryInPlace(unaryOp(fixture.attrs["op"])), fixture.expected, kind: fixture.kind, "\(fixture.name) in place")
            case "clamp":
                let tensor = try inputs[0].clone()
                let result = try tensor.clamp(min: fixture.attrs["min"]?.number.map(Float.init), max: fixture.attrs["max"]?.number.map(Float.init), into: tensor)
                assertMatches(result, fixture.expected, kind: fixture.kind, "\(fixture.name) into self")
            default:
                continue
            }
        }
    }

    private func loadFixtures() throws -> [Fixture] {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tensor_ops.json")
        return try JSONDecoder().decode(FixtureFile.self, from: Data(contentsOf: url)).cases
    }

    private func evaluate(_ fixture: Fixture) throws -> Tensor {
        let x = try fixture.inputs.map { try $0.tensor() }
        let attrs = fixture.attrs
        func int(_ key: String) throws -> Int { Int(try XCTUnwrap(attrs[key]?.number, "\(fixture.name): \(key)")) }
        func ints(_ key: String) throws -> [Int] { try XCTUnwrap(attrs[key]?.array, key).map { Int(try XCTUnwrap($0.number)) } }
        func number(_ key: String) throws -> Double { try XCTUnwrap(attrs[key]?.number, "\(fixture.name): \(key)") }
        switch fixture.op {
        case "binary": return try x[0].binary(binaryOp(attrs["op"]), x[1])
        case "binaryScalar": return try x[0].binary(binaryOp(attrs["op"]), Float(number("scalar")))
        case "binaryScalarLeft": return try x[0].binary(binaryOp(attrs["op"]), scalarOnLeft: Float(number("scalar")))
        case "unary": return try x[0].unary(unaryOp(attrs["op"]))
        case "clamp": return try x[0].clamp(min: attrs["min"]?.number.map(Float.init), max: attrs["max"]?.number.map(Float.init))
        case "lerpScalar": return try x[0].lerp(x[1], weight: Float(number("weight")))
        case "lerpTensor": return try x[0].lerp(x[1], weight: x[2])
        case "where": return try Tensor.where(x[0], x[1], x[2])
        case "reduce":
            let dim = attrs["dim"]?.number.map { Int($0) }
            return try x[0].reduce(reduction(attrs["reduction"]), dim: dim, keepDim: XCTUnwrap(attrs["keepDim"]?.bool))
        case "argmax": return try x[0].argmax(dim: int("dim"), keepDim: XCTUnwrap(attrs["keepDim"]?.bool))
        case "matmul": return try x[0].matmul(x[1])
        case "reshape": return try x[0].reshape(ints("shape"))
        case "permute": return try x[0].permute(ints("dims"))
        case "transpose": return try x[0].transpose(int("dim0"), int("dim1"))
        case "narrow": return try x[0].narrow(int("dim"), start: int("start"), length: int("length"))
        case "select": return try x[0].select(int("dim"), index: int("index"))
        case "cat": return try Tensor.cat(x, dim: int("dim"))
        case "stack": return try Tensor.stack(x, dim: int("dim"))
        case "expand": return try x[0].expand(ints("shape"))
        case "repeat": return try x[0].repeated(ints("counts"))
        case "linspace": return try Tensor.linspace(number("start"), number("end"), int("count"))
        case "arange": return try Tensor.arange(number("start"), number("end"), number("step"))
        default: throw TensorError("unknown fixture op \(fixture.op)")
        }
    }

    private func binaryOp(_ name: JSON?) throws -> Tensor.BinaryOp {
        try XCTUnwrap(Tensor.BinaryOp.allCases.first { "\($0)" == name?.string }, "binary op \(String(describing: name))")
    }

    private func unaryOp(_ name: JSON?) throws -> Tensor.UnaryOp {
        try XCTUnwrap(Tensor.UnaryOp.allCases.first { "\($0)" == name?.string }, "unary op \(String(describing: name))")
    }

    private func reduction(_ name: JSON?) throws -> Tensor.Reduction {
        switch try XCTUnwrap(name?.string) {
        case "sum": return .sum
        case "mean": return .mean
        case "min": return .min
        case "max": return .max
        case "var": return .variance(unbiased: true)
        case "varBiased": return .variance(unbiased: false)
        case "std": return .std(unbiased: true)
        case "stdBiased": return .std(unbiased: false)
        case let norm where norm.hasPrefix("norm"):
            let p = String(norm.dropFirst(4))
            return .norm(p: p == "inf" ? .infinity : p == "-inf" ? -.infinity : try XCTUnwrap(Double(p)))
        case let other: throw TensorError("unknown reduction \(other)")
        }
    }

    private func assertMatches(_ got: Tensor, _ want: EncodedTensor, kind: String, _ label: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        guard got.shape == want.shape else {
            return XCTFail("\(label): shape \(got.shape), expected \(want.shape)", file: file, line: line)
        }
        let expected = want.floats
        for (index, (value, target)) in zip(got.values, expected).enumerated() {
            let close: Bool
            if target.isNaN || !target.isFinite {
                close = value.isNaN ? target.isNaN : value == target
            } else {
                let error = Double((value - target).magnitude), scale = Double(target.magnitude)
                switch kind {
                case "exact": close = value.bitPattern == target.bitPattern
                case "elementwise": close = error <= 1e-6 * scale
                default: close = error <= 1e-5 * scale + 1e-6
                }
            }
            if !close {
                return XCTFail("\(label): element \(index) is \(value), expected \(target) (\(kind))", file: file, line: line)
            }
        }
    }
}

private struct FixtureFile: Decodable {
    var cases: [Fixture]
}

private struct Fixture: Decodable {
    var name: String
    var op: String
    var kind: String
    var attrs: [String: JSON]
    var inputs: [EncodedTensor]
    var expected: EncodedTensor
}

private struct EncodedTensor: Decodable {
    var shape: [Int]
    var values: [JSON]

    /// Numbers were written with nine significant digits, so rounding the parsed Double gives the float32 back.
    var floats: [Float] {
        values.map { value in
            switch value {
            case .number(let number): return Float(number)
            case .string("inf"): return .infinity
            case .string("-inf"): return -.infinity
            default: return .nan
            }
        }
    }

    func tensor() throws -> Tensor { try Tensor(shape: shape, values: floats) }
}

/// Just enough JSON for heterogeneous attributes, without NSNumber's Bool/number ambiguity.
private enum JSON: Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSON]), object([String: JSON])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([JSON].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSON].self))
        }
    }

    var number: Double? { if case .number(let value) = self { value } else { nil } }
    var bool: Bool? { if case .bool(let value) = self { value } else { nil } }
    var string: String? { if case .string(let value) = self { value } else { nil } }
    var array: [JSON]? { if case .array(let value) = self { value } else { nil } }
}
