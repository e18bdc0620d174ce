/* fuzz_conf_yaml: libFuzzer harness for the pool-file loader
 * (conf_yaml_load). The input is a pool file. The loader must accept or
 * refuse it without a sanitizer finding or a leak; on refusal *out is NULL
 * and err holds a message; on success every pool has a name and a listen
 * address, and the result is destroyed again. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "strata/conf.h"
#include "fuzz_memfd.h"
#include "fuzz_split.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    char path[64], err[512];
    struct conf *conf = (struct conf *)1;
    int fd = fuzz_memfd(d, n, path, sizeof(path));

    memset(err, 0, sizeof(err));
    if (conf_yaml_load(path, &conf, err, sizeof(err)) != 0) {
        FUZZ_CHECK(conf == NULL);
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
    } else {
        FUZZ_CHECK(conf != NULL);
        for (uint32_t i = 0; i < conf->npools; i++)
            FUZZ_CHECK(conf->pools[i].name != NULL);
        conf_destroy(&conf);
        FUZZ_CHECK(conf == NULL);
    }
    close(fd);
    return 0;
}
