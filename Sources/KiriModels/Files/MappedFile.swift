#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole regular file mapped read-only, so a multi-gigabyte checkpoint costs address space rather than memory
/// until its tensors are converted. The pages are the file's: if another process truncates the file while it is
/// mapped, reading the lost pages raises SIGBUS, as with any mmap reader (safetensors' own included).
public final class MappedFile {
    let path: String
    /// File size in bytes at open.
    let size: Int
    /// Nil for an empty file (mmap refuses length 0) and after `unmap()`.
    private(set) var base: UnsafeRawPointer?

    public init(path: String) throws(ModelFileError) {
        self.path = path
        // O_NONBLOCK: opening a FIFO named like a model must fail the regular-file check, not wait for a writer.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { throw ModelFileError(path, "cannot open: \(Self.systemError())") }
        // The mapping keeps its own reference to the file; the descriptor is not needed past mmap.
        defer { _ = close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw ModelFileError(path, "cannot stat: \(Self.systemError())") }
        guard status.st_mode & S_IFMT == S_IFREG else { throw ModelFileError(path, "not a regular file") }
        size = Int(status.st_size)
        guard size > 0 else { return }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), address != MAP_FAILED else {
            throw ModelFileError(path, "cannot map \(size) bytes: \(Self.systemError())")
        }
        base = UnsafeRawPointer(address)
    }

    /// The whole file as bytes; empty once unmapped.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: base == nil ? 0 : size) }

    /// Gives back the memory of the whole pages inside `range` (bytes of the file) once they have been read: they
    /// stay mapped, and a later read loads them again from the file. Without this, a model's mapped file stays
    /// resident beside the weights made from it (2 GB of an SD 1.5 checkpoint).
    func release(_ range: Range<Int>) {
        guard let base else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page, end = min(range.upperBound, size) / page * page
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    /// Unmaps now rather than whenever the last reference goes; idempotent.
    public func unmap() {
        guard let base else { return }
        munmap(UnsafeMutableRawPointer(mutating: base), size)
        self.base = nil
    }

    deinit { unmap() }

    private static func systemError() -> String { String(cString: strerror(errno)) }
}
