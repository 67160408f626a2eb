// alkhub routing plugin "label-affinity": prefers candidates whose labels
// match the call's metadata. See README.md; the policy is in policy.js.
import { log, config } from 'alkdev:hub/host@0.2.0';
import { allMetadata, providerLabels } from 'alkdev:hub/call-details@0.2.0';
import { parseSettings, decide } from './policy.js';

// The settings are parsed once per distinct configuration string (the hub
// may hand a warm instance a new configuration), and their warnings are
// logged once, not at every call.
let cachedJson = null;
let cachedSettings = null;

function settings() {
  const json = config();
  if (json !== cachedJson) {
    const parsed = parseSettings(json);
    for (const warning of parsed.warnings) log('warn', warning);
    cachedJson = json;
    cachedSettings = parsed;
  }
  return cachedSettings;
}

function leastInFlight(candidates) {
  let best = 0;
  for (let i = 1; i < candidates.length; i++) {
    if (candidates[i].inFlight < candidates[best].inFlight) best = i;
  }
  return best;
}

export const routing = {
  choose(call, candidates) {
    try {
      // The policy reads the call's metadata and each candidate's labels,
      // which the hub hands over on request (alkdev:hub/call-details).
      const withLabels = candidates.map((c, i) => ({ inFlight: c.inFlight, labels: providerLabels(i) }));
      return decide({ metadata: allMetadata() }, withLabels, settings());
    } catch (e) {
      // The component is built without stdio, so an uncaught exception
      // would trap with no message: log it and still route the call.
      log('error', `label-affinity failed (${e && e.message}); choosing the least busy candidate`);
      return { tag: 'choose', val: leastInFlight(candidates) };
    }
  },
};
