/* hashkit crc: crc16, crc32 and crc32a as nutcracker computes them. */
#include "hashkit_int.h"

/*
 * Both CRCs are linear over GF(2): the table entry for byte b is the xor of
 * the entries for its high and low nibbles. So two 16-entry tables per CRC
 * replace the usual 256-entry one, at the cost of one more lookup.
 */

/* CRC-16/XMODEM (polynomial 0x1021, MSB first), entries for n and n << 4. */
static const uint16_t crc16_lo[16] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
};
static const uint16_t crc16_hi[16] = {
    0x0000, 0x1231, 0x2462, 0x3653, 0x48c4, 0x5af5, 0x6ca6, 0x7e97,
    0x9188, 0x83b9, 0xb5ea, 0xa7db, 0xd94c, 0xcb7d, 0xfd2e, 0xef1f,
};

/* CRC-32 (reflected polynomial 0xedb88320), entries for n and n << 4. */
static const uint32_t crc32_lo[16] = {
    0x00000000, 0x77073096, 0xee0e612c, 0x990951ba,
    0x076dc419, 0x706af48f, 0xe963a535, 0x9e6495a3,
    0x0edb8832, 0x79dcb8a4, 0xe0d5e91e, 0x97d2d988,
    0x09b64c2b, 0x7eb17cbd, 0xe7b82d07, 0x90bf1d91,
};
static const uint32_t crc32_hi[16] = {
    0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
    0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
    0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
    0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

static uint32_t crc16_entry(uint32_t b)
{
    return (uint32_t)crc16_lo[b & 0xf] ^ (uint32_t)crc16_hi[b >> 4];
}

static uint32_t crc32_entry(uint32_t b)
{
    return crc32_lo[b & 0xf] ^ crc32_hi[b >> 4];
}

/*
 * nutcracker's crc16 runs the XMODEM update in a 32-bit register that is
 * never cut back to 16 bits: the low 16 bits are CRC-16/XMODEM, and the
 * bits shifted out above them stay in the result. Kept that way on
 * purpose, since it decides where keys go.
 */
uint32_t hashkit_crc16(const char *key, size_t len)
{
    uint32_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        uint32_t b = ((crc >> 8) ^ hashkit_ubyte(key, i)) & 0xff;

        crc = (crc << 8) ^ crc16_entry(b);
    }
    return crc;
}

/* The standard reflected CRC-32 register, before the final inversion. */
static uint32_t crc32_register(const char *key, size_t len)
{
    uint32_t crc = UINT32_MAX;

    for (size_t i = 0; i < len; i++) {
        crc = (crc >> 8) ^ crc32_entry((crc ^ hashkit_ubyte(key, i)) & 0xff);
    }
    return crc;
}

/* libmemcached's "crc32": bits 16..30 of the standard CRC-32, so the
 * value is below 0x8000. */
uint32_t hashkit_crc32(const char *key, size_t len)
{
    return (~crc32_register(key, len) >> 16) & 0x7fff;
}

/* The standard CRC-32 (as zlib, Ethernet). */
uint32_t hashkit_crc32a(const char *key, size_t len)
{
    return ~crc32_register(key, len);
}
