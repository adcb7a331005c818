import Foundation
import Kiri
import KiriImage
import XCTest

/// Scripts/grid.lua with the default model, as a user runs it: the Z axis (one X/Y grid per value, side by side, as
/// A1111's X/Y/Z plot), the parameters the grid's PNG records for its cells, and the axes it refuses.
final class GridRecipeTests: CLITestCase {
    static let scripts = BundledFiles.scripts ?? "Scripts"

    func png(_ name: String) throws -> PNGImage {
        try PNGImage.read(path: folder.appendingPathComponent(name).path)
    }

    /// The grey pixels of `image` in the rectangle at (left, top).
    func crop(_ image: PNGImage, left: Int, top: Int, width: Int, height: Int) -> [UInt8] {
        precondition(image.channels == 1)
        return (top..<(top + height)).flatMap { y in image.pixels[(y * image.width + left)..<(y * image.width + left + width)] }
    }

    func grid(_ arguments: [String]) throws -> Result {
        try kiri(["run", Self.scripts + "/grid.lua", "x=seed", "xs=1,2", "y=cfg", "ys=1.5,4.5", "steps=2"] + arguments)
    }

    /// z=steps zs=2,3 makes two X/Y grids side by side, each bit for bit the grid made alone at that step
    /// count, under a band of "Steps: N" titles; the PNG's parameters are the first cell's with the three
    /// axes, and a cell made alone from them (its values put in) is the grid's cell.
    func testZAxisJoinsOneXYGridPerValue() throws {
        let made = try grid(["z=steps", "zs=2,3", "out=xyz.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertEqual(made.stdout, "wrote out/xyz.png: 2 x 2 x 2 images (seed by cfg by steps)\n")
        let xyz = try png("out/xyz.png")
        var alone: [PNGImage] = []
        for steps in [2, 3] {
            let result = try grid(["steps=\(steps)", "out=alone\(steps).png"])
            XCTAssertEqual(result.status, 0, result.stderr)
            alone.append(try png("out/alone\(steps).png"))
        }
        let (width, height) = (alone[0].width, alone[0].height)
        XCTAssertEqual([alone[1].width, alone[1].height], [width, height])
        // Padding 2 around and between the sub-grids, one 7 px line of titles above them.
        XCTAssertEqual([xyz.width, xyz.height, xyz.channels], [2 + 2 * (width + 2), 2 + 7 + 2 + height + 2, 1])
        guard xyz.width == 2 + 2 * (width + 2), xyz.height == 2 + 7 + 2 + height + 2 else { return }
        for k in 0..<2 {
            let left = 2 + k * (width + 2)
            XCTAssertTrue(crop(xyz, left: left, top: 11, width: width, height: height) == alone[k].pixels,
                          "sub-grid \(k + 1) is the X/Y grid made alone")
            XCTAssertTrue(crop(xyz, left: left, top: 2, width: width, height: 7).contains(0), "sub-grid \(k + 1) has a title")
        }
        XCTAssertNotEqual(alone[0].pixels, alone[1].pixels, "the step counts differ, so the comparisons can fail")

        let parameters = xyz.text.first { $0.key == "parameters" }?.value ?? ""
        XCTAssertTrue(parameters.hasPrefix("sneaker\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 1.5, "
            + "Seed: 1, Size: 28x28, "), parameters)
        XCTAssertTrue(parameters.hasSuffix(", X Type: Seed, X Values: \"1,2\", Y Type: CFG Scale, Y Values: \"1.5,4.5\", "
            + "Z Type: Steps, Z Values: \"2,3\", Version: kiri \(KiriVersion.string)"), parameters)

        // The cell in column 2, row 2 of grid 2: seed 2, CFG 4.5, 3 steps; cells are 56 px (scale 2) after a
        // 2 + 83 + 2 px label column ("CFG scale: 4.5") and 2 + 7 + 2 px of column labels ("Seed: 1").
        let sample = try kiri(["sample", "--prompt", "sneaker", "--seed", "2", "--cfg", "4.5", "--steps", "3", "-o", ".", "--name", "cell.png"])
        XCTAssertEqual(sample.status, 0, sample.stderr)
        let cell = try png("cell.png")
        let upscaled = (0..<56).flatMap { y in (0..<56).map { x in cell.pixels[(y / 2) * 28 + x / 2] } }
        let (left, top) = (2 + (width + 2) + 2 + 83 + 2 + 56 + 2, 11 + 2 + 7 + 2 + 56 + 2)
        XCTAssertTrue(crop(xyz, left: left, top: top, width: 56, height: 56) == upscaled,
                      "the cell is the image its parameters make")
        XCTAssertFalse(crop(xyz, left: left - 58, top: top, width: 56, height: 56) == upscaled, "its neighbour is not")
    }

    /// Each key goes on one axis; an axis names a key a grid can vary and has values; zs= needs z=. All are
    /// refused before any cell is made, naming the key.
    func testAxesThatCannotBePlottedAreRefused() throws {
        let cases: [([String], String)] = [
            (["z=seed", "zs=3,4"], "z is 'seed', as x is; each key can be on one axis only"),
            (["z=cfg", "zs=3,4"], "z is 'cfg', as y is; each key can be on one axis only"),
            (["y=seed", "ys=3,4"], "x and y are both 'seed'"),
            (["z=steps", "zs="], "steps: no values in ''"),
            (["z=steps", "zs=,"], "steps: no values in ','"),
            (["z=width", "zs=8,16"], "z: cannot plot 'width'; choose prompt, negative, steps, cfg"),
            (["z=weights", "zs=f16"], "z: cannot plot 'weights'"),
            (["zs=1,2"], "zs= needs z=KEY"),
        ]
        for (arguments, message) in cases {
            let result = try grid(arguments + ["out=refused.png"])
            XCTAssertEqual(result.status, 1, "\(arguments)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out/refused.png").path))
        }
    }
}
