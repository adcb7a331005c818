// Pointwise nonlinearities: diffusers' get_activation (models/activations.py) and GEGLU.

extension UNetConfig.Activation {
    /// The activation of eight lanes, as torch computes it in float32.
    @inline(__always) func apply(_ x: Vector) -> Vector {
        switch self {
        // torch.nn.SiLU: x · sigmoid(x).
        case .silu, .swish: return x / (1 + vectorExp(-x))
        // torch.nn.GELU() (approximate="none"): x/2 · (1 + erf(x/√2)).
        case .gelu: return exactGelu(x)
        // torch.nn.Mish: x · tanh(softplus(x)), with tanh(log(1 + e^x)) = e^x(e^x + 2) / (e^x(e^x + 2) + 2);
        // beyond x = 20 softplus is x (torch's threshold) and the product is x.
        case .mish:
            let e = vectorExp(minimum(x, Vector(repeating: 20)))
            let n = e * (e + 2)
            return select(x .> 20, x, x * n / (n + 2))
        // torch.nn.ReLU.
        case .relu: return maximum(x, Vector())
        }
    }
}

@inline(__always) func exactGelu(_ x: Vector) -> Vector {
    x * 0.5 * (1 + vectorErf(x * 0.7071067811865476))
}

/// out[count] = activation(input[count]); `out` may be `input`.
func activationForward(_ out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ activation: UNetConfig.Activation,
                       count: Int) {
    let outAddress = UncheckedSendable(value: out), inputAddress = UncheckedSendable(value: input)
    Parallel.forEach(count / 8, grain: 4096) { blocks in
        let start = blocks.lowerBound * 8
        let end = blocks.upperBound == count / 8 ? count : blocks.upperBound * 8
        vectorMap(outAddress.value + start, inputAddress.value + start, end - start) { activation.apply($0) }
    }
    if count < 8 { vectorMap(out, input, count) { activation.apply($0) } }
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
