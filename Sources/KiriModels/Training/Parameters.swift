import KiriTensor

/// A trainable network's parameter: its checkpoint key, its float32 value, which the optimiser updates in place,
/// and the gradient `backward` adds to (Torch7's `parameters()` pairs, PyTorch's `named_parameters()`).
public final class Parameter {
    public let name: String
    public let value: Tensor
    public let grad: Tensor

    init(name: String, value: Tensor) throws {
        (self.name, self.value) = (name, value)
        grad = try Tensor.zeros(value.shape)
    }
}

/// How a new parameter starts: as torch.nn's modules initialise themselves, which diffusers' UNets keep.
enum Initialization {
    /// Conv2d and Linear weights and biases: U(−1/√fan_in, 1/√fan_in), what kaiming_uniform_(a=√5) gives.
    case uniform(fanIn: Int)
    /// GroupNorm and LayerNorm: weight 1, bias 0.
    case ones, zeros
    /// Embedding: N(0, 1).
    case normal
}

/// Makes a trainable network's parameters in the order its modules ask for them: read by checkpoint key with
/// the exact shape (a missing or misshapen tensor is a ModelFileError naming its key), or, for a new network,
/// drawn from `seed` (each parameter from its own Philox stream, so adding one changes no other).
final class ParameterBuilder {
    enum Source {
        case checkpoint(WeightReader)
        case initialized(seed: UInt64)
    }

    let source: Source
    private(set) var parameters: [Parameter] = []

    init(_ source: Source) { self.source = source }

    func callAsFunction(_ key: String, _ shape: [Int], _ initialization: Initialization) throws -> Parameter {
        let value: Tensor
        switch source {
        case .checkpoint(let weights):
            value = try weights(key, shape)
        case .initialized(let seed):
            let stream = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(parameters.count)
            switch initialization {
            case .uniform(let fanIn):
                value = try Tensor.rand(shape, seed: stream)
                let bound = 1 / Float(fanIn).squareRoot()
                for i in 0..<value.count { value.data[i] = (2 * value.data[i] - 1) * bound }
            case .ones: value = try Tensor.ones(shape)
            case .zeros: value = try Tensor.zeros(shape)
            case .normal: value = try Tensor.randn(shape, seed: stream)
            }
        }
        let parameter = try Parameter(name: key, value: value)
        parameters.append(parameter)
        return parameter
    }

    /// Whether the checkpoint has `key` (false for a new network).
    func contains(_ key: String) -> Bool {
        if case .checkpoint(let weights) = source { return weights.contains(key) }
        return false
    }

    func failure(_ message: String) -> any Error {
        if case .checkpoint(let weights) = source { return weights.failure(message) }
        return TensorError(message)
    }
}

/// A trainable network's parameters as a TensorSource, so that the inference network (UNet, with its fast
/// kernels) loads the weights as they are now, for sampling during training, without a file.
public final class ParameterSource: TensorSource {
    public let path: String
    private let parameters: [String: Parameter]
    public let names: [String]

    /// `path` names the source in errors (the network's description).
    public init(_ parameters: [Parameter], path: String) {
        self.path = path
        self.parameters = Dictionary(parameters.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        names = parameters.map(\.name)
    }

    public func shape(_ name: String) -> [Int]? { parameters[name]?.value.shape }

    public func tensor(_ name: String) throws(ModelFileError) -> Tensor {
        guard let parameter = parameters[name] else { throw ModelFileError(path, "missing tensor '\(name)'") }
        do {
            return try parameter.value.clone()
        } catch {
            throw ModelFileError(path, "tensor '\(name)': \(error)")
        }
    }

    public func format(_ name: String) -> WeightFormat? { parameters[name] == nil ? nil : .f32 }

    public func copyStored(_ name: String, as format: WeightFormat, into out: UnsafeMutableRawPointer) -> Bool {
        guard format == .f32, let value = parameters[name]?.value else { return false }
        out.copyMemory(from: value.data, byteCount: value.count * MemoryLayout<Float>.stride)
        return true
    }
}
