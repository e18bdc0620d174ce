/* hashkit md5: RFC 1321 MD5, used as a key hash ("md5") and by ketama to
 * place each server's points on the continuum. */
#include <string.h>

#include "hashkit_int.h"

#define MD5_BLOCK_LEN 64

/* K[i] = floor(2^32 * |sin(i + 1)|), RFC 1321 section 3.4. */
static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee,
    0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa,
    0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05,
    0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039,
    0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

/* Left-rotation amounts: four per round, repeated four times each. */
static const uint8_t md5_rot[4][4] = {
    { 7, 12, 17, 22 }, { 5, 9, 14, 20 }, { 4, 11, 16, 23 }, { 6, 10, 15, 21 },
};

static uint32_t md5_rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

/* The round function of step i on (b, c, d), and the message word it uses. */
static uint32_t md5_mix(unsigned i, uint32_t b, uint32_t c, uint32_t d,
                        unsigned *word)
{
    switch (i / 16) {
    case 0:
        *word = i;
        return (b & c) | (~b & d);
    case 1:
        *word = (5 * i + 1) % 16;
        return (d & b) | (~d & c);
    case 2:
        *word = (3 * i + 5) % 16;
        return b ^ c ^ d;
    default:
        *word = (7 * i) % 16;
        return c ^ (b | ~d);
    }
}

/* Folds one 64-byte block into the state. */
static void md5_block(uint32_t st[4], const unsigned char *blk)
{
    uint32_t m[16];
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];

    for (int w = 0; w < 16; w++) {
        m[w] = hashkit_md5_word(blk, w);
    }
    for (unsigned i = 0; i < 64; i++) {
        unsigned word;
        uint32_t f = md5_mix(i, b, c, d, &word);
        uint32_t sum = a + f + md5_k[i] + m[word];

        a = d;
        d = c;
        c = b;
        b += md5_rotl(sum, md5_rot[i / 16][i % 4]);
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

/* Pads the last partial block (0x80, zeros, bit length little-endian) and
 * folds the one or two resulting blocks into the state. */
static void md5_tail(uint32_t st[4], const char *rest, size_t restlen,
                     uint64_t total)
{
    unsigned char buf[2 * MD5_BLOCK_LEN] = { 0 };
    size_t nblk = restlen < MD5_BLOCK_LEN - 8 ? 1 : 2;
    uint64_t bits = total * 8;

    if (restlen > 0) {
        memcpy(buf, rest, restlen);
    }
    buf[restlen] = 0x80;
    for (size_t i = 0; i < 8; i++) {
        buf[nblk * MD5_BLOCK_LEN - 8 + i] = (unsigned char)(bits >> (8 * i));
    }
    for (size_t i = 0; i < nblk; i++) {
        md5_block(st, buf + i * MD5_BLOCK_LEN);
    }
}

void hashkit_md5_digest(const char *key, size_t len,
                        unsigned char digest[HASHKIT_MD5_DIGEST_LEN])
{
    uint32_t st[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };
    size_t off = 0;

    for (; len - off >= MD5_BLOCK_LEN; off += MD5_BLOCK_LEN) {
        md5_block(st, (const unsigned char *)key + off);
    }
    /* Never offset a NULL key (len 0): that alone is undefined in C. */
    md5_tail(st, off < len ? key + off : "", len - off, len);
    for (int w = 0; w < 4; w++) {
        for (int i = 0; i < 4; i++) {
            digest[4 * w + i] = (unsigned char)(st[w] >> (8 * i));
        }
    }
}

/* The key hash: the first digest word, read little-endian. */
uint32_t hashkit_md5(const char *key, size_t len)
{
    unsigned char digest[HASHKIT_MD5_DIGEST_LEN];

    hashkit_md5_digest(key, len, digest);
    return hashkit_md5_word(digest, 0);
}
