// Label affinity: the pure policy, with no imports, so that it can be tested
// under Node (`node --test`) as well as built into the component.

/** Turns a WIT `list<label>` into a Map. */
function toMap(labels) {
  const map = new Map();
  for (const { key, value } of labels) map.set(key, value);
  return map;
}

/**
 * Parses the plugin's settings (the JSON object from `host.config()`).
 * Returns `{ keys: string[] | null, required: boolean, warnings: string[] }`;
 * `keys: null` means every metadata key of the call. A malformed setting is
 * reported in `warnings` and replaced by its default, never fatal.
 */
export function parseSettings(json) {
  const warnings = [];
  let raw = {};
  try {
    raw = JSON.parse(json === undefined || json === '' ? '{}' : json);
  } catch (e) {
    warnings.push(`settings are not valid JSON (${e.message}); using the defaults`);
    raw = {};
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    warnings.push('settings are not a JSON object; using the defaults');
    raw = {};
  }
  let keys = null;
  if (raw.keys !== undefined && raw.keys !== null) {
    if (Array.isArray(raw.keys) && raw.keys.every((k) => typeof k === 'string')) {
      keys = [...new Set(raw.keys)];
    } else {
      warnings.push('"keys" must be a list of strings; matching every metadata key');
    }
  }
  let required = false;
  if (raw.required !== undefined && raw.required !== null) {
    if (typeof raw.required === 'boolean') {
      required = raw.required;
    } else {
      warnings.push('"required" must be true or false; using false');
    }
  }
  for (const name of Object.keys(raw)) {
    if (name !== 'keys' && name !== 'required') warnings.push(`unknown setting "${name}" ignored`);
  }
  return { keys, required, warnings };
}

/**
 * Chooses among `candidates` (never empty) for `call`, given parsed settings.
 * Returns a WIT `decision`: `{ tag: 'choose', val }` or `{ tag: 'refuse', val }`.
 */
export function decide(call, candidates, settings) {
  const metadata = toMap(call.metadata);
  const keys = settings.keys ?? [...metadata.keys()];
  // Only keys the call carries can match.
  const wanted = keys.filter((k) => metadata.has(k));

  let best = -1;
  let bestScore = -1;
  let bestInFlight = Infinity;
  candidates.forEach((candidate, index) => {
    const labels = toMap(candidate.labels);
    let score = 0;
    for (const key of wanted) {
      if (labels.get(key) === metadata.get(key)) score += 1;
    }
    const inFlight = Number(candidate.inFlight);
    // Strict comparisons keep the lowest index on ties.
    if (score > bestScore || (score === bestScore && inFlight < bestInFlight)) {
      best = index;
      bestScore = score;
      bestInFlight = inFlight;
    }
  });

  if (settings.required && bestScore === 0) {
    const wantedText = wanted.length
      ? wanted.map((k) => `${k}=${metadata.get(k)}`).join(', ')
      : `the call has no metadata for ${settings.keys ? settings.keys.join(', ') : 'any key'}`;
    return {
      tag: 'refuse',
      val: `no provider matches the call's labels: ${wantedText}`,
    };
  }
  return { tag: 'choose', val: best };
}
