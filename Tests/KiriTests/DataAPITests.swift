import Foundation
import KiriImage
import XCTest
@testable import Kiri
@testable import KiriLua

/// `kiri.data` through the sandbox: Fashion-MNIST from the system folder (a read root of every run, as the bundled
/// models are) or from a `root` the run may read, folders of PNGs resized by kiri.post.resize, batches that are the
/// same bytes in every run, and lauxlib-style errors at the script's line.
final class DataAPITests: XCTestCase {
    var scratch: String!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-data-api-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    func requireFashionMNIST() throws {
        guard BundledFiles.isFolder(DataLibrary.debianFashionMNIST) else {
            throw XCTSkip("\(DataLibrary.debianFashionMNIST) is missing: install Debian's dataset-fashion-mnist (./setup.sh does)")
        }
    }

    /// Runs `source` (as test.lua, with the global-free local SCRATCH naming the scratch folder) with the plugins, the
    /// scratch folder and `roots` readable; returns what it printed.
    func run(_ source: String, roots: [String] = BundledFiles.datasets, memory: Int = 256 << 20,
             libraries: [LuaLibrary]? = nil) throws -> String {
        var printed = ""
        let files = FileAccess(readRoots: [bundledPlugins, scratch] + roots, moduleRoots: [bundledPlugins])
        let plugins = PluginCatalog(folders: [.init(path: bundledPlugins, isBundled: true)])
        let limits = SandboxLimits(timeout: 20, memory: memory)
        let runtime = try libraries.map { try LuaRuntime(limits: limits, files: files, plugins: plugins, libraries: $0, output: { printed += $0 }) }
            ?? LuaRuntime.engine(limits: limits, files: files, plugins: plugins, output: { printed += $0 })
        defer { runtime.close() }
        try runtime.run(source: "local SCRATCH = \"\(scratch!)\"\n" + source, name: "test.lua")
        return printed
    }

