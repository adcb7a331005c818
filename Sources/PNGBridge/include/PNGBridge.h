// The only door between Swift and libpng.
//
// libpng reports errors by longjmp. A longjmp must never cross a Swift frame, so Swift never sees png.h:
// every libpng call and the setjmp it may jump to live in one C function of png_bridge.c, which returns a
// status and writes a message naming the file. Plain C types only here.
#ifndef KIRI_PNG_BRIDGE_H
#define KIRI_PNG_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    KIRI_PNG_OK = 0,
    KIRI_PNG_ERROR = 1,
    KIRI_PNG_TOO_LARGE = 2,   // the decoded pixels would pass the caller's byte limit
} KiriPNGStatus;

/// The longest side either direction reads or writes (png_set_user_limits).
enum { KIRI_PNG_MAX_SIDE = 1 << 16 };

/// One text chunk as UTF-8 (tEXt and zTXt are Latin-1 in the file; they are converted).
typedef struct {
    const char *key;
    size_t keyLength;
    const char *value;
    size_t valueLength;
} KiriPNGText;

/// What a PNG decodes to: 8-bit channels, interleaved, rows top to bottom.
typedef struct {
    uint32_t width, height;
    int channels;           // 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    size_t byteCount;       // width * height * channels
} KiriPNGHeader;

typedef struct KiriPNGReader KiriPNGReader;
typedef struct KiriPNGTextList KiriPNGTextList;

/// Reads `path`'s text chunks (tEXt, zTXt, iTXt) without libpng and without inflating its image data. Each
/// chunk's declared length is checked against the bytes left in the file before anything is read or
/// allocated for it, every CRC is checked (a bad one drops an ancillary chunk and fails a critical one, as in
/// libpng), and the walk stops at IEND. The text, as read and as inflated, never holds more than `byteLimit`
/// bytes at once; past that the read fails. Messages name the file as `name`. On KIRI_PNG_OK, *list must
/// later go to kiri_png_free_text, and *text points at its *textCount chunks.
KiriPNGStatus kiri_png_read_text(const char *path, const char *name, size_t byteLimit, KiriPNGTextList **list,
                                 const KiriPNGText **text, size_t *textCount, char *error, size_t errorSize);

void kiri_png_free_text(KiriPNGTextList *list);

/// Reads `path`'s text chunks as kiri_png_read_text does, then its header, and sets up the conversion to
/// 8-bit channels (palette and tRNS expanded, 16-bit scaled with png_set_scale_16, low bit depths unpacked,
/// interlacing handled). The text and the decoded pixels share `byteLimit`. libpng itself reads no ancillary
/// chunk but tRNS. Messages name the file as `name`. On KIRI_PNG_OK, *reader must later go to
/// kiri_png_close; on any other status nothing is left open. KIRI_PNG_TOO_LARGE still fills *header, so a
/// caller can say how large.
KiriPNGStatus kiri_png_open(const char *path, const char *name, size_t byteLimit, KiriPNGReader **reader,
                            KiriPNGHeader *header, char *error, size_t errorSize);

/// Decodes the pixels into `pixels` (header.byteCount bytes). Then *text points at the *textCount chunks
/// kiri_png_open read, owned by the reader, valid until kiri_png_close.
KiriPNGStatus kiri_png_decode(KiriPNGReader *reader, uint8_t *pixels, size_t size, const KiriPNGText **text,
                              size_t *textCount, char *error, size_t errorSize);

void kiri_png_close(KiriPNGReader *reader);

/// Encodes an 8-bit image (`channels` 1 to 4, interleaved) with text chunks as a PNG file in memory: on
/// KIRI_PNG_OK, *bytes holds its *size bytes and must later go to kiri_png_free. Each text chunk is tEXt when
/// its value is short Latin-1, zTXt when it is long Latin-1, and iTXt (compressed when long) otherwise. Keys
/// must be PNG keywords: 1 to 79 printable Latin-1 characters. Messages name no file.
KiriPNGStatus kiri_png_encode(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                              const KiriPNGText *text, size_t textCount, uint8_t **bytes, size_t *size, char *error,
                              size_t errorSize);

void kiri_png_free(uint8_t *bytes);

/// 0 if `text` can be written as a text chunk; else 1, with the reason in `error` (no file name).
int kiri_png_text_problem(const KiriPNGText *text, char *error, size_t errorSize);

#endif
