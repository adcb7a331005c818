/// An error reading a model file: a safetensors file, a `config.json` or a model folder. The description always
/// starts with the file, so a user with several models open can tell which one is at fault.
public struct ModelFileError: Error, CustomStringConvertible, Equatable, Sendable {
    public var path: String
    /// What is wrong, naming the tensor key or config field involved, e.g.
    /// "tensor 'conv_in.weight': shape [4, 3, 3, 3] × F16 is 216 bytes but data_offsets [0, 200] span 200".
    public var message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}
