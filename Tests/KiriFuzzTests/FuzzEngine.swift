import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A seeded mutation fuzzer small enough to run inside XCTest on every CI push, for the parsers that read untrusted
/// bytes (security cases 22–34). No coverage instrumentation: the feedback is the error an input produces, with its
/// numbers and quoted names masked, so an input that reaches a new check joins the working corpus and is mutated
/// further (a parser's error messages are a coarse map of its branches). Each input is derived from the seed and the
/// inputs before it only, so a failure printed with its seed reproduces with `KIRI_FUZZ_SEED`.
///
/// An error thrown by the target is the expected outcome. Findings are a crash (the input is written to a file
/// before it runs, and the signal handler prints where), an input slower than `slowSeconds`, and an input after which
/// the process's peak resident memory grew by more than `allocationLimit`.
///
/// Environment: `KIRI_FUZZ_SECONDS` per target (default 12, so the four targets take about a minute),
/// `KIRI_FUZZ_SEED` (default: a hash of the target's name), `KIRI_FUZZ_VERBOSE=1` to list the distinct errors.
struct FuzzTarget {
    let name: String
    /// Seed inputs: every file in Tests/Fixtures/fuzz/NAME, plus `extraSeeds`.
    var extraSeeds: [[UInt8]] = []
    /// Tokens the mutator inserts whole: JSON punctuation for JSON, prompt syntax for prompts.
    var dictionary: [[UInt8]] = []
    /// Format-aware mutations (PNG chunk lengths, the safetensors length prefix), chosen as often as each generic one.
    var structural: [(inout [UInt8], inout FuzzRandom) -> Void] = []
    /// Applied after mutating, to keep the input past the format's first gate most of the time (PNG CRCs).
    var repair: ((inout [UInt8], inout FuzzRandom) -> Void)?
    var maximumLength = 1 << 16
    /// Per input; the timeout of the prompt harness's Lua runs is well below it.
    var slowSeconds = 2.0
    var allocationLimit = 512 << 20
    /// Parses one input; throws for a malformed one.
    let execute: ([UInt8]) throws -> Void
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014): one 64-bit state, so
/// a whole run is reproduced by the seed alone.
struct FuzzRandom {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (bound > 0); the modulo bias is irrelevant here.
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func chance(_ probability: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < probability }

    mutating func pick<T>(_ values: [T]) -> T { values[below(values.count)] }
}

