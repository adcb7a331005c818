import Foundation
import XCTest

/// Real clients against a running server, in a Python venv this test makes from Clients/requirements.txt (PyPI):
/// AUTOMATIC1111's webuiapi.
final class ServerClientTests: XCTestCase {
    static let clients = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Clients").path
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    func testWebUIAPIClient() async throws {
        let python = try Self.venvPython()
        let model = Self.fixtures + "/models/pipeline/tiny-sd"
        let server = try await RunningServer.start { $0.models = [model] }
        let (status, output) = try await Self.run(python, [Self.clients + "/webuiapi_client.py", "\(server.port)", "tiny-sd"])
        try await server.stop()
        print(output)
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("all checks passed"), output)
    }

    /// schemathesis against the served /openapi.json: no 5xx, and every status, content type, header and body as
    /// the document says (Clients/schemathesis_check.py, seeded, a few hundred cases over every operation).
    func testOpenAPIDocumentWithSchemathesis() async throws {
        let python = try Self.venvPython()
        let server = try await RunningServer.start {
            $0.limits.timeout = 10
            $0.limits.wallTimeout = 20
        }
        let (status, output) = try await Self.run(python, [Self.clients + "/schemathesis_check.py", "\(server.port)"])
        try await server.stop()
        print(output.split(separator: "\n").suffix(30).joined(separator: "\n"))
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("schemathesis: all checks passed"), output)
    }

    /// The venv's python, made once per requirements file (in the system's temporary folder). No python3 is a skip;
    /// a failed install is a failure, as CI installs from PyPI.
    static func venvPython() throws -> String {
        let requirements = clients + "/requirements.txt"
        let text = try String(contentsOfFile: requirements, encoding: .utf8)
        // FNV-1a of the requirements: the same name in every process (String.hashValue is seeded per process).
        let digest = text.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        let venv = NSTemporaryDirectory() + "kiri-client-venv-" + String(digest, radix: 16)
        let marker = venv + "/installed.txt"
        if (try? String(contentsOfFile: marker, encoding: .utf8)) == text { return venv + "/bin/python" }
        guard let python3 = ["/usr/bin/python3", "/usr/local/bin/python3"].first(where: FileManager.default.isExecutableFile)
                ?? which("python3") else {
            throw XCTSkip("no python3 to run the client tests with")
        }
        for arguments in [[python3, "-m", "venv", venv], [venv + "/bin/pip", "install", "-q", "-r", requirements]] {
            let (status, output) = try runSync(arguments[0], Array(arguments.dropFirst()))
            guard status == 0 else { throw ClientSetupError(message: "\(arguments.joined(separator: " ")) failed:\n\(output)") }
        }
        try text.write(toFile: marker, atomically: true, encoding: .utf8)
        return venv + "/bin/python"
    }

    struct ClientSetupError: Error, CustomStringConvertible { var message: String; var description: String { message } }

    static func which(_ name: String) -> String? {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/\(name)" }
            .first(where: FileManager.default.isExecutableFile)
    }

    /// Runs a program to its end; its status and its output and errors together.
    static func runSync(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// As runSync, off the cooperative threads (the server in this process answers on them).
    static func run(_ executable: String, _ arguments: [String]) async throws -> (Int32, String) {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try runSync(executable, arguments) }) }.start()
        }
    }
}

/// The web page in headless Chromium; the screenshot is kept beside the test's output folder.
final class WebPageBrowserTests: XCTestCase {
    func testGenerateFromThePage() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") else {
            throw XCTSkip("Chromium is missing: install Debian's chromium and chromium-driver (./setup.sh --test does)")
        }
        let python = try ServerClientTests.venvPython()
        let server = try await RunningServer.start()
        let screenshot = NSTemporaryDirectory() + "kiri-web-page.png"
        let (status, output) = try await ServerClientTests.run(python, [ServerClientTests.clients + "/browser_client.py",
                                                                      "\(server.port)", screenshot])
        try await server.stop()
        print(output)
        print("screenshot: \(screenshot)")
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("all checks passed"), output)
    }
}
