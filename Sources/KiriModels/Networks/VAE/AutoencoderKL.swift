import Foundation
import KiriTensor

/// diffusers' AutoencoderKL (models/autoencoders/autoencoder_kl.py), built from its config with every module at
/// the key diffusers saves it under:
///   encode: moments = quant_conv(encoder(x)); latents = (mean - shift_factor) · scaling_factor
///   decode: image = decoder(post_quant_conv(latents / scaling_factor + shift_factor))
/// with the pipelines' latent scaling folded in, so a sampler's latents go in and out as they are. Encoding returns
/// the posterior's mean (`latent_dist.mode()`): a sample would add noise the caller can add itself. Large images
/// run in overlapping tiles blended together (`tiling`), as diffusers' enable_tiling, so that the activations
/// scale with the tile rather than the image. Parameters are float32; one pass runs at a time.
public final class AutoencoderKL {
    /// When encode and decode split the image into tiles, each run through the network alone and blended into its
    /// neighbours over a quarter of the tile (diffusers' tiled_encode / tiled_decode). A tiled result differs from
    /// the untiled one near the seams, so small images never tile.
    public enum Tiling: Sendable, Equatable {
        /// Tiles an image of more than `automaticTilingPixels`, or one whose untiled pass does not fit in what the
        /// run's memory cap leaves.
        case automatic
        /// diffusers' `enable_tiling()`.
        case enabled
        /// diffusers' default.
        case disabled
    }

    public let config: AutoencoderKLConfig
    /// Elements in the parameters the network uses.
    public let parameterCount: Int
    /// Set before a pass, not during one; a tiled pass is used only when a side of the image exceeds the tile.
    public var tiling = Tiling.automatic
    /// Above this many image pixels `.automatic` tiles: 2 Mi, so SD's 512² to 1024×1536 and SDXL's 1024² run
    /// untiled, as diffusers runs them by default.
    public var automaticTilingPixels = 1 << 21
    /// The side of a tile in image pixels (diffusers' tile_sample_min_size; a tile is `tileSampleSize /
    /// downscaleFactor` latent pixels). Defaults to the config's sample_size, as diffusers; it must be a multiple
    /// of 4 · downscaleFactor so that tiles overlap by whole latent pixels and their kept parts abut exactly.
    public var tileSampleSize: Int
    /// diffusers' tile_overlap_factor: neighbouring tiles share a quarter of a tile, blended linearly.
    public static let tileOverlapFactor = 0.25

    private let encoder: VAEEncoder
    private let decoder: VAEDecoder
    private let quantConv: Conv2d?
    private let postQuantConv: Conv2d?
    private let workspace = Workspace()
    private let lock = NSLock()

    /// Reads every tensor the config implies from `weights` with its exact shape (security case 31); a missing or
    /// misshapen tensor is a ModelFileError naming its key. The mid-block attentions may use diffusers' older names
    /// (`query`, `key`, `value`, `proj_attn`). A network too large for the run's memory cap is refused before
    /// anything is converted (security case 36).
    public init(config: AutoencoderKLConfig, weights file: any TensorSource) throws {
        try reserveLoading(loadingBytes(file), of: "the network", from: file)
        self.config = config
        let weights = WeightReader(file)
        encoder = try VAEEncoder(weights, config: config)
        decoder = try VAEDecoder(weights, config: config)
        let latent = config.latentChannels
        quantConv = config.useQuantConv ? try Conv2d(weights, "quant_conv", 2 * latent, 2 * latent, kernel: 1) : nil
        postQuantConv = config.usePostQuantConv ? try Conv2d(weights, "post_quant_conv", latent, latent, kernel: 1) : nil
        parameterCount = weights.parameterCount
        let step = 4 * config.downscaleFactor
        tileSampleSize = max(step, config.sampleSize[0] / step * step)
    }

