/* hashkit one_at_a_time: Bob Jenkins' one-at-a-time hash, as nutcracker
 * (and libmemcached) compute it. */
#include "hashkit_int.h"

/*
 * Each byte is added to the state, then spread over it with a shift-add and
 * a shift-xor; three final steps mix the last bytes into the high bits.
 * Bytes are sign-extended (see hashkit_sbyte): for ASCII keys this is the
 * textbook hash, for bytes >= 0x80 it is what nutcracker computes.
 */
uint32_t hashkit_one_at_a_time(const char *key, size_t len)
{
    uint32_t h = 0;

    for (size_t i = 0; i < len; i++) {
        h += hashkit_sbyte(key[i]);
        h += h << 10;
        h ^= h >> 6;
    }
    h += h << 3;
    h ^= h >> 11;
    h += h << 15;
    return h;
}
