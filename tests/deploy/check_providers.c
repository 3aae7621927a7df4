/* check_providers: loads the provider catalog with an override file exactly as the worker does at
 * start (built-in entries, the file merged over them, every entry validated), so the ConfigMap in
 * deploy/k8s is known to load before a pod ever mounts it. Exit 0 loads, 1 does not, 2 usage. */
#include "catalog.h"
#include <stdio.h>

int
main (int argc, char **argv)
{
    char err [1024];
    if (argc != 2) {
        fprintf (stderr, "usage: check_providers PROVIDERS.json\n");
        return 2;
    }
    catalog_t *catalog = catalog_new (argv [1], err, sizeof err);
    if (!catalog) {
        fprintf (stderr, "check_providers: %s\n", err);
        return 1;
    }
    printf ("check_providers: \"%s\" loads over the built-in catalog: %zu providers\n", argv [1],
            catalog_count (catalog));
    catalog_destroy (&catalog);
    return 0;
}
