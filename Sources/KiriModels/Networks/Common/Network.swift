/// What every network shares, so that a new architecture is a folder under Networks/ plus its config: it is built
/// from its config and a TensorSource (a safetensors file, or a single-file checkpoint's TensorMap) by checkpoint
/// keys, refusing before it converts anything when the run's memory cap cannot hold it; it counts its parameters;
/// it pools its intermediate storage between calls. Its forward pass takes what the architecture takes.
public protocol Network: AnyObject {
    associatedtype Config
    init(config: Config, weights: any TensorSource) throws
    var config: Config { get }
    /// Elements in the parameters the network uses.
    var parameterCount: Int { get }
    /// Frees the pooled intermediate storage (the next call allocates it again).
    func releaseBuffers()
}

extension UNet: Network {}
extension CLIPTextModel: Network {}
extension AutoencoderKL: Network {}
