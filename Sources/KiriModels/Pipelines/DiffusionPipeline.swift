import Foundation
import KiriTensor

/// A model as users have it on disk, loaded: the denoising network and, for a latent text-to-image model, the
/// tokenizer, text encoder and VAE of diffusers' StableDiffusionPipeline (pipeline_stable_diffusion.py). The
/// architecture of each component comes from its config's `_class_name` (`model_index.json` for a folder) or, for
/// a single file, from its keys (SingleFileCheckpoint). Every network reserves its memory against the run's cap
/// before it converts anything.
public final class DiffusionPipeline {
    /// Stable Diffusion's families; nil for a denoising network on its own (pixel-space or class-conditional).
    public enum Family: String, Sendable {
        case sd1, sd2
    }

    public let files: PipelineFiles
    public let family: Family?
    public private(set) var unet: UNet
    public private(set) var textEncoder: CLIPTextModel?
    public let tokenizer: CLIPTokenizer?
    public let vae: AutoencoderKL?
    public let scheduler: SchedulerConfig
    /// The weights' storage dtype (the UNet's file), for `m.info.dtype`.
    public let dtype: DType?
    /// Where the UNet's and the text encoder's weights come from, for LoRAs to be merged into as they are reread.
    private let unetSource: any TensorSource, textSource: (any TensorSource)?
    /// Every LoRA applied so far, summed.
    private var patches = LoRAPatches()

    /// Elements in every network's parameters.
    public var parameterCount: Int { unet.parameterCount + (textEncoder?.parameterCount ?? 0) + (vae?.parameterCount ?? 0) }

    /// Loads `files` (PipelineFiles.locate), with the VAE of `vaeFile` instead of the model's own when given (a
    /// `.safetensors` file, SingleFileCheckpoint.standaloneVAE). `bundledTokenizer` gives the CLIP BPE Kiri ships,
    /// for single files, which carry none (its argument is the pad token). `weights` keeps every network's weights
    /// in that format instead of the file's (q8_0 to halve an f16 model, f32 for an exact LoRA merge).
    public init(files: PipelineFiles, vaeFile: String? = nil, weights format: WeightFormat? = nil,
                bundledTokenizer: (String?) throws -> CLIPTokenizer) throws {
        self.files = files
        func stored(_ source: any TensorSource) -> any TensorSource {
            format.map { ReformattedSource(source, format: $0) } ?? source
        }
        /// The VAE: `vaeFile`'s, or `own` with its config.
        func loadVAE(_ config: AutoencoderKLConfig, _ own: @autoclosure () throws -> any TensorSource) throws -> AutoencoderKL {
            guard let vaeFile else { return try AutoencoderKL(config: config, weights: stored(own())) }
            let standalone = try SingleFileCheckpoint.standaloneVAE(SafetensorsFile(path: vaeFile), fallback: config)
            return try AutoencoderKL(config: standalone.config, weights: stored(standalone.weights))
        }
        switch files.layout {
        case .network(let modelFiles):
            if let vaeFile { throw ModelFileError(vaeFile, "this model has no VAE to replace: it denoises pixels") }
            let weights = try SafetensorsFile(path: modelFiles.weights)
            (unetSource, textSource) = (stored(weights), nil)
            unet = try UNet(config: UNetConfig(path: modelFiles.config), weights: unetSource)
            scheduler = try modelFiles.schedulerConfig.map(SchedulerConfig.init(path:)) ?? SchedulerConfig()
            (textEncoder, tokenizer, vae, family, dtype) = (nil, nil, nil, nil, weights.storageDType)

        case .diffusers(let unetFiles, let vaeFiles, let textFiles, let tokenizerFolder, _):
            let weights = try SafetensorsFile(path: unetFiles.weights)
            let unetConfig = try UNetConfig(path: unetFiles.config)
            let textWeights = try textFiles.map { files throws(ModelFileError) in try SafetensorsFile(path: files.weights) }
            (unetSource, textSource) = (stored(weights), textWeights.map(stored))
            unet = try UNet(config: unetConfig, weights: unetSource)
            scheduler = try unetFiles.schedulerConfig.map(SchedulerConfig.init(path:)) ?? SchedulerConfig()
            dtype = weights.storageDType
            let textConfig = try textFiles.map { files throws(ModelFileError) in try CLIPTextConfig(path: files.config) }
            textEncoder = try textSource.map { weights in try CLIPTextModel(config: textConfig!, weights: weights) }
            vae = try vaeFiles.map { files in
                try loadVAE(AutoencoderKLConfig(path: files.config), try SafetensorsFile(path: files.weights))
            }
            tokenizer = try tokenizerFolder.map { folder throws(ModelFileError) in try CLIPTokenizer(folder: folder) }
            family = Self.family(unetConfig, textConfig)
            try Self.checkComponents(unet: unetConfig, textEncoder: textConfig, tokenizer: tokenizer, vae: vae,
                                     path: files.files[0])

        case .singleFile(let path):
            let checkpoint = try SingleFileCheckpoint(path: path)
            (unetSource, textSource) = (stored(checkpoint.unet), stored(checkpoint.textEncoder))
            unet = try UNet(config: checkpoint.unetConfig, weights: unetSource)
            scheduler = checkpoint.schedulerConfig
            let textConfig = try CLIPTextConfig(json: Self.parse(checkpoint.textEncoderConfigText, path), path: path)
            textEncoder = try CLIPTextModel(config: textConfig, weights: textSource!)
            vae = try loadVAE(AutoencoderKLConfig(json: Self.parse(checkpoint.vaeConfigText, path), path: path), checkpoint.vae)
            // SD2's OpenCLIP tokenizer pads with "!" (id 0), SD1's with its end token (diffusers' tokenizer folders).
            tokenizer = try bundledTokenizer(checkpoint.family == .sd2 ? "!" : nil)
            family = checkpoint.family == .sd2 ? .sd2 : .sd1
            dtype = checkpoint.file.storageDType
        }
    }