/// The generic mutations, after AFL's havoc stage: each input gets one to four of them stacked.
struct Mutator {
    static let interestingBytes: [UInt8] = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0a, 0x22, 0x5c, 0x5b, 0x5d, 0x7b, 0x7d, 0x3a, 0x2c]
    static let interestingIntegers: [UInt64] = [
        0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff,
        0x1_0000_0000, 1 << 62, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, UInt64.max, UInt64.max - 7, 100_000_001,
    ]
    /// What a hostile config or header writes where a number belongs.
    static let interestingNumbers = [
        "2147483648", "2147483647", "4294967296", "4611686018427387904", "9223372036854775807", "9223372036854775808",
        "18446744073709551616", "-1", "0", "-0", "1e308", "-1e308", "1e999", "1e-400", "NaN", "Infinity", "-Infinity",
        "0.5", "65536", "100000", "1e6", "3.0", "00", "1.", "1e", "--1", "99999999999999999999999999",
    ]

    let dictionary: [[UInt8]]
    let structural: [(inout [UInt8], inout FuzzRandom) -> Void]
    let maximumLength: Int

    func mutate(_ input: [UInt8], splicing other: [UInt8], random: inout FuzzRandom) -> [UInt8] {
        var bytes = input
        for _ in 0...random.below(4) {
            let generic = 10
            let choice = random.below(generic + structural.count)
            if choice >= generic {
                structural[choice - generic](&bytes, &random)
                continue
            }
            switch choice {
            case 0:     // one bit
                guard !bytes.isEmpty else { continue }
                bytes[random.below(bytes.count)] ^= 1 << UInt8(random.below(8))
            case 1:     // an interesting byte
                guard !bytes.isEmpty else { continue }
                bytes[random.below(bytes.count)] = random.pick(Self.interestingBytes)
            case 2:     // an interesting integer, 1 to 8 bytes, either byte order
                let width = random.pick([1, 2, 4, 8])
                guard bytes.count >= width else { continue }
                let value = random.pick(Self.interestingIntegers)
                let at = random.below(bytes.count - width + 1)
                let littleEndian = random.chance(0.5)
                for k in 0..<width { bytes[at + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(littleEndian ? k : width - 1 - k))) }
            case 3:     // a number written in the text replaced by an interesting one
                replaceNumber(&bytes, random: &random)
            case 4:     // a chunk duplicated elsewhere
                guard !bytes.isEmpty else { continue }
                let range = randomRange(bytes.count, random: &random)
                bytes.insert(contentsOf: bytes[range], at: random.below(bytes.count + 1))
            case 5:     // a chunk deleted
                guard !bytes.isEmpty else { continue }
                bytes.removeSubrange(randomRange(bytes.count, random: &random))
            case 6:     // truncated
                bytes.removeLast(random.below(bytes.count + 1))
            case 7:     // spliced: this input's head, another's tail
                let head = random.below(bytes.count + 1), tail = random.below(other.count + 1)
                bytes = Array(bytes[..<head]) + other[tail...]
            case 8:     // a dictionary token inserted or written over
                guard !dictionary.isEmpty else { continue }
                let token = random.pick(dictionary), at = random.below(bytes.count + 1)
                if random.chance(0.5) || at + token.count > bytes.count {
                    bytes.insert(contentsOf: token, at: at)
                } else {
                    bytes.replaceSubrange(at..<at + token.count, with: token)
                }
            default:    // random bytes inserted
                let count = 1 + random.below(8)
                bytes.insert(contentsOf: (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) },
                             at: random.below(bytes.count + 1))
            }
        }
        if bytes.count > maximumLength { bytes.removeLast(bytes.count - maximumLength) }
        return bytes
    }

    /// Mostly short ranges, sometimes long ones.
    private func randomRange(_ count: Int, random: inout FuzzRandom) -> Range<Int> {
        let start = random.below(count)
        let length = 1 + random.below(random.chance(0.8) ? min(16, count - start) : count - start)
        return start..<start + length
    }

    private func replaceNumber(_ bytes: inout [UInt8], random: inout FuzzRandom) {
        func isNumeric(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) || byte == 0x2d || byte == 0x2e || byte == 0x2b }
        var numbers: [Range<Int>] = []
        var index = 0
        while index < bytes.count {
            guard (0x30...0x39).contains(bytes[index]) || bytes[index] == 0x2d else { index += 1; continue }
            var end = index
            while end < bytes.count && (isNumeric(bytes[end]) || bytes[end] == 0x65 || bytes[end] == 0x45) { end += 1 }
            numbers.append(index..<end)
            index = end
        }
        let replacement = Array(random.pick(Self.interestingNumbers).utf8)
        if numbers.isEmpty {
            bytes.insert(contentsOf: replacement, at: random.below(bytes.count + 1))
        } else {
            bytes.replaceSubrange(random.pick(numbers), with: replacement)
        }
    }
}

// MARK: - The loop

/// What one run of a harness measured, printed in the test log.
struct FuzzReport {
    var executions = 0
    var seconds = 0.0
    var seeds = 0
    var corpus = 0
    /// Masked error messages and how often each was seen; "ok" counts inputs that parsed.
    var outcomes: [String: Int] = [:]
    var slowest = 0.0
    var peakGrowth = 0
    var findings: [String] = []
}

let fuzzFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/fuzz").path

