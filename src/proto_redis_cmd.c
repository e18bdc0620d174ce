/* proto_redis_cmd: the one table of Redis commands the proxy supports
 * (nutcracker 0.5.0's list, plus INFO and COMMAND, which the proxy
 * answers) and its lookup. The table is sorted by name,
 * so a lookup is a binary search over the lower-cased name: no hashing
 * state, no allocation, about seven comparisons. */

#include <string.h>

#include "strata/proto_redis.h"

/* Longer than any name in the table; longer words are unsupported. */
#define REDIS_CMD_NAME_MAX 24

#define R true    /* read-only: safe on a replica */
#define W false   /* writes, or not clearly read-only */
#define CMD(n, k, m, ro, ar) \
    { n, REDIS_KIND_##k, REDIS_MERGE_##m, ro, ar }

/* name, kind, merge, read-only, arity (Redis style: -n is "at least n").
 * The list and the arities are what nutcracker 0.5.0 accepts, probed
 * command by command with 0..7 arguments: an exact arity where it takes
 * only one count (it closes the connection on any other), "at least the
 * key" where it passes any count on and leaves the check to Redis.
 * Read-only is Redis's own `readonly` flag (COMMAND), except TOUCH, which
 * is only useful on master. Commands that take several keys but that
 * nutcracker sends whole to the server of the first one (EXISTS, SDIFF,
 * SMOVE, ZUNIONSTORE, ...) are KIND_KEY. */
static const struct redis_cmd redis_cmds[] = {
    CMD("append",           KEY,   NONE,  W,   3),
    CMD("auth",             PROXY, NONE,  W,   2),
    CMD("bitcount",         KEY,   NONE,  R,  -2),
    CMD("bitfield",         KEY,   NONE,  W,  -2),
    CMD("bitpos",           KEY,   NONE,  R,  -2),
    CMD("command",          PROXY, NONE,  W,  -1),
    CMD("copy",             KEY,   NONE,  W,  -2),
    CMD("decr",             KEY,   NONE,  W,   2),
    CMD("decrby",           KEY,   NONE,  W,   3),
    CMD("del",              MULTI, SUM,   W,  -2),
    CMD("dump",             KEY,   NONE,  R,   2),
    CMD("eval",             EVAL,  NONE,  W,  -3),
    CMD("evalsha",          EVAL,  NONE,  W,  -3),
    CMD("exists",           KEY,   NONE,  R,  -2),
    CMD("expire",           KEY,   NONE,  W,   3),
    CMD("expireat",         KEY,   NONE,  W,   3),
    CMD("geoadd",           KEY,   NONE,  W,  -2),
    CMD("geodist",          KEY,   NONE,  R,  -2),
    CMD("geohash",          KEY,   NONE,  R,  -2),
    CMD("geopos",           KEY,   NONE,  R,  -2),
    CMD("georadius",        KEY,   NONE,  W,  -2),
    CMD("georadiusbymember", KEY,   NONE,  W,  -2),
    CMD("geosearch",        KEY,   NONE,  R,  -2),
    CMD("geosearchstore",   KEY,   NONE,  W,  -2),
    CMD("get",              KEY,   NONE,  R,   2),
    CMD("getbit",           KEY,   NONE,  R,   3),
    CMD("getdel",           KEY,   NONE,  W,   2),
    CMD("getex",            KEY,   NONE,  W,  -2),
    CMD("getrange",         KEY,   NONE,  R,   4),
    CMD("getset",           KEY,   NONE,  W,   3),
    CMD("hdel",             KEY,   NONE,  W,  -2),
    CMD("hexists",          KEY,   NONE,  R,   3),
    CMD("hget",             KEY,   NONE,  R,   3),
    CMD("hgetall",          KEY,   NONE,  R,   2),
    CMD("hincrby",          KEY,   NONE,  W,   4),
    CMD("hincrbyfloat",     KEY,   NONE,  W,   4),
    CMD("hkeys",            KEY,   NONE,  R,   2),
    CMD("hlen",             KEY,   NONE,  R,   2),
    CMD("hmget",            KEY,   NONE,  R,  -2),
    CMD("hmset",            KEY,   NONE,  W,  -2),
    CMD("hrandfield",       KEY,   NONE,  R,  -2),
    CMD("hscan",            KEY,   NONE,  R,  -2),
    CMD("hset",             KEY,   NONE,  W,  -2),
    CMD("hsetnx",           KEY,   NONE,  W,   4),
    CMD("hstrlen",          KEY,   NONE,  R,   3),
    CMD("hvals",            KEY,   NONE,  R,   2),
    CMD("incr",             KEY,   NONE,  W,   2),
    CMD("incrby",           KEY,   NONE,  W,   3),
    CMD("incrbyfloat",      KEY,   NONE,  W,   3),
    CMD("info",             PROXY, NONE,  W,  -1),
    CMD("lindex",           KEY,   NONE,  R,   3),
    CMD("linsert",          KEY,   NONE,  W,   5),
    CMD("llen",             KEY,   NONE,  R,   2),
    CMD("lmove",            KEY,   NONE,  W,   5),
    CMD("lpop",             KEY,   NONE,  W,  -2),
    CMD("lpos",             KEY,   NONE,  R,  -2),
    CMD("lpush",            KEY,   NONE,  W,  -2),
    CMD("lpushx",           KEY,   NONE,  W,  -2),
    CMD("lrange",           KEY,   NONE,  R,   4),
    CMD("lrem",             KEY,   NONE,  W,   4),
    CMD("lset",             KEY,   NONE,  W,   4),
    CMD("ltrim",            KEY,   NONE,  W,   4),
    CMD("mget",             MULTI, ARRAY, R,  -2),
    CMD("mset",             PAIRS, OK,    W,  -3),
    CMD("persist",          KEY,   NONE,  W,   2),
    CMD("pexpire",          KEY,   NONE,  W,   3),
    CMD("pexpireat",        KEY,   NONE,  W,   3),
    CMD("pfadd",            KEY,   NONE,  W,  -2),
    CMD("pfcount",          KEY,   NONE,  R,  -2),
    CMD("pfmerge",          KEY,   NONE,  W,  -2),
    CMD("ping",             PROXY, NONE,  W,   1),
    CMD("psetex",           KEY,   NONE,  W,   4),
    CMD("pttl",             KEY,   NONE,  R,   2),
    CMD("quit",             PROXY, NONE,  W,  -1),
    CMD("restore",          KEY,   NONE,  W,  -2),
    CMD("rpop",             KEY,   NONE,  W,  -2),
    CMD("rpoplpush",        KEY,   NONE,  W,   3),
    CMD("rpush",            KEY,   NONE,  W,  -2),
    CMD("rpushx",           KEY,   NONE,  W,  -2),
    CMD("sadd",             KEY,   NONE,  W,  -2),
    CMD("scard",            KEY,   NONE,  R,   2),
    CMD("sdiff",            KEY,   NONE,  R,  -2),
    CMD("sdiffstore",       KEY,   NONE,  W,  -2),
    CMD("set",              KEY,   NONE,  W,  -2),
    CMD("setbit",           KEY,   NONE,  W,   4),
    CMD("setex",            KEY,   NONE,  W,   4),
    CMD("setnx",            KEY,   NONE,  W,   3),
    CMD("setrange",         KEY,   NONE,  W,   4),
    CMD("sinter",           KEY,   NONE,  R,  -2),
    CMD("sinterstore",      KEY,   NONE,  W,  -2),
    CMD("sismember",        KEY,   NONE,  R,   3),
    CMD("smembers",         KEY,   NONE,  R,   2),
    CMD("smismember",       KEY,   NONE,  R,  -2),
    CMD("smove",            KEY,   NONE,  W,   4),
    CMD("sort",             KEY,   NONE,  W,  -2),
    CMD("spop",             KEY,   NONE,  W,  -2),
    CMD("srandmember",      KEY,   NONE,  R,  -2),
    CMD("srem",             KEY,   NONE,  W,  -2),
    CMD("sscan",            KEY,   NONE,  R,  -2),
    CMD("strlen",           KEY,   NONE,  R,   2),
    CMD("sunion",           KEY,   NONE,  R,  -2),
    CMD("sunionstore",      KEY,   NONE,  W,  -2),
    CMD("touch",            MULTI, SUM,   W,  -2),
    CMD("ttl",              KEY,   NONE,  R,   2),
    CMD("type",             KEY,   NONE,  R,   2),
    CMD("unlink",           MULTI, SUM,   W,  -2),
    CMD("zadd",             KEY,   NONE,  W,  -2),
    CMD("zcard",            KEY,   NONE,  R,   2),
    CMD("zcount",           KEY,   NONE,  R,   4),
    CMD("zdiff",            KEY,   NONE,  R,  -2),
    CMD("zdiffstore",       KEY,   NONE,  W,  -2),
    CMD("zincrby",          KEY,   NONE,  W,   4),
    CMD("zinter",           KEY,   NONE,  R,  -2),
    CMD("zinterstore",      KEY,   NONE,  W,  -2),
    CMD("zlexcount",        KEY,   NONE,  R,   4),
    CMD("zmscore",          KEY,   NONE,  R,  -2),
    CMD("zpopmax",          KEY,   NONE,  W,  -2),
    CMD("zpopmin",          KEY,   NONE,  W,  -2),
    CMD("zrandmember",      KEY,   NONE,  R,  -2),
    CMD("zrange",           KEY,   NONE,  R,  -2),
    CMD("zrangebylex",      KEY,   NONE,  R,  -2),
    CMD("zrangebyscore",    KEY,   NONE,  R,  -2),
    CMD("zrangestore",      KEY,   NONE,  W,  -2),
    CMD("zrank",            KEY,   NONE,  R,   3),
    CMD("zrem",             KEY,   NONE,  W,  -2),
    CMD("zremrangebylex",   KEY,   NONE,  W,   4),
    CMD("zremrangebyrank",  KEY,   NONE,  W,   4),
    CMD("zremrangebyscore", KEY,   NONE,  W,   4),
    CMD("zrevrange",        KEY,   NONE,  R,  -2),
    CMD("zrevrangebylex",   KEY,   NONE,  R,  -2),
    CMD("zrevrangebyscore", KEY,   NONE,  R,  -2),
    CMD("zrevrank",         KEY,   NONE,  R,   3),
    CMD("zscan",            KEY,   NONE,  R,  -2),
    CMD("zscore",           KEY,   NONE,  R,   3),
    CMD("zunion",           KEY,   NONE,  R,  -2),
    CMD("zunionstore",      KEY,   NONE,  W,  -2),
};

#undef CMD
#undef W
#undef R

#define REDIS_NCMDS (sizeof(redis_cmds) / sizeof(redis_cmds[0]))

const struct redis_cmd *
redis_cmd_table(size_t *n)
{
    *n = REDIS_NCMDS;
    return redis_cmds;
}

/* strcmp of name[0..len) (lower case, no NUL) against a table name. */
static int
redis_cmd_compare(const char *name, size_t len, const char *entry)
{
    size_t elen = strlen(entry);
    int c = memcmp(name, entry, len < elen ? len : elen);

    if (c != 0)
        return c;
    return len < elen ? -1 : len > elen;
}

const struct redis_cmd *
redis_cmd_lookup(const char *name, size_t len)
{
    char low[REDIS_CMD_NAME_MAX];
    size_t lo = 0, hi = REDIS_NCMDS;

    if (len == 0 || len > sizeof(low))
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        low[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = redis_cmd_compare(low, len, redis_cmds[mid].name);

        if (c == 0)
            return &redis_cmds[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