    /// Images for `latents` through the VAE (the latents themselves without one). Sampling ends before decoding,
    /// so the UNet's pooled buffers are freed first, and the VAE's after: at 512×512 each holds hundreds of MB that
    /// the other does not use, and a generation's peak is the larger of the two rather than their sum.
    public func decode(_ latents: Tensor) throws -> Tensor {
        guard let vae else { return latents }
        unet.releaseBuffers()
        defer { vae.releaseBuffers() }
        return try vae.decode(latents)
    }

    /// Latents for `images` (the VAE posterior's mean times scaling_factor), freeing buffers as `decode` does.
    public func encode(images: Tensor) throws -> Tensor {
        guard let vae else { return images }
        unet.releaseBuffers()
        defer { vae.releaseBuffers() }
        return try vae.encode(images)
    }

    /// Merges the LoRA in `path` at `scale` into the UNet and the text encoder (LoRAFile: kohya/A1111 and
    /// diffusers/PEFT files), on top of those applied before: both networks are rebuilt from their weights with
    /// every LoRA's update added as they are read. The old networks stay until the new ones are built, so memory
    /// peaks at twice theirs; a LoRA that does not fit this model changes nothing.
    public func applyLoRA(path: String, scale: Float) throws {
        var patches = self.patches
        patches.add(try LoRAFile(path: path).patches(unet: unetSource, textEncoder: textSource, scale: scale))
        unet.releaseBuffers()
        textEncoder?.releaseBuffers()
        let newUNet = try UNet(config: unet.config, weights: LoRAMergedSource(base: unetSource, patches: patches.unet))
        let newTextEncoder = try textEncoder.map { encoder in
            try CLIPTextModel(config: encoder.config, weights: LoRAMergedSource(base: textSource!, patches: patches.textEncoder))
        }
        (unet, textEncoder, self.patches) = (newUNet, newTextEncoder, patches)
    }

    /// SD 2.x's text encoder is OpenCLIP's (GELU, 1024 wide); SD 1.x's OpenAI CLIP (quick GELU, 768 wide).
    static func family(_ unet: UNetConfig, _ textEncoder: CLIPTextConfig?) -> Family? {
        guard let textEncoder, unet.architecture == .unet2DCondition else { return nil }
        return textEncoder.hiddenAct == .gelu ? .sd2 : .sd1
    }

    /// The components must fit together: the text encoder's width is the UNet's context width, the VAE's latent
    /// channels its input channels (4, or 9 for an inpainting UNet that also takes the mask and masked image).
    static func checkComponents(unet: UNetConfig, textEncoder: CLIPTextConfig?, tokenizer: CLIPTokenizer?,
                                vae: AutoencoderKL?, path: String) throws(ModelFileError) {
        if let textEncoder, let width = unet.crossAttentionDim?.first, width != textEncoder.hiddenSize {
            throw ModelFileError(path, "the text encoder is \(textEncoder.hiddenSize) wide but the UNet attends to \(width)-wide contexts (cross_attention_dim)")
        }
        if let tokenizer, let textEncoder, tokenizer.vocabularySize > textEncoder.vocabSize {
            throw ModelFileError(path, "the tokenizer has \(tokenizer.vocabularySize) tokens but the text encoder only \(textEncoder.vocabSize) (vocab_size)")
        }
        if let vae, ![vae.config.latentChannels, 2 * vae.config.latentChannels + 1].contains(unet.inChannels) {
            throw ModelFileError(path, "the VAE's latents have \(vae.config.latentChannels) channels but the UNet takes \(unet.inChannels) (in_channels)")
        }
        if (textEncoder == nil) != (tokenizer == nil) {
            throw ModelFileError(path, "a text encoder needs a tokenizer and a tokenizer a text encoder; this pipeline has only one")
        }
    }

    private static func parse(_ text: String, _ path: String) throws(ModelFileError) -> JSONValue {
        do {
            return try StrictJSONParser.parse(Array(text.utf8))
        } catch {
            throw ModelFileError(path, "inferred config: \(error)")
        }
    }

    // MARK: - What the Lua API and the CLI need

    /// The latent (or pixel) shape of one sample at `width`×`height` image pixels, or the default size: the
    /// UNet's `sample_size` in latent pixels.
    public func sampleShape(width: Int? = nil, height: Int? = nil) throws -> [Int] {
        let factor = vae?.config.downscaleFactor ?? 1
        let channels = vae?.config.latentChannels ?? unet.config.inChannels
        let size = unet.config.sampleSize ?? [64, 64]
        for (name, value) in [("width", width), ("height", height)] {
            if let value, value <= 0 || value % factor != 0 {
                throw TensorError("\(name) must be a positive multiple of \(factor) (the VAE's downscale factor), got \(value)")
            }
        }
        return [channels, height.map { $0 / factor } ?? size[0], width.map { $0 / factor } ?? size[1]]
    }
}