/// Runs `target` for its time budget and fails the test for each finding, saving its input.
func fuzz(_ target: FuzzTarget, file: StaticString = #filePath, line: UInt = #line) -> FuzzReport {
    let environment = ProcessInfo.processInfo.environment
    let seconds = environment["KIRI_FUZZ_SECONDS"].flatMap(Double.init) ?? 12
    let seed = environment["KIRI_FUZZ_SEED"].flatMap { UInt64($0.hasPrefix("0x") ? String($0.dropFirst(2)) : $0, radix: 16) }
        ?? fnv1a(target.name)
    let verbose = environment["KIRI_FUZZ_VERBOSE"] == "1"

    let folder = fuzzFixtures + "/" + target.name
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    let seeds = names.compactMap { FileManager.default.contents(atPath: folder + "/" + $0).map { [UInt8]($0) } } + target.extraSeeds
    XCTAssertFalse(seeds.isEmpty, "no seeds in \(folder)", file: file, line: line)
    guard !seeds.isEmpty else { return FuzzReport() }

    let findingsFolder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-fuzz-findings").path
    try? FileManager.default.createDirectory(atPath: findingsFolder, withIntermediateDirectories: true)
    CrashRecorder.arm(path: findingsFolder + "/\(target.name)-crash.bin", label: "\(target.name) seed \(String(seed, radix: 16))")
    defer { CrashRecorder.disarm() }
    let watchdog = Watchdog(seconds: max(30, target.slowSeconds * 10))
    defer { watchdog.stop() }

    let mutator = Mutator(dictionary: target.dictionary, structural: target.structural, maximumLength: target.maximumLength)
    var random = FuzzRandom(state: seed)
    var corpus = seeds
    var report = FuzzReport(seeds: seeds.count)
    let baseline = PeakMemory.resetAndRead()
    let start = Date()

    func runOne(_ input: [UInt8]) {
        CrashRecorder.record(input, iteration: report.executions)
        watchdog.begin(target.name, input)
        let began = Date()
        var outcome = "ok"
        do {
            try target.execute(input)
        } catch {
            outcome = mask("\(error)")
        }
        let elapsed = Date().timeIntervalSince(began)
        watchdog.end()
        report.executions += 1
        report.slowest = max(report.slowest, elapsed)
        if report.outcomes[outcome] == nil, corpus.count < 4096 { corpus.append(input) }
        report.outcomes[outcome, default: 0] += 1
        var finding: String?
        if elapsed > target.slowSeconds {
            finding = String(format: "slow input: %.2f s", elapsed)
        }
        let peak = PeakMemory.read()
        report.peakGrowth = max(report.peakGrowth, peak - baseline)
        if peak - baseline > target.allocationLimit {
            finding = "peak RSS grew by \((peak - baseline) >> 20) MiB"
            _ = PeakMemory.resetAndRead()
        }
        guard let finding else { return }
        let path = findingsFolder + "/\(target.name)-\(report.findings.count).bin"
        _ = FileManager.default.createFile(atPath: path, contents: Data(input))
        let text = "\(target.name): \(finding) on input \(report.executions - 1) (\(input.count) bytes, saved to \(path)); outcome: \(outcome)"
        report.findings.append(text)
        XCTFail(text, file: file, line: line)
    }

    while true {
        var input: [UInt8]
        if report.executions < seeds.count {
            input = seeds[report.executions]
        } else {
            if Date().timeIntervalSince(start) >= seconds { break }
            input = mutator.mutate(random.pick(corpus), splicing: random.pick(corpus), random: &random)
            target.repair?(&input, &random)
        }
        runOne(input)
    }

    report.seconds = Date().timeIntervalSince(start)
    report.corpus = corpus.count
    let rate = Double(report.executions) / max(report.seconds, 1e-9)
    let errors = report.outcomes.keys.filter { $0 != "ok" }.count
    print(String(format: "fuzz %@: seed %@, %d executions in %.1f s (%.0f/s), %d distinct errors, %d parsed, corpus %d → %d, slowest %.1f ms, peak RSS +%d MiB, %d findings",
                 target.name, String(seed, radix: 16), report.executions, report.seconds, rate, errors, report.outcomes["ok"] ?? 0,
                 seeds.count, corpus.count, report.slowest * 1000, report.peakGrowth >> 20, report.findings.count))
    if verbose {
        for (outcome, count) in report.outcomes.sorted(by: { $0.value > $1.value }) { print(String(format: "%8d  %@", count, outcome)) }
    }
    return report
}

