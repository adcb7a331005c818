import KiriImage
import KiriTensor

/// A cheap picture of a sampler's denoised estimate, for live progress: no VAE runs. Stable Diffusion's 4-channel
/// latents go through a linear latent → RGB map, as ComfyUI's Latent2RGBPreviewer does (comfy/latent_formats.py
/// SD15, which SD 2.x shares: the same VAE), at the latent's own size; a pixel-space model's estimate is its image.
/// Only the batch's first image is shown.
enum LatentPreview {
    /// ComfyUI's SD15 latent_rgb_factors: row c gives latent channel c's share of R, G and B.
    static let sdFactors: [[Float]] = [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]

    /// Larger estimates are not previewed: a preview is per step and must stay cheap.
    static let maxPixels = 1 << 20

    /// A PNG of `denoised` [B, C, H, W], or nil when it is not an image-shaped tensor: x in [-1, 1] shown as
    /// (x + 1) / 2, as ComfyUI does, and written as any image tensor is (PNGImage(tensor:)).
    static func png(_ denoised: Tensor) -> [UInt8]? {
        guard !denoised.isReleased, denoised.rank == 4, denoised.shape[0] >= 1 else { return nil }
        let (channels, height, width) = (denoised.shape[1], denoised.shape[2], denoised.shape[3])
        guard [1, 3, 4].contains(channels), height > 0, width > 0, height * width <= maxPixels,
              let image = try? Tensor(shape: [channels == 4 ? 3 : channels, height, width]) else { return nil }
        let plane = height * width
        let (input, output) = (denoised.data, image.data)
        for colour in 0..<image.shape[0] {
            for pixel in 0..<plane {
                let value = channels == 4 ? (0..<4).reduce(Float(0)) { $0 + input[$1 * plane + pixel] * sdFactors[$1][colour] }
                    : input[colour * plane + pixel]
                output[colour * plane + pixel] = (value + 1) / 2
            }
        }
        return try? PNGImage(tensor: image).encoded()
    }
}
