// alkhub routing plugin "round-robin": the call with sequence number n goes
// to candidate n % len(candidates). The hub counts the calls of each
// operation (`call.sequence`), so the plugin keeps no state. See README.md.
//
// Bindings: `wit-bindgen c ../../wit --world routing-plugin --out-dir gen`
// (alkdev:hub@0.2.0: the call and the candidates carry numbers only).

#include <stdlib.h>
#include <string.h>

#include "routing_plugin.h"

static const char NO_CANDIDATES[] = "round-robin: no candidates";

void exports_alkdev_hub_routing_choose(exports_alkdev_hub_routing_call_t *call,
                                       exports_alkdev_hub_routing_list_candidate_t *candidates,
                                       exports_alkdev_hub_routing_decision_t *ret) {
    size_t len = candidates->len;
    uint64_t sequence = call->sequence;

    // The arguments belong to this function: the generated glue frees
    // nothing, so free every string and list before returning.
    exports_alkdev_hub_routing_call_free(call);
    exports_alkdev_hub_routing_list_candidate_free(candidates);

    if (len == 0) {
        // The hub never passes an empty list; refuse rather than divide by 0.
        // The returned string is freed by the post-return glue, so copy it.
        size_t n = sizeof NO_CANDIDATES - 1;
        uint8_t *msg = malloc(n);
        if (!msg) abort();
        memcpy(msg, NO_CANDIDATES, n);
        ret->tag = EXPORTS_ALKDEV_HUB_ROUTING_DECISION_REFUSE;
        ret->val.refuse = (routing_plugin_string_t){msg, n};
        return;
    }
    ret->tag = EXPORTS_ALKDEV_HUB_ROUTING_DECISION_CHOOSE;
    ret->val.choose = (uint32_t)(sequence % (uint64_t)len);
}
