import Foundation
import KiriTensor
import LuaBridge

/// Receives the progress of the outermost sampler call: `step(0, of: n)` as it starts, then each step; and of a
/// recipe's own loop (`kiri.progress`), whose steps carry a note such as the loss.
public protocol KiriProgress: AnyObject {
    func step(_ index: Int, of total: Int)
    func step(_ index: Int, of total: Int, note: String)
    /// A sampler's step with its sigma and denoised estimate (a server's live previews). Returning true stops the
    /// sampler there, keeping that estimate, as A1111's interrupt does: the recipe goes on to decode and save it.
    func step(_ index: Int, of total: Int, sigma: Double?, denoised: Tensor?) -> Bool
    /// Whether `step(_:of:sigma:denoised:)` may ever return true (else samplers run without a protected call, which
    /// keeps their errors' tracebacks whole).
    var canStopSamplers: Bool { get }
    /// The sampler returned or failed, or the recipe ended its bar.
    func end()
}

extension KiriProgress {
    public func step(_ index: Int, of total: Int, note: String) { step(index, of: total) }
    public func step(_ index: Int, of total: Int, sigma: Double?, denoised: Tensor?) -> Bool {
        step(index, of: total)
        return false
    }
    public var canStopSamplers: Bool { false }
}

/// Limits of one sandboxed run (security-cases.md, section B).
public struct SandboxLimits: Sendable {
    /// Seconds of script time: the run's time outside model evaluations, which stops a runaway recipe without
    /// counting the minutes a model takes on a CPU. Enforced by an instruction hook and by long host kernels
    /// (Cancellation); sticky once tripped.
    public var timeout: Double
    /// Seconds of wall-clock time for the whole run, model evaluations included (infinity: no limit).
    public var wallTimeout: Double
    /// One cap for Lua's allocations and tensor bytes together.
    public var memory: Int
    /// Bytes the run may write, all files together.
    public var disk: Int

    public init(timeout: Double = 60, wallTimeout: Double = .infinity, memory: Int = 4 << 30, disk: Int = 1 << 30) {
        self.timeout = timeout
        self.wallTimeout = wallTimeout
        self.memory = memory
        self.disk = disk
    }
}

/// A plugin file a run loaded: `DOMAIN/NAME.lua`, whether it is a bundled one, and its source.
public struct LoadedPlugin: Sendable {
    public var domain: String
    public var name: String
    public var isBundled: Bool
    public var source: String
}

/// How a run failed: the message carries `file:line:` and a traceback.
public struct ScriptFailure: Error, CustomStringConvertible {
    public enum Kind: Sendable { case error, timeout, cancelled, memory, setup }
    public var kind: Kind
    public var message: String
    /// Which limit stopped the run, for a `.timeout` or `.cancelled` failure.
    public var stoppedBy: Cancellation.Reason?
    /// The files the failed run had loaded, so `--watch` knows what to wait for.
    public var loadedFiles: [String] = []
    public var description: String { message }

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }
}

/// Host functions and the Lua prelude that wraps them, registered into a runtime from above (the engine's models
/// and images), so the Lua runtime knows nothing but the tensor core. The prelude runs inside the sandbox's, with
/// `(api, host, resolve)`: the API tables before they are sealed read-only, the functions registered under "host"
/// (which scripts never see), and the plugin lookup `resolve(domain, name)`.
public protocol LuaLibrary: AnyObject {
    var bindings: [Binding] { get }
    /// Lua source, or nil.
    var prelude: [UInt8]? { get }
    /// The run ended: free what the library holds for it.
    func close()
}

/// One Lua state, used for one run: a fresh environment each time, so one script never sees
/// another's globals, and everything it allocated goes when it is closed.
public final class LuaRuntime {
    public let budget: MemoryBudget
    /// Stops the run at its time limit, or when `cancel()` is called from any thread.
    public let cancellation: Cancellation
    public let limits: SandboxLimits
    public let files: FileAccess
    public let plugins: PluginCatalog
    /// Every file the run loaded (modules and plugins), for `kiri run --watch`.
    public internal(set) var loadedFiles: [String] = []
    /// The plugin files the run loaded, for the PNGs it writes: a shared image says which plugins made it.
    public internal(set) var loadedPlugins: [LoadedPlugin] = []
    /// Receives what the script prints.
    public let output: (String) -> Void
    /// Bytes the run has written, against `limits.disk`.
    public let disk: DiskBudget
    /// What was registered from above (the engine's models and images): their functions follow the core's.
    private let libraries: [LuaLibrary]
    private let libraryBodies: ContiguousArray<(LuaCall) throws -> Void>
    /// Seed for random constructors called without one; advances on each such call.
    var nextSeed: UInt64 = 0
    /// Draws sampler progress; the samplers' wrapper in the prelude reports every step to it.
    public var progress: KiriProgress?
    private var state: OpaquePointer?

