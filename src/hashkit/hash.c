/* hashkit hash: hashkit_hash(), the dispatch from a hash type to its
 * function. */
#include "strata/hashkit.h"

#include "hashkit_int.h"

typedef uint32_t (*hashkit_fn)(const char *key, size_t len);

/* Indexed by enum hashkit_hash; built from the same list as the enum so the
 * two cannot drift apart. */
#define HASHKIT_FN(e, n) [HASHKIT_HASH_##e] = hashkit_##n,
static const hashkit_fn hash_fns[HASHKIT_HASH_COUNT] = {
    HASHKIT_HASH_LIST(HASHKIT_FN)
};
#undef HASHKIT_FN

/*
 * Returns the hash of key[0..len). An unknown `hash` gives 0. Note that
 * nutcracker never hashes an empty key: its router uses 0 as the hash of
 * an empty key, and skips hashing in a pool of one server; that is the
 * router's business, and this function just hashes what it is given.
 */
uint32_t hashkit_hash(enum hashkit_hash hash, const char *key, size_t len)
{
    if ((unsigned)hash >= HASHKIT_HASH_COUNT) {
        return 0;
    }
    return hash_fns[hash](key, len);
}
