#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Text on its way to a terminal. What a shared recipe prints, and error messages that quote a script or a PNG,
/// may carry control sequences that drive the terminal (OSC 52 writes the clipboard, others retitle the window or
/// rewrite what is on screen); on a terminal they are shown as escapes instead of being obeyed.
public enum TerminalText {
    /// Control characters other than newline and tab, as `\x1b` (C0 and DEL) or `\u{9b}` (C1).
    public static func escaped(_ text: String) -> String {
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x0A, 0x09: result.append(scalar)
            case 0x00..<0x20, 0x7F: result.append(contentsOf: ("\\x" + hex(scalar.value, digits: 2)).unicodeScalars)
            case 0x80..<0xA0: result.append(contentsOf: ("\\u{" + hex(scalar.value, digits: 2) + "}").unicodeScalars)
            default: result.append(scalar)
            }
        }
        return String(result)
    }

    /// Writes `text` to standard output or error, escaped when that is a terminal.
    public static func write(_ text: String, to handle: FileHandle) {
        let shown = isatty(handle.fileDescriptor) != 0 ? escaped(text) : text
        handle.write(Data(shown.utf8))
    }

    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}