/// The error with what varies per input masked, so that messages differing only in numbers, quoted names or the
/// bytes a message quotes count as one: its first 14 words after the file name, without a Lua traceback, with quoted text and numbers
/// masked (`tensor '…': shape [N] × F32 is N bytes ...` → "tensor shape N F is N bytes but data offsets span").
func mask(_ message: String) -> String {
    var text = Substring(message)
    if let colon = text.range(of: ": "), text[..<colon.lowerBound].hasPrefix("/") { text = text[colon.upperBound...] }
    if let traceback = text.range(of: "\nstack traceback") { text = text[..<traceback.lowerBound] }
    var masked = ""
    var quote: Character?
    for character in text.prefix(400) {
        if let open = quote {
            if character == open { quote = nil }
            continue
        }
        if character == "'" || character == "\"" {
            quote = character
            masked += " Q "
        } else if character.isNumber {
            masked.append("N")
        } else {
            masked.append(character)
        }
    }
    let words = masked.split { !($0.isASCII && $0.isLetter) }.prefix(14)
    return words.map { $0.count > 20 ? "W" : $0.allSatisfy { $0 == "N" } ? "N" : String($0) }.joined(separator: " ")
}

/// FNV-1a, to give each target its own default seed.
func fnv1a(_ text: String) -> UInt64 {
    text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

// MARK: - Crashes, hangs, memory

/// Keeps the running input where a fatal signal handler can write it out: Swift traps (SIGILL, SIGTRAP), SIGSEGV,
/// SIGBUS, SIGFPE and SIGABRT save the input and a line on stderr, then go to the handler installed before (the Swift
/// runtime's backtracer), which prints the stack.
enum CrashRecorder {
    nonisolated(unsafe) static var buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 1 << 20)
    nonisolated(unsafe) static var count = 0
    nonisolated(unsafe) static var path: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) static var message: UnsafeMutablePointer<CChar>?
    /// The handlers installed before, by signal number.
    nonisolated(unsafe) static var previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
    static let signals = [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT]

    static func arm(path file: String, label: String) {
        path = strdup(file)
        message = strdup("\nkiri fuzz: fatal signal while running \(label); the input is in \(file)\n")
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                if let path = CrashRecorder.path, let message = CrashRecorder.message {
                    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                    if descriptor >= 0 {
                        _ = write(descriptor, CrashRecorder.buffer, CrashRecorder.count)
                        _ = close(descriptor)
                    }
                    _ = write(2, message, strlen(message))
                }
                _ = sigaction(signal, CrashRecorder.previous + Int(signal), nil)
                raise(signal)
            }
            sigaction(signal, &action, previous + Int(signal))
        }
    }

    static func disarm() {
        for signal in signals { sigaction(signal, previous + Int(signal), nil) }
        free(path); free(message)
        path = nil; message = nil
    }

    static func record(_ input: [UInt8], iteration: Int) {
        count = min(input.count, 1 << 20)
        input.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress!, count: count) }
    }
}

/// Stops the process when one input runs for far longer than a slow one may: a real hang would otherwise stall the
/// test run with no word of which input did it.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var current: (name: String, input: [UInt8], began: Date)?
    private var running = true

    init(seconds: Double) {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                Thread.sleep(forTimeInterval: 0.5)
                lock.lock()
                if let current, Date().timeIntervalSince(current.began) > seconds {
                    let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-fuzz-findings/\(current.name)-hang.bin").path
                    _ = FileManager.default.createFile(atPath: path, contents: Data(current.input))
                    FileHandle.standardError.write(Data("kiri fuzz: \(current.name) input still running after \(seconds) s; saved to \(path)\n".utf8))
                    exit(3)
                }
                lock.unlock()
            }
        }
    }

    func begin(_ name: String, _ input: [UInt8]) { lock.withLock { current = (name, input, Date()) } }
    func end() { lock.withLock { current = nil } }
    func stop() { lock.withLock { running = false } }
}

/// The process's peak resident set (VmHWM), which writing 5 to /proc/self/clear_refs resets (Linux 4.0+), so a
/// transient huge allocation is seen even though it was freed before the check.
enum PeakMemory {
    static func read() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kilobytes << 10
    }

    static func resetAndRead() -> Int {
        let descriptor = open("/proc/self/clear_refs", O_WRONLY)
        if descriptor >= 0 {
            _ = write(descriptor, "5", 1)
            close(descriptor)
        }
        return read()
    }
}
