/* hashkit murmur: MurmurHash2 (Austin Appleby), seeded the way nutcracker
 * and libmemcached seed it. */
#include "hashkit_int.h"

#define MURMUR_M     UINT32_C(0x5bd1e995)
#define MURMUR_R     24
#define MURMUR_SEED  UINT32_C(0xdeadbeef)

/* Four key bytes as a little-endian word; byte-wise so it needs no
 * alignment and gives the same answer on any endianness (as Debian's
 * "neutral" patch to nutcracker does). */
static uint32_t murmur_word(const char *p)
{
    return hashkit_ubyte(p, 0) | hashkit_ubyte(p, 1) << 8 |
           hashkit_ubyte(p, 2) << 16 | hashkit_ubyte(p, 3) << 24;
}

/* The 0 to 3 bytes after the last whole word. */
static uint32_t murmur_tail(uint32_t h, const char *p, size_t rem)
{
    switch (rem) {
    case 3:
        h ^= hashkit_ubyte(p, 2) << 16;
        /* fall through */
    case 2:
        h ^= hashkit_ubyte(p, 1) << 8;
        /* fall through */
    case 1:
        h ^= hashkit_ubyte(p, 0);
        h *= MURMUR_M;
        break;
    default:
        break;
    }
    return h;
}

uint32_t hashkit_murmur2(const char *key, size_t len, uint32_t seed)
{
    uint32_t h = seed ^ (uint32_t)len;
    size_t i = 0;

    for (; len - i >= 4; i += 4) {
        uint32_t k = murmur_word(key + i);

        k *= MURMUR_M;
        k ^= k >> MURMUR_R;
        k *= MURMUR_M;
        h *= MURMUR_M;
        h ^= k;
    }
    h = murmur_tail(h, key + i, len - i);
    h ^= h >> 13;
    h *= MURMUR_M;
    h ^= h >> 15;
    return h;
}

/* The seed depends on the key length: 0xdeadbeef * len (mod 2^32). */
uint32_t hashkit_murmur(const char *key, size_t len)
{
    return hashkit_murmur2(key, len, MURMUR_SEED * (uint32_t)len);
}
