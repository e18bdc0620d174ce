/* hashkit hsieh: Paul Hsieh's SuperFastHash in the libmemcached variant
 * nutcracker uses (initial state 0, not the key length). */
#include "hashkit_int.h"

/* Two key bytes as a little-endian 16-bit value. */
static uint32_t hsieh_get16(const char *p)
{
    return hashkit_ubyte(p, 0) | hashkit_ubyte(p, 1) << 8;
}

/* Mixes in the 1 to 3 bytes left after the 4-byte blocks. */
static uint32_t hsieh_tail(uint32_t h, const char *p, size_t rem)
{
    switch (rem) {
    case 3:
        h += hsieh_get16(p);
        h ^= h << 16;
        /* The one byte nutcracker reads as signed char: for a byte
         * >= 0x80 the sign bits land in the top of the word. */
        h ^= hashkit_sbyte(p[2]) << 18;
        h += h >> 11;
        break;
    case 2:
        h += hsieh_get16(p);
        h ^= h << 11;
        h += h >> 17;
        break;
    case 1:
        h += hashkit_ubyte(p, 0);
        h ^= h << 10;
        h += h >> 1;
        break;
    default:
        break;
    }
    return h;
}

/* The final avalanche, so the last bytes reach every output bit. */
static uint32_t hsieh_avalanche(uint32_t h)
{
    h ^= h << 3;
    h += h >> 5;
    h ^= h << 4;
    h += h >> 17;
    h ^= h << 25;
    h += h >> 6;
    return h;
}

uint32_t hashkit_hsieh(const char *key, size_t len)
{
    uint32_t h = 0;
    size_t i = 0;

    if (len == 0) {
        return 0;       /* nutcracker skips the avalanche for empty keys */
    }
    for (; len - i >= 4; i += 4) {
        h += hsieh_get16(key + i);
        h = (h << 16) ^ (hsieh_get16(key + i + 2) << 11) ^ h;
        h += h >> 11;
    }
    return hsieh_avalanche(hsieh_tail(h, key + i, len - i));
}
