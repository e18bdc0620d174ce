/* hashkit names: the pool-file spelling of each hash and distribution. */
#include <string.h>

#include "strata/hashkit.h"

#define HASHKIT_NAME(e, n) #n,
static const char *const hash_names[] = { HASHKIT_HASH_LIST(HASHKIT_NAME) };
static const char *const dist_names[] = { HASHKIT_DIST_LIST(HASHKIT_NAME) };
#undef HASHKIT_NAME

const char *hashkit_hash_name(enum hashkit_hash hash)
{
    return (unsigned)hash < HASHKIT_HASH_COUNT ? hash_names[hash] : "unknown";
}

bool hashkit_hash_parse(const char *name, enum hashkit_hash *out)
{
    for (unsigned i = 0; i < HASHKIT_HASH_COUNT; i++) {
        if (strcmp(name, hash_names[i]) == 0) {
            *out = (enum hashkit_hash)i;
            return true;
        }
    }
    return false;
}

const char *hashkit_dist_name(enum hashkit_dist dist)
{
    return (unsigned)dist < HASHKIT_DIST_COUNT ? dist_names[dist] : "unknown";
}

bool hashkit_dist_parse(const char *name, enum hashkit_dist *out)
{
    for (unsigned i = 0; i < HASHKIT_DIST_COUNT; i++) {
        if (strcmp(name, dist_names[i]) == 0) {
            *out = (enum hashkit_dist)i;
            return true;
        }
    }
    return false;
}
