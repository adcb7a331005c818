// swift-tools-version:6.0
// Layers, top to bottom. Arrows point down only:
//   kiri (CLI) → Kiri (engine: model and image bindings) → KiriLua (Lua runtime) → KiriTensor (tensor core) → COpenBLAS
//                                                          KiriLua → LuaBridge (C; every Lua longjmp lives here) → CLua
//                Kiri → KiriModels (model files, networks) → KiriTensor
//                       KiriModels → KiriKernels (C; per-ISA kernels, dispatched at start)
//                Kiri → KiriImage (PNG files, tensors) → PNGBridge (C; every libpng longjmp lives here) → CPNG
//                       KiriImage → KiriTensor
//                Kiri → KiriData (datasets: IDX files, folders of PNGs, seeded batches) → KiriImage, KiriTensor, CZlib
//   kiri (CLI) → KiriServer (HTTP API, job queue, web page; Hummingbird) → Kiri
import PackageDescription

/// Kernels and the Lua call path run per element and per sampler step: dynamic exclusivity checks on
/// class properties cost more there than the work itself (measured with `kiri bench`).
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Kiri",
    products: [
        .executable(name: "kiri", targets: ["kiri"]),
        .library(name: "Kiri", targets: ["Kiri"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        // MARK: System libraries (Debian packages, installed by setup.sh)
        .systemLibrary(name: "CLua", pkgConfig: "lua5.4", providers: [.apt(["liblua5.4-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // MARK: Tensor core: pure Swift, no Lua
        .target(name: "KiriTensor", dependencies: ["COpenBLAS"], swiftSettings: hotPath),

        // MARK: Kernels in C, each instruction set's version chosen at start from CPUID (no build flag needed)
        .target(name: "KiriKernels"),

        // MARK: Model runtime: model files and networks, no Lua
        .target(name: "KiriModels", dependencies: ["KiriTensor", "KiriKernels", "COpenBLAS"], swiftSettings: hotPath),

        // MARK: Image files: PNG through libpng, no Lua
        .target(name: "PNGBridge", dependencies: ["CPNG"]),
        .target(name: "KiriImage", dependencies: ["KiriTensor", "PNGBridge"], swiftSettings: hotPath),

        // MARK: Datasets: gzip'd IDX files through zlib and folders of PNGs, kept as bytes; seeded batches. No Lua
        .target(name: "KiriData", dependencies: ["KiriTensor", "KiriImage", "CZlib"], swiftSettings: hotPath),

        // MARK: Lua runtime
        .target(name: "LuaBridge", dependencies: ["CLua"]),
        // Knows only the tensor core; the engine registers its bindings and preludes into it (LuaLibrary).
        .target(name: "KiriLua", dependencies: ["LuaBridge", "KiriTensor"],
                resources: [.embedInCode("Preludes/sandbox.lua")], swiftSettings: hotPath),

        // MARK: Engine
        .target(name: "Kiri", dependencies: ["KiriLua", "KiriModels", "KiriImage", "KiriData", "KiriTensor"],
                resources: [.copy("Resources/models"), .copy("Resources/clip"), .embedInCode("Bindings/Preludes/models.lua"),
                            .embedInCode("Bindings/Preludes/training.lua"), .embedInCode("Bindings/Preludes/data.lua")]),

        // MARK: Server: `kiri serve`, recipes as jobs over HTTP
        .target(name: "KiriServer",
                dependencies: ["Kiri", "KiriLua", "KiriImage", "KiriTensor",
                               .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                               .product(name: "Logging", package: "swift-log")],
                resources: [.embedInCode("Web/index.html"), .embedInCode("Web/app.js"), .embedInCode("Web/style.css"),
                            .embedInCode("Web/openapi.json")]),

        // MARK: CLI
        .executableTarget(
            name: "kiri",
            dependencies: ["Kiri", "KiriServer", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        // MARK: Tests, one target per layer
        .testTarget(name: "KiriTensorTests", dependencies: ["KiriTensor"]),
        .testTarget(name: "KiriLuaTests", dependencies: ["KiriLua", "KiriTensor"]),
        .testTarget(name: "KiriModelsTests", dependencies: ["KiriModels", "KiriTensor"]),
        .testTarget(name: "KiriImageTests", dependencies: ["KiriImage", "KiriTensor"]),
        .testTarget(name: "KiriDataTests", dependencies: ["KiriData", "KiriImage", "KiriTensor", "CZlib"]),
        .testTarget(name: "KiriTests", dependencies: ["Kiri", "kiri", "KiriLua", "KiriImage", "KiriData", "KiriModels", "KiriTensor"]),
        .testTarget(name: "KiriServerTests", dependencies: ["KiriServer", "Kiri", "KiriImage", "KiriTensor"]),

        // MARK: Fuzzing: seeded mutation of every parser of untrusted bytes, a time budget per target (KIRI_FUZZ_SECONDS)
        .testTarget(name: "KiriFuzzTests", dependencies: ["KiriLua", "KiriModels", "KiriImage", "KiriData", "KiriTensor", "CZlib"]),
    ]
)
