import Foundation
import KiriLua

/// The sampler progress bar on stderr: `step 7/20 [#######.............] 12.3 it/s ETA 0:01`. It is
/// redrawn in place at most ten times a second, and only on a terminal, so logs and pipes stay clean.
public final class ProgressBar: KiriProgress {
    private let write: (String) -> Void
    private var started = 0.0
    /// The step the bar was first drawn at.
    private var first = 0
    private var lastDrawn = -Double.infinity
    private var drawn = false

    /// A bar on stderr, or nil when it should stay quiet: `--quiet`, or stderr is not a terminal.
    public static func standardError(quiet: Bool) -> ProgressBar? {
        guard !quiet, isatty(STDERR_FILENO) != 0 else { return nil }
        return ProgressBar { FileHandle.standardError.write(Data($0.utf8)) }
    }

    public init(write: @escaping (String) -> Void) {
        self.write = write
    }

    /// Adaptive samplers (dpm_adaptive) may take more steps than the schedule has; the count then grows.
    public func step(_ index: Int, of total: Int) { step(index, of: total, note: "") }

    /// The rate counts from the first step this bar drew (a resumed training run starts past 0), and `note` follows
    /// the ETA.
    public func step(_ index: Int, of total: Int, note: String) {
        let total = max(total, index)
        let now = Self.now()
        if index == 0 || !drawn { (started, first) = (now, index) }
        guard !drawn || index >= total || now - lastDrawn >= 0.1 else { return }
        lastDrawn = now
        drawn = true
        write("\r" + Self.line(step: index, of: total, elapsed: now - started, first: first) + (note.isEmpty ? "" : " " + note)
              + "\u{1B}[K")
    }

    public func end() {
        if drawn { write("\n") }
        drawn = false
    }

    /// One frame of the bar; it/s and ETA appear once a step past `first` has finished.
    static func line(step: Int, of total: Int, elapsed: Double, first: Int = 0, width: Int = 20) -> String {
        let done = total > 0 ? min(width, width * step / total) : width
        var text = "step \(step)/\(total) [" + String(repeating: "#", count: done) + String(repeating: ".", count: width - done) + "]"
        if step > first, elapsed > 0 {
            let rate = Double(step - first) / elapsed
            text += rate >= 1 ? String(format: " %.1f it/s", rate) : String(format: " %.1f s/it", 1 / rate)
            text += " ETA " + clock(Double(max(0, total - step)) / rate)
        }
        return text
    }

    static func clock(_ seconds: Double) -> String {
        let whole = Int(seconds.rounded(.up))
        return whole >= 3600 ? String(format: "%d:%02d:%02d", whole / 3600, whole / 60 % 60, whole % 60)
            : String(format: "%d:%02d", whole / 60, whole % 60)
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }
}