    /// The first line of the error `source` raises (a test failure if it runs to the end).
    func failure(_ source: String, roots: [String] = BundledFiles.datasets, memory: Int = 256 << 20, libraries: [LuaLibrary]? = nil,
                 file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try run(source, roots: roots, memory: memory, libraries: libraries)
            XCTFail("no error", file: file, line: line)
            return ""
        } catch {
            return String("\(error)".split(separator: "\n").first ?? "")
        }
    }

    func png(_ name: String, width: Int = 6, height: Int = 8, channels: Int = 1, fill: (Int) -> Int = { $0 * 37 }) throws {
        let path = scratch + "/" + name
        try FileManager.default.createDirectory(atPath: FileAccess.folder(of: path), withIntermediateDirectories: true)
        try PNGImage(width: width, height: height, channels: channels,
                     pixels: (0..<(width * height * channels)).map { UInt8(truncatingIfNeeded: fill($0)) }).save(to: path)
    }

    /// An unpacked IDX file (`name` without .gz) in the scratch folder `mnist`.
    func idx(_ name: String, _ sizes: [Int], _ data: [UInt8]) throws {
        var bytes: [UInt8] = [0, 0, 8, UInt8(sizes.count)]
        for size in sizes { bytes += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: size >> $0) } }
        try FileManager.default.createDirectory(atPath: scratch + "/mnist", withIntermediateDirectories: true)
        try Data(bytes + data).write(to: URL(fileURLWithPath: scratch + "/mnist/" + name))
    }

    // MARK: - Fashion-MNIST

    func testFashionMNISTFromTheSystemFolderInARealRun() throws {
        try requireFashionMNIST()
        let printed = try runRecipe("""
            local ds <close> = kiri.data.fashion_mnist()
            local image, label = ds:get(1)
            print(#ds, table.concat(ds.shape, " "), ds.classes[10], label, ((image + 1) * 127.5):sum(), select(2, ds:get(#ds)))
            local test = kiri.data.fashion_mnist{split = "test"}
            print(#test, tostring(test))
            """)
        // The numbers of Tests/Fixtures/data/fashion_mnist_facts.py: 9, an ankle boot, first; its pixels sum to 76247.
        XCTAssertEqual(printed, """
            60000\t1 28 28\tankle boot\t9\t76247.0\t5
            10000\tDataset: 10000 images of 1x28x28, 10 classes

            """)
    }

    func testTheSystemFolderIsReadOnlyWhenTheRunMayReadItAndItsPathIsNotShown() throws {
        try requireFashionMNIST()
        let refused = failure("kiri.data.fashion_mnist()", roots: [])
        XCTAssert(refused.contains("cannot read 'fashion-mnist/train-images-idx3-ubyte.gz': outside the folders this run may read"), refused)
        XCTAssertFalse(refused.contains(DataLibrary.debianFashionMNIST), refused)
        let missing = failure("kiri.data.fashion_mnist()", libraries: [DataLibrary(fashionMNIST: nil)])
        XCTAssert(missing.contains("Fashion-MNIST is not installed: install Debian's dataset-fashion-mnist"), missing)
    }

    func testTheDatasetCountsAgainstTheMemoryCap() throws {
        try requireFashionMNIST()
        let refused = failure("kiri.data.fashion_mnist()", memory: 32 << 20)
        XCTAssert(refused.contains("'fashion-mnist/train-images-idx3-ubyte.gz''s 60000×28×28 bytes take 45 MiB"), refused)
        XCTAssert(refused.contains("memory cap (--memory)"), refused)
    }

    func testARootFolderIsReadThroughTheRunsReadRoots() throws {
        try idx("t10k-images-idx3-ubyte", [3, 2, 2], Array(0..<12))
        try idx("t10k-labels-idx1-ubyte", [3], [4, 0, 9])
        XCTAssertEqual(try run("""
            local ds = kiri.data.fashion_mnist{split = "test", root = SCRATCH .. "/mnist"}
            local image, label = ds:get(3)
            print(#ds, table.concat(ds.shape, " "), label, math.floor(((image + 1) * 127.5):sum() + 0.5))
            """), "3\t1 2 2\t9\t38\n")
        XCTAssert(failure("kiri.data.fashion_mnist{root = '/etc'}").contains(
            "cannot read '/etc/train-images-idx3-ubyte.gz': outside the folders this run may read"))
        let short = failure("kiri.data.fashion_mnist{root = SCRATCH .. '/mnist'}")
        XCTAssert(short.contains("cannot read '\(scratch!)/mnist/train-images-idx3-ubyte.gz': no such file"), short)
        try idx("t10k-labels-idx1-ubyte", [3], [4, 0, 10])
        let badLabel = failure("kiri.data.fashion_mnist{split = 'test', root = SCRATCH .. '/mnist'}")
        XCTAssertEqual(badLabel, "test.lua:2: '\(scratch!)/mnist/t10k-labels-idx1-ubyte': item 3 has label 10, but the classes are 0 to 9")
    }

    // MARK: - Folders of PNGs

    func testAFolderOfClassesWithImagesResizedByPostResize() throws {
        try png("f/shoe/a.png")
        try png("f/shoe/b.png", fill: { 255 - $0 })
        try png("f/bag/odd.png", width: 7, height: 5, fill: { $0 * 11 })
        try png("f/bag/rgb.png", channels: 3)
        let printed = try run("""
            local ds = kiri.data.images(SCRATCH .. "/f", {size = {8, 6}, channels = 1})
            print(#ds, table.concat(ds.classes, " "), table.concat(ds.shape, " "), select(2, ds:get(1)), select(2, ds:get(3)))
            -- bag/odd.png (item 1), 7x5, as kiri.post.resize makes it 6x8, then stored as a byte.
            local odd = kiri.image.load(SCRATCH .. "/f/bag/odd.png")
            local want = (kiri.post.resize(odd, {width = 6, height = 8}) * 255 + 0.5):clamp(0, 255):floor()
            print(((ds:get(1) + 1) * 127.5 - want):abs():max() < 1e-3)
            -- bag/rgb.png (item 2): grey by Pillow's luma, not resized.
            local rgb = (kiri.image.load(SCRATCH .. "/f/bag/rgb.png") * 255 + 0.5):floor()
            local luma = (rgb[1] * 19595 + rgb[2] * 38470 + rgb[3] * 7471 + 32768) / 65536
            print(((ds:get(2) + 1) * 127.5 - luma:floor()):abs():max() < 1e-3)
            """)
        XCTAssertEqual(printed, "4\tbag shoe\t1 8 6\t0\t1\ntrue\ntrue\n")
    }

    func testBadFoldersAreErrorsThatNameTheFile() throws {
        try FileManager.default.createDirectory(atPath: scratch + "/empty", withIntermediateDirectories: true)
        XCTAssertEqual(failure("kiri.data.images(SCRATCH .. '/empty')"),
                       "test.lua:2: '\(scratch!)/empty' has no PNG images (directly inside it, or in class subfolders)")
        try png("mixed/a.png")
        try png("mixed/b.png", width: 7)
        XCTAssertEqual(failure("kiri.data.images(SCRATCH .. '/mixed')"), "test.lua:2: '\(scratch!)/mixed/b.png' is 7×8 but "
            + "'\(scratch!)/mixed/a.png' is 6×8: give size = N or {height, width} to resize them")
        try Data("not a PNG".utf8).write(to: URL(fileURLWithPath: scratch + "/mixed/b.png"))
        let broken = failure("kiri.data.images(SCRATCH .. '/mixed')")
        XCTAssert(broken.hasPrefix("test.lua:2: ") && broken.contains("/mixed/b.png"), broken)
        // A link inside the folder that leads out of the run's read roots is refused, as any other read.
        let elsewhere = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-elsewhere-\(UUID().uuidString).png").path
        try PNGImage(width: 6, height: 8, channels: 1, pixels: Array(repeating: 0, count: 48)).save(to: elsewhere)
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        try FileManager.default.removeItem(atPath: scratch + "/mixed/b.png")
        try FileManager.default.createSymbolicLink(atPath: scratch + "/mixed/link.png", withDestinationPath: elsewhere)
        let link = failure("kiri.data.images(SCRATCH .. '/mixed')")
        XCTAssert(link.contains("cannot read '\(scratch!)/mixed/link.png': outside the folders this run may read"), link)
        XCTAssert(failure("kiri.data.images('/etc')").contains("cannot read '/etc': outside the folders this run may read"))
    }

    // MARK: - Batches

    func testBatchesAreTheSameBytesInEveryRun() throws {
        for i in 0..<10 { try png("digits/\(i % 3)/\(i).png", width: 5, height: 4, fill: { $0 * 13 + i * 29 }) }
        let source = """
            local ds = kiri.data.images(SCRATCH .. "/digits", {flip = true})
            for _, arguments in ipairs({{4, 7, 0}, {4, 7, 0}, {4, 7, 1}, {4, -7, 0}, {4, 7, 2}}) do
                local images, labels = ds:batch(table.unpack(arguments))
                local weights = kiri.arange(images:numel()):reshape(images:shape())
                print(string.format("%a %a %s", images:sum(), (images * weights):sum(), table.concat(labels:totable(), ",")))
            end
            """
        let first = try run(source), second = try run(source)
        XCTAssertEqual(first, second)
        let lines = first.split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        XCTAssertEqual(lines[0], lines[1])
        XCTAssertEqual(Set(lines[1...]).count, 4, "another step or seed gives another batch: \(lines)")
        // Step 2 of 4 straddles the end of the first epoch: positions 8, 9 of epoch 0 and 0, 1 of epoch 1.
        XCTAssertEqual(lines[4].split(separator: " ").last?.split(separator: ",").count, 4)
    }

    func testBadArgumentsReadLikeLauxlibAtTheScriptsLine() throws {
        try png("five/0.png")
        try png("five/1.png")
        try png("five/2.png")
        let open = "local ds = kiri.data.images(SCRATCH .. '/five')\n"
        let cases: [(String, String)] = [
            ("ds:batch(2)", "test.lua:3: bad argument #2 to 'batch' (number expected, got nil)"),
            ("ds:batch(1.5, 1)", "test.lua:3: bad argument #1 to 'batch' (number has no integer representation)"),
            ("ds:batch('2', 1)", "test.lua:3: bad argument #1 to 'batch' (number expected, got string)"),
            ("ds:batch(4, 1)", "test.lua:3: bad argument #1 to 'batch' (a batch of 4 is larger than the dataset's 3 items)"),
            ("ds:batch(0, 1)", "test.lua:3: bad argument #1 to 'batch' (the batch size must be at least 1, got 0)"),
            ("ds:batch(2, 1, -1)", "test.lua:3: bad argument #3 to 'batch' (step must be 0 or more, got -1)"),
            ("ds:batch(2, 1, 0, {flip = 1})", "test.lua:3: bad argument #4 to 'batch' (flip must be a boolean, got number)"),
            ("ds:batch(2, 1, 0, {flop = true})", "test.lua:3: bad argument #4 to 'batch' (unknown option 'flop'; options: flip)"),
            ("ds.batch(2, 1)", "test.lua:3: bad self for 'batch' (call it as ds:batch(n, seed, step))"),
            ("ds:get(0)", "test.lua:3: bad argument #1 to 'get' (index 0 out of range 1..3)"),
            ("ds:get()", "test.lua:3: bad argument #1 to 'get' (number expected, got no value)"),
            ("ds:close(); ds:get(1)", "test.lua:3: the dataset is closed"),
            ("kiri.data.images(SCRATCH .. '/five', {size = 0})",
             "test.lua:3: bad argument #2 to 'images' (size must be from 1 to 65536 pixels a side, got 0)"),
            ("kiri.data.images(SCRATCH .. '/five', {size = {8}})",
             "test.lua:3: bad argument #2 to 'images' (size must be N or {height, width}, got a list of 1)"),
            ("kiri.data.images(SCRATCH .. '/five', {size = 2.5})", "test.lua:3: bad argument #2 to 'images' (size must be an integer, got float)"),
            ("kiri.data.images(SCRATCH .. '/five', {channels = 2})",
             "test.lua:3: bad argument #2 to 'images' (channels must be 1 (grey) or 3 (RGB), got 2)"),
            ("kiri.data.images(SCRATCH .. '/five', 3)", "test.lua:3: bad argument #2 to 'images' (table or nil expected, got number)"),
            ("kiri.data.images()", "test.lua:3: bad argument #1 to 'images' (string expected, got nil)"),
            ("kiri.data.images(SCRATCH .. '/five/0.png')", "test.lua:3: bad argument #1 to 'images' ('\(scratch!)/five/0.png' is a file, not a folder)"),
            ("kiri.data.fashion_mnist{split = 'validation'}",
             "test.lua:3: bad argument #1 to 'fashion_mnist' (split must be \"train\" or \"test\", got 'validation')"),
            ("kiri.data.fashion_mnist{root = 1}", "test.lua:3: bad argument #1 to 'fashion_mnist' (root must be a string, got number)"),
            ("kiri.data.fashion_mnist{splits = 'test'}",
             "test.lua:3: bad argument #1 to 'fashion_mnist' (unknown option 'splits'; options: flip, root, split)"),
        ]
        for (call, expected) in cases {
            XCTAssertEqual(failure(open + call), expected, call)
        }
    }
}
