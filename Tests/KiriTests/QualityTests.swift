import Foundation
import Kiri
import KiriImage
import KiriLua
import KiriModels
import XCTest

/// Does the default model draw what the prompt names? Samples of every class, made by Scripts/txt2img.lua
/// and written as PNGs, are read back and labelled by an independent classifier: a 784-256-10 MLP trained on
/// Fashion-MNIST's real images by Tests/Fixtures/make_fashion_fixtures.py (88.6% on the test set), shipped in
/// Tests/Fixtures/fashion-classifier. A model that ignored its class, or a broken CFG, sampler or schedule,
/// scores near chance (10%).
final class QualityTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/fashion-classifier/classifier.safetensors").path
    static let classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    static let samplesPerClass = 20

    /// The MLP: logits = W2 relu(W1 x + b1) + b2, with x the 784 pixels in [0, 1].
    struct Classifier {
        let w1: [Float], b1: [Float], w2: [Float], b2: [Float]

        init(path: String) throws {
            let file = try SafetensorsFile(path: path)
            func values(_ name: String) throws -> [Float] { try file.tensor(name).values }
            w1 = try values("fc1.weight")
            b1 = try values("fc1.bias")
            w2 = try values("fc2.weight")
            b2 = try values("fc2.bias")
        }

        func label(_ pixels: [Float]) -> Int {
            let hidden = b1.indices.map { j in
                max(0, zip(w1[(j * 784)..<(j * 784 + 784)], pixels).reduce(b1[j]) { $0 + $1.0 * $1.1 })
            }
            let logits = b2.indices.map { k in
                zip(w2[(k * hidden.count)..<((k + 1) * hidden.count)], hidden).reduce(b2[k]) { $0 + $1.0 * $1.1 }
            }
            return logits.indices.max { logits[$0] < logits[$1] }!
        }
    }

    /// Per-class accuracy of `samplesPerClass` samples per class at this guidance scale.
    func accuracy(cfg: Double, classifier: Classifier, folder: URL) throws -> [Double] {
        guard let scripts = BundledFiles.scripts else { throw XCTSkip("no Scripts folder") }
        return try Self.classes.enumerated().map { label, name in
            let out = "cfg\(cfg)-\(label).png"
            let arguments = ["prompt=\(name)", "cfg=\(cfg)", "steps=15", "sampler=dpmpp_2m", "schedule=karras",
                             "seed=\(100 + label)", "batch=\(Self.samplesPerClass)", "out=\(out)"]
            try RecipeRunner.run(RunRequest(script: scripts + "/txt2img.lua", arguments: arguments,
                                            limits: SandboxLimits(timeout: 600), outputDirectory: folder.path), output: { _ in })
            var correct = 0
            for index in 1...Self.samplesPerClass {
                let path = folder.appendingPathComponent(out.replacingOccurrences(of: ".png", with: "-\(index).png")).path
                let image = try PNGImage.read(path: path)
                XCTAssertEqual([image.width, image.height, image.channels], [28, 28, 1])
                if classifier.label(image.pixels.map { Float($0) / 255 }) == label { correct += 1 }
            }
            return Double(correct) / Double(Self.samplesPerClass)
        }
    }

    func testSamplesAreRecognisedAsTheirClass() throws {
        let classifier = try Classifier(path: Self.fixtures)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-quality-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        let guided = try accuracy(cfg: 4, classifier: classifier, folder: folder)
        let unguided = try accuracy(cfg: 1, classifier: classifier, folder: folder)
        func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
        for (name, (a, b)) in zip(Self.classes, zip(guided, unguided)) {
            print(name.padding(toLength: 12, withPad: " ", startingAt: 0) + String(format: "CFG 4: %3.0f%%   CFG 1: %3.0f%%", a * 100, b * 100))
        }
        print("mean".padding(toLength: 12, withPad: " ", startingAt: 0)
            + String(format: "CFG 4: %3.0f%%   CFG 1: %3.0f%%", mean(guided) * 100, mean(unguided) * 100))

        // Chance is 10%. The shipped model (trained by kiri train) scores 100% at CFG 4 and 84% at CFG 1 (70-95% per class). The classifier
        // itself confuses shirts, t-shirts, pullovers and coats on real data, so a class may dip below 100%.
        XCTAssertGreaterThanOrEqual(mean(guided), 0.9, "mean accuracy at CFG 4")
        for (name, value) in zip(Self.classes, guided) {
            XCTAssertGreaterThanOrEqual(value, 0.7, "accuracy of '\(name)' at CFG 4")
        }
        XCTAssertGreaterThan(mean(guided), mean(unguided), "guidance should make samples more recognisable")
    }
}
