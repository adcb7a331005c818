import KiriKernels

/// The instruction set the C kernels run with: the best this CPU has (CPUID, once), or a lower one chosen with
/// the KIRI_ISA environment variable, to compare paths or to work around a CPU's fault.
public enum KernelISA {
    /// Every instruction set Kiri has kernels for, in order: "generic", "avx2", "avx512".
    public static let names = (0..<Int(KIRI_ISA_COUNT.rawValue)).map { String(cString: kiri_isa_name(kiri_isa(UInt32($0)))) }

    /// The best one this CPU supports.
    public static var detected: String { String(cString: kiri_isa_name(kiri_isa_detected())) }

    /// Those this CPU supports, from "generic" up to `detected`.
    public static var available: [String] { Array(names.prefix(Int(kiri_isa_detected().rawValue) + 1)) }

    /// The one in use.
    public static var active: String { String(cString: kiri_isa_name(kiri_kernels_active().pointee.isa)) }

    /// Uses instruction set `name` from now on; an error message names what this CPU offers otherwise. Call it
    /// before any kernel runs.
    public static func select(_ name: String) throws(KernelISAError) {
        guard let index = names.firstIndex(of: name) else {
            throw KernelISAError("unknown instruction set '\(name)' (Kiri has \(names.joined(separator: ", ")))")
        }
        guard kiri_kernels_select(kiri_isa(UInt32(index))) == 0 else {
            throw KernelISAError("this CPU lacks \(name) (it has \(available.joined(separator: ", ")))")
        }
    }

    /// What `kiri --version` shows: "kernels: avx2 (CPU: avx2)".
    public static var summary: String { "kernels: \(active) (CPU: \(detected))" }
}

public struct KernelISAError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
