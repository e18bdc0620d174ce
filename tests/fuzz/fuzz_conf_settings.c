/* fuzz_conf_settings: libFuzzer harness for the libconfig settings loader
 * (settings_load). The input is a settings file, loaded over the defaults.
 * The loader must accept or refuse it without a sanitizer finding or a
 * leak; on refusal err holds a message and the settings are left as they
 * were (still the defaults). */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "strata/conf.h"
#include "fuzz_memfd.h"
#include "fuzz_split.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    char path[64], err[512];
    struct settings s, defaults;
    int fd = fuzz_memfd(d, n, path, sizeof(path));

    memset(err, 0, sizeof(err));
    settings_init(&s);
    settings_init(&defaults);
    if (settings_load(&s, path, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_CHECK(s.workers == defaults.workers && s.mbuf_size == defaults.mbuf_size);
        FUZZ_CHECK(s.max_value_size == defaults.max_value_size);
        FUZZ_CHECK(strcmp(s.stats_addr, defaults.stats_addr) == 0);
    }
    settings_deinit(&defaults);
    settings_deinit(&s);
    close(fd);
    return 0;
}
