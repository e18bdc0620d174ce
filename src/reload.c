/* reload: applying a new pool configuration (see reload.h). */
#include <stdio.h>

#include "app.h"
#include "strata/log.h"
#include "strata/reload.h"

int reload_apply(struct app *app, struct conf *conf, const char *source,
                 char *err, size_t errlen)
{
    (void)app;
    conf_destroy(&conf);
    snprintf(err, errlen, "%s: live reload is not built yet", source);
    return -1;
}

void reload_rejected(struct app *app, const char *source, const char *why)
{
    (void)app;
    log_error("configuration from %s rejected: %s", source, why);
}

uint64_t reload_generation(const struct app *app)
{
    (void)app;
    return 1;
}