    public init(limits: SandboxLimits = SandboxLimits(), files: FileAccess = FileAccess(),
                plugins: PluginCatalog = PluginCatalog(), libraries: [LuaLibrary] = [],
                output: @escaping (String) -> Void = { FileHandle.standardOutput.write(Data($0.utf8)) }) throws {
        self.limits = limits
        self.files = files
        self.plugins = plugins
        self.output = output
        budget = MemoryBudget(limit: limits.memory)
        cancellation = Cancellation(timeout: limits.timeout, wallTimeout: limits.wallTimeout)
        disk = DiskBudget(limit: limits.disk)
        self.libraries = libraries
        let libraryBindings = libraries.flatMap(\.bindings)
        libraryBodies = ContiguousArray(libraryBindings.map { binding in
            guard binding.offScriptClock else { return binding.body }
            return { call in try call.runtime.cancellation.offScriptClock { try binding.body(call) } }
        })
        var options = KiriStateOptions(
            memoryCounter: budget.counter, host: nil, dispatch: dispatchBinding, releaseHandle: releaseTensorHandle,
            output: writeOutput, interrupt: interruptRun)
        options.host = Unmanaged.passUnretained(self).toOpaque()
        var error = [CChar](repeating: 0, count: 1024)
        guard let state = kiri_state_new(&options, &error, error.count) else {
            throw ScriptFailure(kind: .setup, message: text(of: error))
        }
        self.state = state
        try MemoryBudget.$current.withValue(budget) {
            try register(Bindings.all + libraryBindings)
            try seal([sandboxPrelude] + libraries.compactMap(\.prelude))
        }
    }

    deinit { close() }

    /// Frees the state and everything the script allocated.
    public func close() {
        guard let state else { return }
        MemoryBudget.$current.withValue(budget) { kiri_state_close(state) }
        libraries.forEach { $0.close() }
        self.state = nil
    }

    /// Lua's own bytes plus live tensor bytes, as counted against the cap.
    public var memoryUsed: Int { budget.used }

    private func register(_ bindings: [Binding]) throws {
        var names: [UnsafeMutablePointer<CChar>] = []
        defer { names.forEach { free($0) } }
        var specs: [KiriFunctionSpec] = []
        for (id, binding) in bindings.enumerated() {
            for table in binding.tables {
                let tablePointer = strdup(table)!, namePointer = strdup(binding.name)!
                names += [tablePointer, namePointer]
                specs.append(KiriFunctionSpec(table: tablePointer, name: namePointer,
                                              functionId: Int32(id), tensorResults: Int32(binding.tensorResults)))
            }
        }
        var error = [CChar](repeating: 0, count: 1024)
        if kiri_register(state, specs, Int32(specs.count), &error, error.count) != 0 {
            throw ScriptFailure(kind: .setup, message: text(of: error))
        }
    }

    private func seal(_ preludes: [[UInt8]]) throws {
        var error = [CChar](repeating: 0, count: 1024)
        let status = withChunks(preludes[...], []) { chunks in kiri_seal(state, chunks, Int32(chunks.count), &error, error.count) }
        if status != 0 { throw ScriptFailure(kind: .setup, message: text(of: error)) }
    }

    /// A library's function: its ids follow the core's.
    fileprivate func libraryBody(_ functionId: Int) -> (LuaCall) throws -> Void {
        libraryBodies[functionId - Bindings.bodies.count]
    }

