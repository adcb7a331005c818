import Foundation
import KiriTensor

// Pointwise nonlinearities: diffusers' get_activation (models/activations.py) and GEGLU.

/// The nonlinearities a kernel can fuse, by diffusers' (`act_fn`) and transformers' (`hidden_act`) names.
public enum Activation: String, Sendable, CaseIterable {
    case silu, swish, mish, gelu, relu
    case quickGelu = "quick_gelu"
}

// torch.nn.SiLU: x · sigmoid(x).
@inline(__always) func silu(_ x: Vector) -> Vector { x / (1 + vectorExp(-x)) }

// torch.nn.GELU() (approximate="none"): x/2 · (1 + erf(x/√2)).
@inline(__always) func exactGelu(_ x: Vector) -> Vector { x * 0.5 * (1 + vectorErf(x * 0.7071067811865476)) }

// torch.nn.Mish: x · tanh(softplus(x)), with tanh(log(1 + e^x)) = e^x(e^x + 2) / (e^x(e^x + 2) + 2); beyond x = 20
// softplus is x (torch's threshold) and the product is x.
@inline(__always) func mish(_ x: Vector) -> Vector {
    let e = vectorExp(minimum(x, Vector(repeating: 20)))
    let n = e * (e + 2)
    return select(x .> 20, x, x * n / (n + 2))
}

// torch.nn.ReLU.
@inline(__always) func relu(_ x: Vector) -> Vector { maximum(x, Vector()) }

// transformers' QuickGELUActivation (activations.py): x · sigmoid(1.702 x).
@inline(__always) func quickGelu(_ x: Vector) -> Vector { x / (1 + vectorExp(-1.702 * x)) }

/// out[i] = activation(f(input[i])) for `count` elements, eight at a time, with the choice of activation made once
/// outside the loop so that each loop inlines its own formula.
@inline(__always) func activationMap(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ count: Int,
                                     _ activation: Activation?, _ f: (Vector) -> Vector) {
    switch activation {
    case nil: vectorMap(out, input, count) { f($0) }
    case .silu?, .swish?: vectorMap(out, input, count) { silu(f($0)) }
    case .gelu?: vectorMap(out, input, count) { exactGelu(f($0)) }
    case .mish?: vectorMap(out, input, count) { mish(f($0)) }
    case .relu?: vectorMap(out, input, count) { relu(f($0)) }
    case .quickGelu?: vectorMap(out, input, count) { quickGelu(f($0)) }
    }
}

/// out[count] = activation(input[count]) — diffusers' get_activation (models/activations.py), transformers' ACT2FN
/// (activations.py); `out` may be `input`.
func activationForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ activation: Activation,
                       count: Int) {
    let outAddress = UncheckedSendable(value: out), inputAddress = UncheckedSendable(value: input)
    Parallel.forEach((count + 7) / 8, grain: 4096) { blocks in
        let start = blocks.lowerBound * 8, end = min(count, blocks.upperBound * 8)
        activationMap(outAddress.value + start, inputAddress.value + start, end - start, activation) { $0 }
    }
}

/// out[rows, features] = a · GELU(gate) where input[rows, 2·features] = [a | gate] along the last dimension:
/// diffusers' GEGLU (models/activations.py) after its `proj`, `hidden_states.chunk(2, dim=-1)`.
func gegluForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int, features: Int) {
    let outAddress = UncheckedSendable(value: out), inputAddress = UncheckedSendable(value: input)
    Parallel.forEach(rows, grain: max(1, 8192 / max(features, 1))) { range in
        for row in range {
            let a = inputAddress.value + row * 2 * features, gate = a + features, o = outAddress.value + row * features
            var i = 0
            while i + 8 <= features {
                (Vector.load(a + i) * exactGelu(Vector.load(gate + i))).store(o + i)
                i += 8
            }
            if i < features {
                let tail = features - i
                (Vector.load(a + i, count: tail) * exactGelu(Vector.load(gate + i, count: tail))).store(o + i, count: tail)
            }
        }
    }
}

/// dInput[rows, 2·features] = [dOut · GELU(gate) | dOut · a · GELU′(gate)]: the backward of gegluForward.
func gegluBackward(_ dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                   rows: Int, features: Int) {
    for row in 0..<rows {
        let a = input + row * 2 * features, gate = a + features, g = dOut + row * features
        let dA = dInput + row * 2 * features, dGate = dA + features
        activationBackward(dGate, dOut: g, input: gate, .gelu, count: features)   // dOut · GELU′(gate)
        for i in 0..<features {
            let x = gate[i]
            dA[i] = g[i] * x * 0.5 * (1 + Foundation.erf(x * 0.7071067811865476))
            dGate[i] *= a[i]
        }
    }
}

/// dInput[count] = dOut · activation′(input), the backward of activationForward: the derivatives torch's autograd
/// uses for each activation. `dInput` may be `dOut`.
func activationBackward(_ dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                        _ activation: Activation, count: Int) {
    let pointers = UncheckedSendable(value: (dInput, dOut, input))
    Parallel.forEach(count, grain: 16384) { range in
        let (dInput, dOut, input) = pointers.value
        activationBackwardRange(dInput, dOut: dOut, input: input, activation, range)
    }
}

/// activationBackward over elements `range`, on the calling thread.
private func activationBackwardRange(_ dInput: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
                                     _ activation: Activation, _ range: Range<Int>) {
    func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }
    if activation == .silu || activation == .swish {   // the UNets' activation, eight at a time
        var i = range.lowerBound
        while i + 8 <= range.upperBound {
            let x = Vector.load(input + i), s = 1 / (1 + vectorExp(-x))
            (Vector.load(dOut + i) * s * (1 + x * (1 - s))).store(dInput + i)
            i += 8
        }
        while i < range.upperBound {
            let s = sigmoid(input[i])
            dInput[i] = dOut[i] * s * (1 + input[i] * (1 - s))
            i += 1
        }
        return
    }
    for i in range {
        let x = input[i]
        let slope: Float
        switch activation {
        case .silu, .swish:   // σ(x) · (1 + x · (1 − σ(x)))
            let s = sigmoid(x)
            slope = s * (1 + x * (1 - s))
        case .quickGelu:      // the same with 1.702 x inside σ
            let s = sigmoid(1.702 * x)
            slope = s * (1 + 1.702 * x * (1 - s))
        case .gelu:           // Φ(x) + x · φ(x)
            slope = 0.5 * (1 + Foundation.erf(x * 0.7071067811865476)) + x * Foundation.exp(-0.5 * x * x) * 0.3989422804014327
        case .mish:           // tanh(softplus(x)) + x · sech²(softplus(x)) · σ(x); softplus is x beyond 20, as torch's
            let t = Foundation.tanh(x > 20 ? x : Foundation.log1p(Foundation.exp(x)))
            slope = t + x * (1 - t * t) * sigmoid(x)
        case .relu:
            slope = x > 0 ? 1 : 0
        }
        dInput[i] = dOut[i] * slope
    }
}
