import Foundation
import KiriTensor

/// torch.optim.AdamW's hyperparameters, in double as torch's Python floats are: the scalars derived from them
/// (1 − β2, 1 − lr·weight_decay, ...) are worked out in double and rounded to float32 once, as torch does.
public struct AdamWOptions: Sendable, Equatable {
    public var lr: Double, beta1: Double, beta2: Double, eps: Double, weightDecay: Double

    public init(lr: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8, weightDecay: Double = 1e-2) {
        (self.lr, self.beta1, self.beta2, self.eps, self.weightDecay) = (lr, beta1, beta2, eps, weightDecay)
    }
}

/// Step `step` (counted from 1) of torch.optim.AdamW on param[count], in the order and float32 arithmetic of torch's
/// _single_tensor_adamw: decoupled weight decay, then exp_avg.lerp_(grad, 1 − β1), exp_avg_sq ·β2 + (1 − β2)·grad²,
/// and param −= lr/(1 − β1ᵗ) · exp_avg / (√exp_avg_sq / √(1 − β2ᵗ) + eps).
func adamwStep(_ param: UnsafeMutablePointer<Float>, expAvg: UnsafeMutablePointer<Float>, expAvgSq: UnsafeMutablePointer<Float>,
               grad: UnsafePointer<Float>, count: Int, step: Int, _ options: AdamWOptions) {
    let decay = Float(1 - options.lr * options.weightDecay)
    let stepSize = Float(options.lr / (1 - Foundation.pow(options.beta1, Double(step))))
    let correction = Float((1 - Foundation.pow(options.beta2, Double(step))).squareRoot())
    let (beta2, oneMinusBeta2, weight) = (Float(options.beta2), Float(1 - options.beta2), Float(1 - options.beta1))
    let eps = Float(options.eps)
    for i in 0..<count {
        param[i] *= decay
        expAvg[i] += weight * (grad[i] - expAvg[i])
        expAvgSq[i] = expAvgSq[i] * beta2 + oneMinusBeta2 * grad[i] * grad[i]
        param[i] -= stepSize * expAvg[i] / (expAvgSq[i].squareRoot() / correction + eps)
    }
}

/// torch.nn.utils.clip_grad_norm_(parameters, maxNorm): the 2-norm of all the gradients together (of each one's
/// norm), returned, and every gradient scaled by min(1, maxNorm / (norm + 1e-6)).
func clipGradNorm(_ gradients: [UnsafeMutableBufferPointer<Float>], maxNorm: Float) -> Float {
    let norms = gradients.map { gradient in Float(gradient.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()) }
    let total = Float(norms.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
    let scale = min(1, maxNorm / (total + 1e-6))
    for gradient in gradients {
        for i in gradient.indices { gradient[i] *= scale }
    }
    return total
}

/// average[count] −= (1 − decay) · (average − param): one step of diffusers' EMAModel at a fixed decay (1 − decay
/// worked out in double, as there).
func emaUpdate(_ average: UnsafeMutablePointer<Float>, _ param: UnsafePointer<Float>, count: Int, decay: Double) {
    let weight = Float(1 - decay)
    for i in 0..<count { average[i] -= weight * (average[i] - param[i]) }
}

/// torch.optim.AdamW over a network's parameters: the first and second moments of each, and the step count, which
/// `step()` advances before it updates every parameter from its gradient.
public final class AdamW {
    public let parameters: [Parameter]
    public var options: AdamWOptions
    /// Steps taken (torch's `state["step"]`).
    public private(set) var steps = 0
    /// exp_avg and exp_avg_sq of each parameter, in the parameters' order.
    public let expAvg: [Tensor], expAvgSq: [Tensor]

    public init(_ parameters: [Parameter], _ options: AdamWOptions) throws {
        (self.parameters, self.options) = (parameters, options)
        expAvg = try parameters.map { try Tensor.zeros($0.value.shape) }
        expAvgSq = try parameters.map { try Tensor.zeros($0.value.shape) }
    }

    public func step() {
        steps += 1
        for (index, parameter) in parameters.enumerated() {
            adamwStep(parameter.value.data, expAvg: expAvg[index].data, expAvgSq: expAvgSq[index].data, grad: parameter.grad.data,
                      count: parameter.value.count, step: steps, options)
        }
    }

    /// Continues from a saved state: `steps` taken, the moments copied by the caller into expAvg and expAvgSq.
    public func resume(steps: Int) { self.steps = steps }

    /// Refuses to step once a script has closed a moment that opt:state() gave it.
    public func checkState() throws {
        try checkOpen(expAvg, "exp_avg", of: parameters, "the optimizer")
        try checkOpen(expAvgSq, "exp_avg_sq", of: parameters, "the optimizer")
    }
}

/// An exponential moving average of a network's parameters (diffusers' EMAModel at a fixed decay).
public final class ExponentialMovingAverage {
    public let parameters: [Parameter]
    public var decay: Double
    /// The averages, in the parameters' order, starting as copies of the parameters.
    public let averages: [Tensor]

    public init(_ parameters: [Parameter], decay: Double) throws {
        (self.parameters, self.decay) = (parameters, decay)
        averages = try parameters.map { try $0.value.clone() }
    }

    public func update() {
        for (average, parameter) in zip(averages, parameters) {
            emaUpdate(average.data, parameter.value.data, count: average.count, decay: decay)
        }
    }

    /// Writes the averages into the parameters (for sampling or saving the averaged network).
    public func copy(to parameters: [Parameter]) {
        for (average, parameter) in zip(averages, parameters) { parameter.value.data.update(from: average.data, count: average.count) }
    }

    /// Refuses to run once a script has closed an average that ema:state() gave it.
    public func checkState() throws { try checkOpen(averages, "the average", of: parameters, "the EMA") }
}

/// An optimiser's own tensors, one per parameter, are handed to scripts (`<close>` frees them at once): a step must
/// never write freed storage, as the network's kernels never read it (TrainableUNet.checkParameters).
private func checkOpen(_ tensors: [Tensor], _ what: String, of parameters: [Parameter], _ owner: String) throws {
    if let index = tensors.firstIndex(where: \.isReleased) {
        throw TensorError("\(what) of '\(parameters[index].name)' has been closed: \(owner) cannot run without it")
    }
}

/// clipGradNorm over the parameters' gradients.
public func clipGradNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    clipGradNorm(parameters.map { UnsafeMutableBufferPointer(start: $0.grad.data, count: $0.grad.count) }, maxNorm: maxNorm)
}