    /// Latents [B, latent_channels, H/f, W/f] for images [B, in_channels, H, W] in [-1, 1], where f is
    /// `config.downscaleFactor` (8 for Stable Diffusion) and H and W are multiples of it. Memory and
    /// cancellation as `UNet.forward`.
    public func encode(_ images: Tensor) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        let factor = config.downscaleFactor
        try checkInput(images, channels: config.inChannels, what: "images")
        let (batch, height, width) = (images.shape[0], images.shape[2], images.shape[3])
        guard height % factor == 0, width % factor == 0 else {
            throw TensorError(argument: 1, "images' height and width must be multiples of \(factor) (the VAE's downscale factor), got \(shapeString(images.shape))")
        }
        let latentShape = [batch, config.latentChannels, height / factor, width / factor]
        return try run(images, outputShape: latentShape, imageHeight: height, imageWidth: width,
                       channels: config.blockOutChannels[0]) { tiled in
            let result = try Tensor(shape: latentShape)
            try withTiles(images.data, images.shape, into: result, tiled: tiled, tileIn: tileSampleSize,
                          tileOut: tileSampleSize / factor, encodeTile)
            let scale = Vector(repeating: Float(config.scalingFactor)), shift = Vector(repeating: Float(config.shiftFactor ?? 0))
            vectorMap(result.data, result.data, result.count) { ($0 - shift) * scale }
            return result
        }
    }

    /// Images [B, out_channels, f·h, f·w], about [-1, 1], for latents [B, latent_channels, h, w] as `encode` gives.
    public func decode(_ latents: Tensor) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        let factor = config.downscaleFactor
        try checkInput(latents, channels: config.latentChannels, what: "latents")
        let (batch, height, width) = (latents.shape[0], latents.shape[2], latents.shape[3])
        // A tensor's sides are at most Tensor.maxElements, and the factor at most 2^7: no overflow.
        let imageShape = [batch, config.outChannels, height * factor, width * factor]
        return try run(latents, outputShape: imageShape, imageHeight: height * factor, imageWidth: width * factor,
                       channels: config.blockOutChannels.prefix(2).max()!) { tiled in
            let z = try workspace.take(latents.shape)
            let scale = Vector(repeating: Float(config.scalingFactor)), shift = Vector(repeating: Float(config.shiftFactor ?? 0))
            vectorMap(z.data, latents.data, z.count) { $0 / scale + shift }
            let result = try Tensor(shape: imageShape)
            try withTiles(z.data, z.shape, into: result, tiled: tiled, tileIn: tileSampleSize / factor, tileOut: tileSampleSize,
                          decodeTile)
            return result
        }
    }

    /// Frees the pooled intermediate storage (the next call allocates it again).
    public func releaseBuffers() {
        lock.lock()
        defer { lock.unlock() }
        workspace.trim()
    }

    // MARK: Passes

    /// The posterior's mean [B, latent, h/f, w/f] for an image tile: quant_conv's first half of the moments.
    private func encodeTile(_ x: Buffer) throws -> Buffer {
        var moments = try encoder(x, workspace)
        if let quantConv { moments = try quantConv(moments, workspace) }
        let latent = config.latentChannels
        let mean = try workspace.take([x.batch, latent, moments.height, moments.width])
        let count = latent * mean.spatial
        for b in 0..<x.batch { (mean.data + b * count).update(from: moments.data + 2 * b * count, count: count) }
        return mean
    }

    private func decodeTile(_ z: Buffer) throws -> Buffer {
        let input = try postQuantConv.map { try $0(z, workspace) } ?? z
        let factor = config.downscaleFactor
        let out = try workspace.take([z.batch, config.outChannels, factor * z.height, factor * z.width])
        try decoder.forward(into: out.data, input, workspace)
        return out
    }

    /// Decides on tiling, checks the memory the pass needs, and runs `body(tiled)` with the kernels' threading and
    /// out-of-memory handling of `UNet.forward`.
    private func run(_ input: Tensor, outputShape: [Int], imageHeight: Int, imageWidth: Int, channels: Int,
                     _ body: (Bool) throws -> Tensor) throws -> Tensor {
        let tileSide = tileSampleSize, step = 4 * config.downscaleFactor
        let larger = imageHeight > tileSide || imageWidth > tileSide
        let batch = input.shape[0]
        let whole = passBytes(batch: batch, height: imageHeight, width: imageWidth, channels: channels, input: input, outputShape: outputShape)
        let tiled: Bool
        switch tiling {
        case .disabled: tiled = false
        case .enabled: tiled = larger
        case .automatic:
            let (pixels, overflow) = imageHeight.multipliedReportingOverflow(by: imageWidth)
            tiled = larger && (overflow || pixels > automaticTilingPixels
                               || memoryLeft(ifShortOf: whole, reusable: workspace.freeBytes) != nil)
        }
        if tiled, tileSide < step || tileSide % step != 0 {
            throw TensorError("tileSampleSize (\(tileSide)) must be a positive multiple of \(step) (4 × the VAE's downscale factor)")
        }
        let bytes = tiled ? passBytes(batch: batch, height: min(tileSide, imageHeight), width: min(tileSide, imageWidth),
                                      channels: channels, input: input, outputShape: outputShape) : whole
        if let left = memoryLeft(ifShortOf: bytes, reusable: workspace.freeBytes) {
            throw TensorError(argument: 1, "input of shape \(shapeString(input.shape)) needs at least \(describeBytes(bytes)) for the "
                + "network's activations\(tiled ? " in tiles of \(tileSide)²" : ""), but the run has \(left)")
        }
        do {
            let result = try SingleThreadedBLAS.run { try body(tiled) }
            try Cancellation.current?.check()
            return result
        } catch {
            workspace.trim()
            guard error as? TensorError == .outOfMemory else { throw error }
            throw TensorError(argument: 1, "input of shape \(shapeString(input.shape)) needs more memory for the network's activations "
                + "than the run has: \(memoryLeft(ifShortOf: Int.max) ?? "the system refused it")")
        }
    }

    /// Bytes a pass over an image (or tile) of `height` × `width` holds at once, at least (Int.max on overflow): two
    /// activations of `channels` at full resolution (a ResNet's input and its norm's output; in the decoder, the
    /// last up-sampler's input and output), the input, and the output.
    private func passBytes(batch: Int, height: Int, width: Int, channels: Int, input: Tensor, outputShape: [Int]) -> Int {
        let shapes = [[2, batch, channels, height, width], input.shape, outputShape]
        var total = 0
        for shape in shapes {
            guard let count = elementCount(shape + [MemoryLayout<Float>.stride]) else { return Int.max }
            let (sum, overflow) = total.addingReportingOverflow(count)
            guard !overflow else { return Int.max }
            total = sum
        }
        return total
    }

    /// Runs `network` on `input` [B, C, H, W] whole, or in tiles of `tileIn` every ¾ tile as diffusers'
    /// tiled_decode / _tiled_encode: each result of `tileOut` per tile blended into the one above and the one to
    /// its left over a quarter tile (blend_v, blend_h), and its top-left ¾ tile kept. Only the previous row of
    /// tiles is held, so memory grows with the image's width, not its area.
    private func withTiles(_ input: UnsafePointer<Float>, _ shape: [Int], into result: Tensor, tiled: Bool, tileIn: Int, tileOut: Int,
                           _ network: (Buffer) throws -> Buffer) throws {
        let (batch, channels, height, width) = (shape[0], shape[1], shape[2], shape[3])
        let (outChannels, outHeight, outWidth) = (result.shape[1], result.shape[2], result.shape[3])
        func window(top: Int, left: Int, rows: Int, columns: Int) throws -> Buffer {
            let buffer = try workspace.take([batch, channels, rows, columns])
            copyWindowForward(buffer.data, outHeight: rows, outWidth: columns, outTop: 0, outLeft: 0, input, height: height, width: width,
                              top: top, left: left, planes: batch * channels, rows: rows, columns: columns)
            return buffer
        }
        func keep(_ tile: Buffer, top: Int, left: Int, rows: Int, columns: Int) {
            copyWindowForward(result.data, outHeight: outHeight, outWidth: outWidth, outTop: top, outLeft: left, tile.data,
                              height: tile.height, width: tile.width, top: 0, left: 0, planes: batch * outChannels, rows: rows,
                              columns: columns)
        }
        guard tiled else {
            let out = try network(try window(top: 0, left: 0, rows: height, columns: width))
            keep(out, top: 0, left: 0, rows: outHeight, columns: outWidth)
            return
        }
        let overlap = Int(Double(tileIn) * (1 - Self.tileOverlapFactor))
        let blendExtent = Int(Double(tileOut) * Self.tileOverlapFactor), rowLimit = tileOut - blendExtent
        let planes = batch * outChannels
        var above: [Buffer] = []
        for (i, top) in stride(from: 0, to: height, by: overlap).enumerated() {
            var row: [Buffer] = []
            for (j, left) in stride(from: 0, to: width, by: overlap).enumerated() {
                let tile = try network(try window(top: top, left: left, rows: min(tileIn, height - top), columns: min(tileIn, width - left)))
                if i > 0 {
                    let a = above[j]
                    blendVerticalForward(tile.data, a.data, planes: planes, aHeight: a.height, height: tile.height, width: tile.width,
                                         extent: min(a.height, tile.height, blendExtent))
                }
                if j > 0 {
                    let a = row[j - 1]
                    blendHorizontalForward(tile.data, a.data, planes: planes, height: tile.height, aWidth: a.width, width: tile.width,
                                           extent: min(a.width, tile.width, blendExtent))
                }
                keep(tile, top: i * rowLimit, left: j * rowLimit, rows: min(rowLimit, tile.height), columns: min(rowLimit, tile.width))
                row.append(tile)
            }
            above = row
        }
    }

    private func checkInput(_ x: Tensor, channels: Int, what: String) throws {
        guard !x.isReleased else { throw TensorError(argument: 1, "tensor has been released") }
        guard x.rank == 4, x.shape[1] == channels, x.shape[0] > 0, x.shape[2] > 0, x.shape[3] > 0 else {
            throw TensorError(argument: 1, "expected \(what) [batch, \(channels), height, width], got \(shapeString(x.shape))")
        }
    }
}
