import Foundation
import XCTest

/// Issue 14: the README's commands, run as a new user types them, in the order the README gives them, each within
/// Kiri's default limits (no --timeout): the quick start, the recipes, the guidance and post-processing examples, and
/// the grids that made docs/classes.png and docs/guidance.png. Commands that need a user's own files (a Stable
/// Diffusion checkpoint, FILE.lua, ~/kiri-plugins) or print information only are left out.
final class ReadmeCommandTests: CLITestCase {
    static let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The `kiri run` and `kiri sample` commands of the README, as shell words, in order: indented lines (the quick
    /// start's `swift run -c release kiri` included) and the ones quoted in the text as `(`kiri run ...`:`.
    static func commands(_ readme: String) -> [[String]] {
        let needsTheUsersFiles = ["--model", "model=", "FILE", "~/", "my_recipe", "my_train", "styled.lua", "--from", "--watch", "PATH"]
        var commands: [[String]] = []
        for line in readme.split(separator: "\n").map(String.init) {
            var text: Substring
            if let start = line.range(of: "kiri run ") ?? line.range(of: "kiri sample "),
               line.hasPrefix("    ") || line.hasPrefix("(`kiri run") {
                text = line[start.lowerBound...]
            } else {
                continue
            }
            if let end = text.firstIndex(of: "`") { text = text[..<end] }
            if let comment = text.range(of: "   #") { text = text[..<comment.lowerBound] }
            guard !needsTheUsersFiles.contains(where: { text.contains($0) }), !text.hasSuffix("\\") else { continue }
            commands.append(words(String(text)))
        }
        return commands
    }

    /// Shell words: split at spaces outside double quotes, the quotes removed.
    static func words(_ text: String) -> [String] {
        var words: [String] = [], current = "", quoted = false, started = false
        for character in text {
            if character == "\"" {
                quoted.toggle()
                started = true
            } else if character == " " && !quoted {
                if started { words.append(current) }
                (current, started) = ("", false)
            } else {
                current.append(character)
                started = true
            }
        }
        if started { words.append(current) }
        return words
    }

    func testReadmeCommandsRunWithinTheDefaultLimits() throws {
        let readme = try String(contentsOf: Self.checkout.appendingPathComponent("README.md"), encoding: .utf8)
        let commands = Self.commands(readme)
        XCTAssertGreaterThanOrEqual(commands.count, 14, "the quick start, the recipes, guidance, post-processing and grids")
        try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("Scripts"),
                                                   withDestinationURL: Self.checkout.appendingPathComponent("Scripts"))
        for command in commands {
            XCTAssertEqual(command.first, "kiri")
            let started = Date()
            let result = try kiri(Array(command.dropFirst()))
            print(String(format: "%5.1f s  ", Date().timeIntervalSince(started)) + command.joined(separator: " "))
            XCTAssertEqual(result.status, 0, "\(command.joined(separator: " ")): \(result.stderr)")
        }
        for made in ["out/sneaker.png", "out/left-half.png", "out/inpaint.png", "docs/classes.png", "docs/guidance.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent(made).path), made)
        }
    }
}
