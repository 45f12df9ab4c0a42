// TensorBoard's smoothing: an exponential moving average, debiased so that the first
// points are not pulled towards zero (Adam's bias correction).

/** ``values`` smoothed with ``weight`` in [0, 1) (0: as they are); nulls stay null. */
export function smooth(values: ArrayLike<number | null>, weight: number): (number | null)[] {
  const w = Math.min(Math.max(weight, 0), 0.999);
  const out: (number | null)[] = new Array(values.length);
  let last = 0;
  let debias = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) {
      out[i] = null;
      continue;
    }
    last = last * w + (1 - w) * v;
    debias = debias * w + (1 - w);
    out[i] = last / debias;
  }
  return out;
}
