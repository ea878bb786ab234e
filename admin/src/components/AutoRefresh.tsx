// The "auto-refresh every N s" switch of a list, with the time of the last refresh.
import { useState } from "react";

import { useAutoRefresh } from "@/hooks/useAutoRefresh";

/** Seconds between automatic refreshes of a list. */
export const REFRESH_SECONDS = 5;

export function AutoRefresh(props: { refresh: () => void }) {
  const [on, setOn] = useState(true);
  const last = useAutoRefresh(props.refresh, REFRESH_SECONDS, on);
  return (
    <label className="flex items-center gap-2 text-xs text-muted-foreground">
      <input type="checkbox" checked={on} onChange={(e) => setOn(e.target.checked)} />
      Auto-refresh every {REFRESH_SECONDS} s{last && on ? ` · updated ${last.toLocaleTimeString()}` : ""}
    </label>
  );
}