    /// Runs Lua source as chunk `name` (shown in errors as `name:line:`), with `arguments` as `arg`
    /// (arguments[0] is the script) and as the chunk's `...`.
    public func run(source: String, name: String, arguments: [String] = []) throws {
        guard let state else { throw ScriptFailure(kind: .setup, message: "the Lua state is closed") }
        let chunkName = "@" + name
        let argv = ([name] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var error = [CChar](repeating: 0, count: 16384)
        cancellation.start()
        let status = MemoryBudget.$current.withValue(budget) {
            Cancellation.$current.withValue(cancellation) {
                argv.withUnsafeBufferPointer { pointers in
                    pointers.withMemoryRebound(to: UnsafePointer<CChar>?.self) { argvPointers in
                        kiri_run(state, source, source.utf8.count, chunkName, argvPointers.baseAddress,
                                 Int32(argv.count), &error, error.count)
                    }
                }
            }
        }
        // A stopped run fails even when the script caught the error and returned normally.
        if let reason = cancellation.reason {
            let message = status != 0 ? text(of: error) : "\(name): \(cancellation.error.message)"
            var failure = ScriptFailure(kind: reason == .cancelled ? .cancelled : .timeout, message: message)
            failure.stoppedBy = reason
            throw failure
        }
        guard status != 0 else { return }
        let kind: ScriptFailure.Kind = status == 4 /* LUA_ERRMEM */ ? .memory : .error
        throw ScriptFailure(kind: kind, message: kind == .memory ? "\(name): not enough memory (limit \(limits.memory) bytes)" : text(of: error))
    }

    static func from(_ state: OpaquePointer?) -> LuaRuntime {
        Unmanaged<LuaRuntime>.fromOpaque(kiri_host(state)!).takeUnretainedValue()
    }
}

/// The sandbox's own prelude (Preludes/sandbox.lua, embedded at build time).
private let sandboxPrelude = PackageResources.sandbox_lua

/// `body` with `chunks` then `rest` as C chunks, their bytes pinned for the call.
private func withChunks<T>(_ rest: ArraySlice<[UInt8]>, _ chunks: [KiriChunk], _ body: ([KiriChunk]) -> T) -> T {
    guard let first = rest.first else { return body(chunks) }
    return first.withUnsafeBufferPointer { bytes in
        bytes.withMemoryRebound(to: CChar.self) {
            withChunks(rest.dropFirst(), chunks + [KiriChunk(source: $0.baseAddress, length: $0.count)], body)
        }
    }
}

/// The NUL-terminated message C wrote into `buffer`.
private func text(of buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

// MARK: - Callbacks from C (none of them may call a raising Lua function)

private func dispatchBinding(_ state: OpaquePointer?, _ call: UnsafeMutablePointer<KiriCall>?) {
    guard let state, let call else { return }
    do {
        // The core's functions (by far the most calls) without looking up the runtime.
        let id = Int(call.pointee.functionId)
        let body = id < Bindings.bodies.count ? Bindings.bodies[id] : LuaRuntime.from(state).libraryBody(id)
        try body(LuaCall(state: state, call: call))
    } catch {
        fail(call, state: state, error)
    }
    if call.pointee.heldStringBytes > 0 { LuaRuntime.from(state).budget.release(call.pointee.heldStringBytes) }
}

/// Reports a binding's error to Lua. A kernel that noticed the run's stop throws too (every stop path throws, so
/// the fast path of a call that succeeds asks nothing); the run then stops for good, whatever the error said.
private func fail(_ call: UnsafeMutablePointer<KiriCall>, state: OpaquePointer, _ error: Error) {
    let cancellation = LuaRuntime.from(state).cancellation
    if cancellation.reason != nil {
        let message = cancellation.error.message
        kiri_stop(state, message)
        kiri_fail(call, 0, message)
        return
    }
    switch error {
    case let error as ScriptError: kiri_fail(call, Int32(error.argument ?? 0), error.message)
    case let error as TensorError: kiri_fail(call, Int32(error.argument ?? 0), error.message)
    default: kiri_fail(call, 0, "\(error)")
    }
}

/// The instruction hook's question (every 1000 instructions, and between the pieces of a long parse).
private func interruptRun(_ host: UnsafeMutableRawPointer?, _ message: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int32 {
    guard let host, let message else { return 0 }
    let cancellation = Unmanaged<LuaRuntime>.fromOpaque(host).takeUnretainedValue().cancellation
    guard cancellation.isStopped else { return 0 }
    _ = cancellation.error.message.withCString { strncpy(message, $0, size - 1) }
    message[size - 1] = 0
    return 1
}

private func releaseTensorHandle(_ handle: UnsafeMutableRawPointer?, _ closeNow: Int32) {
    guard let handle else { return }
    let tensor = Unmanaged<Tensor>.fromOpaque(handle)
    if closeNow != 0 { tensor.takeUnretainedValue().storage.release() }
    tensor.release()
}

private func writeOutput(_ host: UnsafeMutableRawPointer?, _ bytes: UnsafePointer<CChar>?, _ length: Int) {
    guard let host, let bytes else { return }
    let runtime = Unmanaged<LuaRuntime>.fromOpaque(host).takeUnretainedValue()
    let text = bytes.withMemoryRebound(to: UInt8.self, capacity: length) {
        String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
    }
    runtime.output(text)
}
