/* hashkit fnv: the four Fowler-Noll-Vo variants nutcracker offers. */
#include "hashkit_int.h"

#define FNV32_BASIS  UINT32_C(0x811c9dc5)
#define FNV32_PRIME  UINT32_C(0x01000193)
#define FNV64_BASIS  UINT64_C(0xcbf29ce484222325)
#define FNV64_PRIME  UINT64_C(0x00000100000001b3)

/*
 * Only the low 32 bits of the 64-bit variants reach the caller, and the low
 * 32 bits of a product depend only on the low 32 bits of its factors. So
 * fnv1_64 and fnv1a_64 are computed here in 32-bit arithmetic with the low
 * words of the 64-bit basis and prime: the result is the low word of true
 * FNV-1/FNV-1a 64 (nutcracker itself computes fnv1a_64 this way).
 *
 * Key bytes are sign-extended (see hashkit_sbyte), as nutcracker does; for
 * bytes < 0x80 these are the published FNV functions.
 */
#define FNV64_BASIS_LO ((uint32_t)FNV64_BASIS)
#define FNV64_PRIME_LO ((uint32_t)FNV64_PRIME)

/* FNV-1: multiply, then xor the byte in. */
static uint32_t fnv1(const char *key, size_t len, uint32_t h, uint32_t prime)
{
    for (size_t i = 0; i < len; i++) {
        h *= prime;
        h ^= hashkit_sbyte(key[i]);
    }
    return h;
}

/* FNV-1a: xor the byte in, then multiply. */
static uint32_t fnv1a(const char *key, size_t len, uint32_t h, uint32_t prime)
{
    for (size_t i = 0; i < len; i++) {
        h ^= hashkit_sbyte(key[i]);
        h *= prime;
    }
    return h;
}

uint32_t hashkit_fnv1_64(const char *key, size_t len)
{
    return fnv1(key, len, FNV64_BASIS_LO, FNV64_PRIME_LO);
}

uint32_t hashkit_fnv1a_64(const char *key, size_t len)
{
    return fnv1a(key, len, FNV64_BASIS_LO, FNV64_PRIME_LO);
}

uint32_t hashkit_fnv1_32(const char *key, size_t len)
{
    return fnv1(key, len, FNV32_BASIS, FNV32_PRIME);
}

uint32_t hashkit_fnv1a_32(const char *key, size_t len)
{
    return fnv1a(key, len, FNV32_BASIS, FNV32_PRIME);
}
