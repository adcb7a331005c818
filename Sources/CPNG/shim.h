// libpng 1.6 from Debian's libpng-dev, for the C bridge (Sources/PNGBridge) only. libpng reports errors
// by longjmp, so Swift never imports this module: every libpng call and its setjmp stay in png_bridge.c,
// and Swift reaches it through PNGBridge.h's plain C functions.
#include <png.h>
