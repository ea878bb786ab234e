// A small line of recent values (oldest left), with the newest printed beside it.

export function Sparkline(props: { values: number[]; label: string; width?: number; height?: number }) {
  const width = props.width ?? 160;
  const height = props.height ?? 32;
  const max = Math.max(1, ...props.values);
  const step = props.values.length > 1 ? width / (props.values.length - 1) : 0;
  const points = props.values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - (v / max) * (height - 2) - 1).toFixed(1)}`)
    .join(" ");
  const newest = props.values.at(-1);
  return (
    <figure className="flex items-center gap-3" aria-label={props.label}>
      <svg width={width} height={height} role="img" aria-label={`${props.label} over time`} className="text-primary">
        {props.values.length > 1 && <polyline points={points} fill="none" stroke="currentColor" strokeWidth="1.5" />}
      </svg>
      <figcaption className="text-sm">
        {props.label}: <span className="font-semibold" data-testid="sparkline-value">{newest ?? "—"}</span>
      </figcaption>
    </figure>
  );
}
