// zlib from Debian's zlib1g-dev (libpng-dev depends on it), for KiriData's gzip'd IDX files. zlib reports errors by
// return codes, never by longjmp, so Swift calls it directly.
#include <zlib.h>
